"""The docs that are generated from the code match it, and every link inside docs/ and the README resolves."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from libhmacunlock import errors

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_regenerated_from_the_parser():
    gen = _gen_docs()
    assert (DOCS / "cli.md").read_text() == gen.cli_markdown(), "docs/cli.md is stale: run 'make docs'"


def test_cli_reference_names_every_command():
    from hmacunlock_cli.main import build_parser

    text = (DOCS / "cli.md").read_text()
    gen = _gen_docs()
    for path, _, _ in gen._walk(build_parser(), ["hmacunlock"], ""):
        assert f"`{' '.join(path)}`" in text


def test_gen_docs_check_mode_agrees():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def _table_rows() -> dict[int, list[str]]:
    text = (DOCS / "troubleshooting.md").read_text()
    section = text.split("<!-- exit-codes:begin -->", 1)[1].split("<!-- exit-codes:end -->", 1)[0]
    rows = {}
    for line in section.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[int(cells[0])] = cells
    return rows


def test_exit_code_table_matches_exit_code_enum():
    rows = _table_rows()
    assert sorted(rows) == sorted(int(c) for c in errors.ExitCode)
    for code in errors.ExitCode:
        assert rows[int(code)][1] == f"`{code.name}`"


def test_every_error_type_is_in_the_table_under_its_exit_code_and_has_a_section():
    rows = _table_rows()
    text = (DOCS / "troubleshooting.md").read_text()
    headings = set(re.findall(r"^#+ (\w+)\s*$", text, re.M))
    types = _gen_docs().error_types()
    assert {"WrongPin", "NotEnrolled", "HmacUnlockError"} <= set(types)  # the walk finds errors.py's types
    for name, cls in types.items():
        assert f"`{name}`" in rows[int(cls.exit_code)][3], f"{name} missing from exit code {int(cls.exit_code)}"
        assert name in headings, f"docs/troubleshooting.md has no section for {name}"


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path):
    text = page.read_text()
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks are not links
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text())):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"
