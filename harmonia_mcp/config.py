"""Settings: one pydantic model, read from `HARMONIA_*` environment variables and command-line flags.

Every default works offline with no model: the database lives in the user's data directory
and the rules extractor is used whenever Ollama does not answer.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
import tzlocal
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from harmonia_mcp.models import USER_ID_PATTERN, ResolutionStrategy


def default_db_path() -> str:
    """Where memories live by default: `<user data dir>/harmonia-mcp/memories.db`.

    On Linux that is `~/.local/share/harmonia-mcp/memories.db` (platformdirs' `user_data_dir`).
    """
    return str(Path(platformdirs.user_data_dir("harmonia-mcp", appauthor=False)) / "memories.db")


def system_timezone() -> str:
    """The machine's IANA time zone name (tzlocal reads TZ, /etc/localtime, the registry), or "UTC"
    when it cannot be named."""
    try:
        name = tzlocal.get_localzone_name()
    except (LookupError, OSError, ValueError):  # tzlocal raises ZoneInfoNotFoundError (a KeyError) and the like
        return "UTC"
    if not name:
        return "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC"
    return name


# Requests per minute per caller over HTTP unless configured: the Harmonia API's documented rate limit.
DEFAULT_HTTP_RATE_LIMIT = 100
# Seconds of read work per caller per minute over HTTP (throttle.ReadBudget; issue 12). None under stdio: its one
# caller is the host that started the server, so there is no other caller for the budget to protect, and the lane's
# rest doubled a back-to-back search's time (docs/benchmarks.md, issue 9 fifth round).
DEFAULT_HTTP_READ_SECONDS = 6.0


def canonical_host(host: str) -> str:
    """The address `host` binds, in its one canonical spelling, so every check sees what the socket will do.

    An empty host and the legacy IPv4 forms that `getaddrinfo`/`inet_aton` accept ("0", "0.0", "0x0",
    "127.1") become dotted quads ("0.0.0.0", "127.0.0.1"); IPv6 addresses (with or without brackets) their
    compressed form ("::"); names are kept (lower-cased), e.g. "localhost".
    """
    text = host.strip()
    if not text:
        return "0.0.0.0"  # uvicorn (asyncio's create_server) binds every interface for an empty host
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if all(character.isalnum() or character == "." for character in text):
        try:
            return socket.inet_ntoa(socket.inet_aton(text))
        except OSError:
            pass
    return text.lower()


class Settings(BaseSettings):
    """All configuration. Environment variables carry the `HARMONIA_` prefix (e.g. `HARMONIA_DB_PATH`)."""

    model_config = SettingsConfigDict(env_prefix="HARMONIA_", extra="ignore", populate_by_name=True)

    db_path: str = Field(default_factory=default_db_path, description="SQLite file, or ':memory:' for tests.")
    default_user: str = Field(default="default", pattern=USER_ID_PATTERN)
    extractor: Literal["auto", "ollama", "openai", "rules"] = "auto"
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("HARMONIA_OLLAMA_HOST", "OLLAMA_HOST", "ollama_host"),
    )
    ollama_model: str = "llama3.2:3b"
    ollama_timeout_seconds: float = Field(default=30.0, gt=0)
    ollama_max_retries: int = Field(default=2, ge=0, le=5, description="Asks after a reply that does not validate.")
    # --- an OpenAI-compatible server (llama-server, LM Studio, vLLM, LocalAI, Jan), issue 13 ---
    llm_base_url: str | None = Field(
        default=None,
        description="The server's API root with /v1, e.g. http://127.0.0.1:8080/v1. Set, it is used instead of "
        "Ollama (HARMONIA_EXTRACTOR=auto or openai).",
    )
    llm_model: str = Field(default="", description="The model name the OpenAI-compatible server serves.")
    llm_api_key: SecretStr | None = Field(default=None, description="Sent as a bearer token; never logged.")
    # --- the local model's generation bounds and the background extraction queue (issue 13) ---
    llm_max_tokens: int = Field(
        default=512, ge=16, le=8192, description="Most output tokens per model reply (num_predict / max_tokens)."
    )
    llm_repeat_penalty: float = Field(default=1.1, ge=1.0, le=2.0, description="Repeat penalty sent to the model.")
    ollama_keep_alive: str = Field(default="30m", description="How long Ollama keeps the model loaded after a call.")
    extraction: Literal["auto", "async", "sync"] = Field(
        default="auto",
        description="async: store_memory answers with the rules' memories at once and the model runs in a "
        "background queue; sync: store_memory waits for the model; auto: async whenever a model is configured.",
    )
    extraction_max_attempts: int = Field(default=3, ge=1, le=10, description="Model attempts per queued message.")
    extraction_retry_seconds: float = Field(
        default=10.0, gt=0, description="Backoff before a failed job's first retry; doubles with each attempt."
    )
    llm_reconcile: bool = Field(
        default=True,
        description="In the background queue, ask the model about candidate pairs the rules cannot classify.",
    )
    extraction_queue_limit: int = Field(
        default=1000, ge=1, description="Most jobs waiting; beyond it messages are stored by rules only."
    )
    max_message_bytes: int = Field(default=32 * 1024, ge=1, description="Largest message store_memory accepts.")
    timezone: str = Field(
        default_factory=system_timezone,
        description="IANA zone of the user: 'tomorrow' resolves in it; timestamps without an offset are read in it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # --- HTTP transports (sse, streamable-http); see docs/remote.md ---
    host: str = Field(default="127.0.0.1", description="Address the HTTP transports bind to.")
    port: int = Field(default=8765, ge=0, le=65535, description="TCP port of the HTTP transports (0: any free port).")
    auth_token: SecretStr | None = Field(default=None, description="One bearer token, bound to default_user.")
    auth_tokens_file: str | None = Field(default=None, description="File of `token user_id` lines, '#' comments.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host header values accepted besides loopback, comma-separated, e.g. 'memory.lan:*'.",
    )
    # 1 MiB: far above the largest valid call (a 32 KiB message plus 16 KiB metadata, JSON-escaped).
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest HTTP request body accepted.")
    # --- limits per caller (a bearer token, or every unauthenticated client together); 0 turns one off ---
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="Requests per caller per minute; HTTP 429 past it. Default: 100 over HTTP (the Harmonia API's "
        "limit) and none under stdio (one local client); a value set applies to every transport.",
    )
    max_concurrent_requests: int = Field(
        default=2, ge=0, description="Tool calls and resource reads of one caller running at once (8 more wait)."
    )
    max_sessions_per_caller: int = Field(
        default=16, ge=0, description="Streamable HTTP sessions (or SSE connections) one caller may hold open at once."
    )
    read_seconds_per_minute: float | None = Field(
        default=None,
        ge=0,
        description="Seconds of read work (searches, lists, recall) per caller per minute, a sixth of it at once, "
        "before its reads wait in one shared lane. Default: 6 over HTTP and none under stdio (one local client); "
        "a value set applies to every transport (0: no budget).",
    )
    read_connections: int = Field(
        default=4, ge=1, le=32, description="Read-only SQLite connections serving reads in parallel."
    )
    max_sessions: int = Field(
        default=1000, ge=1, description="Streamable HTTP sessions (or SSE connections) open at once, all callers."
    )
    session_idle_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A streamable HTTP session or SSE connection with no request for this long is closed.",
    )
    resolution_strategy: ResolutionStrategy = Field(
        default="auto", description="store_memory's reconciliation strategy when a call names none."
    )
    user_resolution_strategies: dict[str, ResolutionStrategy] = Field(
        default_factory=dict[str, ResolutionStrategy],
        description='Per-user defaults as a JSON object, e.g. {"alice": "version"}; others get resolution_strategy.',
    )
    # --- search by meaning; see docs/search.md ---
    embedder: Literal["embedded", "ollama", "none"] = Field(
        default="embedded",
        description="What embeds memories: the bundled MiniLM ONNX model, Ollama, or none (keyword search only).",
    )
    embed_model: str = Field(default="nomic-embed-text", description="Ollama's embedding model (embedder=ollama).")
    embed_model_path: str | None = Field(
        default=None, description="An ONNX file of all-MiniLM-L6-v2 to use instead of the packaged one."
    )
    model_cache_dir: str | None = Field(
        default=None,
        description="Where the embedded model is cached, rewritten to load lean (default: the user cache dir).",
    )
    recency_half_life_days: float = Field(
        default=30.0, gt=0, description="Search: a memory's recency boost halves every this many days."
    )
    recency_weight: float = Field(
        default=0.2, ge=0, le=1, description="Search: the share of relevance that recency decides (0 turns it off)."
    )

    @model_validator(mode="after")
    def _openai_needs_a_server(self) -> Settings:
        if self.extractor == "openai" and (not self.llm_base_url or not self.llm_model):
            raise ValueError(
                "HARMONIA_EXTRACTOR=openai needs HARMONIA_LLM_BASE_URL (e.g. http://127.0.0.1:8080/v1) and "
                "HARMONIA_LLM_MODEL (the name the server serves)"
            )
        return self

    # --- forgetting (docs/forgetting.md) ---
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Delete active, unpinned memories neither updated nor returned by a search for this many days.",
    )
    user_retention_days: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict[str, float],
        description='Per-user retention days as a JSON object, e.g. {"alice": 30}; others get retention_days.',
    )
    retention_sweep_seconds: float = Field(
        default=3600.0, gt=0, description="How often expired memories are swept (on the first call after it)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'UTC', 'Europe/Lisbon')") from error
        return value

    @field_validator("host")
    @classmethod
    def _canonical_host(cls, value: str) -> str:
        return canonical_host(value)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def rate_limit(self, *, http: bool) -> int:
        """Requests per caller per minute on `http` (True) or stdio and in-memory clients (False); 0: none."""
        if self.rate_limit_per_minute is not None:
            return self.rate_limit_per_minute
        return DEFAULT_HTTP_RATE_LIMIT if http else 0

    def read_budget(self, *, http: bool) -> float:
        """Seconds of read work per caller per minute on `http` (True) or stdio and in-memory clients (False);
        0: no budget (`throttle.ReadBudget`)."""
        if self.read_seconds_per_minute is not None:
            return self.read_seconds_per_minute
        return DEFAULT_HTTP_READ_SECONDS if http else 0.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
