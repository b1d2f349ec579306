"""nightlab.server: the loop, its CLI and its language server, as layered packages.

Each package imports only the ones below it (tests/test_layers.py holds the table):
core <- changes <- run <- record <- agents <- loop <- editor <- lsp, cli. docs/ARCHITECTURE.md maps them.
Must not import: nightlab.trainer's template modules (prepare.py, train.py run in their own process).
"""
