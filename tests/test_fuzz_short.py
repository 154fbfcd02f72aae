"""A short run of every fuzz target (tests/fuzz/): part of `make test`; `make fuzz` runs them for FUZZ_SECONDS."""

from __future__ import annotations

import pytest

from tests.fuzz import engine
from tests.fuzz.run import TARGETS, run_target

SECONDS = 4


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_finds_nothing(name, tmp_path):
    ok, tail = run_target(name, SECONDS, tmp_path, quiet=True)
    assert ok, f"fuzz target {name} ({engine.ENGINE}) found a crash:\n{tail}"
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
