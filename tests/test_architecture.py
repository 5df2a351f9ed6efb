"""Dependencies point down: server → service → extract/temporal/search/export → store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harmonia_mcp"

# module → top-level packages it must never import
FORBIDDEN = {
    "store.py": {"mcp", "ollama", "harmonia_mcp.service", "harmonia_mcp.server", "harmonia_mcp.extract"},
    "service.py": {"mcp", "harmonia_mcp.server", "harmonia_mcp.cli", "sqlite3", "aiosqlite"},
    "search.py": {"mcp", "harmonia_mcp.service", "harmonia_mcp.server"},
    "export.py": {"mcp", "harmonia_mcp.service", "harmonia_mcp.server"},
    "temporal.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/rules.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/prompts.py": {"mcp", "ollama", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/ollama.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/openai.py": {"mcp", "ollama", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/select.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "extract/caller.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "server.py": {"sqlite3", "aiosqlite", "harmonia_mcp.cli"},
    "spans.py": {"mcp", "aiosqlite", "sqlite3", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "context.py": {"mcp", "ollama", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "importers.py": {"mcp", "ollama", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server"},
    "conflicts.py": {"mcp", "ollama", "harmonia_mcp.service", "harmonia_mcp.server", "harmonia_mcp.extract"},
    "jobs.py": {"mcp", "ollama", "harmonia_mcp.service", "harmonia_mcp.server", "harmonia_mcp.extract"},
    "extraction_queue.py": {"mcp", "harmonia_mcp.service", "harmonia_mcp.server", "harmonia_mcp.cli"},
    "embed.py": {"mcp", "harmonia_mcp.store", "harmonia_mcp.service", "harmonia_mcp.server", "sqlite3", "aiosqlite"},
    "vectors.py": {"mcp", "harmonia_mcp.service", "harmonia_mcp.server", "sqlite3", "aiosqlite"},
    "fairqueue.py": {"mcp", "harmonia_mcp", "sqlite3", "aiosqlite"},  # below the store: anyio only
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("module", "forbidden"), sorted(FORBIDDEN.items()))
def test_module_does_not_import_upward(module: str, forbidden: set[str]) -> None:
    imported = _imports(PACKAGE / module)
    bad = {name for name in imported for banned in forbidden if name == banned or name.startswith(banned + ".")}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_print_is_only_used_by_the_cli() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "cli.py":
            continue
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
        ]
        assert not calls, f"{path.name} prints to stdout, which belongs to the MCP protocol under stdio"


def test_every_handler_that_takes_a_user_id_resolves_it_through_the_token_check() -> None:
    tree = ast.parse((PACKAGE / "server.py").read_text(encoding="utf-8"))
    handlers = [
        node
        for node in tree.body
        if isinstance(node, ast.AsyncFunctionDef) and any(arg.arg == "user_id" for arg in node.args.args)
    ]
    assert len(handlers) >= 7
    for handler in handlers:
        calls = [
            node
            for node in ast.walk(handler)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_user"
        ]
        assert calls, f"{handler.name} uses user_id without _user(ctx, user_id), so a token would not bind it"
        passed_raw = [
            keyword
            for node in ast.walk(handler)
            if isinstance(node, ast.Call)
            for keyword in node.keywords
            if keyword.arg == "user_id" and isinstance(keyword.value, ast.Name) and keyword.value.id == "user_id"
        ]
        assert not passed_raw, f"{handler.name} passes the client's user_id on unchecked"
