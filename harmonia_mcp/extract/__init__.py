"""Extractors turn a message into memories. `RulesExtractor` is the embedded default."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from harmonia_mcp.models import ExtractedMemory


class Extractor(Protocol):
    """Turns one message into zero or more memories.

    `name` is what the stored memory's `extractor` field says ("rules", "ollama").
    """

    name: str

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """Return the durable facts in `message`, in the order they appear.

        Args:
            message: what `speaker` said; non-empty.
            speaker: the name that "I", "me" and "my" refer to (e.g. "User", "Caroline").
            reference_time: when the message was said, timezone-aware; relative times
                ("tomorrow at 2pm") resolve against it, in its time zone.
        """
        ...
