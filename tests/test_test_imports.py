"""Tests share helpers through tests/fixtures/ (and tests/pam/), never by importing another test module: a test
module's helpers would otherwise become an interface nobody sees, and its fixtures run twice."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _test_module_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            names = [("." * node.level) + (node.module or "")]
        found += [n for n in names if n.split(".")[-1].startswith("test_") or n.startswith("tests.test_")]
    return found


def test_no_test_module_imports_another() -> None:
    offenders = {
        str(path.relative_to(TESTS)): found
        for path in sorted(TESTS.rglob("*.py"))
        if "corpus" not in path.parts and (found := _test_module_imports(path.read_text()))
    }
    assert not offenders, f"move what these share into tests/fixtures/: {offenders}"


def test_the_rule_sees_each_spelling_of_such_an_import() -> None:
    assert _test_module_imports("from tests.test_luks import volume") == ["tests.test_luks"]
    assert _test_module_imports("import tests.test_luks") == ["tests.test_luks"]
    assert _test_module_imports("from .test_luks import volume") == [".test_luks"]
    assert _test_module_imports("from tests.fixtures.luks import volume\nimport pytest") == []
