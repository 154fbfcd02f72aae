"""Faults during an unlock: the process killed at every step of the record update, the disk full, the key pulled
mid-message, the PIN blocked. In each, the record stays whole (old or new, never torn), it still opens with the key,
and the unlock key never changes.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from libhmacunlock.discovery import open_key
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import KeyRemoved, PinBlocked, PinSoftLocked, WrongPin
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.recovery import add_recovery, recovery_unlock
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.udp import running_udp_softkey
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.full_disk import fill, tiny_tmpfs
from tests.fixtures.library import enroll_on_new_softkey
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

REPO = Path(__file__).resolve().parents[1]
USER = "alice"


@pytest.fixture
def enrolled(tmp_path):
    """(store, softkey state path, the enrolled unlock key)."""
    e = enroll_on_new_softkey(tmp_path, USER)
    return e.store, e.state, e.unlock_key


def _unlock_again(store: Store, state: Path, uk: bytes) -> None:
    """The record reads, opens with the key, gives the same unlock key, and can still be rewritten."""
    store.read(USER)
    result = unlock(store, SoftKeyDevice.open(state), ScriptedInteraction([TEST_PIN]), user=USER)
    assert result.unlock_key == uk
    assert result.rotated, result.warnings


# --- killed at every step of the record update ------------------------------------------------------------------

# Runs one unlock in a child process; the store module's `os` is replaced by a proxy that counts the filesystem
# calls Store.write makes and SIGKILLs the process just before or just after call number K (K=0: never).
CHILD = textwrap.dedent("""
    import os, signal, sys
    import libhmacunlock.store as store_mod
    from libhmacunlock.interaction import ScriptedInteraction
    from libhmacunlock.softkey.device import SoftKeyDevice
    from libhmacunlock.unlock import unlock

    store, state, pin, user, k, when = sys.argv[1:7]
    k = int(k)
    STEPS = {"open", "write", "fchown", "fchmod", "fsync", "close", "rename", "replace", "unlink", "lstat",
             "fstat", "makedirs"}
    calls, active = [0], [False]

    class OsProxy:
        def __getattr__(self, name):
            real = getattr(os, name)
            if name not in STEPS:
                return real
            def step(*args, **kwargs):
                if not active[0]:
                    return real(*args, **kwargs)
                calls[0] += 1
                if calls[0] == k and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                result = real(*args, **kwargs)
                if calls[0] == k and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)
                return result
            return step

    store_mod.os = OsProxy()
    real_write = store_mod.Store.write
    def write(self, record):
        active[0] = True
        try:
            return real_write(self, record)
        finally:
            active[0] = False
    store_mod.Store.write = write
    result = unlock(store, SoftKeyDevice.open(state), ScriptedInteraction([pin]), user=user)
    print(calls[0], result.rotated)
