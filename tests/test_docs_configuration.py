"""docs/configuration.md matches the code (issue 16.8): every command-line flag and environment variable it
names exists, and every one that exists is named there."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from harmonia_mcp.cli import _parser
from harmonia_mcp.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse has no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


def _variables() -> set[str]:
    names: set[str] = set()
    for field, info in Settings.model_fields.items():
        aliases = getattr(info.validation_alias, "choices", None)
        if aliases:
            names |= {alias for alias in aliases if isinstance(alias, str) and alias.isupper()}
        else:
            names.add(f"HARMONIA_{field.upper()}")
    return names


def test_every_flag_in_the_docs_exists_and_every_flag_is_documented() -> None:
    parser = _parser()
    commands = _subparsers(parser)
    real = _flags(parser).union(*(_flags(command) for command in commands.values())) - {"--help"}
    documented = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", DOC))
    assert documented - real == set(), f"configuration.md names flags that do not exist: {documented - real}"
    assert real - documented == set(), f"configuration.md does not document: {real - documented}"
    for name in commands:
        assert f"`harmonia-mcp {name}" in DOC, f"configuration.md does not document the {name} command"


def test_every_variable_in_the_docs_exists_and_every_setting_is_documented() -> None:
    real = _variables()
    assert {"HARMONIA_DB_PATH", "OLLAMA_HOST", "HARMONIA_OLLAMA_HOST"} <= real
    documented = set(re.findall(r"\b(?:HARMONIA_[A-Z_]*[A-Z]|OLLAMA_HOST)\b", DOC))
    assert documented - real == set(), f"configuration.md names variables that do not exist: {documented - real}"
    assert real - documented == set(), f"configuration.md does not document: {real - documented}"
