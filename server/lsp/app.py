"""The language server put together: the server, its features and commands, and `main` (stdio).

`python -m nightlab.server` and `nightlab lsp` start it here. This is the one module that knows every
part of lsp/; server.py, features.py and commands.py know only what is below them.
"""

from __future__ import annotations

import logging
import os

from nightlab.server.lsp import commands, features
from nightlab.server.lsp.boundary import quiet_expected_errors
from nightlab.server.lsp.server import NightlabServer


def create_server() -> NightlabServer:
    quiet_expected_errors()
    server = NightlabServer()
    features.setup(server)
    commands.setup(server)
    return server


def main() -> None:
    # stderr is the client's log (Neovim files every stderr line as an error): warnings only, unless
    # NIGHTLAB_LSP_LOG=INFO or DEBUG asks for more.
    level = os.environ.get("NIGHTLAB_LSP_LOG", "WARNING").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.WARNING), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    create_server().start_io()
