"""Fuzz target: the store's record parser (records.Record.loads) and reader (store.Store.read).

Invariant: whatever bytes are in a record file, reading it gives a Record or a typed StoreError/NotEnrolled (a
person's error naming the path), never another exception; a record that parses survives a write/read round trip.
"""

from __future__ import annotations

import os
import tempfile

from tests.fuzz.engine import instrumented, main

with instrumented():
    from libhmacunlock.errors import NotEnrolled, StoreError
    from libhmacunlock.records import Record
    from libhmacunlock.store import Store

_DIR = tempfile.mkdtemp(prefix="hmu-fuzz-record-")
os.chmod(_DIR, 0o700)
_STORE = Store(_DIR)
_PATH = os.path.join(_DIR, "alice.json")
PARSE_ERRORS = (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError)


def test_one_input(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    os.chmod(_PATH, 0o600)
    try:
        record = _STORE.read("alice")
    except (StoreError, NotEnrolled):
        return
    # it parsed: what the store writes back must read back the same
    again = Record.loads(record.dumps())
    assert again == record, "a record does not survive its own round trip"
    try:
        Record.loads(data)
    except PARSE_ERRORS:
        raise AssertionError("Store.read accepted what Record.loads refuses") from None


if __name__ == "__main__":
    main(test_one_input)
