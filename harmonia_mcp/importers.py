"""Moving in from other memory servers: files of other formats → the JSON export that `import_memories` loads.

Each converter returns one `Conversion` per user: `document` is `{"user_id": ..., "memories": [...]}`, the
shape `export_memories(format="json")` writes and `MemoryService.import_memories` reads, plus what was
mapped and what was skipped (and why). Memory ids are derived from the source (a SHA-256 of the user, the
format and the item's identity), so importing the same file twice adds nothing the second time: the
import path skips ids it already has.

Formats:

- `server-memory`: the JSONL knowledge graph of the reference MCP memory server
  (`@modelcontextprotocol/server-memory`, its `memory.jsonl`): one `{"type": "entity", "name",
  "entityType", "observations": [...]}` or `{"type": "relation", "from", "to", "relationType"}` per line.
  Each observation becomes a memory "<entity> <observation>" when the observation starts with a verb
  ("Lives in Lisbon"), else "<entity>: <observation>", with the entity in `entities`; the entity the
  server's README calls `default_user` (or `user`, `me`, or the importing user's id) is written "User".
  An entity with no observation becomes "<entity> is a <entityType>"; each relation becomes "<from>
  <relation> <to>" with both entities. Categories are the rules extractor's for the sentence (fact, or
  relationship for a relation, when it finds none). `metadata.server_memory` keeps the original item.
- `mem0`: mem0's `get_all()` / `search()` output or its export, `{"results": [...]}`, `{"memories":
  [...]}` or a bare list of `{"id", "memory", "user_id"?, "metadata"?, "categories"?, "created_at"?,
  "updated_at"?}`. Each item becomes one memory with its text unchanged, its times, its categories as
  tags (and the first that names one of ours as the category); `metadata.mem0` keeps id, hash and metadata.
- `text`: plain text or Markdown notes, one memory per line or bullet, each read by the extractor (so
  "I have a dog called Biggie" becomes "User has a dog called Biggie"). Headings, blank lines, code
  fences and horizontal rules are skipped.

Source of the server-memory format: modelcontextprotocol/servers, `src/memory/index.ts`
(`saveGraph` writes one JSON object per line with a `type` of "entity" or "relation").
Source of the mem0 format: mem0 docs, "Get all memories" (`client.get_all(user_id=...)` returns
`{"results": [{"id", "memory", "hash", "metadata", "categories", "created_at", "updated_at", "user_id"}]}`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from harmonia_mcp.errors import InvalidInput
from harmonia_mcp.extract import Extractor, run_extractor
from harmonia_mcp.extract.rules import extract_memories
from harmonia_mcp.models import Category

ImportFormat = Literal["server-memory", "mem0", "text"]
IMPORT_FORMATS: tuple[ImportFormat, ...] = ("server-memory", "mem0", "text")


@dataclass
class Conversion:
    """One user's converted memories (`document`, ready for `import_memories`) and the converter's report."""

    user_id: str
    memories: list[dict[str, Any]] = field(default_factory=list[dict[str, Any]])
    mapped: dict[str, int] = field(default_factory=dict[str, int])  # what became memories: "observation": 12
    skipped: list[str] = field(default_factory=list[str])  # "line 7: not JSON", one per skipped item

    @property
    def document(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "memories": self.memories}

    def count(self, kind: str) -> None:
        self.mapped[kind] = self.mapped.get(kind, 0) + 1


def memory_id_for(user_id: str, source: str, key: str) -> str:
    """A stable `mem_` id for an imported item: the first 16 hex digits of SHA-256(user, source, key)."""
    digest = hashlib.sha256("\x00".join((user_id, source, key)).encode("utf-8")).hexdigest()
    return "mem_" + digest[:16]


def _memory(
    user_id: str,
    source: str,
    key: str,
    content: str,
    *,
    now: str,
    category: Category = Category.FACT,
    confidence: float = 0.9,
    entities: list[str] | None = None,
    tags: list[str] | None = None,
    event_time: str | None = None,
    source_message: str | None = None,
    metadata: dict[str, Any] | None = None,
    extractor: str = "import",
    created_at: str | None = None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    return {
        "memory_id": memory_id_for(user_id, source, key),
        "content": content,
        "category": category.value,
        "confidence": confidence,
        "entities": entities or [],
        "tags": tags or [],
        "event_time": event_time,
        "source_message": source_message,
        "speaker": None,
        "session_id": None,
        "metadata": metadata or {},
        "extractor": extractor,
        "status": "active",
        "created_at": created_at or now,
        "updated_at": updated_at or created_at or now,
    }


# --- server-memory -------------------------------------------------------------------------------


def _words(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


# Names the reference server's own README uses for the person it talks to ("default_user"), and the like.
_USER_ENTITIES = frozenset({"default_user", "user", "me", "i", "myself", "the_user"})
# An observation that starts with a verb ("Lives in Lisbon", "Is allergic to peanuts") reads as a sentence
# after the entity's name; anything else ("A beagle, adopted in 2021") follows it after a colon.
_VERB_START = re.compile(r"^(?!(?:As|This|His|Its|Hers|Yes|Always|Perhaps|Sometimes|Plus|Thus)\b)[A-Z][a-z]*s\b")


def _subject(name: str, user_id: str) -> str:
    return "User" if name.lower() in _USER_ENTITIES or name == user_id else _words(name)


def _entities(user_id: str, *names: str) -> list[str]:
    """The entity names as memories keep them: words, not ids, and never the user themself."""
    return [_words(name) for name in names if _subject(name, user_id) != "User"]


def _sentence(subject: str, observation: str) -> str:
    if _VERB_START.match(observation):
        return f"{subject} {observation[0].lower()}{observation[1:]}"
    return f"{subject}: {observation}"


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _category(sentence: str, fallback: Category) -> Category:
    """The rules extractor's category for one third-person sentence, when it reads it as one fact."""
    found = extract_memories(sentence, "User", datetime.now(UTC))
    if len(found) == 1 and found[0].category != Category.OTHER:
        return found[0].category
    return fallback


