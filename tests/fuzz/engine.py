"""Run one fuzz target: atheris (libFuzzer, coverage-guided) when it is installed, else a small built-in engine.

Each target module defines `test_one_input(data: bytes) -> None` (raise on a bug, return otherwise) and calls
`main(test_one_input)` under `if __name__ == "__main__"`. Run as `python -m tests.fuzz.fuzz_X [libFuzzer args]
[corpus dirs]`; tests/fuzz/run.py does that for every target. The built-in engine (random bytes and mutations of
the seed corpus, no coverage feedback) exists so that a Python without an atheris wheel still fuzzes; it is weaker.
`HMU_FUZZ_ENGINE=builtin` forces it. Both take libFuzzer's `-seed=N` and print the seed they use, so a run can be
replayed (run.py passes `--seed` / `HMU_FUZZ_SEED`); the built-in engine draws every mutation from that seed.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

try:
    import atheris
except ImportError:  # pragma: no cover - depends on the machine
    atheris = None

if os.environ.get("HMU_FUZZ_ENGINE") == "builtin":  # force the built-in engine (to test it, or compare)
    atheris = None
ENGINE = "atheris" if atheris is not None else "builtin"


def instrumented() -> AbstractContextManager[object]:
    """Wrap the imports of the code under test, so atheris can see its coverage."""
    return atheris.instrument_imports() if atheris is not None else contextlib.nullcontext()


def main(target: Callable[[bytes], None]) -> None:
    if atheris is not None:
        atheris.Setup(sys.argv, target)
        atheris.Fuzz()
        return
    sys.exit(_builtin(target, sys.argv[1:]))


def _builtin(target: Callable[[bytes], None], args: list[str]) -> int:
    seconds, runs, dirs, seed = 60.0, None, [], None
    for arg in args:
        if arg.startswith("-max_total_time="):
            seconds = float(arg.split("=", 1)[1])
        elif arg.startswith("-seed="):
            seed = int(arg.split("=", 1)[1]) or None  # libFuzzer's convention: 0 means "pick one"
        elif arg.startswith("-runs="):
            runs = int(arg.split("=", 1)[1])
        elif not arg.startswith("-"):
            dirs.append(Path(arg))
    seeds = [p.read_bytes() for d in dirs if d.is_dir() for p in sorted(d.iterdir()) if p.is_file()] or [b""]
    if seed is None:
        seed = new_seed()
    print(f"==builtin fuzz== Seed: {seed}", file=sys.stderr, flush=True)
    rng = random.Random(seed)
    deadline, done = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and (runs is None or done < runs):
        data = seeds[done] if done < len(seeds) else _mutate(rng, rng.choice(seeds))
        try:
            target(data)
        except BaseException:  # noqa: BLE001 - every exception is a finding: the input is saved
            traceback.print_exc()
            crash = Path(f"crash-{os.getpid()}-{done}")
            crash.write_bytes(data)
            print(f"==builtin fuzz== crash after {done} runs; input written to {crash}", file=sys.stderr)
            return 1
        done += 1
    print(f"==builtin fuzz== Done {done} runs in {seconds:g} s", file=sys.stderr)
    return 0


def new_seed() -> int:
    """A fresh seed, in libFuzzer's range (1 .. 2**32 - 1)."""
    return int.from_bytes(os.urandom(4), "big") or 1


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 2 and buf:
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        else:
            buf[pos:pos] = buf[rng.randrange(len(buf) + 1) :][: rng.randint(1, 64)]
    return bytes(buf)
