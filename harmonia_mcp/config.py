"""Settings: one pydantic model, read from `HARMONIA_*` environment variables and command-line flags.

Every default works offline with no model: the database lives in the user's data directory
and the rules extractor is used whenever Ollama does not answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from harmonia_mcp.models import USER_ID_PATTERN


def default_db_path() -> str:
    """Where memories live by default: `<user data dir>/harmonia-mcp/memories.db`.

    On Linux that is `~/.local/share/harmonia-mcp/memories.db` (platformdirs' `user_data_dir`).
    """
    return str(Path(platformdirs.user_data_dir("harmonia-mcp", appauthor=False)) / "memories.db")


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
    ollama_model: str = "llama3.2"
    ollama_timeout_seconds: float = Field(default=30.0, gt=0)
    max_message_bytes: int = Field(default=32 * 1024, ge=1, description="Largest message store_memory accepts.")
    timezone: str = Field(default="UTC", description="IANA zone for timestamps given without an offset.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
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

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
