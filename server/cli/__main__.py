"""`python -m nightlab.server.cli`: the `nightlab` command."""

from nightlab.server.cli.commands import main

if __name__ == "__main__":
    main()
