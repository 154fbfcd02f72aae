"""What a record file can hold and how the store answers: always a Record or a typed StoreError naming the path.

The fuzzer (tests/fuzz/fuzz_record.py) explores this at random; these are the inputs worth pinning down.
"""

from __future__ import annotations

import os

import pytest

from libhmacunlock.errors import RecordUnreadable, StoreError
from libhmacunlock.store import MAX_RECORD_SIZE, Store


@pytest.fixture
def store(tmp_path) -> Store:
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    return Store(path)


def _plant(store: Store, data: bytes) -> None:
    path = store.record_path("alice")
    path.write_bytes(data)
    os.chmod(path, 0o600)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000,  # deeper than the JSON decoder's recursion limit
        b'{"schema": 1, "user": "alice", "targets": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b"\xff\xfe not utf-8",
        b'{"schema": 1, "user": "alice", "slots": [{"credential_id": 5}]}',
        b'{"schema": 1, "user": "alice", "slots": [{"credential_id": "***"}]}',
        b'{"schema": 1, "user": "alice", "recovery": [{"id": "r", "kind": "x", "wrapped": ""}]}',
        b'{"schema": 1, "user": "alice", "slots": "nope"}',
        b'{"schema": 2, "user": "alice"}',
        b"",
    ],
    ids=[
        "deep-array",
        "deep-targets",
        "not-utf8",
        "int-bytes",
        "bad-base64",
        "unknown-kind",
        "slots-str",
        "schema-2",
        "empty",
    ],
)
def test_a_malformed_record_is_a_typed_error_naming_its_path(store, data):
    _plant(store, data)
    with pytest.raises(StoreError) as caught:
        store.read("alice")
    assert str(store.record_path("alice")) in caught.value.message
    assert store.record_path("alice").read_bytes() == data  # reported, never "fixed"


def test_an_oversized_record_is_refused(store):
    _plant(store, b" " * (MAX_RECORD_SIZE + 1))
    with pytest.raises(RecordUnreadable):
        store.read("alice")
