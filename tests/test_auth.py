"""Bearer tokens: the tokens file, constant-time verification, and what the CLI says about bad tokens."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client

from harmonia_mcp.auth import TokenConfigError, TokenTable, parse_tokens_file
from harmonia_mcp.cli import main
from harmonia_mcp.config import Settings
from harmonia_mcp.server import create_server

pytestmark = pytest.mark.anyio

ALICE = "alice-secret-token-0123456789"
BOB = "bob#secret-token-0123456789"


def test_the_tokens_file_skips_comments_and_blank_lines() -> None:
    text = f"# tokens for the team\n\n{ALICE} alice\n  {BOB}\tbob   # '#' inside a token is kept\n"
    assert parse_tokens_file(text, "tokens") == [(ALICE, "alice"), (BOB, "bob")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"{ALICE}", "tokens line 2: expected 'token user_id' (two fields), found 1 fields"),
        (f"{ALICE} alice extra", "found 3 fields"),
        ("short-token alice", "the token is 11 characters; use at least 16"),
        (f"{ALICE} al/ice", "user_id 'al/ice' is invalid"),
        (f"{ALICE} bob", "tokens line 2: repeats the token of line 1"),
    ],
)
def test_a_bad_line_is_reported_with_its_number_and_never_the_token(line: str, expected: str) -> None:
    with pytest.raises(TokenConfigError) as error:
        parse_tokens_file(f"{ALICE} alice\n{line}\n", "tokens")
    assert expected in str(error.value)
    assert ALICE not in str(error.value) and "short-token" not in str(error.value)


async def test_a_token_authenticates_as_its_user_and_anything_else_does_not() -> None:
    table = TokenTable([(ALICE, "alice"), (BOB, "bob")])
    principal = await table.verify_token(ALICE)
    assert principal is not None
    assert (principal.subject, principal.client_id) == ("alice", "alice")
    assert ALICE not in principal.model_dump_json()
    other = await table.verify_token(BOB)
    assert other is not None and other.subject == "bob"
    for wrong in ("", ALICE[:-1], ALICE + "x", ALICE.upper(), f"Bearer {ALICE}"):
        assert await table.verify_token(wrong) is None


def test_settings_combine_the_file_and_the_single_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{ALICE} alice\n", encoding="utf-8")
    table = TokenTable.from_settings(
        Settings(auth_tokens_file=str(path), auth_token=BOB, default_user="me", db_path=":memory:")
    )
    assert table is not None and table.users == ["alice", "me"]
    assert TokenTable.from_settings(Settings(db_path=":memory:")) is None


def test_an_unreadable_tokens_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(TokenConfigError, match="cannot be read"):
        TokenTable.from_settings(Settings(auth_tokens_file=str(tmp_path / "missing"), db_path=":memory:"))


def test_serve_refuses_a_malformed_tokens_file_before_listening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    path.write_text("tiny alice\n", encoding="utf-8")
    monkeypatch.setenv("HARMONIA_AUTH_TOKENS_FILE", str(path))
    status = main(["serve", "--transport", "streamable-http", "--db", str(tmp_path / "m.db"), "--port", "1"])
    assert status == 2
    error = capsys.readouterr().err
    assert "line 1: the token is 4 characters" in error and "tiny" not in error


SECRET = "k3XbQw9" + "Zt" * 18  # what token_urlsafe prints: mixed case and digits


@pytest.mark.parametrize(
    "line",
    [
        f"alice {SECRET}",  # columns swapped; the secret stands where the user id goes
        f"alice {SECRET}+/=",  # a base64 secret in the user column: invalid as a user id
        f"alice.thompson@example.com {SECRET}",  # the e-mail address would become the token
        f"alice_thompson_laptop {SECRET}",  # a lower-case name of 21 characters
    ],
)
def test_swapped_columns_are_refused_without_echoing_the_secret(line: str) -> None:
    # Issue 12 item 10.
    with pytest.raises(TokenConfigError) as error:
        parse_tokens_file(line + "\n", "tokens")
    assert "tokens line 1" in str(error.value)
    assert SECRET not in str(error.value) and SECRET[:8] not in str(error.value)


def test_a_single_token_that_looks_like_a_name_is_refused() -> None:
    with pytest.raises(TokenConfigError, match="looks like a user id or e-mail"):
        TokenTable.from_settings(Settings(auth_token="alice@example.com.au", db_path=":memory:"))


@pytest.mark.parametrize("text", ["", "\n\n", "# nobody yet\n  # still nobody\n"])
def test_a_configured_tokens_file_without_tokens_stops_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    # Issue 12 item 5: an explicitly configured file that yields no token must not turn authentication off.
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("HARMONIA_AUTH_TOKENS_FILE", str(path))
    for command in (["serve"], ["serve", "--transport", "streamable-http", "--port", "1"]):
        assert main([*command, "--db", str(tmp_path / "m.db")]) == 2
        assert "has no token" in capsys.readouterr().err
    assert not (tmp_path / "m.db").exists()


async def test_without_http_a_configured_token_does_not_restrict_local_clients(tmp_path: Path) -> None:
    # stdio and in-process clients are local: tokens guard the HTTP transports only, user_id works as before.
    settings = Settings(db_path=str(tmp_path / "m.db"), auth_token=ALICE, default_user="alice")
    async with Client(create_server(settings), raise_exceptions=True) as client:
        stored = await client.call_tool("store_memory", {"message": "I live in Oslo", "user_id": "bob"})
        assert not stored.is_error
        listed = await client.call_tool("list_memories", {"user_id": "bob"})
        assert (listed.structured_content or {})["pagination"]["total_count"] == 1
