"""Removing a user or one key slot: one library function (libhmacunlock.removal) behind `hmacunlock remove`.

F7 of issue 17: 1 in 64 base64url credential ids starts with '-'; the documented `--credential ID` form takes it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from libhmacunlock.errors import ExitCode, NotEnrolled, SlotNotFound
from libhmacunlock.records import Record, Slot
from libhmacunlock.removal import remove_key, remove_user
from libhmacunlock.store import Store

USER = "zed"


def slot(first_byte: int) -> Slot:
    cred = bytes([first_byte]) + os.urandom(31)
    return Slot(cred, "hmacunlock.test", os.urandom(32), b"\xa0", os.urandom(16), 0, os.urandom(32), os.urandom(60))


@pytest.fixture
def two_slots(tmp_path) -> tuple[Store, str, str]:
    """A record with two slots; the first one's credential id starts with '-' (first byte 0xF8: 62 << 2)."""
    store = Store(tmp_path / "store")
    dash, plain = slot(0xF8), slot(0x10)
    store.write(Record(USER, (dash, plain)))
    assert dash.credential_id_text.startswith("-")
    return store, dash.credential_id_text, plain.credential_id_text


def cli(*args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "hmacunlock_cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_remove_credential_whose_id_starts_with_a_dash(two_slots, form):
    store, dash, plain = two_slots
    args = ["--credential", dash] if form == "separate" else [f"--credential={dash}"]
    proc = cli("remove", USER, "--store", str(store.path), "--yes", *args)
    assert proc.returncode == 0, proc.stderr
    assert f"removed key {dash} of {USER}" in proc.stdout
    assert [s.credential_id_text for s in store.read(USER).slots] == [plain]


def test_remove_unknown_credential_is_not_enrolled_and_changes_nothing(two_slots):
    store = two_slots[0]
    before = (store.path / f"{USER}.json").read_bytes()
    proc = cli("remove", USER, "--store", str(store.path), "--credential", "-nosuchid")
    assert proc.returncode == ExitCode.NOT_ENROLLED, proc.stderr
    assert "has no key with credential id '-nosuchid'" in proc.stderr
    assert (store.path / f"{USER}.json").read_bytes() == before


def test_library_remove_key_and_user(two_slots):
    store, dash, plain = two_slots
    assert [s.credential_id_text for s in remove_key(store, USER, plain).slots] == [dash]
    with pytest.raises(SlotNotFound):  # alice is enrolled: the id is what is missing, not the user
        remove_key(store, USER, plain)
    remove_user(store, USER)
    assert not store.exists(USER)
    with pytest.raises(NotEnrolled):
        remove_user(store, USER)
    assert (store.path / f".{USER}.lock").exists()  # kept: a waiting process may hold a lock on it
