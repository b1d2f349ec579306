"""The loop: the engine's state machine, an experiment's run plan, recovery after a stop or a kill -9."""
