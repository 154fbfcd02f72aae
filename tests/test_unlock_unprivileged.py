"""A screen locker runs PAM as the user: the helper then reads the record but cannot write it (docs/library.md,
Store rules).

Real privilege drop: a forked child calls setuid(nobody) and unlocks over UDP against the key served by this
process; the record is root-owned 0644, the store 0711. Sign-in works, salt rotation waits, nothing is written.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from libhmacunlock.store import Store
from tests.fixtures.child import as_user
from tests.fixtures.library import enroll_user, pin
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_root

NOBODY = 65534


def _unlock_as_nobody(store_path: str, spec: str) -> dict:
    def unlock_alice() -> dict:
        from libhmacunlock.unlock import unlock

        r = unlock(store_path, spec, pin(), user="alice")
        return {"uk": r.unlock_key, "rotated": r.rotated, "user": r.user}

    return as_user(NOBODY, unlock_alice)


def test_unprivileged_unlock_succeeds_and_skips_rotation(udp_softkey):
    require_root()
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.discovery import open_key

    with open_key(udp_softkey.spec) as k:
        ClientPin(Ctap2(k.device)).set_pin(TEST_PIN)
    base = tempfile.mkdtemp(prefix="hmacunlock-unpriv-")
    try:
        os.chmod(base, 0o711)
        store = Store(os.path.join(base, "store"))
        uk = enroll_user(store, udp_softkey.spec, "alice")
        path = store.record_path("alice")
        os.chmod(path, 0o644)  # as for a user with a private group: readable by the user, written by root only
        data = path.read_bytes()
        out = _unlock_as_nobody(str(store.path), udp_softkey.spec)
        assert out == {"uk": uk, "rotated": False, "user": "alice"}
        assert path.read_bytes() == data
    finally:
        shutil.rmtree(base)


def test_unprivileged_reader_refuses_a_record_owned_by_someone_else(udp_softkey):
    require_root()
    base = tempfile.mkdtemp(prefix="hmacunlock-unpriv-")
    try:
        os.chmod(base, 0o711)
        store = Store(os.path.join(base, "store"))
        store.path.mkdir(mode=0o711)
        path = store.record_path("alice")
        path.write_text("{}")
        os.chmod(path, 0o644)
        os.chown(path, 4242, 4242)
        out = _unlock_as_nobody(str(store.path), udp_softkey.spec)
        assert out["error"].startswith("UnsafeLocation") and "owned by uid 4242" in out["error"]
    finally:
        shutil.rmtree(base)
