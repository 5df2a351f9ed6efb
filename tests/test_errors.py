"""Every error a client can cause reaches it in a person's words, through the MCP client (issues 16.4, 12.7).

Bad arguments name the argument, quote the value and say what is allowed, without pydantic's boilerplate;
values out of the range SQLite or `datetime` can hold are refused at the boundary; and whatever a tool
raises, even a tool registered later, reaches the client as a reason, never a bare "Error executing tool".
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mcp import Client

from harmonia_mcp.config import Settings
from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio


async def _error(client: Client, tool: str, arguments: dict[str, Any]) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool}({arguments}) succeeded"
    text: str = result.content[0].text  # type: ignore[union-attr]
    assert "pydantic" not in text and "validation error for" not in text, text
    assert text.strip() != f"Error executing tool {tool}", "a bare error, with no reason"
    return text


async def _count(client: Client) -> int:
    result = await client.call_tool("list_memories", {"include_inactive": True})
    assert result.structured_content is not None
    total: int = result.structured_content["pagination"]["total_count"]
    return total


async def test_an_unknown_enum_value_names_the_argument_the_value_and_the_choices(client: Client) -> None:
    text = await _error(client, "search_memories", {"query": "tea", "category": "hobbies"})
    assert "category 'hobbies' is not allowed" in text
    assert "personal" in text and "other" in text
    text = await _error(client, "export_memories", {"format": "xml"})
    assert "format 'xml'" in text and "json, csv, markdown or text" in text


async def test_a_value_out_of_range_gives_both_ends_of_the_range(client: Client) -> None:
    text = await _error(client, "search_memories", {"query": "tea", "limit": 1000})
    assert "limit 1000 is out of range: use 1 to 100" in text
    text = await _error(client, "search_memories", {"query": "tea", "min_confidence": 7})
    assert "min_confidence 7" in text and "0.0 to 1.0" in text


async def test_a_missing_argument_and_a_wrong_type_are_named(client: Client) -> None:
    assert "query is missing" in await _error(client, "search_memories", {})
    assert "memory_id is missing" in await _error(client, "delete_memory", {})
    assert "limit 'ten' is not a whole number" in await _error(client, "list_memories", {"limit": "ten"})
    assert "metadata 'x' is not a JSON object" in await _error(
        client, "store_memory", {"message": "hi", "metadata": "x"}
    )


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("search_memories", {"query": "tea", "offset": 2**63}, "offset 9223372036854775808 is out of range"),
        ("list_memories", {"offset": 2**63}, "offset 9223372036854775808 is out of range"),
        ("export_memories", {"max_memories": 2**63}, "max_memories 9223372036854775808 is out of range"),
        ("list_memories", {"to_date": "9999-12-31"}, "to_date '9999-12-31' is out of range"),
        ("search_memories", {"query": "tea", "to_date": "9999-12-31"}, "to_date '9999-12-31' is out of range"),
        ("list_memories", {"from_date": "9999-12-31T23:59:59-01:00"}, "from_date '9999-12-31T23:59:59-01:00'"),
        ("export_memories", {"from_date": "0001-01-01T00:00:00+05:00"}, "from_date '0001-01-01T00:00:00+05:00'"),
        ("store_memory", {"message": "I went there yesterday", "occurred_at": "0001-01-01T01:00:00"}, "occurred_at"),
        ("store_memory", {"message": "I fly tomorrow at 2pm", "occurred_at": "9999-12-31T22:00:00Z"}, "occurred_at"),
    ],
)
async def test_values_beyond_what_sqlite_or_datetime_hold_are_refused_with_a_reason(
    client: Client, tool: str, arguments: dict[str, Any], named: str
) -> None:
    text = await _error(client, tool, arguments)
    assert named in text
    assert "out of range" in text and "use " in text
    assert await _count(client) == 0


async def test_the_edges_of_the_allowed_range_work(client: Client) -> None:
    for when in ("0001-01-02T00:00:00Z", "9999-12-30T23:59:59Z"):
        for message in ("I went to Paris last week", "I have a meeting tomorrow at 2pm", "I will move in 3 years"):
            result = await client.call_tool("store_memory", {"message": message, "occurred_at": when})
            assert not result.is_error, result.content
    listed = await client.call_tool("list_memories", {"from_date": "0001-01-02", "to_date": "9999-12-30"})
    assert not listed.is_error and listed.structured_content is not None
    assert listed.structured_content["pagination"]["total_count"] == 6


async def test_restoring_an_active_memory_says_it_is_already_active(client: Client) -> None:
    stored = await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
    assert stored.structured_content is not None
    memory_id = stored.structured_content["memories"][0]["memory_id"]
    text = await _error(client, "restore_memory", {"memory_id": memory_id})
    assert f"memory {memory_id!r} is already active" in text
    assert "No memory" not in text


async def test_any_tool_that_crashes_gives_a_reason_and_logs_the_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    server = create_server(settings)

    async def divide(numerator: int) -> int:
        """A tool registered after the others, as other issues add theirs: it gets the boundary too."""
        return numerator // 0

    async def refuse(value: str) -> str:
        """Raises a core error."""
        raise InvalidInput(f"value {value!r} is refused: use 'yes'")

    server.add_tool(divide)
    server.add_tool(refuse)
    async with Client(server) as connected:
        with caplog.at_level(logging.ERROR, logger="harmonia_mcp.server"):
            text = await _error(connected, "divide", {"numerator": 1})
        assert "unexpected ZeroDivisionError: integer division or modulo by zero" in text
        assert "server's log has the traceback" in text
        crash = [record for record in caplog.records if record.name == "harmonia_mcp.server"]
        assert crash and crash[0].exc_info is not None and crash[0].exc_info[0] is ZeroDivisionError
        assert "numerator 'one' is not a whole number" in await _error(connected, "divide", {"numerator": "one"})
        assert text.startswith("Error executing tool divide: ")
        refused = await _error(connected, "refuse", {"value": "no"})
        assert refused == "Error executing tool refuse: value 'no' is refused: use 'yes'"


async def test_tool_descriptions_keep_their_docstring_layout_without_its_indentation(client: Client) -> None:
    for tool in (await client.list_tools()).tools:
        assert tool.description, tool.name
        lines = tool.description.splitlines()
        assert not any(line.startswith(" ") for line in lines), f"{tool.name}: {tool.description!r}"
        assert tool.description == tool.description.strip()
    store = next(tool for tool in (await client.list_tools()).tools if tool.name == "store_memory")
    assert store.description is not None and "\n\nReturns each memory" in store.description


def _bad_value(schema: dict[str, Any]) -> Any:
    """A value of the wrong kind for a JSON-schema property (looking through anyOf's non-null branch)."""
    branches = [branch for branch in schema.get("anyOf", [schema]) if branch.get("type") != "null"]
    branch = branches[0] if branches else schema
    if "enum" in branch or "$ref" in branch:
        return "no-such-choice"
    kind = branch.get("type")
    return {"string": 12345, "integer": "abc", "number": "abc", "boolean": "maybe", "array": 5, "object": "x"}.get(
        kind, "no-such-choice"
    )


async def test_every_argument_of_every_tool_is_named_when_its_value_is_of_the_wrong_kind(client: Client) -> None:
    # Held out: written after the wording was settled on the cases above, and run over every argument
    # the server has, so that a tool added later is held to it too.
    checked = 0
    for tool in (await client.list_tools()).tools:
        properties: dict[str, Any] = tool.input_schema.get("properties", {})
        # A well-typed value for each required argument ("x", or an empty list for store_memories' items),
        # so that only the argument under test is of the wrong kind.
        required = {
            key: [] if properties[key].get("type") == "array" else "x" for key in tool.input_schema.get("required", [])
        }
        for name, schema in properties.items():
            value = _bad_value(schema)
            text = await _error(client, tool.name, {**required, name: value})
            assert text.startswith(f"Error executing tool {tool.name}: {name} "), text
            assert "Input should" not in text and "[type=" not in text, text
            checked += 1
    assert checked >= 40  # 46 arguments over the seven tools today
