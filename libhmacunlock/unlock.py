"""Unlock: one PIN, one touch, three CTAP messages (docs/how-it-works.md, Unlock).

getKeyAgreement + getPinUvAuthToken (ga, rp id) + getAssertion (the user's credential, hmac-secret with
salt1 = the stored salt and salt2 = a new one). Then, in this order: unwrap UK with salt1's output (the AEAD also
authenticates the slot's public key, counter and flags), verify the assertion against them, and rewrap UK under
salt2's output (salt rotation), stored atomically. Usernameless: an up=false listing of the key's accounts under the
same token picks the credential first (one more message, no touch), because the salt must be known before asking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import keys
from .device import PERMISSION, CtapDevice, HmacAssertion, Key, Token
from .discovery import opened_key
from .errors import (
    AmbiguousUser,
    AssertionInvalid,
    CredentialNotOnKey,
    NotEnrolled,
    StoreError,
    StoreWriteFailed,
)
from .interaction import ClonedKeyWarning, Interaction, Purpose
from .records import Record, Slot, open_slot, seal_slot
from .store import Store
from .verify import ClonePolicy, verify_assertion


@dataclass(frozen=True)
class UnlockResult:
    user: str
    unlock_key: bytes = field(repr=False)
    credential_id: bytes
    rotated: bool  # the salt was rotated and the record rewritten
    warnings: tuple[str, ...] = ()


# --- the flow -------------------------------------------------------------------------------------------------


def unlock(
    store: Store | str | os.PathLike[str] | None,
    device: str | CtapDevice | Key,
    interaction: Interaction,
    user: str | None = None,
    rp_id: str | None = None,
    clone_policy: ClonePolicy | str = ClonePolicy.REFUSE,
    purpose: Purpose = Purpose.UNLOCK,
) -> UnlockResult:
    """Unlock `user` (or whoever the key names) and return their unlock key. Raises errors.HmacUnlockError.

    `purpose` is what the PIN and the touch are asked for (Purpose.AUTHORISE when an enrolled key vouches for a
    change)."""
    store = Store.of(store)
    policy = ClonePolicy(clone_policy)
    if user is not None:
        record = store.read(user)
        slots = [s for s in record.slots if rp_id is None or s.rp_id == rp_id]
        if not slots:
            raise NotEnrolled(user, "no security key is enrolled for this user" + (f" at RP {rp_id}" if rp_id else ""))
        records = {user: record}
    else:
        records = _all_records(store)
        slots = [s for r in records.values() for s in r.slots if rp_id is None or s.rp_id == rp_id]
        if not slots:
            raise NotEnrolled("(anyone)", f"no security key is enrolled in {store.path}")
    with opened_key(device, credentials=[(s.rp_id, s.credential_id) for s in slots]) as key:
        key.require_features()
        pin = interaction.ask_pin(purpose)
        if user is not None:
            return _named(store, key, interaction, pin, records[user], slots, policy, purpose)
        return _usernameless(store, key, interaction, pin, records, slots, policy, purpose)


def _all_records(store: Store) -> dict[str, Record]:
    records = {}
    for name in store.users():
        try:
            records[name] = store.read(name)
        except StoreError:
            continue  # someone else's broken record must not stop this sign-in; it is reported on its own unlock
    return records


def _named(
    store: Store,
    key: Key,
    interaction: Interaction,
    pin: str,
    record: Record,
    slots: list[Slot],
    policy: ClonePolicy,
    purpose: Purpose,
) -> UnlockResult:
    # The salt must be chosen before asking, so ask for one credential at a time; a slot of this key's model
    # (AAGUID) first: with one key per user, or keys of different models, that is one getAssertion.
    aaguid = bytes(key.info.aaguid)
    ordered = sorted(slots, key=lambda s: s.aaguid != aaguid)
    token: Token | None = None
    for slot in ordered:
        if token is None or token.rp_id != slot.rp_id:
            token = key.pin_token(pin, PERMISSION.GET_ASSERTION, slot.rp_id)
        try:
            return _finish(store, key, interaction, token, record.user, slot, policy, purpose)
        except CredentialNotOnKey:
            continue
    raise CredentialNotOnKey(record.user)


def _usernameless(
    store: Store,
    key: Key,
    interaction: Interaction,
    pin: str,
    records: dict[str, Record],
    slots: list[Slot],
    policy: ClonePolicy,
    purpose: Purpose,
) -> UnlockResult:
    owner = {s.credential_id: (name, s) for name, r in records.items() for s in r.slots}
    for rp in _rp_ids(slots):
        token = key.pin_token(pin, PERMISSION.GET_ASSERTION, rp)
        try:
            accounts = key.accounts(token, rp)
        except CredentialNotOnKey:
            continue
        found = [
            owner[a.credential_id]
            for a in accounts
            if a.credential_id in owner and owner[a.credential_id][1].user_handle == a.user_handle
        ]
        if not found:
            continue
        names = sorted({name for name, _ in found})
        chosen = names[0] if len(names) == 1 else interaction.choose_account(names)
        if chosen is None or chosen not in names:
            raise AmbiguousUser(names)
        slot = next(s for name, s in found if name == chosen)
        return _finish(store, key, interaction, token, chosen, slot, policy, purpose)
    raise CredentialNotOnKey()


def _rp_ids(slots: Sequence[Slot]) -> list[str]:
    counts: dict[str, int] = {}
    for s in slots:
        counts[s.rp_id] = counts.get(s.rp_id, 0) + 1
    return sorted(counts, key=lambda rp: -counts[rp])


def _finish(
    store: Store,
    key: Key,
    interaction: Interaction,
    token: Token,
    user: str,
    slot: Slot,
    policy: ClonePolicy,
    purpose: Purpose,
) -> UnlockResult:
    """The one touched getAssertion, then unwrap, verify, rotate."""
    path = str(store.record_path(user))
    new_salt = keys.new_salt()
    with store.locked(user) as writable:
        # under the lock, the record as it is now: another sign-in may have rotated the salt meanwhile
        fresh = store.read(user) if writable else None
        current = fresh.slot_for(slot.credential_id) if fresh else slot
        if current is None:
            raise NotEnrolled(user, "the credential was removed meanwhile")
        interaction.touch(purpose)
        assertion = key.hmac_assertion(
            token, current.rp_id, [current.credential_id], current.salt, new_salt, up=current.require_up
        )
        unlock_key, count = _open_and_verify(interaction, path, user, current, assertion, policy)
        warnings: list[str] = []
        rotated = False
        if fresh is not None:
            rotated = _rotate(
                store, fresh, current.with_(salt=new_salt, sign_count=count), assertion.output2, unlock_key, warnings
            )
    return UnlockResult(user, unlock_key, current.credential_id, rotated, tuple(warnings))


def _open_and_verify(
    interaction: Interaction, path: str, user: str, slot: Slot, assertion: HmacAssertion, policy: ClonePolicy
) -> tuple[bytes, int]:
    if assertion.output1 is None or assertion.output2 is None:
        raise AssertionInvalid("The security key's answer has no (or a malformed) hmac-secret output.")
    unlock_key = open_slot(user, slot, assertion.output1, path)
    new_count = verify_assertion(
        assertion,
        rp_id=slot.rp_id,
        credential_id=slot.credential_id,
        public_key=slot.public_key,
        stored_count=slot.sign_count,
        require_up=slot.require_up,
        require_uv=slot.require_uv,
        clone_policy=policy,
        warn=lambda cloned: interaction.info(ClonedKeyWarning(cloned.stored, cloned.seen)),
    )
    return unlock_key, new_count


def _rotate(
    store: Store, record: Record, new_slot: Slot, output2: bytes | None, unlock_key: bytes, warnings: list[str]
) -> bool:
    """Rewrap under salt2's output. A failed write keeps the old record (still valid) and the sign-in.

    `record` was read under the lock that is still held, so nothing has changed it since."""
    assert output2 is not None  # noqa: S101 - narrows: _open_and_verify refused a missing output2
    try:
        store.write(record.replace_slot(seal_slot(record.user, new_slot, output2, unlock_key)))
        return True
    except StoreWriteFailed as exc:
        warnings.append(exc.message)
        return exc.replaced
