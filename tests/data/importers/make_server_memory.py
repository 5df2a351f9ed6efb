"""Regenerate `server-memory.jsonl` with the real reference memory server (not by hand).

Installs nothing itself: run `npm install @modelcontextprotocol/server-memory` in some folder first, then

    .venv/bin/python tests/data/importers/make_server_memory.py \
        FOLDER/node_modules/@modelcontextprotocol/server-memory/dist/index.js

It starts that server over stdio with MEMORY_FILE_PATH pointing here, and builds a small graph through its
own tools (create_entities, create_relations, add_observations, delete_observations), so the file is
exactly what the server writes. The file committed next to this script was written by version 2026.8.31.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
TARGET = HERE / "server-memory.jsonl"


async def main(index_js: str) -> None:
    TARGET.unlink(missing_ok=True)
    parameters = StdioServerParameters(command="node", args=[index_js], env={"MEMORY_FILE_PATH": str(TARGET)})
    async with Client(parameters) as client:
        await client.call_tool(
            "create_entities",
            {
                "entities": [
                    {
                        "name": "default_user",
                        "entityType": "person",
                        "observations": ["Lives in Lisbon", "Works as a nurse", "Speaks Portuguese and English"],
                    },
                    {"name": "Biggie", "entityType": "dog", "observations": ["A beagle, adopted in 2021"]},
                    {"name": "Anna", "entityType": "person", "observations": ["Loves hiking"]},
                    {"name": "Santa_Maria_Hospital", "entityType": "organization", "observations": []},
                ]
            },
        )
        await client.call_tool(
            "create_relations",
            {
                "relations": [
                    {"from": "default_user", "to": "Biggie", "relationType": "owns"},
                    {"from": "default_user", "to": "Anna", "relationType": "is_married_to"},
                    {"from": "default_user", "to": "Santa_Maria_Hospital", "relationType": "works_at"},
                ]
            },
        )
        await client.call_tool(
            "add_observations",
            {
                "observations": [
                    {"entityName": "default_user", "contents": ["Is allergic to peanuts", "Lives in Lisbon"]}
                ]
            },
        )
        await client.call_tool(
            "delete_observations",
            {"deletions": [{"entityName": "Anna", "observations": ["Loves hiking"]}]},
        )
        await client.call_tool(
            "add_observations", {"observations": [{"entityName": "Anna", "contents": ["Loves climbing"]}]}
        )


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
    print(TARGET.read_text(encoding="utf-8"))
