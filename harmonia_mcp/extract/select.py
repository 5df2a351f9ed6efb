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

"Slow" is separate from "down": a model that timed out `SLOW_AFTER` times in a row answers probes
but cannot keep up, so in `auto` mode it is tried again only every `slow_retry_seconds` (a probe does
not clear it; a reply in time does). `state` says which of unknown / ok / down / slow holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, Protocol

import anyio

from harmonia_mcp.config import Settings
from harmonia_mcp.extract import Extraction, ExtractionError, Extractor
from harmonia_mcp.extract.ollama import Availability, OllamaExtractor
from harmonia_mcp.extract.openai import OpenAIExtractor
from harmonia_mcp.extract.rules import RulesExtractor
from harmonia_mcp.models import ExtractedMemory
from harmonia_mcp.tasks import running

__all__ = ["RECHECK_SECONDS", "SLOW_AFTER", "FallbackExtractor", "ModelState", "open_extractor"]

logger = logging.getLogger(__name__)

# How often auto mode asks Ollama again; short enough that `ollama pull` is noticed within a minute.
RECHECK_SECONDS = 30.0
# Timeouts in a row after which the model counts as slow, and how long a slow model is left alone: twice
# rules out one cold load (10-15 s on a small CPU); five minutes is ten times the probe interval.
SLOW_AFTER = 2
SLOW_RETRY_SECONDS = 300.0

ModelState = Literal["unknown", "ok", "down", "slow"]


class ModelExtractor(Protocol):
    """A model backend (`OllamaExtractor`, `OpenAIExtractor`): extract, probe, close."""

    name: str
    model: str
    host: str

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """The model's memories; raises `ExtractionError`."""
        ...

    async def probe(self) -> Availability:
        """Whether the server answers and has the model; never raises."""
        ...

    async def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int) -> str:
        """One schema-constrained chat; raises `ExtractionError`."""
        ...

    async def aclose(self) -> None:
        """Close the backend's HTTP client."""
        ...


