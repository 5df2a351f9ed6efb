"""The Ollama extractor: a local model with structured outputs, validated by pydantic.

One call to `extract`:

1. Builds the chat from `prompts.chat_messages` (system prompt, few-shot turns, the message).
2. Calls `AsyncClient.chat(model, messages, format=<JSON schema of ExtractionReply>, stream=False,
   keep_alive=..., options={"temperature": TEMPERATURE, "num_predict": max_tokens, "repeat_penalty": ...})`.
   Ollama constrains the model's output to the schema (structured outputs,
   https://ollama.com/blog/structured-outputs); `num_predict` caps the reply, so a model that runs away
   ("fluffy, fluffy, ...") stops at the cap instead of at the timeout, and the repeat penalty makes that
   rarer (option names: https://github.com/ollama/ollama/blob/main/docs/modelfile.md#parameter).
3. Validates the reply with pydantic. A reply that is not JSON or does not fit the schema is asked
   again, at most `max_retries` more times.
4. Cleans each memory: empty content dropped, confidence clamped to 0-1, an unknown category mapped
   to `other`, any first-person word rewritten with the speaker's name, time words resolved by
   `temporal.resolve_time` against the reference time and replaced by the absolute date.

The whole call, retries included, is bounded by `timeout_seconds`. On timeout the request is
cancelled, which closes its HTTP connection: Ollama stops generating for a client that went away, so
the next request does not queue behind a runaway one. Every failure raises
`ExtractionError` with a reason a person can act on; this module never falls back by itself
(`extract/select.py` does).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from pydantic import BaseModel, Field, JsonValue, ValidationError, field_validator

from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.prompts import PROMPT_VERSION, chat_messages
from harmonia_mcp.extract.rules import third_person
from harmonia_mcp.models import Category, ExtractedMemory
from harmonia_mcp.temporal import resolve_time, with_absolute_time

if TYPE_CHECKING:
    from ollama import AsyncClient, ResponseError

# `ollama` (and httpx under it) is imported when an OllamaExtractor is built, not with this module: with the rules
# extractor it is never loaded (cold start, docs/benchmarks.md "Cold start and footprint").

__all__ = [
    "MAX_TOKENS",
    "REPEAT_PENALTY",
    "TEMPERATURE",
    "Availability",
    "ExtractionReply",
    "OllamaExtractor",
    "ReplyMemory",
    "clean_reply",
    "describe_invalid",
    "validated_reply",
    "within",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Low but not zero: extraction wants the most likely reading; Ollama's default is 0.8.
TEMPERATURE = 0.1
# Output tokens per reply. A reply of ten memories is about 400 tokens of JSON; the most SmolLM2-135M wrote for
# one of the dev messages was 140 (docs/benchmarks.md, issue 13).
MAX_TOKENS = 512
# Above llama.cpp's neutral 1.0: without it SmolLM2-135M loops on one word until the cap
# (../shared/bench/models.md). 1.1 is Ollama's documented default, sent explicitly because other servers differ.
REPEAT_PENALTY = 1.1
# How long Ollama keeps the model loaded after a call: a cold load costs 10-15 s on a small CPU, so keep it
# between the messages of a conversation (Ollama's own default is 5 minutes).
KEEP_ALIVE = "30m"
MAX_CONTENT_CHARS = 500
MAX_ENTITIES = 20
_CATEGORIES = [category.value for category in Category]
_CATEGORY_SCHEMA: dict[str, JsonValue] = {"enum": [category.value for category in Category]}


class ReplyMemory(BaseModel):
    """One memory as the model writes it. Lenient on purpose: odd values are repaired, not refused."""

    content: str = Field(description="One third-person sentence.")
    # The schema sent to the model lists the categories; validation still accepts any string (→ other).
    category: str = Field(default="other", json_schema_extra=_CATEGORY_SCHEMA)
    confidence: float = Field(default=0.7, ge=0.0, le=1.0)
    entities: list[str] = Field(default_factory=list[str])

    @field_validator("confidence", mode="before")
    @classmethod
    def _clamp(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return min(1.0, max(0.0, float(value)))
        return value

    @field_validator("category", mode="before")
    @classmethod
    def _known_category(cls, value: Any) -> Any:
        if isinstance(value, str):
            name = value.strip().lower()
            return name if name in _CATEGORIES else Category.OTHER.value
        return value


class ExtractionReply(BaseModel):
    """The whole reply: `{"memories": [...]}`; an empty list for small talk and questions."""

    memories: list[ReplyMemory]


REPLY_SCHEMA: dict[str, Any] = ExtractionReply.model_json_schema()


@dataclass(frozen=True)
class Availability:
    """What a probe of the Ollama server found.

    Attributes:
        ok: the server answers and the model is pulled.
        detail: a sentence for a person ("llama3.2:3b is pulled", or why not).
        models: the model names the server has (empty when it did not answer).
    """

    ok: bool
    detail: str
    models: tuple[str, ...] = ()


def _same_model(wanted: str, available: str) -> bool:
    # Ollama names "llama3.2" and "llama3.2:latest" the same model.
    def full(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    return full(wanted) == full(available)


class OllamaExtractor:
    """Extract memories with a model served by Ollama (`name = "ollama"`).

    Args:
        host: the Ollama server, e.g. "http://127.0.0.1:11434" (OLLAMA_HOST).
        model: the model name, e.g. "llama3.2:3b"; it must be pulled (`ollama pull llama3.2:3b`).
        timeout_seconds: the most one `extract` (with its retries) or one `probe` may take.
        max_retries: how many more times to ask after a reply that does not validate.
        client: an `ollama.AsyncClient` to use instead of building one (it is not closed by `aclose`).
        max_tokens: the most tokens one reply may have (`num_predict`).
        keep_alive: how long Ollama keeps the model loaded after the call (Ollama's duration syntax).
        repeat_penalty: sent as the `repeat_penalty` option.
    """

    name: str = "ollama"

    def __init__(
        self,
        host: str,
        model: str,
        *,
        timeout_seconds: float = 30.0,
        max_retries: int = 2,
        client: AsyncClient | None = None,
        max_tokens: int = MAX_TOKENS,
        keep_alive: str = KEEP_ALIVE,
        repeat_penalty: float = REPEAT_PENALTY,
    ) -> None:
        self.host = host
        self.model = model
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.keep_alive = keep_alive
        self.repeat_penalty = repeat_penalty
        from ollama import AsyncClient

        self._owns_client = client is None
        self._client = client or AsyncClient(host=host, timeout=timeout_seconds)

    async def aclose(self) -> None:
        """Close the HTTP client this extractor built."""
        if self._owns_client:
            await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves it unannotated

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """Return the memories the model finds in `message` (see the module docstring).

        Raises:
            ExtractionError: Ollama is unreachable, answered an HTTP error (404 when the model is not
                pulled), took longer than `timeout_seconds`, or gave no valid reply in
                `1 + max_retries` attempts. `unavailable` is set for the first three kinds.
        """
        messages = chat_messages(message, speaker, reference_time)
        reply = await within(
            self.timeout_seconds,
            f"Ollama at {self.host}",
            validated_reply(self._chat, messages, attempts=1 + self.max_retries, model=self.model),
        )
        memories = clean_reply(reply, speaker, reference_time)
        logger.info("ollama %s (prompt %s): %d memories", self.model, PROMPT_VERSION, len(memories))
        return memories

    async def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int) -> str:
        """One schema-constrained chat (e.g. a reconciliation judgment) within `timeout_seconds`; the reply's text.

        Raises:
            ExtractionError: as `extract`, for the HTTP call (no validation here).
        """
        return await within(self.timeout_seconds, f"Ollama at {self.host}", self._chat(messages, schema, max_tokens))

    async def _chat(
        self, messages: list[dict[str, str]], schema: dict[str, Any] = REPLY_SCHEMA, max_tokens: int | None = None
    ) -> str:
        import httpx
        from ollama import ResponseError

        try:
            response = await self._client.chat(
                model=self.model,
                messages=messages,
                format=schema,
                options={
                    "temperature": TEMPERATURE,
                    "num_predict": max_tokens or self.max_tokens,
                    "repeat_penalty": self.repeat_penalty,
                },
                keep_alive=self.keep_alive,
                stream=False,
            )
        except ConnectionError:  # the ollama client turns httpx.ConnectError into this
            raise ExtractionError(
                f"Ollama does not answer at {self.host} (connection refused)", unavailable=True
            ) from None
        except ResponseError as error:
            raise _response_error(error, self.model, self.host) from None
        except httpx.TimeoutException:
            raise ExtractionError(
                f"Ollama at {self.host} did not reply within {self.timeout_seconds:g} s",
                unavailable=True,
                timed_out=True,
            ) from None
        except httpx.HTTPError as error:
            raise ExtractionError(f"the request to Ollama at {self.host} failed: {error}", unavailable=True) from None
        except (ValueError, ValidationError) as error:  # a 200 whose body is not Ollama's JSON
            raise ExtractionError(f"Ollama at {self.host} sent a reply that is not its API's JSON: {error}") from None
        if response.done_reason == "length":
            # Cut by num_predict: the JSON is unfinished; validation reports it and the ask is repeated.
            logger.warning("ollama reply reached the %d-token cap (num_predict)", self.max_tokens)
        return response.message.content or ""

    async def probe(self) -> Availability:
        """Ask the server which models it has (`GET /api/tags`), within `min(timeout_seconds, 5)` seconds.

        Returns:
            `Availability(ok=True, ...)` when the model is pulled, otherwise the reason. Never raises.
        """
        import httpx
        from ollama import ResponseError

        try:
            with anyio.fail_after(min(self.timeout_seconds, 5.0)):
                listed = await self._client.list()
        except TimeoutError:
            return Availability(
                False, f"Ollama at {self.host} did not answer within {min(self.timeout_seconds, 5.0):g} s"
            )
        except ConnectionError:
            return Availability(False, f"Ollama does not answer at {self.host} (connection refused)")
        except ResponseError as error:
            return Availability(False, f"Ollama at {self.host} answered HTTP {error.status_code}: {error.error}")
        except (httpx.HTTPError, ValueError, ValidationError) as error:
            return Availability(False, f"Ollama at {self.host} could not be asked for its models: {error}")
        names = tuple(model.model for model in listed.models if model.model)
        if any(_same_model(self.model, name) for name in names):
            return Availability(True, f"{self.model} is pulled", names)
        return Availability(
            False, f"the model {self.model} is not pulled at {self.host} (run `ollama pull {self.model}`)", names
        )


def _response_error(error: ResponseError, model: str, host: str) -> ExtractionError:
    if error.status_code == 404:
        return ExtractionError(
            f"the model {model} is not pulled at {host} (run `ollama pull {model}`)",
            unavailable=True,
        )
    return ExtractionError(f"Ollama at {host} answered HTTP {error.status_code}: {error.error}", unavailable=True)


async def within(seconds: float, who: str, call: Awaitable[T]) -> T:
    """Await `call`, cancelled after `seconds` (its HTTP request closed, so the server stops generating).

    Raises:
        ExtractionError: `timed_out` and `unavailable`, saying that `who` did not reply in time.
    """
    try:
        with anyio.fail_after(seconds):
            return await call
    except TimeoutError:
        raise ExtractionError(
            f"{who} did not reply within {seconds:g} s (HARMONIA_OLLAMA_TIMEOUT_SECONDS); a smaller model or a "
            "longer timeout may help",
            unavailable=True,
            timed_out=True,
        ) from None


async def validated_reply(
    chat: Callable[[list[dict[str, str]]], Awaitable[str]],
    messages: list[dict[str, str]],
    *,
    attempts: int,
    model: str,
    repair_prompt: str | None = None,
) -> ExtractionReply:
    """Ask `chat` until a reply validates as `ExtractionReply`, at most `attempts` times.

    With `repair_prompt` (a format string with `{problem}`), each new ask shows the model its invalid reply
    and what was wrong; without it the same messages are sent again.

    Raises:
        ExtractionError: no reply validated; the reason quotes the last problem.
    """
    problem = ""
    for attempt in range(attempts):
        content = await chat(messages)
        try:
            return ExtractionReply.model_validate_json(content)
        except ValidationError as error:
            problem = describe_invalid(error, content)
            logger.warning("%s reply %d did not validate: %s", model, attempt + 1, problem)
        if repair_prompt is not None:
            messages = [
                *messages,
                {"role": "assistant", "content": content[:2000]},
                {"role": "user", "content": repair_prompt.format(problem=problem)},
            ]
    raise ExtractionError(f"the model {model} gave no valid reply in {attempts} attempts (last: {problem})")


def clean_reply(reply: ExtractionReply, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
    """The memories of a validated reply, cleaned (see the module docstring, step 4); shared by every model backend."""
    return [memory for item in reply.memories if (memory := _clean(item, speaker, reference_time))]


def describe_invalid(error: ValidationError, content: str) -> str:
    """What was wrong with a reply that did not validate, with its start, for logs and errors."""
    shown = content if len(content) <= 80 else content[:77] + "..."
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return f"not JSON: {shown!r}"
    where = ".".join(str(part) for part in first["loc"]) or "reply"
    return f"JSON that does not fit the schema ({where}: {first['msg']}): {shown!r}"


def _clean(item: ReplyMemory, speaker: str, reference_time: datetime) -> ExtractedMemory | None:
    content = " ".join(item.content.split()).rstrip(".")
    if not content:
        return None
    content = third_person(content, speaker)[:MAX_CONTENT_CHARS]
    content = content[:1].upper() + content[1:]
    resolved = resolve_time(content, reference_time)
    if resolved is not None:
        content = with_absolute_time(content, resolved)
        content = content[:1].upper() + content[1:]
    entities = [name for raw in item.entities[:MAX_ENTITIES] if (name := " ".join(raw.split()))]
    return ExtractedMemory(
        content=content,
        category=Category(item.category),
        confidence=item.confidence,
        entities=list(dict.fromkeys(entities)),
        event_time=resolved.moment if resolved else None,
        event_date_only=resolved is not None and resolved.date_only,
    )
