"""Every docs/*.md file the code cites exists, and nothing cites a design file that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"(?<![\w/.])(?:\.\./)?(?:docs/)?([\w-]+\.md)\b")
FOLDERS = ("libhmacunlock", "cli", "pam_module", "tests", "bench", "tools")


def _sources() -> list[Path]:
    this = Path(__file__).resolve()
    return [p for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py")) if p.resolve() != this]


def test_cited_docs_exist():
    known = {p.name for p in (ROOT / "docs").glob("*.md")} | {
        p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts
    }
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _sources()
        for name in CITED.findall(path.read_text())
        if name not in known
    ]
    assert missing == []


def test_no_docstring_cites_design_md():
    assert [
        str(p.relative_to(ROOT)) for p in _sources() if "design.md" in p.read_text() and p.name != Path(__file__).name
    ] == []
