"""Errors raised by the core, and pydantic validation errors in a person's words.

The MCP layer turns each `HarmoniaError` into a tool error with the same message; `describe_validation_error`
is how the MCP layer (tool arguments) and the CLI (settings) report a `ValidationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError


class HarmoniaError(Exception):
    """Base class: a failure the caller could have avoided, with a message that says what is allowed."""


class InvalidInput(HarmoniaError, ValueError):
    """An argument is malformed or out of range (empty message, bad user id, malformed date, ...)."""


class MemoryNotFound(HarmoniaError, LookupError):
    """No active memory with that id exists for that user."""

    def __init__(self, memory_id: str, user_id: str, detail: str = "") -> None:
        self.memory_id = memory_id
        self.user_id = user_id
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"No memory {memory_id!r} for user {user_id!r}{suffix}. "
            "Call search_memories or list_memories to find valid memory ids."
        )


class AccessDenied(HarmoniaError, PermissionError):
    """The caller's bearer token is bound to another user than the one asked for."""


class AlreadyActive(HarmoniaError, ValueError):
    """`restore_memory` was asked to restore a memory that is active: there is nothing to undo."""

    def __init__(self, memory_id: str) -> None:
        self.memory_id = memory_id
        super().__init__(
            f"memory {memory_id!r} is already active: there is nothing to restore "
            "(restore_memory undoes a delete or brings back a superseded version)"
        )


# --- pydantic validation errors in a person's words ----------------------------------------------

_KIND = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "dict": "a JSON object",
    "list": "a list",
}
_BOUND = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "above"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "below"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _place(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "value"
    return name + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])


def _schema_bounds(schema: Mapping[str, Any] | None, name: str) -> tuple[Any, Any]:
    """The `minimum`/`maximum` (or exclusive ones) of property `name` in a JSON schema, looking into anyOf."""
    if schema is None:
        return None, None
    prop: Mapping[str, Any] = schema.get("properties", {}).get(name, {})
    for candidate in [prop, *prop.get("anyOf", [])]:
        low = candidate.get("minimum", candidate.get("exclusiveMinimum"))
        high = candidate.get("maximum", candidate.get("exclusiveMaximum"))
        if low is not None or high is not None:
            return low, high
    return None, None


def describe_error(error: Mapping[str, Any], *, name: str, schema: Mapping[str, Any] | None = None) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as a sentence: the name, the value, what is allowed.

    Args:
        error: the error dict (`type`, `loc`, `msg`, `input`, `ctx`).
        name: how a person knows the value: an argument (`limit`) or a variable (`HARMONIA_PORT`).
        schema: the JSON schema of the arguments, to state both ends of a range when one is broken.

    Returns:
        E.g. "limit 1000 is out of range: use 1 to 100". Never pydantic's boilerplate or its links.
    """
    kind: str = error.get("type", "")
    value = error.get("input")
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "missing":
        loc = error.get("loc") or ("",)
        described = (schema or {}).get("properties", {}).get(str(loc[0]), {}).get("description")
        return f"{name} is missing: it is required" + (f" ({described.rstrip('.')})" if described else "")
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{name} {_shown(value)} is not allowed: use one of {expected}"
    if kind in _BOUND:
        key, words = _BOUND[kind]
        loc = error.get("loc") or ("",)
        low, high = _schema_bounds(schema, str(loc[0]))
        if low is not None and high is not None:
            return f"{name} {_shown(value)} is out of range: use {low} to {high}"
        return f"{name} {_shown(value)} is out of range: it must be {words} {ctx.get(key)}"
    if kind in ("string_too_short", "string_too_long", "too_short", "too_long"):
        return f"{name} {_shown(value)} is the wrong length: {str(error.get('msg', '')).lower()}"
    if kind == "string_pattern_mismatch":
        return f"{name} {_shown(value)} is not in the allowed form ({ctx.get('pattern')})"
    for prefix, wanted in _KIND.items():
        if kind.startswith(prefix + "_") or kind == prefix:
            return f"{name} {_shown(value)} is not {wanted}"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{name} {_shown(value)} is invalid: {message}"


def describe_validation_error(
    error: ValidationError,
    *,
    name: Callable[[tuple[int | str, ...]], str] = _place,
    schema: Mapping[str, Any] | None = None,
) -> str:
    """Every error of `error` as one sentence each, joined by "; " (see `describe_error`).

    Args:
        error: what pydantic raised.
        name: turns an error's location into the name a person uses (default: `tags[0]`, `metadata.key`).
        schema: the JSON schema of the arguments (for both ends of a range).
    """
    return "; ".join(describe_error(item, name=name(item["loc"]), schema=schema) for item in error.errors())


class QueryTooExpensive(HarmoniaError):
    """A read ran past the store's per-statement work budget and was stopped; nothing was changed."""


class StoreBusy(HarmoniaError):
    """The database stayed locked by another process through every retry; the caller may retry later."""
