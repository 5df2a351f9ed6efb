from __future__ import annotations

import csv
import io
import json

from harmonia_mcp.export import CSV_COLUMNS, render
from harmonia_mcp.models import Category, Memory


def _memory(number: int, category: Category, **extra: object) -> Memory:
    fields: dict[str, object] = {
        "memory_id": f"mem_{number:016x}",
        "user_id": "alice",
        "content": f'Alice fact {number}, with a comma and "quotes"\nand a newline',
        "category": category,
        "confidence": 0.75,
        "entities": ["Alice"],
        "tags": ["t1", "t2"],
        "event_time": "2024-08-20T14:00:00-04:00" if number % 2 else None,
        "source_message": "I said so",
        "speaker": "Alice",
        "session_id": None,
        "metadata": {"dia_id": f"D1:{number}", "nested": {"ok": True}},
        "extractor": "rules",
        "status": "active",
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "updated_at": "2026-01-01T00:00:00.000000+00:00",
    }
    fields.update(extra)
    return Memory.model_validate(fields)


MEMORIES = [_memory(1, Category.WORK), _memory(2, Category.PERSONAL), _memory(3, Category.WORK)]


def test_json_round_trips_every_field() -> None:
    document = json.loads(render("json", "alice", MEMORIES, "2026-01-02T00:00:00+00:00"))
    assert document["user_id"] == "alice" and document["memory_count"] == 3
    restored = [Memory.model_validate({**item, "user_id": "alice"}) for item in document["memories"]]
    assert restored == MEMORIES


def test_csv_parses_back_with_the_csv_module() -> None:
    rows = list(csv.DictReader(io.StringIO(render("csv", "alice", MEMORIES, "now"))))
    assert len(rows) == 3
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert rows[0]["content"] == MEMORIES[0].content
    assert json.loads(rows[1]["metadata"]) == {"dia_id": "D1:2", "nested": {"ok": True}}
    assert json.loads(rows[2]["tags"]) == ["t1", "t2"]
    assert rows[1]["event_time"] == "" and rows[0]["event_time"] == "2024-08-20T14:00:00-04:00"
    assert float(rows[0]["confidence"]) == 0.75


def test_markdown_groups_by_category_in_category_order() -> None:
    text = render("markdown", "alice", MEMORIES, "now")
    assert text.startswith("# Memories of alice\n")
    assert text.index("## Personal") < text.index("## Work")
    assert text.count("\n- ") == 3
    assert "`mem_0000000000000001`" in text
    assert "(when: 2024-08-20T14:00:00-04:00)" in text


def test_text_is_one_line_per_memory_with_category() -> None:
    plain = [_memory(n, Category.FACT, content=f"Alice fact {n}") for n in (1, 2)]
    text = render("text", "alice", plain, "now")
    assert text == "[fact] Alice fact 1 (when: 2024-08-20T14:00:00-04:00)\n[fact] Alice fact 2\n"


def test_an_empty_export_is_still_well_formed() -> None:
    assert json.loads(render("json", "alice", [], "now"))["memories"] == []
    assert list(csv.DictReader(io.StringIO(render("csv", "alice", [], "now")))) == []
    assert render("text", "alice", [], "now") == ""
