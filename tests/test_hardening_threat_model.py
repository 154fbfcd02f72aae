"""docs/threat-model.md makes no claim without a test: every `tests/FILE.py::name` it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "threat-model.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_test_the_threat_model_names_exists():
    refs = REF.findall(DOC.read_text())
    assert len(refs) >= 40, "the threat model names its tests as `tests/FILE.py::test_name`"
    missing = [f"{f}::{name}" for f, name in refs if not (REPO / f).is_file() or name not in _tests_in(REPO / f)]
    assert not missing, missing


def test_every_hardening_test_is_named_in_the_threat_model():
    named = {(f, name) for f, name in REF.findall(DOC.read_text())}
    mine = [
        p
        for p in (REPO / "tests").glob("test_*.py")
        if p.name.startswith(("test_hardening_", "test_faults", "test_concurrency", "test_fuzz_short"))
        and p.name != Path(__file__).name
    ]
    unnamed = [f"{p.name}::{t}" for p in mine for t in sorted(_tests_in(p)) if (f"tests/{p.name}", t) not in named]
    assert not unnamed, f"tests not linked from docs/threat-model.md: {unnamed}"
