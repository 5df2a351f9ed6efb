"""A small HTTP server that speaks the part of Ollama's REST API harmonia uses, for tests.

It runs in a thread on 127.0.0.1 (a free port) and answers:

- `GET /api/version` → `{"version": ...}`
- `GET /api/tags` → the models it "has pulled"
- `POST /api/chat` (stream false) → the recorded reply for (model, last user message), from
  `tests/data/ollama_recordings.json`; 404 for a model it does not have, as Ollama does
- `POST /api/chat` with a `format` schema that has a `relation` property (a reconciliation judgment)
  → `judgment` as JSON
- `POST /api/embed` → one deterministic 8-number vector per input (for later issues)
- `GET /v1/models`, `POST /v1/chat/completions` → the same recordings in the OpenAI chat completions shape
  (`openai_schema = False` answers 400 to `response_format` json_schema, as servers without structured
  outputs do; `api_key`, when set, must come as `Authorization: Bearer <key>` or the answer is 401)

`fail(mode, times)` makes the next `times` chat requests (all of them when None) fail one way:
`http500`, `timeout` (the reply is held until the client gives up; `cancelled` counts the requests
whose client closed the connection while waiting, which is what makes Ollama stop generating),
`invalid_json` (prose around JSON, as small models write), `schema` (valid JSON of the wrong shape),
`runaway` (the model repeats one word until `options.num_predict` tokens, counted as words, and
answers `done_reason: "length"`, as Ollama does at the cap; with no cap it holds like `timeout`).
`models` can be emptied to play "model not pulled"; stopping the server (or never starting one on a
port) is "connection refused".

The recordings were written by hand in the shape Ollama returns for a structured-output request
(`message.content` is the JSON text); no real Ollama runs on these machines.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).parent / "data" / "ollama_recordings.json"
FAILURES = ("http500", "timeout", "invalid_json", "schema", "runaway")


class FakeOllama:
    """See the module docstring. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, models: tuple[str, ...] = ("llama3.2:3b",)) -> None:
        self.models = list(models)
        self.recordings: dict[tuple[str, str], Any] = {
            (entry["model"], entry["message"]): entry["reply"]
            for entry in json.loads(RECORDINGS.read_text(encoding="utf-8"))
        }
        self.requests: list[tuple[str, str, Any]] = []
        self.cancelled = 0
        self.openai_schema = True
        # The answer to a reconciliation judgment (a chat whose format schema has a "relation" property).
        self.judgment: dict[str, str] = {"relation": "unrelated", "reason": "different facts"}
        self.api_key: str | None = None
        self.headers: list[dict[str, str]] = []  # the headers of each request, in order
        self.in_flight = 0
        self.most_in_flight = 0  # the most chat requests it was answering at once
        self.delay = 0.0  # seconds each recorded chat reply takes, like a model generating
        self._mode: str | None = None
        self._failures_left: int | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeOllama:
        self._thread.start()
        return self

    def release(self) -> None:
        """End the wait of every reply held by `delay`, now and later."""
        self._release.set()

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def fail(self, mode: str | None, times: int | None = None) -> None:
        """Fail the next `times` chat requests (every one when None) in `mode`; `None` stops failing."""
        assert mode is None or mode in FAILURES, mode
        with self._lock:
            self._mode, self._failures_left = mode, times

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.requests if path == "/api/chat"]

    def _failure(self) -> str | None:
        with self._lock:
            if self._mode is None:
                return None
            mode = self._mode
            if self._failures_left is not None:
                self._failures_left -= 1
                if self._failures_left <= 0:
                    self._mode = None
            return mode

    # --- request handling (in the server's threads) ---

    def _hold(self, gone: Callable[[], bool]) -> None:
        """Wait like a generation that never ends, until the client disconnects or the server stops."""
        while not self._release.wait(0.02):
            if gone():
                with self._lock:
                    self.cancelled += 1
                return

    def handle(self, method: str, path: str, body: Any, gone: Callable[[], bool] = lambda: False) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if (method, path) == ("GET", "/api/version"):
            return 200, {"version": "0.6.0-fake"}
        if (method, path) == ("GET", "/api/tags"):
            return 200, {"models": [_model_entry(name) for name in self.models]}
        if (method, path) == ("POST", "/api/embed"):
            inputs = body.get("input") or []
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            return 200, {"model": body.get("model"), "embeddings": [_vector(text) for text in texts]}
        if (method, path) == ("POST", "/api/chat"):
            return self._chat(body, gone)
        if (
            path.startswith("/v1/")
            and self.api_key
            and self.headers[-1].get("authorization") != f"Bearer {self.api_key}"
        ):
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        if (method, path) == ("GET", "/v1/models"):
            return 200, {"object": "list", "data": [{"id": name, "object": "model"} for name in self.models]}
        if (method, path) == ("POST", "/v1/chat/completions"):
            return self._openai_chat(body, gone)
        return 404, {"error": f"no route {method} {path}"}

    def _openai_chat(self, body: dict[str, Any], gone: Callable[[], bool]) -> tuple[int, Any]:
        format = body.get("response_format") or {}
        if format.get("type") == "json_schema" and not self.openai_schema:
            return 400, {"error": {"message": "response_format json_schema is not supported"}}
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"The model '{body.get('model')}' does not exist"}}
        # The Ollama path does the work; max_tokens stands in for num_predict.
        ollama_body = {
            "model": body.get("model"),
            "messages": body.get("messages", []),
            "options": {"num_predict": body.get("max_tokens")},
        }
        status, payload = self._chat(ollama_body, gone)
        if status != 200:
            return status, {"error": {"message": payload.get("error", "")}}
        finish = "length" if payload.get("done_reason") == "length" else "stop"
        message = payload["message"]
        return 200, {
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }

    def _chat(self, body: dict[str, Any], gone: Callable[[], bool]) -> tuple[int, Any]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return self._answer_chat(body, gone)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer_chat(self, body: dict[str, Any], gone: Callable[[], bool]) -> tuple[int, Any]:
        model = body.get("model", "")
        if model not in self.models:
            return 404, {"error": f'model "{model}" not found, try pulling it first'}
        mode = self._failure()
        if mode == "http500":
            return 500, {"error": "llama runner process has terminated: signal: killed"}
        if mode == "timeout":
            self._hold(gone)
            return 200, _chat_reply(model, "{}")
        if mode == "runaway":
            cap = (body.get("options") or {}).get("num_predict")
            if not isinstance(cap, int) or cap <= 0:
                self._hold(gone)
                return 200, _chat_reply(model, "{}")
            words = " ".join(["fluffy,"] * max(0, cap - 6))
            reply = _chat_reply(model, '{"memories": [{"content": "User has a ' + words)
            return 200, reply | {"done_reason": "length", "eval_count": cap}
        if mode == "invalid_json":
            return 200, _chat_reply(model, 'Sure! Here are the memories: {"memories": [{"content": "User')
        if mode == "schema":
            return 200, _chat_reply(model, '{"facts": ["User likes tea"], "memories": "none"}')
        if "relation" in ((body.get("format") or {}).get("properties") or {}):
            return 200, _chat_reply(model, json.dumps(self.judgment))
        if self.delay:
            self._release.wait(self.delay)
        user_turns = [message for message in body.get("messages", []) if message.get("role") == "user"]
        said = user_turns[-1]["content"] if user_turns else ""
        # After a repair turn the message is an earlier user turn: answer the latest one with a recording.
        recorded = [turn["content"] for turn in user_turns if (model, turn["content"]) in self.recordings]
        said = recorded[-1] if recorded else said
        reply = self.recordings.get((model, said))
        if reply is None:
            return 500, {"error": f"fake ollama has no recording for {said!r}"}
        return 200, _chat_reply(model, json.dumps(reply))


def _model_entry(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2024-08-01T12:00:00.000000000+00:00",
        "size": 2019393189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "3.2B",
            "quantization_level": "Q4_K_M",
        },
    }


def _chat_reply(model: str, content: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": "2024-08-19T14:00:00.000000000Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1200000000,
        "load_duration": 20000000,
        "prompt_eval_count": 900,
        "prompt_eval_duration": 300000000,
        "eval_count": 120,
        "eval_duration": 880000000,
    }


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return [round(byte / 255.0, 4) for byte in digest[:8]]


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _respond(self, method: str) -> None:
            fake.headers.append({key.lower(): value for key, value in self.headers.items()})
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                status, payload = 400, {"error": "invalid JSON body"}
            else:
                status, payload = fake.handle(method, self.path, body, self._client_gone)
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout case)

        def _client_gone(self) -> bool:
            # Readable with nothing to read means the client closed its end (an aborted request).
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def do_GET(self) -> None:
            self._respond("GET")

        def do_POST(self) -> None:
            self._respond("POST")

    return Handler
