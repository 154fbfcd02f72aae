"""Sign-ins on one key queue on its per-device lock (issue 17): twenty at the same moment all succeed.

The key's PIN/UV state is per key, not per caller: a getPinToken from one process retires the token another one is
about to use (PIN_AUTH_INVALID). Each process takes the device's lock (locks.py) at its first PIN token and holds
it until it closes the key, so they take turns. python-fido2's "CTAP channel busy, trying again..." never reaches
the person, and a sign-in that still loses its token says the key was busy.
"""

from __future__ import annotations

import subprocess

from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock import locks
from libhmacunlock.device import Key, _ctap_error
from libhmacunlock.discovery import open_key
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import KeyBusy
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from tests.fixtures.child import python_child
from tests.fixtures.softkey import TEST_PIN

USER = "alice"
N = 20

CHILD = """
import sys
from libhmacunlock.errors import HmacUnlockError
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.unlock import unlock
store, spec, pin, user = sys.argv[1:5]
sys.stdin.readline()  # the start signal: every child is imported and waiting
try:
    r = unlock(store, spec, ScriptedInteraction([pin]), user=user)
except HmacUnlockError as exc:
    print("typed", type(exc).__name__, exc.message)
else:
    print("ok", r.unlock_key.hex())
"""


def test_twenty_simultaneous_sign_ins_on_one_key_all_succeed(tmp_path, udp_softkey):
    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    store = Store(tmp_path / "store")
    uk = enroll(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), USER).unlock_key
    procs = [
        python_child(
            CHILD,
            str(store.path),
            udp_softkey.spec,
            TEST_PIN,
            USER,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(N)
    ]
    for p in procs:  # release them together
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "trying again" not in err and "busy" not in err.lower(), err  # nothing from python-fido2's retries
        outcomes.append(out.split(maxsplit=1))
    assert [o[0] for o in outcomes] == ["ok"] * N, outcomes
    assert {o[1].strip() for o in outcomes} == {uk.hex()}
    assert store.read(USER).slots[0].sign_count >= N


def test_the_device_lock_is_held_from_the_pin_token_to_close(tmp_path, udp_softkey):
    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    key = open_key(udp_softkey.spec)
    other = locks.FileLock("dev", udp_softkey.spec)
    try:
        assert other.acquire(timeout=0)  # nobody holds it before the PIN
        other.release()
        key.pin_token(TEST_PIN, 0x02, "example.com")
        assert not other.acquire(timeout=0.1)  # another process would wait here
    finally:
        key.close()
    assert other.acquire(timeout=0)
    other.release()


def test_a_sign_in_that_waits_too_long_says_the_key_was_busy(tmp_path, udp_softkey, monkeypatch):
    import libhmacunlock.device as device_mod

    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    monkeypatch.setattr(device_mod, "DEVICE_LOCK_WAIT", 0.2)
    holder = locks.FileLock("dev", udp_softkey.spec)
    assert holder.acquire(timeout=0)
    try:
        key = open_key(udp_softkey.spec)
        try:
            try:
                key.pin_token(TEST_PIN, 0x02, "example.com")
            except KeyBusy as exc:
                assert "busy with another sign-in; try again" in exc.message
            else:
                raise AssertionError("no KeyBusy")
        finally:
            key.close()
    finally:
        holder.release()


def test_a_retired_pin_token_is_reported_as_a_busy_key():
    from fido2.ctap import CtapError

    assert isinstance(_ctap_error(CtapError.ERR.PIN_AUTH_INVALID), KeyBusy)


def test_an_in_process_key_takes_no_lock(pinned_softkey_device):
    key = Key.from_device(pinned_softkey_device)
    key.pin_token(TEST_PIN, 0x02, "example.com")
    assert key._lock is None  # nothing names it across processes


def test_pam_says_authinfo_unavailable_for_a_busy_key():
    from hmacunlock_pam.protocol import Verdict
    from hmacunlock_pam.verdicts import verdict_for

    verdict, message = verdict_for(KeyBusy(), nouserok=False)
    assert verdict == Verdict.AUTHINFO_UNAVAIL and message and "try again" in message
