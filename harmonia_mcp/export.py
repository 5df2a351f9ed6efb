"""Render memories as JSON, CSV, Markdown or plain text.

JSON and CSV carry every field, so they can be read back (JSON with `json.loads`, CSV with
`csv.DictReader`; list and object fields are JSON inside their CSV cell). Markdown and text are for people.

A CSV cell that a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, tab or CR) gets a
leading `'`, as OWASP's "CSV Injection" page recommends, so opening an export never runs `=HYPERLINK(...)`.

`read_json_export` reads a JSON export back incrementally (ijson), one memory at a time.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import ijson

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.models import Category, ExportFormat, Memory, count_of

CSV_COLUMNS = (
    "memory_id",
    "content",
    "category",
    "confidence",
    "event_time",
    "entities",
    "tags",
    "speaker",
    "session_id",
    "source_message",
    "metadata",
    "extractor",
    "status",
    "created_at",
    "updated_at",
    "occurred_at",
)


# OWASP, "CSV Injection" (https://owasp.org/www-community/attacks/CSV_Injection): cells starting with these
# are formulas to Excel, LibreOffice and Google Sheets; a leading single quote makes them text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(cell: object) -> object:
    """`cell` with a `'` in front if it is a string a spreadsheet would run as a formula; else `cell`."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


# A full export's extras (issue 10): memory id → its history rows, oldest first; the links between memories.
History = Mapping[str, Sequence[Mapping[str, Any]]]
Links = Sequence[Mapping[str, str]]


def _view(memory: Memory) -> dict[str, Any]:
    # The fields of MemoryView, in its order, without building one per memory (half the cost of a big export).
    return memory.model_dump(mode="json", exclude={"user_id"})


def to_json(
    user_id: str,
    memories: Sequence[Memory],
    exported_at: str,
    history: History | None = None,
    links: Links | None = None,
) -> str:
    """`{"user_id", "exported_at", "memory_count", "memories": [...]}`, each memory with every field.

    With `history` (memory id → its rows, oldest first), each memory also has `"history": [...]`; with
    `links`, the document has `"links": [{"from_id", "to_id", "kind", "created_at"}, ...]`, limited to
    links between exported memories. `harmonia-mcp import` reads both back.
    """
    views = [_view(memory) for memory in memories]
    if history is not None:
        for view in views:
            view["history"] = [dict(row) for row in history.get(view["memory_id"], [])]
    document: dict[str, Any] = {
        "user_id": user_id,
        "exported_at": exported_at,
        "memory_count": len(memories),
        "memories": views,
    }
    if links is not None:
        exported = {view["memory_id"] for view in views}
        document["links"] = [dict(link) for link in links if link["from_id"] in exported and link["to_id"] in exported]
    return json.dumps(document, ensure_ascii=False, indent=2)


def to_csv(memories: Sequence[Memory]) -> str:
    """A header row of `CSV_COLUMNS`, then one row per memory; lists and objects are JSON in their cell.

    Text cells that start like a formula are prefixed with `'` (`neutralise_formula`).
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for memory in memories:
        row: dict[str, Any] = _view(memory)
        for key in ("entities", "tags", "metadata"):
            row[key] = json.dumps(row[key], ensure_ascii=False)
        writer.writerow({column: neutralise_formula(row[column]) for column in CSV_COLUMNS})
    return buffer.getvalue()


def _when(memory: Memory) -> str:
    status = f" [{memory.status}]" if memory.status != "active" else ""
    return (f" (when: {memory.event_time})" if memory.event_time else "") + status


def to_markdown(user_id: str, memories: Sequence[Memory], exported_at: str) -> str:
    """A Markdown document: a title, then one section per category (in the order of `Category`)."""
    lines = [f"# Memories of {user_id}", "", f"{count_of(len(memories))}, exported {exported_at}."]
    for category in Category:
        members = [memory for memory in memories if memory.category is category]
        if not members:
            continue
        lines += ["", f"## {category.value.capitalize()}", ""]
        lines += [f"- {memory.content}{_when(memory)} `{memory.memory_id}`" for memory in members]
    return "\n".join(lines) + "\n"


def to_text(memories: Sequence[Memory]) -> str:
    """One line per memory: `[category] content (when: ...)`."""
    return "".join(f"[{memory.category.value}] {memory.content}{_when(memory)}\n" for memory in memories)


def render(
    fmt: ExportFormat,
    user_id: str,
    memories: Sequence[Memory],
    exported_at: str,
    history: History | None = None,
    links: Links | None = None,
) -> str:
    """The export of `memories` in `fmt` (one of json, csv, markdown, text); `history` and `links` go into
    JSON only (see `to_json`). Markdown and text mark a memory that is not active with its status."""
    if fmt == "json":
        return to_json(user_id, memories, exported_at, history, links)
    if fmt == "csv":
        return to_csv(memories)
    if fmt == "markdown":
        return to_markdown(user_id, memories, exported_at)
    return to_text(memories)


@dataclass
class ExportHeader:
    """What a JSON export says besides its memories; filled in as `read_json_export` reaches it."""

    user_id: Any = None
    found_memories: bool = False


def read_json_links(stream: IO[bytes]) -> Any:
    """The top-level `"links"` of a JSON export (`export_memories(include_history=True)`), or [] without one.

    Raises:
        InvalidInput: the stream is not JSON.
    """
    try:
        for value in ijson.items(stream, "links", use_float=True):
            return value
    except ijson.JSONError as error:
        raise InvalidInput(f"the import file is not JSON: {error}") from None
    return []


def read_json_export(stream: IO[bytes], header: ExportHeader) -> Iterator[Any]:
    """The items of a JSON export's `"memories"` list, one at a time, in file order, as parsed JSON values.

    Memory use is bounded by the largest item, not the file (ijson's incremental parser, events folded into
    values by its `ObjectBuilder`, which does not recurse, so deep nesting cannot overflow the stack). The
    top-level `"user_id"` goes into `header` whenever the parser passes it (before or after the memories).
    Numbers come back as float or int.

    Raises:
        InvalidInput: the stream is not JSON, its top level is not an object, or `"memories"` is not a list;
            the message says where (the byte offset ijson reports) when the JSON is malformed.
    """
    builder: ijson.ObjectBuilder | None = None
    try:
        for prefix, event, value in ijson.parse(stream, use_float=True):
            if builder is not None:
                builder.event(event, value)
                if prefix == "memories.item" and event in ("end_map", "end_array"):
                    yield builder.value
                    builder = None
                continue
            if prefix == "" and event not in ("start_map", "end_map", "map_key"):
                raise InvalidInput('the import file must be a JSON export: an object with a "memories" list')
            if prefix == "memories" and event not in ("start_array", "end_array"):
                raise InvalidInput('the import file\'s "memories" must be a list')
            if prefix == "memories" and event == "start_array":
                header.found_memories = True
            elif prefix == "memories.item":
                if event in ("start_map", "start_array"):
                    builder = ijson.ObjectBuilder()
                    builder.event(event, value)
                else:
                    yield value  # a scalar where a memory should be: the caller reports it
            elif prefix == "user_id":
                header.user_id = value
    except ijson.JSONError as error:
        raise InvalidInput(f"the import file is not JSON: {error}") from None
    if not header.found_memories:
        raise InvalidInput('the import file must be a JSON export: an object with a "memories" list')
