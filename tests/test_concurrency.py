"""Twenty unlocks of one user at once, each rotating the salt, against one software key over CTAPHID/UDP.

A key holds one PIN token at a time, so without the per-device lock (libhmacunlock/locks.py) another caller's
getPinToken would retire this one's and its getAssertion would be refused (PIN_AUTH_INVALID). Sign-ins on one key
queue on that lock, so every one of the twenty must succeed, and none may cost a PIN attempt (the key's retry
counter must still be full). The store's lock serialises the record updates: the record stays valid, its counter is
above every success's, and the unlock key never changes.
"""

from __future__ import annotations

import subprocess
import threading

from libhmacunlock.enroll import enroll
from libhmacunlock.errors import HmacUnlockError
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.state import PIN_RETRIES_MAX
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.child import python_child
from tests.fixtures.softkey import TEST_PIN, set_pin

USER = "alice"
N = 20


def _setup(tmp_path, udp_softkey):  # type: ignore[no-untyped-def]
    set_pin(udp_softkey.authenticator)
    store = Store(tmp_path / "store")
    uk = enroll(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), USER).unlock_key
    return store, uk


def _outcome(result: object) -> tuple[str, str]:
    if isinstance(result, HmacUnlockError):
        return type(result).__name__, result.message
    if isinstance(result, BaseException):  # untyped: never expected
        return type(result).__name__, repr(result)
    return ("ok", "") if result is not None else ("no result: the thread did not finish", "")


def _check_outcomes(outcomes: list[tuple[str, str]], udp_softkey) -> int:  # type: ignore[no-untyped-def]
    """Every outcome is a success (each other one listed with its index); returns the successes."""
    unexpected = {i: o for i, o in enumerate(outcomes) if o[0] != "ok"}
    assert not unexpected, unexpected
    assert udp_softkey.authenticator.state.pin_retries == PIN_RETRIES_MAX  # no sign-in cost a PIN attempt
    return len(outcomes)


def _check_after(store: Store, spec: str, uk: bytes, successes: int) -> None:
    record = store.read(USER)  # valid
    assert len(record.slots) == 1
    assert record.slots[0].sign_count >= successes  # every success stored a count above the last
    again = unlock(store, spec, ScriptedInteraction([TEST_PIN]), user=USER)
    assert again.unlock_key == uk and again.rotated
    leftovers = [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_twenty_concurrent_unlocks_in_threads(tmp_path, udp_softkey):
    store, uk = _setup(tmp_path, udp_softkey)
    results: list[object] = [None] * N
    start = threading.Barrier(N)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = unlock(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), user=USER)
        except BaseException as exc:  # noqa: BLE001 - classified below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r.unlock_key == uk for r in results if hasattr(r, "unlock_key"))  # type: ignore[union-attr]
    successes = _check_outcomes([_outcome(r) for r in results], udp_softkey)
    _check_after(store, udp_softkey.spec, uk, successes)


CHILD = """
import sys
from libhmacunlock.errors import HmacUnlockError
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.unlock import unlock
store, spec, pin, user = sys.argv[1:5]
try:
    r = unlock(store, spec, ScriptedInteraction([pin]), user=user)
except HmacUnlockError as exc:
    print("typed", type(exc).__name__)
    print(exc.message)
else:
    print("ok", r.unlock_key.hex(), r.rotated)
"""


def test_twenty_concurrent_unlocks_in_processes(tmp_path, udp_softkey):
    store, uk = _setup(tmp_path, udp_softkey)
    procs = [
        python_child(
            CHILD, str(store.path), udp_softkey.spec, TEST_PIN, USER, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(N)
    ]
    outcomes: list[tuple[str, str]] = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err  # an untyped exception would be a traceback and exit 1
        first, _, rest = out.partition("\n")
        words = first.split()
        if words[0] == "ok":
            assert words[1] == uk.hex()
            outcomes.append(("ok", ""))
        else:
            outcomes.append((words[1], rest.strip()))
    successes = _check_outcomes(outcomes, udp_softkey)
    _check_after(store, udp_softkey.spec, uk, successes)
