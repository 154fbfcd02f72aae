"""A short run of every fuzz target (tests/fuzz/): part of `make test`; `make fuzz` runs them for FUZZ_SECONDS.

The seed is printed (and named in a failure); `HMU_FUZZ_SEED=N make test` (or pytest) replays a run."""

from __future__ import annotations

import pytest

from tests.fuzz import engine
from tests.fuzz.run import SEED_VARIABLE, TARGETS, run_target, seed_from_environment

SECONDS = 4


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_finds_nothing(name, tmp_path):
    seed = seed_from_environment()
    print(f"fuzz target {name} ({engine.ENGINE}): seed {seed}; replay with {SEED_VARIABLE}={seed}")
    ok, tail = run_target(name, SECONDS, tmp_path, seed=seed, quiet=True)
    assert ok, f"fuzz target {name} ({engine.ENGINE}, {SEED_VARIABLE}={seed}) found a crash:\n{tail}"
    assert not list(tmp_path.glob(f"{name}-crash-*"))


def test_the_builtin_engine_reports_a_crash(tmp_path, monkeypatch):
    # so a target that raises can never pass unnoticed when atheris is not installed
    monkeypatch.chdir(tmp_path)

    def target(data: bytes) -> None:
        if data.startswith(b"boom"):
            raise ValueError("found")

    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "a").write_bytes(b"boom!")
    assert engine._builtin(target, ["-max_total_time=5", str(tmp_path / "seeds")]) == 1
    assert [p.read_bytes() for p in tmp_path.glob("crash-*")] == [b"boom!"]


def test_the_builtin_engine_prints_its_seed_and_replays_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def run(seed_arg: list[str]) -> tuple[list[bytes], str]:
        seen: list[bytes] = []
        assert engine._builtin(seen.append, ["-runs=200", *seed_arg]) == 0
        return seen, capsys.readouterr().err

    first, err = run([])
    seed = int(err.split("Seed: ", 1)[1].split()[0])  # printed, so that a failing run can be replayed
    again, err_again = run([f"-seed={seed}"])
    assert again == first and f"Seed: {seed}" in err_again
    assert run([f"-seed={seed + 1}"])[0] != first
