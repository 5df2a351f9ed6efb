"""Cold start: process start to the `initialize` answer over stdio, with the official mcp client.

Starts the server (as Claude Desktop starts `harmonia-mcp`: no arguments, the database in `HARMONIA_DB_PATH`)
`--runs` times on a new SQLite file each time and on one file reused (migrated already), and times
`Client.__aenter__`: spawn, Python start-up, imports, `create_server`, the lifespan (opening the store), and the
`initialize` request answered. The embedded model loads after `initialize` (docs/search.md), so it is not in the
figure. It also times the import of the stdio entry point alone (`python -c "import ..."`) in a child each run.

With `--source DIR` it measures, in the same run and alternating with this installation, the `harmonia_mcp`
package in DIR (e.g. `git archive f83160c harmonia_mcp | tar -x -C DIR`), run by this Python with the
editable install's finder removed, and prints the ratios.

    .venv/bin/python benchmarks/cold_start.py [--runs 10] [--extractor rules|auto] [--source DIR]

Timings are wall-clock on whatever else the machine is doing; report `uptime` next to them.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from harmonia_mcp.child import server_parameters

# What `harmonia-mcp` (serve over stdio) imports before it answers (cli.main -> _serve).
ENTRY_IMPORTS = "import harmonia_mcp.cli, harmonia_mcp.server, harmonia_mcp.stdio"


def _from_source(source: Path, code: str) -> str:
    """`code` run against the harmonia_mcp package in `source` instead of the editable install."""
    return (
        "import sys\n"
        "sys.meta_path[:] = [finder for finder in sys.meta_path if 'editable' not in repr(finder)]\n"
        f"sys.path.insert(0, {str(source)!r})\n"
        f"{code}\n"
    )


def _parameters(db_path: Path, extractor: str, source: Path | None) -> StdioServerParameters:
    parameters = server_parameters(db_path, {"HARMONIA_EXTRACTOR": extractor, "HARMONIA_LOG_LEVEL": "ERROR"})
    if source is None:
        return parameters
    serve = _from_source(source, "from harmonia_mcp.cli import main\nsys.exit(main())")
    return parameters.model_copy(update={"command": sys.executable, "args": ["-c", serve]})


async def _initialize(parameters: StdioServerParameters) -> float:
    started = time.perf_counter()
    async with Client(parameters) as client:
        elapsed = time.perf_counter() - started
        assert client.server_capabilities is not None
    return elapsed


def _import_seconds(source: Path | None) -> float:
    code = ENTRY_IMPORTS if source is None else _from_source(source, ENTRY_IMPORTS)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def _summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, {len(times)} runs)"


async def _main(arguments: argparse.Namespace) -> int:
    sources: list[Path | None] = [None] if arguments.source is None else [None, arguments.source]
    times: dict[tuple[Path | None, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="harmonia-cold-") as folder:
        for run in range(arguments.runs):
            for number, source in enumerate(sources):  # alternating, so both see the same load
                kept = Path(folder) / f"kept{number}.db"
                if run == 0:
                    await _initialize(_parameters(kept, arguments.extractor, source))  # creates and migrates it
                fresh = Path(folder) / f"fresh{number}-{run}.db"
                times.setdefault((source, "new"), []).append(
                    await _initialize(_parameters(fresh, arguments.extractor, source))
                )
                times.setdefault((source, "existing"), []).append(
                    await _initialize(_parameters(kept, arguments.extractor, source))
                )
                times.setdefault((source, "import"), []).append(_import_seconds(source))
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    for source in sources:
        code = "this installation" if source is None else f"{source}"
        extractor = f"HARMONIA_EXTRACTOR={arguments.extractor}"
        for kind in ("new", "existing"):
            figure = f"start to `initialize` answered, {kind} database, {extractor}, {code}"
            print(f"| {figure} | {_summary(times[(source, kind)])} | <= 1 s |")
        print(f"| interpreter start + `{ENTRY_IMPORTS}`, {code} | {_summary(times[(source, 'import')])} | |")
    if arguments.source is not None:
        for kind in ("new", "existing", "import"):
            ratio = statistics.median(times[(None, kind)]) / statistics.median(times[(arguments.source, kind)])
            print(f"| ratio of medians, this installation / {arguments.source}, {kind} | {ratio:.2f} | |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--extractor",
        default="rules",
        choices=("rules", "auto"),
        help="HARMONIA_EXTRACTOR of the server (auto, the default install's, builds the Ollama client at start)",
    )
    parser.add_argument("--source", type=Path, help="also measure the harmonia_mcp package in this folder")
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
