"""nightlab.protocol: the one contract between the server and its clients.

- `events.py`: the names of the events the engine emits (inside the server process).
- `methods.py`: the custom LSP methods and commands, and `REGISTRY` (direction, params, result of each).
- `types.py`: the payload dataclasses (camelCase on the wire, through `wire.py`) and the converters from
  the engine's event dicts.
- `control.py`: the loop process's control endpoint (a Unix socket, line-delimited JSON): its messages
  (hello, event, command, reply, error, goodbye), their framing (`encode`, `decode`) and examples.
- `generate_ts.py`: renders `nightlab-protocol.ts` (the VS Code extension's copy) and `METHODS.md` from the
  above (control.py's messages in their own part); tests/test_protocol.py fails when either file drifts.
  `examples.py`: METHODS.md's examples.

Must not import: anything from nightlab.server or nightlab.trainer, nor pygls or lsprotocol.
"""
