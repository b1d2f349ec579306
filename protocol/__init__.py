"""nightlab.protocol: the one contract between the server and its clients.

Holds the names of the events the engine emits; the LSP methods and payload types
(and their TypeScript mirror) join it with the language server.
Must not import: anything from nightlab.server or nightlab.trainer.
"""
