"""Twenty unlocks of one user at once, each rotating the salt, against one software key over CTAPHID/UDP.

Every unlock either succeeds with the enrolled unlock key or fails with a typed error (the key serves one request
at a time, and a new PIN token retires the previous one, as on a real key); the store's lock serialises the
record updates, so the record stays valid, its salt is one that some successful unlock wrote, and the unlock key
never changes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock.enroll import enroll
from libhmacunlock.errors import HmacUnlockError
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.softkey import TEST_PIN

REPO = Path(__file__).resolve().parents[1]
USER = "alice"
N = 20


def _setup(tmp_path, udp_softkey):  # type: ignore[no-untyped-def]
    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    store = Store(tmp_path / "store")
    uk = enroll(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), USER).unlock_key
    return store, uk


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
    untyped = [r for r in results if isinstance(r, BaseException) and not isinstance(r, HmacUnlockError)]
    assert not untyped, untyped
    wins = [r for r in results if not isinstance(r, BaseException)]
    assert wins, results
    assert all(w.unlock_key == uk for w in wins)  # type: ignore[union-attr]
    _check_after(store, udp_softkey.spec, uk, len(wins))


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
else:
    print("ok", r.unlock_key.hex(), r.rotated)
"""


def test_twenty_concurrent_unlocks_in_processes(tmp_path, udp_softkey):
    store, uk = _setup(tmp_path, udp_softkey)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(store.path), udp_softkey.spec, TEST_PIN, USER],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(N)
    ]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err  # an untyped exception would be a traceback and exit 1
        outcomes.append(out.split())
    wins = [o for o in outcomes if o[0] == "ok"]
    assert wins, outcomes
    assert {o[1] for o in wins} == {uk.hex()}
    _check_after(store, udp_softkey.spec, uk, len(wins))