""")


def _child(store: Store, state: Path, k: int, when: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(store.path), str(state), TEST_PIN, USER, str(k), when],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_killed_at_every_step_of_a_record_update_the_record_survives_whole(enrolled):
    store, state, uk = enrolled
    clean = _child(store, state, 0, "never")
    assert clean.returncode == 0, clean.stderr
    steps, rotated = clean.stdout.split()
    assert rotated == "True" and int(steps) >= 5  # open, write, fsync, close, rename at least
    for k in range(1, int(steps) + 1):
        for when in ("before", "after"):
            killed = _child(store, state, k, when)
            assert killed.returncode == -signal.SIGKILL, (k, when, killed.stderr)
            _unlock_again(store, state, uk)


# --- disk full ----------------------------------------------------------------------------------------------------


def test_disk_full_during_the_salt_rotation_keeps_the_old_record_and_the_sign_in(tmp_path):
    with tiny_tmpfs(tmp_path / "small") as small:
        state = tmp_path / "softkey.json"
        key = make_pinned_softkey(state)
        store = Store(small / "store")
        uk = enroll(store, key, ScriptedInteraction([TEST_PIN]), USER).unlock_key
        before = store.record_path(USER).read_bytes()
        filler = fill(small)
        told = ScriptedInteraction([TEST_PIN])
        result = unlock(store, key, told, user=USER)
        assert result.unlock_key == uk and not result.rotated  # the sign-in stands; rotation waits
        assert any("Could not write" in w for w in result.warnings), result.warnings
        assert store.record_path(USER).read_bytes() == before
        names = sorted(p.name for p in store.path.iterdir())
        assert names == [f".{USER}.lock", ".pin.lock", f"{USER}.json"]  # no temp left
        filler.unlink()
        _unlock_again(store, state, uk)


# --- the key pulled mid-message -----------------------------------------------------------------------------------


def test_the_key_pulled_during_the_assertion_is_key_removed_and_changes_nothing(tmp_path):
    state = tmp_path / "softkey.json"
    store = Store(tmp_path / "store")
    make_pinned_softkey(state)
    uk = enroll(store, SoftKeyDevice.open(state), ScriptedInteraction([TEST_PIN]), USER).unlock_key
    before = store.record_path(USER).read_bytes()
    # the key waits 2 s for its touch; it is unplugged (server stopped) as soon as the getAssertion arrives
    with running_udp_softkey(state, presence=PresencePolicy.approve(delay=2.0)) as server:

        def pull() -> None:
            deadline = time.monotonic() + 30
            while server.authenticator.message_counts[0x02] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            server.stop()

        puller = threading.Thread(target=pull)
        puller.start()
        try:
            # the test opened the key, so the test closes it (unlock closes only what it opened): a Key left open
            # keeps the device's lock for the rest of this process
            with open_key(server.spec, timeout=1.0) as key, pytest.raises(KeyRemoved):
                unlock(store, key, ScriptedInteraction([TEST_PIN]), user=USER)
        finally:
            puller.join(30)
    assert store.record_path(USER).read_bytes() == before
    _unlock_again(store, state, uk)


# --- the PIN blocked mid-session ----------------------------------------------------------------------------------


def test_a_pin_blocked_mid_session_names_the_recovery_key_which_still_opens(tmp_path):
    store, key, _, uk = enroll_on_new_softkey(tmp_path, USER)
    recovery = add_recovery(store, key, ScriptedInteraction([TEST_PIN]), USER).recovery_key
    seen: list[type] = []
    for _ in range(20):  # wrong PINs until the key blocks its PIN (8 tries; a replug after every 3)
        try:
            unlock(store, key, ScriptedInteraction(["999999"]), user=USER)
        except (WrongPin, PinSoftLocked) as exc:
            seen.append(type(exc))
            if isinstance(exc, PinSoftLocked):
                key.authenticator.power_cycle()
        except PinBlocked:
            break
    else:
        pytest.fail(f"the PIN never blocked: {seen}")
    assert PinSoftLocked in seen and WrongPin in seen
    with pytest.raises(PinBlocked) as blocked:  # now even the right PIN
        unlock(store, key, ScriptedInteraction([TEST_PIN]), user=USER)
    assert "recovery" in blocked.value.message
    assert recovery_unlock(store, USER, ScriptedInteraction([recovery])).unlock_key == uk


# --- what a failed write says -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fail", ["rename", "dir-fsync"])
def test_a_failed_write_says_truly_which_record_is_on_disk(enrolled, monkeypatch, fail):
    import libhmacunlock.store as store_mod

    store, state, uk = enrolled
    before = store.record_path(USER).read_bytes()
    record = store.read(USER)
    new = record.with_(targets=({"kind": "test"},))

    def broken(*args):  # type: ignore[no-untyped-def]
        raise OSError(errno.EIO, "Input/output error")

    if fail == "rename":
        monkeypatch.setattr(store_mod.os, "rename", broken)
    else:
        monkeypatch.setattr(store_mod, "_fsync_dir", broken)
    with pytest.raises(store_mod.StoreWriteFailed) as caught:
        store.write(new)
    monkeypatch.undo()
    on_disk = store.record_path(USER).read_bytes()
    if fail == "rename":
        assert on_disk == before and not caught.value.replaced and "unchanged" in caught.value.message
    else:  # only making the rename durable failed: the new record is in place, and the error says so
        assert store.read(USER) == new and caught.value.replaced and "unchanged" not in caught.value.message
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]
    _unlock_again(store, state, uk)
