"""LLM-assisted reconciliation: ask the local model how two memories relate when the rules cannot say (issue 13).

`conflicts.classify` reads most memories into (subject, attribute, value) slots; a pair it cannot read
("no shared slot") that still shares content words is sent here. The model answers under a JSON schema
with one of duplicate / update / complement / unrelated and a one-line reason; any failure (down, timeout,
an answer that does not validate) returns None and the rules' answer stands.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, ValidationError

from harmonia_mcp.extract import ExtractionError

__all__ = ["JUDGMENT_SCHEMA", "ModelJudge", "PairJudgment"]

logger = logging.getLogger(__name__)

Relation = Literal["duplicate", "update", "complement", "unrelated"]
# A relation and a one-line reason fit in well under 100 tokens; the cap stops a runaway reason.
JUDGMENT_MAX_TOKENS = 96

SYSTEM_PROMPT = """\
You compare two facts about a person from a memory store and say how the NEW fact relates to the OLD one:
- duplicate: they say the same thing (maybe in other words).
- update: the new fact replaces the old one (the same thing changed: a new job, a new home, a new date).
- complement: the new fact adds detail about something the old one mentions, and both stay true.
- unrelated: anything else, including two different facts about the same topic that can both be true.
Reply with JSON only: {"relation": "...", "reason": "one short sentence"}."""


class PairJudgment(BaseModel):
    """The model's answer for one pair."""

    relation: Relation
    reason: str = Field(default="", description="One short sentence.")


JUDGMENT_SCHEMA: dict[str, Any] = PairJudgment.model_json_schema()


class JsonModel(Protocol):
    """A model backend that can answer one schema-constrained chat (`OllamaExtractor`, `OpenAIExtractor`)."""

    name: str
    model: str

    async def complete_json(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int) -> str:
        """The reply's text; raises `ExtractionError`."""
        ...


class ModelJudge:
    """Ask `backend` how a new memory relates to a stored one (see the module docstring).

    `name` ("ollama:llama3.2:3b") is what the judgment records say decided.
    """

    def __init__(self, backend: JsonModel) -> None:
        self.backend = backend
        self.name = f"{backend.name}:{backend.model}"

    async def judge(self, new: str, old: str) -> tuple[Relation, str] | None:
        """The relation of `new` to `old` and the model's reason, or None when the model could not say."""
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"OLD: {old}\nNEW: {new}"},
        ]
        try:
            text = await self.backend.complete_json(messages, JUDGMENT_SCHEMA, JUDGMENT_MAX_TOKENS)
            answer = PairJudgment.model_validate_json(text)
        except ExtractionError as error:
            logger.warning("reconciliation judgment failed, keeping the rules' answer: %s", error.reason)
            return None
        except ValidationError as error:
            logger.warning("reconciliation judgment did not validate, keeping the rules' answer: %s", error)
            return None
        return answer.relation, " ".join(answer.reason.split())[:300]
