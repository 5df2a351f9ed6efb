"""A newcomer's first run (issue 16): the bare command with serve's flags, a doctor that changes nothing,
a serve that fails before touching files, configuration errors that name the variable, one start-up line.

Each test runs `harmonia-mcp` as a process.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from remote_server import running

from harmonia_mcp.child import server_command

pytestmark = pytest.mark.anyio


def _environment(**extra: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("HARMONIA_")}
    environment.pop("OLLAMA_HOST", None)
    return environment | {"HARMONIA_EXTRACTOR": "rules", **extra}


def _run(*arguments: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    command, prefix = server_command()
    return subprocess.run(
        [command, *prefix, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(**env),
        check=False,
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


async def test_the_bare_command_takes_serves_flags_and_answers_initialize(tmp_path: Path) -> None:
    db = tmp_path / "chosen" / "memories.db"
    command, prefix = server_command()
    # As Claude Desktop runs it with "args": ["--db", "..."]: no command, and no HARMONIA_DB_PATH.
    parameters = StdioServerParameters(command=command, args=[*prefix, "--db", str(db)], env=_environment())
    async with Client(parameters, mode="legacy") as client:  # legacy: the initialize handshake
        assert client.server_info is not None and client.server_info.name == "harmonia-mcp"
        # The prompts (recall, remember) are advertised now that there are some.
        assert client.server_capabilities.prompts is not None
        assert client.server_capabilities.tools is not None and client.server_capabilities.resources is not None
        stored = await client.call_tool("store_memory", {"message": "I have a dog called Biggie"})
        assert not stored.is_error
    assert db.exists()


def test_flags_before_and_after_serve_both_count(tmp_path: Path) -> None:
    result = _run("--db", str(tmp_path / "a.db"), "serve", "--port", "99999", "--transport", "sse")
    assert result.returncode == 2
    assert "--port 99999 is out of range: use 0 to 65535" in result.stderr
    assert not (tmp_path / "a.db").exists()


def test_the_server_says_at_start_up_which_database_extractor_and_embedder_it_uses(tmp_path: Path) -> None:
    db = tmp_path / "memories.db"
    result = _run("--db", str(db))  # stdin at once at its end: the server starts, then stops
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""  # stdout belongs to the protocol
    lines = [line for line in result.stderr.splitlines() if "database" in line]
    assert len(lines) == 1, result.stderr
    assert f"database {db};" in lines[0]
    # The default embedder is the packaged ONNX model (issue 9), named with the model that makes the vectors.
    assert "extractor rules" in lines[0] and "embedder embedded all-MiniLM-L6-v2-int8" in lines[0]
    keyword_only = _run("--db", str(db), HARMONIA_EMBEDDER="none")
    assert "embedder none (keyword search only)" in keyword_only.stderr
    quiet = _run("--db", str(db), HARMONIA_LOG_LEVEL="ERROR")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_doctor_on_a_missing_path_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "not" / "yet" / "memories.db"
    result = _run("doctor", "--db", str(db), OLLAMA_HOST="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "does not exist; would be created" in result.stdout
    assert _files(tmp_path) == []


def test_doctor_on_an_existing_database_changes_no_file(tmp_path: Path) -> None:
    db = tmp_path / "memories.db"
    assert _run("--db", str(db)).returncode == 0  # the server creates and migrates it
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    result = _run("doctor", "--db", str(db), OLLAMA_HOST="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    assert "schema:    schema version" in result.stdout and "(current)" in result.stdout
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before


def test_doctor_on_a_file_that_is_not_a_database_says_so(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("not a database, but a note long enough to fill a header of sixteen bytes\n" * 20)
    result = _run("doctor", "--db", str(db), OLLAMA_HOST="http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot be read as a SQLite database" in result.stdout
    assert _files(tmp_path) == ["notes.txt"]


def test_serve_on_a_busy_port_creates_no_file_and_says_no_serving_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = tmp_path / "data" / "memories.db"
        result = _run("serve", "--transport", "streamable-http", "--port", str(port), "--db", str(db))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "serving" not in result.stderr
    assert _files(tmp_path) == []


def test_a_refused_wildcard_address_creates_no_file_and_says_no_serving_line(tmp_path: Path) -> None:
    result = _run("serve", "--transport", "sse", "--host", "0.0.0.0", "--db", str(tmp_path / "d" / "m.db"))
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0" in result.stderr
    assert "serving MCP" not in result.stderr
    assert _files(tmp_path) == []


def test_serve_says_serving_once_it_listens(tmp_path: Path) -> None:
    with running(tmp_path, "streamable-http") as server:
        log = server.log()
    assert log.count("serving MCP over streamable-http at http://127.0.0.1:") == 1
    # The start-up line (the store is open) comes before the serving line.
    assert log.index("database ") < log.index("serving MCP")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HARMONIA_TIMEZONE": "Mars/Base"}, "HARMONIA_TIMEZONE 'Mars/Base' is invalid: unknown IANA time zone"),
        ({"HARMONIA_PORT": "http"}, "HARMONIA_PORT 'http' is not a whole number"),
        (
            {"HARMONIA_EXTRACTOR": "gpt"},
            "HARMONIA_EXTRACTOR 'gpt' is not allowed: use one of auto, ollama, openai or rules",
        ),
        ({"HARMONIA_USER_RESOLUTION_STRATEGIES": "{alice"}, "HARMONIA_USER_RESOLUTION_STRATEGIES is not valid JSON"),
        (
            {"HARMONIA_USER_RESOLUTION_STRATEGIES": '{"alice": "newest"}'},
            "HARMONIA_USER_RESOLUTION_STRATEGIES['alice'] 'newest' is not allowed: use one of auto, update",
        ),
        (
            {"HARMONIA_MAX_REQUEST_BYTES": "10"},
            "HARMONIA_MAX_REQUEST_BYTES '10' is out of range: it must be at least 1024",
        ),
    ],
)
def test_a_configuration_error_names_the_variable_in_one_sentence(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = _run("doctor", "--db", str(tmp_path / "m.db"), **env)
    assert result.returncode == 2
    assert named in result.stderr
    assert "pydantic" not in result.stderr and "validation error" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
