"""`python -m nightlab.server`: the language server over stdio (also `nightlab lsp`); `--warm`: by way of
this user's warm process when there is one (lsp/warm.py: the editor's reload gets a server at once)."""

import sys

if __name__ == "__main__":
    if "--warm" in sys.argv[1:]:
        from nightlab.server.lsp.warm import launch

        launch()
    else:
        from nightlab.server.lsp.app import main

        main()
