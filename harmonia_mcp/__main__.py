"""`python -m harmonia_mcp` is the `harmonia-mcp` command."""

from harmonia_mcp.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
