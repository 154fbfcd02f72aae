"""What depends on a user's unlock key: the volumes and profiles set up with it, noted in their record's `targets`
(records.Target) by `luks enroll` and `profile setup`, dropped by `luks remove`. removal.py reads them (`live`)
before it takes the user's last way in.

A note the target itself contradicts no longer counts: a LUKS2 volume (with the noted UUID) that has no hmacunlock
token of the user any more (removed with cryptsetup directly), a directory that is no longer encrypted. A target
that cannot be looked at (a disk unplugged, a home not mounted, no cryptsetup) still counts.

Each change is a read-decide-write under the user's lock, like every change to a record. A user without a record
(a volume enrolled with a raw unlock key only) has nothing to note it in: `note` says so and changes nothing.
"""

from __future__ import annotations

import hmac
import os

from .errors import NoRecord
from .keys import unlock_key_check
from .records import Record, Target, now
from .store import Store


def luks_target(path: str, uuid: str, token: int | None) -> Target:
    return Target("luks", os.path.abspath(path), uuid=uuid, token=token, created=now())


def profile_target(directory: str) -> Target:
    return Target("fscrypt", os.path.abspath(directory), created=now())


def live(record: Record) -> tuple[Target, ...]:
    """The record's noted targets that still depend on its user's unlock key, as far as can be seen."""
    return tuple(t for t in record.dependents() if not _contradicted(t, record.user))


def _contradicted(target: Target, user: str) -> bool:
    from .errors import HmacUnlockError

    try:
        if target.type == "luks":
            from .targets.luks import Volume

            if not os.path.exists(target.path):
                return False
            volume = Volume(target.path)
            if target.uuid and volume.uuid() != target.uuid:
                return False  # another volume at that path now: the noted one may be elsewhere
            return volume.token_for(user) is None
        if not os.path.isdir(target.path):
            return False
        from .targets.fscrypt import Status, profile_status

        return profile_status(target.path) is Status.NOT_ENCRYPTED
    except (HmacUnlockError, OSError):
        return False


def unlock_key_is_users(store: Store | str | os.PathLike[str] | None, user: str, unlock_key: bytes) -> bool | None:
    """Whether `unlock_key` is the one USER's record wraps (its `uk_check`); None when that cannot be told: no
    record, a record without uk_check (older versions), a record this process may not read."""
    from .errors import StoreError

    try:
        record = Store.of(store).read(user)
    except (NoRecord, StoreError):
        return None
    if record.uk_check is None:
        return None
    return hmac.compare_digest(record.uk_check, unlock_key_check(unlock_key))


def note(store: Store | str | os.PathLike[str] | None, user: str, target: Target, unlock_key: bytes) -> bool:
    """Note `target`, set up with `unlock_key`, in USER's record (replacing a note of the same volume or directory).
    False: USER has no record, or the record's `uk_check` says it wraps another unlock key (a key file of an older
    enrollment): nothing depends on this one. The store's errors (StorePermission, StoreWriteFailed) as they are."""
    store = Store.of(store)
    try:
        store.read(user)
    except NoRecord:
        return False
    with store.locked(user, for_write=True):
        try:
            record = store.read(user)
        except NoRecord:
            return False
        if record.uk_check is not None and not hmac.compare_digest(record.uk_check, unlock_key_check(unlock_key)):
            return False
        store.write(record.with_target(target))
    return True


def forget(store: Store | str | os.PathLike[str] | None, user: str, target: Target) -> bool:
    """Drop USER's note of `target` (the same volume by UUID, or the same path). False: nothing was noted."""
    store = Store.of(store)
    try:
        record = store.read(user)
    except NoRecord:
        return False
    if not any(t.same_as(target) for t in record.dependents()):
        return False
    with store.locked(user, for_write=True):
        record = store.read(user)
        store.write(record.without_target(target))
    return True
