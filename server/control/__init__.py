"""The loop process's control endpoint (server.py), its clients' side (client.py) and where a tag's loop is
found (paths.py). Layer: may import core, record, loop and protocol; cli and lsp import it."""