class FallbackExtractor:
    """The model first, the rules extractor whenever the model fails (see the module docstring).

    Args:
        model: the model backend (Ollama or OpenAI-compatible).
        fallback: the extractor that never fails (the rules extractor).
        mode: "auto" skips the model while it is known to be unavailable; "ollama" or "openai" always tries it.
        recheck_seconds: how often `watch` probes Ollama.
        slow_retry_seconds: how long auto mode leaves a slow model alone.
    """

    name: str = "ollama"

    def __init__(
        self,
        model: ModelExtractor,
        fallback: Extractor,
        *,
        mode: Literal["auto", "ollama", "openai"] = "auto",
        recheck_seconds: float = RECHECK_SECONDS,
        slow_retry_seconds: float = SLOW_RETRY_SECONDS,
    ) -> None:
        self.model = model
        self.name = model.name
        self.fallback = fallback
        self.mode = mode
        self.recheck_seconds = recheck_seconds
        self.slow_retry_seconds = slow_retry_seconds
        self.availability: Availability | None = None  # None until the first probe or call says
        self.checked_at: float | None = None  # time.monotonic() of that
        self.timeouts_in_a_row = 0
        self.slow_since: float | None = None  # time.monotonic() when it was last found slow

    @property
    def state(self) -> ModelState:
        """unknown (not asked yet), ok, down (unreachable, HTTP error, not pulled) or slow (see the module)."""
        if self.slow_since is not None:
            return "slow"
        if self.availability is None:
            return "unknown"
        return "ok" if self.availability.ok else "down"

    def skip_reason(self) -> str | None:
        """Why auto mode would not ask the model now (down, or slow and not yet due), or None to ask it."""
        if self.mode != "auto":
            return None
        if self.slow_since is not None:
            if time.monotonic() - self.slow_since < self.slow_retry_seconds:
                return (
                    f"the model {self.model.model} timed out {SLOW_AFTER} times in a row and is left alone for "
                    f"{self.slow_retry_seconds:g} s"
                )
            return None
        known = self.availability
        return known.detail if known is not None and not known.ok else None

    async def extract_model(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """Ask the model only (no fallback), keeping `state` up to date; for the background queue.

        Raises:
            ExtractionError: as `OllamaExtractor.extract`.
        """
        try:
            memories = await self.model.extract(message, speaker=speaker, reference_time=reference_time)
        except ExtractionError as error:
            logger.warning("Ollama extractor failed: %s", error.reason)
            if error.timed_out:
                self.timeouts_in_a_row += 1
                if self.timeouts_in_a_row >= SLOW_AFTER:
                    if self.slow_since is None:
                        logger.warning("Ollama model %s is slow: %d timeouts in a row", self.model.model, SLOW_AFTER)
                    self.slow_since = time.monotonic()
            elif error.unavailable:
                self._record(Availability(False, error.reason))
            raise
        self.timeouts_in_a_row = 0
        self.slow_since = None
        if self.availability is None or not self.availability.ok:
            self._record(Availability(True, f"{self.model.model} answered"))
        return memories

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """The memories of `extract_with_report`, for callers that only want those."""
        return (await self.extract_with_report(message, speaker=speaker, reference_time=reference_time)).memories

    async def extract_with_report(self, message: str, *, speaker: str, reference_time: datetime) -> Extraction:
        """Extract with the model, or with the fallback when the model is unavailable or fails.

        Returns:
            The memories, the name of the extractor that produced them ("ollama" or "rules"), and a
            warning naming the reason whenever the model was not used. Never raises `ExtractionError`.
        """
        skip = self.skip_reason()
        if skip is not None:
            return await self._fall_back(message, speaker, reference_time, skip)
        try:
            memories = await self.extract_model(message, speaker=speaker, reference_time=reference_time)
        except ExtractionError as error:
            return await self._fall_back(message, speaker, reference_time, error.reason)
        return Extraction(memories, self.model.name)

    async def _fall_back(self, message: str, speaker: str, reference_time: datetime, reason: str) -> Extraction:
        memories = await self.fallback.extract(message, speaker=speaker, reference_time=reference_time)
        label = "Ollama" if self.model.name == "ollama" else "OpenAI-compatible"
        warning = f"The {label} extractor was not used: {reason}. The {self.fallback.name} extractor read the message."
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


def model_backend(settings: Settings) -> ModelExtractor:
    """The model backend the settings name: OpenAI-compatible when `extractor` is `openai`, or `auto` with
    `llm_base_url` set; otherwise Ollama at `ollama_host`. The caller closes it (`aclose`).

    Raises:
        ValueError: `extractor=openai` without `llm_base_url` or `llm_model`.
    """
    wants_openai = settings.extractor == "openai" or (settings.extractor == "auto" and settings.llm_base_url)
    if wants_openai:
        if not settings.llm_base_url or not settings.llm_model:
            raise ValueError(
                "HARMONIA_EXTRACTOR=openai needs HARMONIA_LLM_BASE_URL (e.g. http://127.0.0.1:8080/v1) "
                "and HARMONIA_LLM_MODEL"
            )
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
        return OpenAIExtractor(
            settings.llm_base_url,
            settings.llm_model,
            api_key=key,
            timeout_seconds=settings.ollama_timeout_seconds,
            max_retries=max(1, settings.ollama_max_retries),
            max_tokens=settings.llm_max_tokens,
            repeat_penalty=settings.llm_repeat_penalty,
        )
    return OllamaExtractor(
        settings.ollama_host,
        settings.ollama_model,
        timeout_seconds=settings.ollama_timeout_seconds,
        max_retries=settings.ollama_max_retries,
        max_tokens=settings.llm_max_tokens,
        keep_alive=settings.ollama_keep_alive,
        repeat_penalty=settings.llm_repeat_penalty,
    )


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
    model = model_backend(settings)
    extractor = FallbackExtractor(model, RulesExtractor(), mode=settings.extractor, recheck_seconds=recheck_seconds)
    try:
        if settings.extractor != "auto":
            yield extractor
            return
        async with running(extractor.watch):
            yield extractor
    finally:
        with anyio.CancelScope(shield=True):
            await model.aclose()
