"""Choosing the extractor, and never losing a message when the model fails.

`HARMONIA_EXTRACTOR`:

- `rules`: the rules extractor only; Ollama is never contacted.
- `ollama`: every message goes to the model; when that fails (connection refused, timeout, HTTP
  error, model not pulled, invalid or schema-violating replies) the rules extractor stores the
  message instead and the result's `warnings` say why.
- `auto` (the default): like `ollama`, except that while Ollama is known to be unavailable (the
  last probe or call found it down, slow, or without the model) messages go straight to the rules
  extractor, with a warning, instead of waiting for a model that is not there. A background task
  probes Ollama (`GET /api/tags`) at start-up and every `recheck_seconds` after, so the model is
  used again once it is pulled or started. Start-up never waits for the probe, and a call never
  waits longer than the model's timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Literal

import anyio

from harmonia_mcp.config import Settings
from harmonia_mcp.extract import Extraction, ExtractionError, Extractor
from harmonia_mcp.extract.ollama import Availability, OllamaExtractor
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.models import ExtractedMemory
from harmonia_mcp.tasks import running

__all__ = ["RECHECK_SECONDS", "FallbackExtractor", "open_extractor"]

logger = logging.getLogger(__name__)

# How often auto mode asks Ollama again; short enough that `ollama pull` is noticed within a minute.
RECHECK_SECONDS = 30.0


class FallbackExtractor:
    """The model first, the rules extractor whenever the model fails (see the module docstring).

    Args:
        model: the Ollama extractor.
        fallback: the extractor that never fails (the rules extractor).
        mode: "auto" skips the model while it is known to be unavailable; "ollama" always tries it.
        recheck_seconds: how often `watch` probes Ollama.
    """

    name: str = "ollama"

    def __init__(
        self,
        model: OllamaExtractor,
        fallback: Extractor,
        *,
        mode: Literal["auto", "ollama"] = "auto",
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self.model = model
        self.fallback = fallback
        self.mode = mode
        self.recheck_seconds = recheck_seconds
        self.availability: Availability | None = None  # None until the first probe or call says
        self.checked_at: float | None = None  # time.monotonic() of that

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """The memories of `extract_with_report`, for callers that only want those."""
        return (await self.extract_with_report(message, speaker=speaker, reference_time=reference_time)).memories

    async def extract_with_report(self, message: str, *, speaker: str, reference_time: datetime) -> Extraction:
        """Extract with the model, or with the fallback when the model is unavailable or fails.

        Returns:
            The memories, the name of the extractor that produced them ("ollama" or "rules"), and a
            warning naming the reason whenever the model was not used. Never raises `ExtractionError`.
        """
        known = self.availability
        if self.mode == "auto" and known is not None and not known.ok:
            return await self._fall_back(message, speaker, reference_time, known.detail)
        try:
            memories = await self.model.extract(message, speaker=speaker, reference_time=reference_time)
        except ExtractionError as error:
            logger.warning("Ollama extractor failed, using %s: %s", self.fallback.name, error.reason)
            if error.unavailable:
                self._record(Availability(False, error.reason))
            return await self._fall_back(message, speaker, reference_time, error.reason)
        if known is None or not known.ok:
            self._record(Availability(True, f"{self.model.model} answered"))
        return Extraction(memories, self.model.name)

    async def _fall_back(self, message: str, speaker: str, reference_time: datetime, reason: str) -> Extraction:
        memories = await self.fallback.extract(message, speaker=speaker, reference_time=reference_time)
        warning = f"The Ollama extractor was not used: {reason}. The {self.fallback.name} extractor read the message."
        return Extraction(memories, self.fallback.name, [warning])

    def _record(self, availability: Availability) -> None:
        self.availability = availability
        self.checked_at = time.monotonic()

    async def refresh(self) -> Availability:
        """Probe Ollama now and remember the answer (bounded by the model's probe timeout)."""
        availability = await self.model.probe()
        if availability != self.availability:
            logger.info("Ollama: %s", availability.detail)
        self._record(availability)
        return availability

    async def watch(self) -> None:
        """Probe Ollama now and every `recheck_seconds`, forever; run it in a task group and cancel it."""
        while True:
            await self.refresh()
            await anyio.sleep(self.recheck_seconds)


@asynccontextmanager
async def open_extractor(settings: Settings, *, recheck_seconds: float = RECHECK_SECONDS) -> AsyncIterator[Extractor]:
    """The extractor `settings.extractor` asks for, with its background probe running while in use.

    `rules` gives a `RulesExtractor`; `auto` and `ollama` give a `FallbackExtractor` over an
    `OllamaExtractor` at `settings.ollama_host`. In `auto` mode a task probes Ollama in the background
    until the context exits. Entering never waits for Ollama.
    """
    if settings.extractor == "rules":
        yield RulesExtractor()
        return
    model = OllamaExtractor(
        settings.ollama_host,
        settings.ollama_model,
        timeout_seconds=settings.ollama_timeout_seconds,
        max_retries=settings.ollama_max_retries,
    )
    extractor = FallbackExtractor(model, RulesExtractor(), mode=settings.extractor, recheck_seconds=recheck_seconds)
    try:
        if settings.extractor == "ollama":
            yield extractor
            return
        async with running(extractor.watch):
            yield extractor
    finally:
        with anyio.CancelScope(shield=True):
            await model.aclose()
