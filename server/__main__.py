"""`python -m nightlab.server`: the language server over stdio (also `nightlab lsp`)."""

from nightlab.server.lsp.app import main

if __name__ == "__main__":
    main()
