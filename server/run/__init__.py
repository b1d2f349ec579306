"""One training run: the Launcher seam, the local subprocess launcher, following its events and log,
the trainer contract (summary block, events, crash summary), slots. Knows no git, no ledger, no agents."""
