"""F6 of issue 17: the store's temp files have unique names and a killed writer's leftovers go at the next write."""

from __future__ import annotations

import os

from libhmacunlock.records import Record
from libhmacunlock.store import Store

USER = "zed"


def test_write_succeeds_over_a_stale_temp_file_of_our_own_pid_and_cleans_the_users_leftovers(tmp_path):
    store = Store(tmp_path / "store")
    store.write(Record(USER))
    stale = [f".{USER}.json.{os.getpid()}.tmp", f".{USER}.json.12345.tmp", f".{USER}.json.ab_cd9ef.tmp"]
    others = [".bob.json.12345.tmp", f".{USER}.json.x.json.123.tmp", f"{USER}.json.keep"]  # not zed's temp files
    for name in stale + others:
        (store.path / name).write_bytes(b"half a record")
    with store.locked(USER, for_write=True):
        store.write(Record(USER))
    names = set(os.listdir(store.path))
    assert not names & set(stale), names
    assert set(others) <= names
    assert store.read(USER) == Record(USER)


def test_a_missing_store_is_created_0711_before_the_lock(tmp_path):
    store = Store(tmp_path / "new" / "store")
    with store.locked(USER, for_write=True) as writable:
        assert writable
        assert (store.path / f".{USER}.lock").exists()
    assert oct(os.stat(store.path).st_mode & 0o7777) == oct(0o711)
