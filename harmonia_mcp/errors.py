"""Errors raised by the core. The MCP layer turns each into a tool error with the same message."""


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


class QueryTooExpensive(HarmoniaError):
    """A read ran past the store's per-statement work budget and was stopped; nothing was changed."""


class StoreBusy(HarmoniaError):
    """The database stayed locked by another process through every retry; the caller may retry later."""
