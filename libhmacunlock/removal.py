"""Taking things out of a user's record: the whole record, or one key's slot (issue 11: one way to do it).

Each is a read-decide-write under the user's lock (store.Store.locked), like every change to a record. A removed
key's credential stays on the security key until it is deleted there (`hmacunlock key credentials`).
"""

from __future__ import annotations

import os

from .errors import NotEnrolled
from .records import Record
from .store import Store


def remove_user(store: Store | str | os.PathLike[str] | None, user: str) -> None:
    """Remove USER's whole record. NotEnrolled, or the store's refusal of the record, before anything changes."""
    store = Store.of(store)
    store.read(user)  # NotEnrolled / a refused record before anything else (and before creating a lock file)
    with store.locked(user, for_write=True):
        store.remove(user)


def remove_key(store: Store | str | os.PathLike[str] | None, user: str, credential_id: str) -> Record:
    """Remove the slot whose credential id (base64url, as `hmacunlock list` shows it) is `credential_id`; the
    record as written. NotEnrolled when no slot of USER has that id."""
    store = Store.of(store)
    store.read(user)
    with store.locked(user, for_write=True):
        record = store.read(user)
        kept = tuple(s for s in record.slots if s.credential_id_text != credential_id)
        if len(kept) == len(record.slots):
            raise NotEnrolled(user, f"no enrolled key has credential id {credential_id}")
        record = record.with_(slots=kept)
        store.write(record)
    return record
