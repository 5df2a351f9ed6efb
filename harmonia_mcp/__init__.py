"""harmonia-mcp: a local-first MCP server that gives AI assistants a long-term memory."""

__version__ = "0.1.0"