def from_server_memory(text: str, user_id: str, *, now: str) -> Conversion:
    """Convert the reference memory server's JSONL graph (see the module docstring).

    Lines that are blank are ignored; lines that are not JSON objects of a known `type`, or lack a
    field, are skipped and reported by line number. An observation that repeats one already seen for
    the same entity maps to the same memory (and so is imported once).
    """
    result = Conversion(user_id)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            result.skipped.append(f"line {number}: not JSON")
            continue
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "entity":
            name, entity_type = item.get("name"), item.get("entityType")
            observations = item.get("observations", [])
            if not isinstance(name, str) or not name.strip() or not isinstance(observations, list):
                result.skipped.append(f"line {number}: an entity without a name or observations list")
                continue
            type_tag = [str(entity_type)] if isinstance(entity_type, str) and entity_type.strip() else []
            origin = {"entity": name, "entity_type": entity_type}
            for observation in observations:
                if not isinstance(observation, str) or not observation.strip():
                    result.skipped.append(f"line {number}: an empty or non-text observation of {name}")
                    continue
                sentence = _sentence(_subject(name, user_id), observation.strip())
                result.memories.append(
                    _memory(
                        user_id,
                        "server-memory",
                        f"observation\x00{name}\x00{observation.strip()}",
                        sentence,
                        now=now,
                        category=_category(sentence, Category.FACT),
                        entities=_entities(user_id, name),
                        tags=["server-memory", *type_tag],
                        source_message=observation.strip(),
                        metadata={"server_memory": {**origin, "observation": observation}},
                    )
                )
                result.count("observation")
            if not observations and type_tag:
                result.memories.append(
                    _memory(
                        user_id,
                        "server-memory",
                        f"entity\x00{name}",
                        f"{_subject(name, user_id)} is {_article(type_tag[0])} {_words(type_tag[0])}",
                        now=now,
                        entities=_entities(user_id, name),
                        tags=["server-memory", *type_tag],
                        metadata={"server_memory": origin},
                    )
                )
                result.count("entity without observations")
        elif kind == "relation":
            source, target, relation = item.get("from"), item.get("to"), item.get("relationType")
            if not all(isinstance(value, str) and value.strip() for value in (source, target, relation)):
                result.skipped.append(f"line {number}: a relation without from, to and relationType")
                continue
            assert isinstance(source, str) and isinstance(target, str) and isinstance(relation, str)
            sentence = f"{_subject(source, user_id)} {_words(relation)} {_subject(target, user_id)}"
            result.memories.append(
                _memory(
                    user_id,
                    "server-memory",
                    f"relation\x00{source}\x00{relation}\x00{target}",
                    sentence,
                    now=now,
                    category=_category(sentence, Category.RELATIONSHIP),
                    entities=_entities(user_id, source, target),
                    tags=["server-memory", "relation"],
                    metadata={"server_memory": {"from": source, "to": target, "relation_type": relation}},
                )
            )
            result.count("relation")
        else:
            result.skipped.append(f"line {number}: type {kind!r} is neither entity nor relation")
    return result


# --- mem0 ----------------------------------------------------------------------------------------

