"""Hostile files are refusals (issue 17, F4/F5/F6): every field of a record and of the software key's state is
checked on load, and a bad one is a typed error naming the file — never "internal error", never a hang.

Each case starts from a real file (a record enrolled on the software key, a software key's state) and changes
one thing in it, as an attacker with write access to a backup or a careless edit would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from libhmacunlock.enroll import enroll
from libhmacunlock.errors import ExitCode, RecordUnreadable
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.keys import Argon2Params
from libhmacunlock.recovery import add_recovery
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.errors import KeyStateError
from libhmacunlock.softkey.state import KeyState
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

USER = "zed"
PASSPHRASE = "a passphrase of the test"
FAST = Argon2Params(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def enrolled(tmp_path) -> tuple[Store, Path]:
    """(store, softkey state path): USER enrolled, with a passphrase recovery slot."""
    state = tmp_path / "softkey.json"
    device = make_pinned_softkey(state)
    store = Store(tmp_path / "store")
    enroll(store, device, ScriptedInteraction([TEST_PIN]), USER)
    add_recovery(store, device, ScriptedInteraction([PASSPHRASE, TEST_PIN]), USER, passphrase=True, argon2=FAST)
    return store, state


def edit(store: Store, change: Callable[[dict[str, Any]], object]) -> Path:
    path = store.record_path(USER)
    obj = json.loads(path.read_bytes())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


def slot(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["slots"][0]


def kdf(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["recovery"][0]["kdf"]


def nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_RECORDS: dict[str, Callable[[dict[str, Any]], object]] = {
    "salt-5-bytes": lambda o: slot(o).update(salt="AAAAAAA"),
    "salt-33-bytes": lambda o: slot(o).update(salt="A" * 44),
    "salt-not-base64": lambda o: slot(o).update(salt="!!!!"),
    "salt-padded": lambda o: slot(o).update(salt=slot(o)["salt"] + "="),
    "salt-a-number": lambda o: slot(o).update(salt=5),
    "wrapped-short": lambda o: slot(o).update(wrapped="AAAA"),
    "aaguid-long": lambda o: slot(o).update(aaguid="A" * 40),
    "sign-count-2^32": lambda o: slot(o).update(sign_count=1 << 32),
    "sign-count-negative": lambda o: slot(o).update(sign_count=-1),
    "sign-count-a-bool": lambda o: slot(o).update(sign_count=True),
    "require-uv-a-string": lambda o: slot(o).update(require_uv="yes"),
    "cred-protect-9": lambda o: slot(o).update(cred_protect=9),
    "slot-a-list": lambda o: o.update(slots=[[1, 2]]),
    "slot-missing-salt": lambda o: slot(o).pop("salt"),
    "argon2-memory-2^31": lambda o: kdf(o).update(memory_cost=1 << 31),
    "argon2-time-10^6": lambda o: kdf(o).update(time_cost=10**6),
    "argon2-parallelism-0": lambda o: kdf(o).update(parallelism=0),
    "argon2-parallelism-2^24": lambda o: kdf(o).update(parallelism=1 << 24),
    "argon2-memory-below-lanes": lambda o: kdf(o).update(memory_cost=8, parallelism=4),
    "argon2-salt-not-base64": lambda o: kdf(o).update(salt="!!"),
    "argon2-salt-short": lambda o: kdf(o).update(salt="AAAA"),
    "argon2-a-string": lambda o: o["recovery"][0].update(kdf="argon2"),
    "uk-check-short": lambda o: o.update(uk_check="AAAA"),
    "targets-nested-100": lambda o: o.update(targets=[nest(100)]),
    "unknown-field-nested-100": lambda o: o.update(note=nest(100)),
    "user-a-number": lambda o: o.update(user=7),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_RECORDS))
def test_hostile_record_is_refused_naming_the_file(enrolled, name):
    store, _ = enrolled
    path = edit(store, HOSTILE_RECORDS[name])
    with pytest.raises(RecordUnreadable) as caught:
        store.read(USER)
    assert str(path) in caught.value.message


def test_nesting_deeper_than_the_parser_goes_is_a_refusal_naming_the_file(enrolled):
    store, _ = enrolled
    path = store.record_path(USER)
    path.write_bytes(b'{"schema": 1, "user": "zed", "targets": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")
    with pytest.raises(RecordUnreadable) as caught:
        store.read(USER)
    assert str(path) in caught.value.message and "nested" in caught.value.message


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("salt-not-base64", ["unlock", USER, "--device", "udp:127.0.0.1:9"]),
        ("salt-5-bytes", ["unlock", USER, "--device", "udp:127.0.0.1:9"]),
        ("argon2-memory-2^31", ["recovery", "unlock", USER]),
        ("argon2-time-10^6", ["recovery", "unlock", USER]),
        ("argon2-salt-not-base64", ["recovery", "unlock", USER]),
    ],
)
def test_the_cli_reports_a_hostile_record_as_a_store_error(enrolled, name, command):
    store, _ = enrolled
    path = edit(store, HOSTILE_RECORDS[name])
    proc = subprocess.run(
        [sys.executable, "-m", "hmacunlock_cli", *command, "--store", str(store.path)],
        input=PASSPHRASE + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == ExitCode.STORE, proc.stderr
    assert "internal error" not in proc.stderr and str(path) in proc.stderr


# --- F5: fields this version does not know ----------------------------------------------------------------------


def test_unknown_fields_are_kept_through_a_salt_rotation(enrolled):
    store, state = enrolled

    def add_fields(o: dict[str, Any]) -> None:
        o["admin_note"] = {"ticket": 42}
        o["recovery"][0]["hint"] = "the blue notebook"

    edit(store, add_fields)
    before = store.read(USER).slots[0].salt
    result = unlock(store, SoftKeyDevice.open(state), ScriptedInteraction([TEST_PIN]), user=USER)
    assert result.rotated
    after = json.loads(store.record_path(USER).read_bytes())
    assert store.read(USER).slots[0].salt != before  # the record was rewritten ...
    assert after["admin_note"] == {"ticket": 42}  # ... and kept what it did not know
    assert after["recovery"][0]["hint"] == "the blue notebook"


def test_an_unknown_slot_field_is_part_of_the_slot_as_written(enrolled):
    """A newer version's slot field is kept and bound by the slot's AAD like every other field: a slot written
    with it still opens, and one that gains a field later was altered (RecordTampered)."""
    from libhmacunlock.errors import RecordTampered

    store, state = enrolled
    edit(store, lambda o: slot(o).update(newer="x"))
    assert store.read(USER).slots[0].extra == {"newer": "x"}
    with pytest.raises(RecordTampered):
        unlock(store, SoftKeyDevice.open(state), ScriptedInteraction([TEST_PIN]), user=USER)


# --- the software key's state -----------------------------------------------------------------------------------


@pytest.fixture
def state_file(tmp_path) -> Path:
    path = tmp_path / "sk.json"
    make_pinned_softkey(path)
    return path


def edit_state(path: Path, change: Callable[[dict[str, Any]], object]) -> None:
    obj = json.loads(path.read_bytes())
    change(obj)
    path.write_text(json.dumps(obj))


HOSTILE_STATES: dict[str, Callable[[dict[str, Any]], object]] = {
    "sign-count-2^32": lambda o: o.update(sign_count=1 << 32),
    "next-serial-2^32": lambda o: o.update(next_serial=1 << 32),
    "pin-retries-9": lambda o: o.update(pin_retries=9),
    "credentials-nested": lambda o: o.update(credentials=nest(100)),
    "aaguid-not-base64": lambda o: o.update(aaguid="!!!!"),
    "credential-a-string": lambda o: o.update(credentials=["x"]),
    "format-a-list": lambda o: o.update(format=[1]),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_STATES))
def test_hostile_softkey_state_is_refused_naming_the_file(state_file, name):
    edit_state(state_file, HOSTILE_STATES[name])
    with pytest.raises(KeyStateError) as caught:
        KeyState.open(state_file)
    assert str(state_file) in str(caught.value)


def test_softkey_state_nested_beyond_the_parser_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "sk.json"
    path.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(KeyStateError) as caught:
        KeyState.open(path)
    assert str(path) in str(caught.value)


def test_softkey_state_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    path = tmp_path / "sk.json"
    os.mkfifo(path, 0o600)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            KeyState.open(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # unblock the reader so the test process can end, then fail
        with open(path, "wb"):
            pass
        pytest.fail("KeyState.open blocked on a FIFO")
    assert isinstance(outcome[0], KeyStateError) and str(path) in str(outcome[0])


def test_softkey_serve_on_a_fifo_exits_with_a_store_error(tmp_path):
    path = tmp_path / "sk.json"
    os.mkfifo(path, 0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hmacunlock_cli", "softkey", "serve", "--state", str(path), "--udp", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        pytest.fail("softkey serve blocked on a FIFO state file")
    assert proc.returncode == ExitCode.STORE, err
    assert str(path) in err and "ready" not in out


def test_softkey_save_leaves_no_copies_after_a_killed_save(state_file):
    """Temp files of a killed save (full copies of the state, private keys included) go at the next save."""
    stale = state_file.parent / f".{state_file.name}.k1ll3d_x"
    stale.write_text(state_file.read_text())
    other = state_file.parent / ".other.json.abcdefgh"
    other.write_text("not ours")
    state = KeyState.open(state_file)
    state.sign_count += 1
    state.save()
    left = sorted(p.name for p in state_file.parent.iterdir() if p.name.startswith(f".{state_file.name}."))
    assert left == []
    assert other.exists()
    assert KeyState.open(state_file).sign_count == state.sign_count
