"""Settings: one pydantic model, read from `HARMONIA_*` environment variables and command-line flags.

Every default works offline with no model: the database lives in the user's data directory
and the rules extractor is used whenever Ollama does not answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
import tzlocal
from pydantic import AliasChoices, Field, SecretStr, field_validator
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


class Settings(BaseSettings):
    """All configuration. Environment variables carry the `HARMONIA_` prefix (e.g. `HARMONIA_DB_PATH`)."""

    model_config = SettingsConfigDict(env_prefix="HARMONIA_", extra="ignore", populate_by_name=True)

    db_path: str = Field(default_factory=default_db_path, description="SQLite file, or ':memory:' for tests.")
    default_user: str = Field(default="default", pattern=USER_ID_PATTERN)
    extractor: Literal["auto", "ollama", "rules"] = "auto"
    ollama_host: str = Field(
        default="http://127.0.0.1:11434",
        validation_alias=AliasChoices("HARMONIA_OLLAMA_HOST", "OLLAMA_HOST", "ollama_host"),
    )
    ollama_model: str = "llama3.2:3b"
    ollama_timeout_seconds: float = Field(default=30.0, gt=0)
    ollama_max_retries: int = Field(default=2, ge=0, le=5, description="Asks after a reply that does not validate.")
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
    recency_half_life_days: float = Field(
        default=30.0, gt=0, description="Search: a memory's recency boost halves every this many days."
    )
    recency_weight: float = Field(
        default=0.2, ge=0, le=1, description="Search: the share of relevance that recency decides (0 turns it off)."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'UTC', 'Europe/Lisbon')") from error
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
