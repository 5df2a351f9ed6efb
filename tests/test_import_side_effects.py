"""Importing harmonia-mcp touches neither disk nor network (issue 16.9): every module, in a fresh interpreter
watched by an audit hook (PEP 578), only reads the Python installation and the package itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harmonia_mcp"

WATCH = r"""
import json, os, sys
allowed = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, PACKAGE)})
seen = []
NETWORK = {"socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname", "socket.sendto"}
ACTS = {"sqlite3.connect", "os.mkdir", "os.remove", "os.rename", "shutil.rmtree", "subprocess.Popen", "os.system"}

def hook(event, args):
    if event == "open":
        path, mode = args[0], args[1]
        if isinstance(path, int) or path is None:
            return
        path = os.path.realpath(os.fsdecode(path))
        if "__editable__." in path:
            return  # the import system probing an editable install's path-hook entry of sys.path
        writes = isinstance(mode, str) and any(flag in mode for flag in "wax+")
        if writes or not path.startswith(allowed):
            seen.append([event, path, str(mode)])
    elif event in NETWORK or event in ACTS:
        seen.append([event, repr(args)[:200]])

sys.addaudithook(hook)
import importlib
for name in MODULES:
    importlib.import_module(name)
sys.stdout.write(json.dumps(seen))
"""


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # running it starts the server
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_importing_every_module_touches_no_file_and_no_network(tmp_path: Path) -> None:
    modules = _modules()
    assert "harmonia_mcp.server" in modules and "harmonia_mcp.cli" in modules
    code = f"PACKAGE = {str(PACKAGE)!r}\nMODULES = {modules!r}\n{WATCH}"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert list(tmp_path.iterdir()) == []
