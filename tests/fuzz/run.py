"""Run every fuzz target for N seconds each: `python -m tests.fuzz.run --seconds N [--target NAME ...]`.

Each target runs in its own process (atheris/libFuzzer with -max_total_time, or the built-in engine: see
engine.py) on a scratch copy of its seed corpus (tests/fuzz/corpus/TARGET), so new inputs never land in the tree.
Exit status: 0 when no target found anything, 1 otherwise; a crashing input is kept under --artifacts (default
fuzz-artifacts/) and its path printed. `make fuzz FUZZ_SECONDS=300` runs this.
Every run prints its seed; `--seed N` (or `HMU_FUZZ_SEED=N`, which `make test`'s short run reads too) replays it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGETS = ("ctaphid", "ctap2", "record", "pam_protocol")


SEED_VARIABLE = "HMU_FUZZ_SEED"


def seed_from_environment() -> int:
    """HMU_FUZZ_SEED if set (to replay a run), else a fresh seed."""
    from tests.fuzz.engine import new_seed

    value = os.environ.get(SEED_VARIABLE, "").strip()
    return int(value) if value else new_seed()


def run_target(name: str, seconds: float, artifacts: Path, *, seed: int, quiet: bool = False) -> tuple[bool, str]:
    """(passed, output tail) of one target run for `seconds` from `seed` (libFuzzer's -seed; the built-in engine's
    too)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"hmu-fuzz-{name}-") as work:
        corpus = Path(work) / "corpus"
        shutil.copytree(HERE / "corpus" / name, corpus)
        cmd = [
            sys.executable,
            "-m",
            f"tests.fuzz.fuzz_{name}",
            f"-max_total_time={max(1, int(seconds))}",
            f"-seed={seed}",
            "-timeout=30",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={artifacts}/{name}-",
            "-print_final_stats=1",
            str(corpus),
            str(HERE / "corpus" / name),
        ]
        # the new-unit corpus is the scratch copy (first dir); the seed dir is read only
        proc = subprocess.run(
            cmd,
            cwd=artifacts,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=seconds + 120,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
    if not quiet:
        summary = [
            line
            for line in tail.splitlines()
            if line.startswith(("stat::number_of_executed_units", "stat::peak_rss_mb", "==builtin fuzz=="))
        ]
        print(tail if proc.returncode else "\n".join(summary), flush=True)
    return proc.returncode == 0, tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target (default 60)")
    parser.add_argument("--target", action="append", choices=TARGETS, help="only this target (repeatable)")
    parser.add_argument("--artifacts", type=Path, default=REPO / "fuzz-artifacts")
    parser.add_argument("--seed", type=int, help=f"replay a run (default: ${SEED_VARIABLE}, else a fresh one)")
    args = parser.parse_args(argv)
    from tests.fuzz.engine import ENGINE

    seed = args.seed or seed_from_environment()

    failed = []
    for name in args.target or TARGETS:
        print(f"== fuzz {name} ({ENGINE}, {args.seconds:g} s, seed {seed}; replay: --seed {seed})", flush=True)
        started = time.monotonic()
        ok, _ = run_target(name, args.seconds, args.artifacts.resolve(), seed=seed)
        print(f"== fuzz {name}: {'ok' if ok else 'FOUND A CRASH'} in {time.monotonic() - started:.0f} s", flush=True)
        if not ok:
            failed.append(name)
    if failed:
        print(f"fuzzing found crashes in: {', '.join(failed)} (inputs under {args.artifacts})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
