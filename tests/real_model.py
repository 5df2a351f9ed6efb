"""Starting the test model server (tests/model_server/server.mjs: node-llama-cpp + SmolLM2-135M-Instruct).

`missing()` says why the real-model tests cannot run here (no node, no node-llama-cpp, no GGUF), with the
command that fixes it; the `real_model_server` fixture (conftest.py) skips with that message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

MODEL_SERVER = Path(__file__).resolve().parent / "model_server"
GGUF = Path(os.environ.get("HARMONIA_TEST_GGUF", MODEL_SERVER / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"))
MODEL_NAME = "smollm2:135m"
# Loading the model takes about a second; on a machine shared by many processes allow far more.
START_SECONDS = 180.0


def missing() -> str | None:
    """Why the model server cannot start here, or None when it can."""
    if shutil.which("node") is None:
        return "real-model tests need Node.js (node on PATH)"
    if not (MODEL_SERVER / "node_modules" / "node-llama-cpp").is_dir():
        return "real-model tests need node-llama-cpp: run `npm ci --omit=dev` in tests/model_server"
    if not GGUF.is_file():
        return f"real-model tests need {GGUF}: run `python tests/model_server/fetch_model.py`"
    return None


class ModelServer:
    """One running `server.mjs`; `url` is its root (Ollama's API there, OpenAI's under `/v1`)."""

    def __init__(self, *extra: str) -> None:
        log = open(os.devnull, "w")  # noqa: SIM115  # the server's own log; kept quiet in tests
        self._log = log
        self.process = subprocess.Popen(
            [
                "node",
                str(MODEL_SERVER / "server.mjs"),
                "--gguf",
                str(GGUF),
                "--port",
                "0",
                "--threads",
                "1",
                "--name",
                MODEL_NAME,
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        first: list[str] = []
        reader = threading.Thread(
            target=lambda: first.append(self.process.stdout.readline() if self.process.stdout else "")
        )
        reader.start()
        reader.join(START_SECONDS)
        line = first[0].strip() if first else ""
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the model server did not start (first line {line!r}, exit {self.process.poll()})")
        self.url = line.removeprefix("listening ")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
