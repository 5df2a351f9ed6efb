"""Extractors turn a message into memories. `RulesExtractor` is the embedded default.

`OllamaExtractor` (extract/ollama.py) asks a local model; `FallbackExtractor` (extract/select.py) puts
the two together so that a failing model never loses a message; `open_extractor` picks one from the
settings (`HARMONIA_EXTRACTOR=auto|ollama|rules`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

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


class ExtractionError(Exception):
    """An extractor could not produce memories (model down, timed out, invalid replies).

    `reason` is a sentence for a person: what failed and, where there is one, what to do about it.
    `unavailable` is True when the model cannot be reached or is not installed (as opposed to a
    reply that did not validate), so callers can stop trying it until it is back. `timed_out` is True when
    the model did not finish within its timeout (the request was cancelled), which `FallbackExtractor`
    counts towards marking the model "slow".
    """

    def __init__(self, reason: str, *, unavailable: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unavailable = unavailable
        self.timed_out = timed_out


@dataclass(frozen=True)
class Extraction:
    """What one message gave: the memories, the name of the extractor that produced all of them, and
    warnings for the caller (why the preferred extractor was not used)."""

    memories: list[ExtractedMemory]
    extractor: str
    warnings: list[str] = field(default_factory=list[str])


@runtime_checkable
class ReportingExtractor(Protocol):
    """An extractor that says which extractor actually produced the memories (see `FallbackExtractor`)."""

    name: str

    async def extract_with_report(self, message: str, *, speaker: str, reference_time: datetime) -> Extraction:
        """Like `Extractor.extract`, with the producing extractor's name and any warnings. Never raises
        `ExtractionError`: a failure is a fallback plus a warning."""
        ...


async def run_extractor(extractor: Extractor, message: str, *, speaker: str, reference_time: datetime) -> Extraction:
    """Run any extractor and report which one produced the memories.

    A plain `Extractor` is reported under its own `name`, with no warnings; a `ReportingExtractor`
    reports for itself (for example "rules" after the model failed, with the reason in `warnings`).

    Raises:
        ExtractionError: only from a plain extractor that raises it.
    """
    # Why not isinstance: a runtime-checkable Protocol check walks the protocol's members on every call
    # (about 0.1 ms, a tenth of a batched message's whole cost); the method's presence is the same test.
    report = getattr(extractor, "extract_with_report", None)
    if report is not None:
        extraction: Extraction = await report(message, speaker=speaker, reference_time=reference_time)
        return extraction
    memories = await extractor.extract(message, speaker=speaker, reference_time=reference_time)
    return Extraction(memories, extractor.name)