# mem0's default custom categories (docs "Custom categories") → ours; the first that maps wins.
_MEM0_CATEGORIES: dict[str, Category] = {
    "personal_details": Category.PERSONAL,
    "family": Category.RELATIONSHIP,
    "relationships": Category.RELATIONSHIP,
    "professional_details": Category.WORK,
    "work": Category.WORK,
    "education": Category.EDUCATION,
    "health": Category.HEALTH,
    "food": Category.PREFERENCE,
    "preferences": Category.PREFERENCE,
    "sports": Category.PREFERENCE,
    "hobbies": Category.PREFERENCE,
    "entertainment": Category.PREFERENCE,
    "travel": Category.EVENT,
    "goals": Category.GOAL,
    "skills": Category.SKILL,
    "emotions": Category.EMOTION,
    "misc": Category.OTHER,
}


def _utc(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # mem0 writes naive UTC times in some versions
    return moment.astimezone(UTC).isoformat()


def from_mem0(text: str, user_id: str | None, *, default_user: str, now: str) -> list[Conversion]:
    """Convert mem0 memories (see the module docstring), one `Conversion` per user.

    Args:
        user_id: every memory goes to this user; None keeps each item's own `user_id` (else `default_user`).

    Raises:
        InvalidInput: the file is not JSON, or holds no list of memories.
    """
    try:
        parsed = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"the mem0 file is not JSON: {error}") from None
    items = parsed
    if isinstance(parsed, dict):
        items = parsed.get("results", parsed.get("memories"))
    if not isinstance(items, list):
        raise InvalidInput('the mem0 file must be a list of memories, or an object with a "results" list')
    by_user: dict[str, Conversion] = {}
    for number, item in enumerate(items, start=1):
        owner = user_id or (item.get("user_id") if isinstance(item, dict) else None) or default_user
        result = by_user.setdefault(str(owner), Conversion(str(owner)))
        content = item.get("memory") if isinstance(item, dict) else None
        if not isinstance(content, str) or not content.strip():
            result.skipped.append(f"item {number}: no memory text")
            continue
        assert isinstance(item, dict)
        categories = [str(c) for c in item.get("categories") or [] if isinstance(c, str)]
        category = next((_MEM0_CATEGORIES[c] for c in categories if c in _MEM0_CATEGORIES), Category.FACT)
        source_id = str(item.get("id") or content.strip())
        kept = {key: item[key] for key in ("id", "hash", "metadata", "agent_id", "run_id") if item.get(key)}
        created = _utc(item.get("created_at"))
        result.memories.append(
            _memory(
                str(owner),
                "mem0",
                source_id,
                content.strip(),
                now=now,
                category=category,
                tags=categories,
                source_message=content.strip(),
                metadata={"mem0": kept},
                created_at=created,
                updated_at=_utc(item.get("updated_at")) or created,
            )
        )
        result.count("memory")
    return list(by_user.values())


# --- text and Markdown notes ---------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(?:\[[ xX]\]\s+)?")
_SKIP = re.compile(r"^\s*(?:#|```|~~~|(?:[-*_]\s*){3,}$|<!--)")


async def from_text(
    text: str, user_id: str, extractor: Extractor, *, reference_time: datetime, speaker: str = "User"
) -> Conversion:
    """Convert notes, one memory per line or bullet, each read by `extractor` (which may find several).

    A line is read as said by `speaker` at `reference_time` ("tomorrow" resolves against it). Lines
    with no durable fact (a question, small talk) are skipped and reported.
    """
    result = Conversion(user_id)
    now = datetime.now(UTC).isoformat()
    in_fence = False
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.strip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence or not raw.strip() or _SKIP.match(raw):
            continue
        line = _BULLET.sub("", raw).strip()
        if not line:
            continue
        extraction = await run_extractor(extractor, line, speaker=speaker, reference_time=reference_time)
        if not extraction.memories:
            result.skipped.append(f"line {number}: no durable fact in {line[:60]!r}")
            continue
        for index, found in enumerate(extraction.memories):
            when = None
            if found.event_time is not None:
                when = found.event_time.date().isoformat() if found.event_date_only else found.event_time.isoformat()
            result.memories.append(
                _memory(
                    user_id,
                    "text",
                    f"{line}\x00{index}",
                    found.content,
                    now=now,
                    category=found.category,
                    confidence=found.confidence,
                    entities=found.entities,
                    tags=found.tags,
                    event_time=when,
                    source_message=line,
                    extractor=extraction.extractor,
                )
            )
            result.count("line" if index == 0 else "further fact of a line")
    return result
