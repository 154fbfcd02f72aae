"""Rules of the C module's source that its behaviour cannot show: each secret let go of in one way, the protocol's
limits defined once (protocol.py; pam_module/Makefile passes them to the compiler)."""

from __future__ import annotations

import re
from pathlib import Path

SOURCE = (Path(__file__).resolve().parents[1] / "pam_module" / "pam_hmacunlock.c").read_text()


def _body(name: str) -> str:
    start = SOURCE.index(f"static void {name}(")
    return SOURCE[start : SOURCE.index("\n}\n", start)]


def test_heap_secrets_are_zeroed_and_freed_only_by_erase_and_free() -> None:
    zeroing = [m.start() for m in re.finditer(r"\bexplicit_bzero\(", SOURCE)]
    helper = _body("erase_and_free")
    # one call in the helper, one for the stack buffer a frame (maybe holding the PIN) was built in
    assert helper.count("explicit_bzero(") == 1
    assert len(zeroing) == 2 and "explicit_bzero(frame, sizeof(frame))" in SOURCE
    assert "__attribute__((cleanup(erase_and_freep)))" in SOURCE


def test_protocol_limits_come_from_protocol_py() -> None:
    assert re.search(r"MAX_PAYLOAD\s*=\s*HMU_MAX_PAYLOAD\b", SOURCE)
    assert re.search(r"MAX_TRIES_LIMIT\s*=\s*HMU_MAX_TRIES_LIMIT\b", SOURCE)
    assert not re.search(r"\b4096\b", SOURCE)
