"""Taking things out of a user's record: the whole record, one key's slot, or one recovery slot (issue 11: one way
to do it).

Each is a read-decide-write under the user's lock (store.Store.locked), like every change to a record. A removed
key's credential stays on the security key until it is deleted there (`hmacunlock key credentials`).
"""

from __future__ import annotations

import os

from .errors import BadArguments, SlotNotFound
from .records import Record
from .store import Store


def remove_user(store: Store | str | os.PathLike[str] | None, user: str) -> None:
    """Remove USER's whole record. NotEnrolled, or the store's refusal of the record, before anything changes."""
    store = Store.of(store)
    store.read(user)  # NotEnrolled / a refused record before anything else (and before creating a lock file)
    store.check_writable(user, f"hmacunlock remove {user}")
    with store.locked(user, for_write=True):
        store.remove(user)


def remove_key(store: Store | str | os.PathLike[str] | None, user: str, credential_id: str) -> Record:
    """Remove the slot whose credential id (base64url, as `hmacunlock list` shows it) is `credential_id`; the
    record as written. SlotNotFound when no slot of USER has that id; BadArguments naming `recovery remove` when it
    is the id of one of USER's recovery slots."""
    store = Store.of(store)
    store.read(user)
    store.check_writable(user, f"hmacunlock remove {user} --credential {credential_id}")
    with store.locked(user, for_write=True):
        record = store.read(user)
        kept = tuple(s for s in record.slots if s.credential_id_text != credential_id)
        if len(kept) == len(record.slots):
            if any(r.id == credential_id for r in record.recovery):
                raise BadArguments(
                    f"{credential_id} is a recovery slot of {user}, not a key: "
                    f"'hmacunlock recovery remove {user} {credential_id}' removes it."
                )
            raise SlotNotFound(user, credential_id)
        record = record.with_(slots=kept)
        store.write(record)
    return record


def remove_recovery(
    store: Store | str | os.PathLike[str] | None, user: str, slot_id: str, *, force: bool = False
) -> Record:
    """Remove USER's recovery slot `slot_id`; the record as written. SlotNotFound (or BadArguments naming `remove
    --credential` for a key's credential id); BadArguments when it is the user's last way in, unless `force`."""
    store = Store.of(store)
    store.read(user)
    store.check_writable(user, f"hmacunlock recovery remove {user} {slot_id}")
    with store.locked(user, for_write=True):
        record = store.read(user)
        kept = tuple(r for r in record.recovery if r.id != slot_id)
        if len(kept) == len(record.recovery):
            if any(s.credential_id_text == slot_id for s in record.slots):
                raise BadArguments(
                    f"{slot_id} is a security key of {user}, not a recovery slot: "
                    f"'hmacunlock remove {user} --credential {slot_id}' removes it."
                )
            raise SlotNotFound(user, slot_id, "recovery slot")
        if not record.slots and not kept and not force:
            raise BadArguments(
                f"Recovery slot {slot_id} is the last way to open {user}'s unlock key (no security key is "
                "enrolled): without it their volumes and profiles could not be opened again. Enroll a key first "
                f"('hmacunlock enroll {user} --recovery'), or give --force."
            )
        record = record.with_(recovery=kept)
        store.write(record)
    return record
