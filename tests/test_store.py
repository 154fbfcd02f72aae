"""store.py: records on disk — atomic writes, and refusal of what a non-root user could plant or change."""

from __future__ import annotations

import os
import stat

import pytest

from libhmacunlock.errors import (
    NoRecord,
    NotEnrolled,
    RecordTampered,
    RecordUnreadable,
    StorePermission,
    StoreWriteFailed,
    UnsafeLocation,
)
from libhmacunlock.records import Record, RecoverySlot, Slot
from libhmacunlock.store import Store
from tests.fixtures.system import require_root

USER = "zz-no-such-user"  # not in /etc/passwd: records are 0600 root:root


def _record(user: str = USER, count: int = 1) -> Record:
    slot = Slot(
        credential_id=b"c" * 16,
        rp_id="hmacunlock.test",
        user_handle=b"u" * 32,
        public_key=b"\xa0",
        aaguid=b"\0" * 16,
        sign_count=count,
        salt=b"s" * 32,
        wrapped=b"w" * 60,
        created="t",
    )
    return Record(user, (slot,), (RecoverySlot("r1", "recovery-key", b"x" * 60),), ({"type": "a-newer-kind"},))


def _write(store: Store, record: Record | None = None) -> bytes:
    store.write(record or _record())
    return store.record_path(USER).read_bytes()


def test_round_trip_modes_and_opaque_targets(store):
    store.write(_record())
    assert store.read(USER) == _record()
    assert store.users() == [USER]
    assert stat.S_IMODE(os.stat(store.record_path(USER)).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o711
    assert store.read(USER).targets == ({"type": "a-newer-kind"},)  # a type this version does not know: kept
    assert [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")] == []


def test_missing_user_is_not_enrolled(store):
    with pytest.raises(NotEnrolled, match="bob"):
        store.read("bob")


def test_only_an_absent_record_is_no_record(store, monkeypatch):
    # NoRecord is what PAM's nouserok may skip: a record it cannot look at must never pass for one
    assert not store.exists("bob")
    with pytest.raises(NoRecord):
        store.read("bob")
    store.write(_record())
    assert store.exists(USER)
    real_lstat = os.lstat

    def denied(path, *a, **kw):  # type: ignore[no-untyped-def]
        if str(path) == str(store.record_path(USER)):
            raise PermissionError(13, "Permission denied")
        return real_lstat(path, *a, **kw)

    monkeypatch.setattr(os, "lstat", denied)
    with pytest.raises(StorePermission) as raised:  # a permission problem, named as one: never NoRecord
        store.exists(USER)
    assert not isinstance(raised.value, NoRecord) and "root" in raised.value.message


def test_store_directory_keeps_its_search_bit_under_a_strict_umask(tmp_path):
    old = os.umask(0o077)
    try:
        strict = Store(tmp_path / "strict")
        strict.write(_record())
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(strict.path).st_mode) == 0o711


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/passwd", "a/b", "a\0b", ".hidden", "a\nb"])
def test_unsafe_user_names_are_refused(store, name):
    with pytest.raises(UnsafeLocation):
        store.record_path(name)


def test_truncated_record_is_reported_with_its_path_and_left_alone(store):
    path = store.record_path(USER)
    data = _write(store)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordUnreadable) as err:
        store.read(USER)
    assert str(path) in err.value.message and "left as it is" in err.value.message
    assert path.read_bytes() == data[: len(data) // 2]


def test_unknown_schema_and_wrong_types_are_unreadable(store):
    path = store.record_path(USER)
    _write(store)
    path.write_text(f'{{"schema": 99, "user": "{USER}"}}')
    with pytest.raises(RecordUnreadable, match="schema"):
        store.read(USER)
    path.write_text(_record().dumps().decode().replace('"sign_count": 1', '"sign_count": "1"'))
    with pytest.raises(RecordUnreadable, match="sign_count"):
        store.read(USER)


def test_record_naming_another_user_is_tampered(store):
    _write(store)
    path = store.record_path(USER)
    other = _record("mallory").dumps()
    path.write_bytes(other)
    with pytest.raises(RecordTampered, match="mallory"):
        store.read(USER)
    assert path.read_bytes() == other


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_group_or_other_writable_record_is_refused(store, mode):
    path = store.record_path(USER)
    data = _write(store)
    os.chmod(path, mode)
    with pytest.raises(UnsafeLocation, match="writable by group or others"):
        store.read(USER)
    assert path.read_bytes() == data and stat.S_IMODE(os.stat(path).st_mode) == mode


def test_symlinked_record_is_refused(store, tmp_path):
    _write(store)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(_record().dumps())
    path = store.record_path(USER)
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(UnsafeLocation, match="symbolic link"):
        store.read(USER)
    assert path.is_symlink() and target.read_bytes() == _record().dumps()


def test_unsafe_store_directory_is_refused(store, tmp_path):
    _write(store)
    os.chmod(store.path, 0o777)
    with pytest.raises(UnsafeLocation, match="store directory"):
        store.read(USER)
    os.chmod(store.path, 0o711)
    link = tmp_path / "link"
    link.symlink_to(store.path)
    with pytest.raises(UnsafeLocation, match="symbolic link"):
        Store(link).read(USER)


def test_record_owned_by_another_user_is_refused(store):
    require_root()
    path = store.record_path(USER)
    data = _write(store)
    os.chown(path, 4242, 4242)
    with pytest.raises(UnsafeLocation, match="owned by uid 4242"):
        store.read(USER)
    assert path.read_bytes() == data


def test_failed_write_leaves_the_old_record_whole(store, monkeypatch):
    data = _write(store)

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", no_rename)
    with pytest.raises(StoreWriteFailed, match="previous record is unchanged"):
        store.write(_record(count=2))
    monkeypatch.undo()
    assert store.record_path(USER).read_bytes() == data
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]


def test_lock_is_held_and_writable_for_root(store):
    require_root()
    import fcntl

    _write(store)
    with store.locked(USER) as writable:
        assert writable
        fd = os.open(store.path / f".{USER}.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_remove(store):
    _write(store)
    store.remove(USER)
    assert store.users() == []
    with pytest.raises(NotEnrolled):
        store.remove(USER)
