"""One regression test per class of pam-u2f advisory (docs/threat-model.md names each).

- CVE-2021-31924 (PIN not enforced): tests/test_hardening_liar.py::test_an_assertion_without_uv_is_refused, and here:
  a record edited to stop requiring UV does not open.
- CVE-2019-12209 (records through symlinks / user-writable places, read as root): the store refuses them, and
  never follows a planted link when it writes.
- CVE-2019-12210 (descriptors leaked into children): nothing the library holds open during an unlock (the store's
  lock, the record, the key's socket) reaches a child process; the PAM module's side is
  tests/test_pam_module.py::test_the_helper_gets_no_descriptor_but_its_channel_and_a_clean_environment.
- CVE-2025-23013 (PAM_IGNORE / success on an internal error): the real helper with a fault injected answers
  system_err, with and without nouserok; the module's side is tests/test_pam_module.py::
  test_a_broken_helper_is_a_system_error_never_success and test_nouserok_never_ignores_a_broken_helper.
- CVE-2020-24612 (nouserok passing an enrolled user whose record is broken): the real helper answers auth_err.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from libhmacunlock.enroll import enroll
from libhmacunlock.errors import RecordTampered, UnsafeLocation
from libhmacunlock.interaction import Purpose, ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.helper_process import HelperProcess
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey, set_pin
from tests.fixtures.system import require_root

USER = "alice"


@pytest.fixture
def key(tmp_path) -> SoftKeyDevice:
    return make_pinned_softkey(tmp_path / "softkey.json")


@pytest.fixture
def store(tmp_path, key) -> Store:
    store = Store(tmp_path / "store")
    enroll(store, key, ScriptedInteraction([TEST_PIN]), USER)
    return store


def _edit_record(store: Store, change) -> None:  # type: ignore[no-untyped-def]
    path = store.record_path(USER)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# --- CVE-2021-31924: the PIN requirement cannot be edited away ---------------------------------------------------


@pytest.mark.parametrize("field, value", [("require_uv", False), ("require_up", False), ("sign_count", 0)])
def test_a_record_edited_to_relax_its_checks_does_not_open(store, key, field, value):
    _edit_record(store, lambda d: d["slots"][0].__setitem__(field, value))
    with pytest.raises(RecordTampered):
        unlock(store, key, ScriptedInteraction([TEST_PIN]), user=USER)


def test_a_record_edited_to_hold_an_attackers_public_key_does_not_open(store, key, tmp_path):
    other = make_pinned_softkey(tmp_path / "other.json")
    foreign = Store(tmp_path / "foreign")
    enroll(foreign, other, ScriptedInteraction([TEST_PIN]), USER)
    theirs = json.loads(foreign.record_path(USER).read_text())["slots"][0]["public_key"]
    _edit_record(store, lambda d: d["slots"][0].__setitem__("public_key", theirs))
    with pytest.raises(RecordTampered):
        unlock(store, key, ScriptedInteraction([TEST_PIN]), user=USER)


# --- CVE-2019-12209: planted and user-writable records ----------------------------------------------------------


def _symlinked_record(store: Store, tmp_path) -> None:
    path = store.record_path(USER)
    target = tmp_path / "planted.json"
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)


def _symlinked_store(store: Store, tmp_path) -> Store:
    real = tmp_path / "real-store"
    store.path.rename(real)
    store.path.symlink_to(real)
    return store


@pytest.mark.parametrize(
    "damage",
    [
        lambda s, t: _symlinked_record(s, t),
        lambda s, t: os.chmod(s.record_path(USER), 0o620),  # group-writable
        lambda s, t: os.chmod(s.record_path(USER), 0o602),  # world-writable
        lambda s, t: os.chmod(s.path, 0o777),  # anyone may plant a record
        lambda s, t: os.chmod(s.path, 0o770),
        lambda s, t: _symlinked_store(s, t),
    ],
    ids=["symlink-record", "group-writable", "world-writable", "store-0777", "store-0770", "symlink-store"],
)
def test_planted_or_user_writable_records_are_refused(store, tmp_path, damage):
    damage(store, tmp_path)
    with pytest.raises(UnsafeLocation):
        store.read(USER)


@pytest.mark.parametrize("what", ["record", "store"])
def test_a_record_or_store_owned_by_another_user_is_refused_as_root(store, what):
    require_root()
    os.chown(store.record_path(USER) if what == "record" else store.path, 65534, -1)
    with pytest.raises(UnsafeLocation):
        store.read(USER)


def test_a_fifo_in_place_of_the_record_is_refused_without_blocking(store):
    path = store.record_path(USER)
    path.unlink()
    os.mkfifo(path, 0o600)  # a planted FIFO would hang a reader that opened it blocking
    with pytest.raises(UnsafeLocation):
        store.read(USER)


def test_writing_never_follows_a_planted_temp_file_link(store, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    record = store.read(USER)
    planted = store.path / f".{USER}.json.{os.getpid()}.tmp"  # the name older versions wrote to
    planted.symlink_to(victim)
    store.write(record)  # a fresh mkstemp name (O_EXCL): the link is removed as a stale temp file, never opened
    assert victim.read_text() == "precious"
    assert not os.path.lexists(planted)
    assert store.read(USER) == record


def test_a_planted_lock_link_is_not_followed(store, key, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.chmod(victim, 0o644)
    (store.path / f".{USER}.lock").unlink(missing_ok=True)  # enrollment made the real one
    (store.path / f".{USER}.lock").symlink_to(victim)
    result = unlock(store, key, ScriptedInteraction([TEST_PIN]), user=USER)
    assert result.unlock_key  # sign-in still works (rotation waits) ...
    assert victim.read_text() == "precious" and os.stat(victim).st_mode & 0o777 == 0o644  # ... nothing touched


# --- CVE-2019-12210: descriptors reaching child processes -------------------------------------------------------


class _SpawningInteraction(ScriptedInteraction):
    """At the touch cue (store lock held, record read, key open) start a child, as a target or hook might."""

    def touch(self, purpose: Purpose) -> None:
        super().touch(purpose)
        if purpose is Purpose.UNLOCK:
            script = 'for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done'
            self.child_fds = subprocess.run(
                ["sh", "-c", script], close_fds=False, capture_output=True, text=True, check=True
            ).stdout.splitlines()


def test_no_descriptor_of_an_unlock_reaches_a_child(tmp_path, udp_softkey):
    set_pin(udp_softkey.authenticator)
    store = Store(tmp_path / "store")
    enroll(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), USER)
    asked = _SpawningInteraction([TEST_PIN])
    unlock(store, udp_softkey.spec, asked, user=USER)
    assert asked.child_fds, "the child never ran"
    leaked = [line for line in asked.child_fds if int(line.split()[0]) > 2]
    assert not [line for line in leaked if "socket:" in line or str(tmp_path) in line], asked.child_fds


# --- CVE-2025-23013 and CVE-2020-24612: the real helper's verdicts ------------------------------------------------


def _verdict(helper: HelperProcess, request: str, pin: str | None = TEST_PIN) -> str:
    helper.send(b"Q", request.encode())
    while True:
        kind, text = helper.recv()
        if kind == b"P":
            helper.send(b"S", pin.encode()) if pin is not None else helper.send(b"C")
        elif kind == b"V":
            assert helper.close() == 0
            return text.split("\n")[0]


FAULTS = {
    "unlock-raises": "import libhmacunlock.unlock as u\n"
    "def boom(*a, **k): raise RuntimeError('internal fault')\nu.unlock_verified = boom",
    "store-check-raises": "import libhmacunlock.store as s\n"
    "def boom(*a, **k): raise PermissionError(13, 'denied')\n"
    "s.Store.exists = s.Store.read = s.Store.read_stamped = boom",
    "memory-error": "import libhmacunlock.unlock as u\n"
    "def boom(*a, **k): raise MemoryError()\nu.unlock_verified = boom",
}


@pytest.mark.parametrize("nouserok", [False, True])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_an_internal_error_is_system_err_never_success_nor_ignore(store, fault, nouserok):
    request = f"user={USER}\nstore={store.path}\ndevice=udp:127.0.0.1:9\n" + ("nouserok=1\n" if nouserok else "")
    assert _verdict(HelperProcess(inject=FAULTS[fault]), request) == "system_err"


@pytest.mark.parametrize("damage", ["garbled", "group-writable", "symlink", "directory", "wrong-user"])
def test_nouserok_never_passes_an_enrolled_user_with_a_broken_record(store, tmp_path, damage):
    path = store.record_path(USER)
    if damage == "garbled":
        path.write_text("{not json")
    elif damage == "group-writable":
        os.chmod(path, 0o660)
    elif damage == "symlink":
        _symlinked_record(store, tmp_path)
    elif damage == "directory":
        path.unlink()
        path.mkdir()
    elif damage == "wrong-user":
        _edit_record(store, lambda d: d.__setitem__("user", "bob"))
    request = f"user={USER}\nstore={store.path}\ndevice=udp:127.0.0.1:9\nnouserok=1\n"
    assert _verdict(HelperProcess(), request) == "auth_err"


def test_nouserok_passes_only_a_user_with_no_record(store):
    request = f"user=bob\nstore={store.path}\ndevice=udp:127.0.0.1:9\nnouserok=1\n"
    assert _verdict(HelperProcess(), request, pin=None) == "user_unknown"
    assert _verdict(HelperProcess(), request.replace("nouserok=1\n", ""), pin=TEST_PIN) == "authinfo_unavail"
