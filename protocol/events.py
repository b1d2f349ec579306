"""The events the engine emits, by name. Clients (the CLI's live view, the language server, the
VS Code panel) subscribe to these; each event is a dict with a "type" key and the fields listed.

Must not import: anything from nightlab.server or nightlab.trainer.
"""

STATE = "state"  # state: idle|proposing|running|deciding|paused|stopped|errored, reason: str
EXPERIMENT_STARTED = "experimentStarted"  # experiment: Experiment record (status "running")
PROGRESS = "progress"  # number: int, progress: {step, elapsed_s, loss, tok_per_s, mfu, lr, fraction}, stage: str
EXPERIMENT_FINISHED = "experimentFinished"  # experiment: Experiment record (final)
MESSAGE = "message"  # level: info|warning|error, text: str
CLUSTER = "cluster"  # cluster: ClusterPayload's wire form (the Ray executor; sent when it changes)

STATES = ("idle", "proposing", "running", "deciding", "paused", "stopped", "errored")
