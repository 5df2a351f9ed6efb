"""Helpers for the HTTP end-to-end tests: start `harmonia-mcp serve` as a process on a free loopback port,
wait for `/healthz`, and connect the official mcp SSE / streamable HTTP clients with a bearer token."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from harmonia_mcp import child

Transport = Literal["sse", "streamable-http"]
TRANSPORTS: tuple[Transport, ...] = ("sse", "streamable-http")
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


def server_command() -> list[str]:
    command, arguments = child.server_command()
    return [command, *arguments]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    transport: Transport
    port: int
    db_path: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/sse" if self.transport == "sse" else f"{self.base}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig`, wait (bounded) for the exit and return the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            raise AssertionError(f"server did not stop within {STOP_TIMEOUT_SECONDS}s of {sig!r}") from None


def spawn(
    tmp_path: Path,
    transport: Transport,
    *,
    env: dict[str, str] | None = None,
    arguments: Sequence[str] = (),
    port: int | None = None,
    db_path: Path | None = None,
) -> RunningServer:
    """Start `harmonia-mcp serve` (stdout and stderr into a log file); do not wait for it."""
    port = port or free_port()
    db_path = db_path or tmp_path / "memories.db"
    log_path = tmp_path / f"server-{port}-{time.monotonic_ns()}.log"
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HARMONIA_DB_PATH": str(db_path),
        "HARMONIA_EXTRACTOR": "rules",
        **(env or {}),
    }
    command = [*server_command(), "serve", "--transport", transport, "--port", str(port), *arguments]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)
    return RunningServer(process, transport, port, db_path, log_path)


def wait_ready(server: RunningServer) -> None:
    """Poll `GET /healthz` until it answers ok, the process exits, or READY_TIMEOUT_SECONDS pass."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx2.Client(timeout=2.0) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
            try:
                response = http.get(f"{server.base}/healthz")
                if response.status_code == 200 and response.json().get("status") == "ok":
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
    raise AssertionError(f"server not ready within {READY_TIMEOUT_SECONDS}s:\n{server.log()}")


@contextmanager
def running(tmp_path: Path, transport: Transport, **kwargs: Any) -> Iterator[RunningServer]:
    """A ready server, killed (if still running) on the way out whatever happens."""
    server = spawn(tmp_path, transport, **kwargs)
    try:
        wait_ready(server)
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(timeout=STOP_TIMEOUT_SECONDS)


@asynccontextmanager
async def connect(server: RunningServer, token: str | None) -> AsyncIterator[Client]:
    """The official mcp client over the server's transport, sending `Authorization: Bearer <token>`."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if server.transport == "sse":
        async with Client(sse_client(server.url, headers=headers)) as client:
            yield client
        return
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http,
        Client(streamable_http_client(server.url, http_client=http)) as client,
    ):
        yield client


call = child.call_tool


def tool_error(result: Any) -> str:
    """The text of a tool result that must be an error."""
    assert result.is_error, result
    return " ".join(getattr(part, "text", "") for part in result.content)
