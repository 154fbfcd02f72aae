"""The benchmark (`make bench`) in its smallest form: one round each, and it produces its side-by-side table.

No timing is asserted (the suite must not depend on the machine's speed): only that both PAM stacks really signed
in against the software key and that the report has a row of numbers for each.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.system import require_root, require_tool

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.root


def test_one_round_of_the_benchmark_prints_both_contenders(tmp_path):
    require_root()
    require_tool("pamtester", "pamu2fcfg", "gcc")
    if not (REPO / "pam_module" / "pam_hmacunlock.so").is_file():
        pytest.skip("needs pam_module/pam_hmacunlock.so ('make pam')")
    out, raw = tmp_path / "results.md", tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--rounds",
            "1",
            "--extra-rounds",
            "1",
            "--quick",
            "--output",
            str(out),
            "--json",
            str(raw),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    assert text in proc.stdout  # the same table is printed and written
    row = next(line for line in text.splitlines() if line.startswith("| sign-in, wall time"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    number = re.compile(r"^\d+\.\d \(IQR \d+\.\d\)$")
    # pam-u2f, our default (the warm helper), our spawned fallback
    assert number.match(cells[1]) and number.match(cells[2]) and number.match(cells[4]), row
    assert re.search(r"ratio default / pam-u2f \*\*\d+\.\d\d\*\*", text)
    messages = next(line for line in text.splitlines() if line.startswith("| CTAP2 messages per sign-in"))
    cells = messages.strip("|").split("|")
    for ours in (cells[2], cells[4]):
        # counted at the key (clientPIN by its subcommand): the sign-in really reached it
        assert "getAssertion" in ours and "getPinUvAuthTokenUsingPin" in ours
    assert "After Enter, split by the key's timeline" in text
