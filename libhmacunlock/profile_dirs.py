"""The profile directories a user's record names (`profile setup` adds one, `profile forget` takes it out): what
PAM's `profile` option with no value (or `profile=record`) unlocks at sign-in (issue 16).

Each change is a read-decide-write under the user's lock, like every change to a record. The directory is kept as
an absolute path with no '.' or '..' component (records.check_directory), so what the record names is what the
kernel opens; the record is root's, like its slots.
"""

from __future__ import annotations

import hmac
import os

from .errors import BadArguments
from .keys import unlock_key_check
from .records import ProfileDir, Record, check_directory, now
from .store import Store


def normalised(directory: str) -> str:
    """DIR as the record keeps it: absolute (against the working directory), no '.', '..' or repeated '/'."""
    path = os.path.abspath(directory)
    try:
        return check_directory(path)
    except ValueError as exc:
        raise BadArguments(f"{directory}: {exc}.") from None


def check_key(record: Record, unlock_key: bytes) -> None:
    """BadArguments when `unlock_key` is not the one the record wraps (a key file of someone else): a record names
    only profiles its own unlock key opens. A record older than uk_check cannot tell, and is taken at its word."""
    if record.uk_check is not None and not hmac.compare_digest(record.uk_check, unlock_key_check(unlock_key)):
        raise BadArguments(f"The unlock key given is not {record.user}'s: their record wraps another one.")


def remember(store: Store | str | os.PathLike[str] | None, user: str, directory: str, unlock_key: bytes) -> bool:
    """Add DIR to USER's record; False when it was there already. BadArguments (check_key) when `unlock_key` is
    not USER's."""
    store = Store.of(store)
    directory = normalised(directory)
    with store.locked(user, for_write=True):
        record = store.read(user)
        check_key(record, unlock_key)
        if any(p.directory == directory for p in record.profiles):
            return False
        store.write(record.with_(profiles=(*record.profiles, ProfileDir(directory, now()))))
    return True


def forget(store: Store | str | os.PathLike[str] | None, user: str, directory: str) -> Record:
    """Take DIR out of USER's record (the directory stays encrypted); BadArguments when the record does not name
    it."""
    store = Store.of(store)
    directory = normalised(directory)
    store.read(user)
    store.check_writable(user, f"hmacunlock profile forget {user} {directory}")
    with store.locked(user, for_write=True):
        record = store.read(user)
        kept = tuple(p for p in record.profiles if p.directory != directory)
        if len(kept) == len(record.profiles):
            raise BadArguments(f"{user}'s record names no profile {directory}.")
        record = record.with_(profiles=kept)
        store.write(record)
    return record
