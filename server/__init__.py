"""nightlab.server: the experiment engine, its CLI and (later) the language server.

Layers, each knowing only the ones below it: cli/lsp -> engine -> (runner, store, ledger, agents, policy).
Must not import: nightlab.trainer's template modules (prepare.py, train.py run in their own process).
"""
