"""The bare-SDK floor for `benchmarks/lean_path.py`: a trivial `MCPServer` over stdio with one tool.

`search_memories(query, user_id=None, limit=10)` returns `limit` fixed hits in harmonia's own `SearchResult`
shape (the same structured output schema and about the same bytes per hit), without touching a database.
What a call costs here is what the SDK, the stdio transport and JSON cost; harmonia's search over stdio
is compared with it in the same run.

    .venv/bin/python benchmarks/floor_server.py   # serves stdio until stdin closes
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

from harmonia_mcp.models import Category, Pagination, SearchHit, SearchResult

_HITS = [
    SearchHit(
        memory_id=f"mem_{index:016x}",
        content=f"User's sister Maria lives in Lisbon and visits every {index} weeks",
        category=Category.RELATIONSHIP,
        relevance_score=round(1.0 - index / 100, 6),
        highlights=[f"User's sister [Maria] lives in [Lisbon] and visits every {index} weeks"],
        created_at="2026-01-01T00:00:00.000000+00:00",
        event_time=None,
    )
    for index in range(100)
]


async def search_memories(query: str, user_id: str | None = None, limit: int = 10) -> SearchResult:
    """Fixed hits, whatever the query."""
    hits = _HITS[:limit]
    return SearchResult(
        results=hits,
        pagination=Pagination(total_count=1000, limit=limit, offset=0, has_more=True),
        mode="keyword",
    )


def main() -> None:
    server = MCPServer("floor")
    server.add_tool(search_memories)
    server.run("stdio")


if __name__ == "__main__":
    main()
