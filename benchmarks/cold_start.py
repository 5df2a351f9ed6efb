"""Cold start: process start to the `initialize` answer over stdio, with the official mcp client.

Starts `harmonia-mcp` (as Claude Desktop does: no arguments, the database in `HARMONIA_DB_PATH`) `--runs` times
on a fresh SQLite file each time and on one file reused (migrated already), and times `Client.__aenter__`:
spawn, Python start-up, imports, `create_server`, the lifespan (opening the store), and the `initialize`
request answered. The embedded model is loaded after `initialize` (docs/search.md), so it is not in the
figure. Also prints the import time of the stdio entry point alone (`python -c "import ..."`, the
`-X importtime` total of `harmonia_mcp.cli` plus what `serve` imports), in a child process each run.

    .venv/bin/python benchmarks/cold_start.py [--runs 10] [--extractor rules|auto]

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
from mcp import Client

from harmonia_mcp.child import server_parameters

# What `harmonia-mcp` (serve over stdio) imports before it answers (cli.main -> _serve).
ENTRY_IMPORTS = "import harmonia_mcp.cli, harmonia_mcp.server, harmonia_mcp.stdio"


async def _initialize(db_path: Path, extractor: str) -> float:
    started = time.perf_counter()
    environment = {"HARMONIA_EXTRACTOR": extractor, "HARMONIA_LOG_LEVEL": "ERROR"}
    async with Client(server_parameters(db_path, environment)) as client:
        elapsed = time.perf_counter() - started
        assert client.server_capabilities is not None
    return elapsed


def _import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", ENTRY_IMPORTS], check=True)
    return time.perf_counter() - started


def _summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}, {len(times)} runs)"


async def _main(arguments: argparse.Namespace) -> int:
    fresh: list[float] = []
    reused: list[float] = []
    imports: list[float] = []
    with tempfile.TemporaryDirectory(prefix="harmonia-cold-") as folder:
        kept = Path(folder) / "kept.db"
        await _initialize(kept, arguments.extractor)  # creates and migrates it once
        for run in range(arguments.runs):
            fresh.append(await _initialize(Path(folder) / f"fresh{run}.db", arguments.extractor))
            reused.append(await _initialize(kept, arguments.extractor))
            imports.append(_import_seconds())
    print("| figure | measured | target |")
    print("| --- | --- | --- |")
    extractor = f"HARMONIA_EXTRACTOR={arguments.extractor}"
    print(f"| start to `initialize` answered, new database, {extractor} | {_summary(fresh)} | <= 1 s |")
    print(f"| start to `initialize` answered, existing database, {extractor} | {_summary(reused)} | <= 1 s |")
    print(f"| `python -c '{ENTRY_IMPORTS}'` (interpreter start + imports) | {_summary(imports)} | |")
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
    return anyio.run(_main, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
