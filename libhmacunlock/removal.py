"""Taking things out of a user's record: the whole record, one key's slot, or one recovery slot (issue 11: one way
to do it), and what each would leave unopenable (issue 16).

Each is a read-decide-write under the user's lock (store.Store.locked), like every change to a record. A removed
key's credential stays on the security key until it is deleted there (`hmacunlock key credentials`).

The last way in: a removal that leaves no slot (key or recovery) able to open the user's unlock key is refused with
LastWayIn while the record notes volumes or profiles that depend on it (`targets`, written by `luks enroll` and
`profile setup`), and always for a recovery slot (a record with nothing in it opens nothing), unless `force`. The
CLI calls `plan_*` first, to word its confirmation and refuse before asking; the removal decides again under the
lock.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BadArguments, LastWayIn, SlotNotFound
from .records import Record, Target
from .store import Store


@dataclass(frozen=True)
class Plan:
    """A removal decided on a record: the record before, the record after (None: the whole record goes), and the
    volumes and profiles that depend on its unlock key (dependents.live: the notes the targets do not contradict)."""

    before: Record
    after: Record | None
    dependents: tuple[Target, ...] = ()

    @classmethod
    def of(cls, before: Record, after: Record | None) -> Plan:
        from .dependents import live

        return cls(before, after, live(before) if before.targets else ())

    @property
    def last_way_in(self) -> bool:
        """After it no slot opens the unlock key."""
        return self.after is None or not self.after.has_secrets

    @property
    def only_recovery_left(self) -> bool:
        """A key removal that leaves recovery slots and no key."""
        return self.after is not None and not self.after.slots and bool(self.after.recovery) and bool(self.before.slots)


def lost(targets: Sequence[Target]) -> str:
    """What the targets still open with once the unlock key is gone, in words."""
    parts = []
    for t in targets:
        if t.type == "luks":
            parts.append(f"{t.description} would open only with another of its keyslots' passphrases")
        else:
            parts.append(f"{t.description} would not open at all (nothing else holds its key)")
    return "; ".join(parts)


def plan_remove_user(record: Record) -> Plan:
    return Plan.of(record, None)


def plan_remove_key(record: Record, credential_id: str) -> Plan:
    """SlotNotFound when no slot of the user has that id; BadArguments naming `recovery remove` when it is the id of
    one of the user's recovery slots."""
    kept = tuple(s for s in record.slots if s.credential_id_text != credential_id)
    if len(kept) == len(record.slots):
        if any(r.id == credential_id for r in record.recovery):
            raise BadArguments(
                f"{credential_id} is a recovery slot of {record.user}, not a key: "
                f"'hmacunlock recovery remove {record.user} {credential_id}' removes it."
            )
        raise SlotNotFound(record.user, credential_id)
    return Plan.of(record, record.with_(slots=kept))


def plan_remove_recovery(record: Record, slot_id: str) -> Plan:
    """SlotNotFound (or BadArguments naming `remove --credential` for a key's credential id)."""
    kept = tuple(r for r in record.recovery if r.id != slot_id)
    if len(kept) == len(record.recovery):
        if any(s.credential_id_text == slot_id for s in record.slots):
            raise BadArguments(
                f"{slot_id} is a security key of {record.user}, not a recovery slot: "
                f"'hmacunlock remove {record.user} --credential {slot_id}' removes it."
            )
        raise SlotNotFound(record.user, slot_id, "recovery slot")
    return Plan.of(record, record.with_(recovery=kept))


def check_last_way_in(plan: Plan, what: str, *, force: bool, always: bool = False) -> None:
    """LastWayIn when `plan` takes the last way in while the record notes dependents (or `always`), unless `force`.
    `what` names the slot that goes ("Security key ID", "Recovery slot ID"; unused for the whole record)."""
    if force or not plan.last_way_in:
        return
    user, dependents = plan.before.user, plan.dependents
    if plan.after is None:
        what = f"Removing {user}'s record takes every way to open their unlock key"
    else:
        what = f"{what} is the last way to open {user}'s unlock key"
    if dependents:
        consequence = f"without it, {lost(dependents)}."
        instead = f"Take the volumes off first ('hmacunlock luks remove VOLUME {user}'), copy a profile's files out,"
        if plan.after is not None:
            instead = f"Enroll another key first ('hmacunlock enroll {user} --existing-device DEVICE'),"
            if not plan.after.slots and plan.before.slots:
                instead = f"Add a recovery key first ('hmacunlock recovery add {user}'),"
        raise LastWayIn(user, what, consequence, instead)
    if always:
        raise LastWayIn(
            user,
            what,
            "without it nothing could open the unlock key again: volumes and profiles set up with it would be lost.",
            f"Enroll a key first ('hmacunlock enroll {user} --recovery'),",
        )


def _record_of(store: Store, user: str, command: str) -> Record:
    record = store.read(user)  # NotEnrolled / a refused record before anything else (and before a lock file)
    store.check_writable(user, command)
    return record


def remove_user(store: Store | str | os.PathLike[str] | None, user: str, *, force: bool = False) -> None:
    """Remove USER's whole record. NotEnrolled, the store's refusal of the record, or LastWayIn (the record notes
    volumes or profiles; not with `force`) before anything changes."""
    store = Store.of(store)
    _record_of(store, user, f"hmacunlock remove {user}")
    with store.locked(user, for_write=True):
        check_last_way_in(plan_remove_user(store.read(user)), "the record", force=force)
        store.remove(user)


def remove_key(
    store: Store | str | os.PathLike[str] | None, user: str, credential_id: str, *, force: bool = False
) -> Record:
    """Remove the slot whose credential id (base64url, as `hmacunlock list` shows it) is `credential_id`; the
    record as written. plan_remove_key's errors; LastWayIn when it is the last way in and the record notes
    volumes or profiles, unless `force`."""
    store = Store.of(store)
    _record_of(store, user, f"hmacunlock remove {user} --credential {credential_id}")
    with store.locked(user, for_write=True):
        plan = plan_remove_key(store.read(user), credential_id)
        check_last_way_in(plan, f"Security key {credential_id}", force=force)
        assert plan.after is not None  # noqa: S101 - narrows: a key removal keeps the record
        store.write(plan.after)
    return plan.after


def remove_recovery(
    store: Store | str | os.PathLike[str] | None, user: str, slot_id: str, *, force: bool = False
) -> Record:
    """Remove USER's recovery slot `slot_id`; the record as written. plan_remove_recovery's errors; LastWayIn when
    it is the user's last way in (no security key enrolled), unless `force`."""
    store = Store.of(store)
    _record_of(store, user, f"hmacunlock recovery remove {user} {slot_id}")
    with store.locked(user, for_write=True):
        plan = plan_remove_recovery(store.read(user), slot_id)
        check_last_way_in(plan, f"Recovery slot {slot_id}", force=force, always=True)
        assert plan.after is not None  # noqa: S101 - narrows: a recovery slot's removal keeps the record
        store.write(plan.after)
    return plan.after
