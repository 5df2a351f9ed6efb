"""The OpenAI-compatible extractor: any server with `POST /v1/chat/completions` (llama.cpp's `llama-server`,
LM Studio, vLLM, LocalAI, Jan, Ollama's own /v1), over httpx.

One call to `extract`:

1. The same chat as the Ollama extractor (`prompts.chat_messages`), sent with `max_tokens` (the output cap),
   a low temperature, `repeat_penalty` (an extension llama.cpp, LocalAI and vLLM read; others ignore it) and
   `response_format = {"type": "json_schema", "json_schema": {"name": ..., "schema": <ExtractionReply>}}`
   (https://platform.openai.com/docs/guides/structured-outputs), so a server that supports structured outputs
   constrains the reply to the schema.
2. A server that refuses `response_format` (HTTP 400 or 422) is asked again without it, and remembered as one
   that does not support it; the reply is then only as good as the prompt.
3. The reply is validated with pydantic. One that does not validate gets one repair turn (the model sees its
   reply and what was wrong, and is asked for the JSON alone); if that fails too, `ExtractionError`.

The whole call is bounded by `timeout_seconds`; on timeout the request is cancelled (its connection closed),
which llama.cpp and vLLM take as the signal to stop generating. The API key (HARMONIA_LLM_API_KEY) goes only
into the `Authorization` header; it is never logged or put in an error message.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from harmonia_mcp.extract import ExtractionError
from harmonia_mcp.extract.ollama import (
    MAX_TOKENS,
    REPEAT_PENALTY,
    REPLY_SCHEMA,
    TEMPERATURE,
    Availability,
    clean_reply,
    validated_reply,
    within,
)
from harmonia_mcp.extract.prompts import PROMPT_VERSION, chat_messages
from harmonia_mcp.models import ExtractedMemory

if TYPE_CHECKING:
    import httpx  # imported when an OpenAIExtractor is built, not with this module (cold start)

__all__ = ["OpenAIExtractor"]

logger = logging.getLogger(__name__)

REPAIR_PROMPT = (
    "That reply is not valid: {problem}. Answer again with only the JSON object, in the form "
    '{{"memories": [{{"content": "...", "category": "...", "confidence": 0.9, "entities": []}}]}}.'
)


class OpenAIExtractor:
    """Extract memories with a model behind an OpenAI-compatible server (`name = "openai"`).

    Args:
        base_url: the API root, with its `/v1` (e.g. "http://127.0.0.1:8080/v1"; HARMONIA_LLM_BASE_URL).
        model: the model name the server knows (HARMONIA_LLM_MODEL).
        api_key: sent as `Authorization: Bearer ...` when given (HARMONIA_LLM_API_KEY); never logged.
        timeout_seconds: the most one `extract` (with its repair turn) or one `probe` may take.
        max_retries: repair turns after a reply that does not validate (one by default).
        max_tokens: the most tokens one reply may have (`max_tokens`).
        repeat_penalty: sent as `repeat_penalty`.
        client: an `httpx.AsyncClient` to use instead of building one (it is not closed by `aclose`).
    """

    name: str = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = 30.0,
        max_retries: int = 1,
        max_tokens: int = MAX_TOKENS,
        repeat_penalty: float = REPEAT_PENALTY,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.host = base_url.rstrip("/")
        self.model = model
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.repeat_penalty = repeat_penalty
        self.schema_supported: bool | None = None  # None until the server has accepted or refused response_format
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        import httpx

        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(base_url=self.host, headers=headers, timeout=timeout_seconds)

    async def aclose(self) -> None:
        """Close the HTTP client this extractor built."""
        if self._owns_client:
            await self._client.aclose()

    async def extract(self, message: str, *, speaker: str, reference_time: datetime) -> list[ExtractedMemory]:
        """Return the memories the model finds in `message` (see the module docstring).

        Raises:
            ExtractionError: the server is unreachable, answered an HTTP error (404: unknown model; 401/403:
                the API key was refused), took longer than `timeout_seconds` (`timed_out`), or gave no valid
                reply after `max_retries` repair turns. `unavailable` is set for all but the last kind.
        """
        messages: list[dict[str, str]] = list(chat_messages(message, speaker, reference_time))
        reply = await within(
            self.timeout_seconds,
            f"the OpenAI-compatible server at {self.host}",
            validated_reply(
                self._chat, messages, attempts=1 + self.max_retries, model=self.model, repair_prompt=REPAIR_PROMPT
            ),
        )
        memories = clean_reply(reply, speaker, reference_time)
        logger.info("openai %s (prompt %s): %d memories", self.model, PROMPT_VERSION, len(memories))
        return memories

    async def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int) -> str:
        """One schema-constrained chat (e.g. a reconciliation judgment) within `timeout_seconds`; the reply's text.

        Raises:
            ExtractionError: as `extract`, for the HTTP call (no validation here).
        """
        return await within(
            self.timeout_seconds,
            f"the OpenAI-compatible server at {self.host}",
            self._chat(messages, schema, max_tokens, name="judgment"),
        )

    async def _chat(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any] = REPLY_SCHEMA,
        max_tokens: int | None = None,
        *,
        name: str = "extraction_reply",
    ) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": TEMPERATURE,
            "max_tokens": max_tokens or self.max_tokens,
            "repeat_penalty": self.repeat_penalty,
            "stream": False,
        }
        if self.schema_supported is not False:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        response = await self._post(body)
        if response.status_code in (400, 422) and "response_format" in body:
            # Trigger: a server without structured outputs. Outcome: ask without it, from now on.
            logger.warning(
                "%s refused response_format (HTTP %d); asking without a schema", self.host, response.status_code
            )
            self.schema_supported = False
            del body["response_format"]
            response = await self._post(body)
        elif response.status_code == 200 and "response_format" in body:
            self.schema_supported = True
        if response.status_code != 200:
            raise self._http_error(response)
        try:
            choice = response.json()["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise ExtractionError(
                f"the server at {self.host} sent a reply that is not the chat completions API's JSON ({error!r})"
            ) from None
        if choice.get("finish_reason") == "length":
            logger.warning("openai reply reached the %d-token cap (max_tokens)", self.max_tokens)
        return content if isinstance(content, str) else ""

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        import httpx

        try:
            return await self._client.post("/chat/completions", json=body)
        except httpx.ConnectError:
            raise ExtractionError(
                f"the OpenAI-compatible server does not answer at {self.host} (connection refused)", unavailable=True
            ) from None
        except httpx.TimeoutException:
            raise ExtractionError(
                f"the OpenAI-compatible server at {self.host} did not reply within {self.timeout_seconds:g} s",
                unavailable=True,
                timed_out=True,
            ) from None
        except httpx.HTTPError as error:
            raise ExtractionError(f"the request to {self.host} failed: {error}", unavailable=True) from None

    def _http_error(self, response: httpx.Response) -> ExtractionError:
        detail = _error_text(response)
        if response.status_code == 404:
            return ExtractionError(
                f"the server at {self.host} has no model {self.model} (HTTP 404: {detail}); check HARMONIA_LLM_MODEL",
                unavailable=True,
            )
        if response.status_code in (401, 403):
            return ExtractionError(
                f"the server at {self.host} refused the API key (HTTP {response.status_code}); "
                "check HARMONIA_LLM_API_KEY",
                unavailable=True,
            )
        return ExtractionError(
            f"the server at {self.host} answered HTTP {response.status_code}: {detail}", unavailable=True
        )

    async def probe(self) -> Availability:
        """Ask the server for its models (`GET /models`) within `min(timeout_seconds, 5)` seconds. Never raises.

        Returns:
            ok when the server answers; the detail says whether it lists the model (servers such as
            llama-server serve one model under any name, so an unlisted name is not an error).
        """
        import httpx

        limit = min(self.timeout_seconds, 5.0)
        try:
            with anyio.fail_after(limit):
                response = await self._client.get("/models")
        except TimeoutError:
            return Availability(False, f"the OpenAI-compatible server at {self.host} did not answer within {limit:g} s")
        except httpx.ConnectError:
            return Availability(
                False, f"the OpenAI-compatible server does not answer at {self.host} (connection refused)"
            )
        except httpx.HTTPError as error:
            return Availability(False, f"the server at {self.host} could not be asked for its models: {error}")
        if response.status_code in (401, 403):
            return Availability(False, f"the server at {self.host} refused the API key (HTTP {response.status_code})")
        if response.status_code != 200:
            return Availability(False, f"the server at {self.host} answered HTTP {response.status_code} to GET /models")
        try:
            names = tuple(str(entry["id"]) for entry in response.json().get("data", []))
        except (ValueError, KeyError, TypeError, AttributeError):
            names = ()
        listed = "is listed" if self.model in names else "is not listed (the server may still serve it)"
        return Availability(True, f"{self.model} {listed} at {self.host}", names)


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:200]
