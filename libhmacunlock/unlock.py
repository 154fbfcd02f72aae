"""Unlock: one PIN, one touch, three CTAP messages (docs/how-it-works.md, Unlock), behind the PIN guard
(pinguard.py): before the PIN is asked, the up=false probe (the key holds one of the user's credentials), with a
floor the key's PIN state, with touch_first one touch; a PIN no key accepts is refused before it is sent, and with
a floor the attempts left are read again, under the store's PIN lock, right before the PIN goes to the key, if a
PIN may have been sent since they were first read (the PIN generation, pinguard.py). Where the key is opened with a
cache (the warm helper), the key agreement is compared with the one a sign-in left behind (the witness,
pinguard.py) and on a match the probe and the floor's read are skipped: three messages in all. Where the witness
would vouch for both, the prompt comes first and the agreement is fetched and compared while the person types
(before the PIN is sent: a miss runs the probe and the floor then): no message before the prompt.

getKeyAgreement + getPinUvAuthToken (ga, rp id) + getAssertion (the user's credential, hmac-secret with
salt1 = the stored salt and salt2 = a new one). Then, in this order: unwrap UK with salt1's output (the AEAD also
authenticates the slot's public key, counter and flags), verify the assertion against them, and rewrap UK under
salt2's output (salt rotation), stored atomically. Usernameless: an up=false listing of the key's accounts under the
same token picks the credential first (one more message, no touch), because the salt must be known before asking.

What does not need the PIN happens before it is asked (while the person types, in the PAM helper): the record is
read, the key opened (its getInfo from a cache where the caller keeps one), the slots' public keys parsed and the
key agreement fetched. After the PIN: the token, the lock (the record is re-read only if its file changed since),
the assertion and the checks. `unlock_verified` stops there, the store lock still held, so that a caller can give
its verdict first; `Verified.commit()` then rotates the salt, writes the record and releases the lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import keys, pinguard
from .device import PERMISSION, CtapDevice, HmacAssertion, Key, Token, Verification, check_pin
from .discovery import open_key
from .errors import (
    AmbiguousUser,
    AssertionInvalid,
    ClonedKey,
    CredentialHiddenFromProbe,
    CredentialNotOnKey,
    NoKeyHoldsCredential,
    NotEnrolled,
    StoreError,
    StoreWriteFailed,
    UnknownAccount,
)
from .interaction import ClonedKeyWarning, Interaction, Purpose
from .keyinfo import InfoCache
from .names import check_rp_id
from .records import Record, Slot, open_slot, seal_slot
from .store import Stamp, Store
from .verify import ClonePolicy, PublicKey, verify_assertion


@dataclass(frozen=True)
class UnlockResult:
    user: str
    unlock_key: bytes = field(repr=False)
    credential_id: bytes
    rotated: bool  # the salt was rotated and the record rewritten
    warnings: tuple[str, ...] = ()


class Verified:
    """An unlock that is verified (a verdict may be given now) and whose record write is still to come.

    It holds the user's store lock (and the open key) until commit() or abandon(): another sign-in for this user
    waits, so the rotation is still a read-modify-write under the lock. Dropping it without either keeps the old
    record, which still opens (salt1 is unchanged); the lock goes with the process.
    """

    def __init__(
        self, result: UnlockResult, held: contextlib.ExitStack, rotate: Callable[[list[str]], bool] | None
    ) -> None:
        self.result = result  # rotated=False until commit()
        self._held = held
        self._rotate = rotate

    def commit(self) -> UnlockResult:
        """Rotate the salt and write the record (when writable), release the lock; the final result. A failed
        write leaves the old record and is a warning, never an error: the unlock stands."""
        warnings: list[str] = []
        try:
            rotated = self._rotate(warnings) if self._rotate is not None else False
        finally:
            self.abandon()
        return dataclasses.replace(self.result, rotated=rotated, warnings=self.result.warnings + tuple(warnings))

    def abandon(self) -> None:
        """Release the lock without writing: the old record stays, and still opens."""
        self._rotate = None
        self._held.close()


# --- the flow -------------------------------------------------------------------------------------------------


def unlock(
    store: Store | str | os.PathLike[str] | None,
    device: str | CtapDevice | Key,
    interaction: Interaction,
    user: str | None = None,
    rp_id: str | None = None,
    clone_policy: ClonePolicy | str = ClonePolicy.REFUSE,
    purpose: Purpose = Purpose.UNLOCK,
    info_cache: InfoCache | None = None,
    *,
    pin_floor: int = 0,
    touch_first: bool = False,
) -> UnlockResult:
    """Unlock `user` (or whoever the key names) and return their unlock key. Raises errors.HmacUnlockError.

    `purpose` is what the PIN and the touch are asked for (Purpose.AUTHORISE when an enrolled key vouches for a
    change). pin_floor: with N > 0, a key with N PIN attempts left or fewer is not asked (PinFloorReached),
    checked before the prompt and again right before the PIN is sent. touch_first: one touch before the PIN."""
    return unlock_verified(
        store,
        device,
        interaction,
        user,
        rp_id,
        clone_policy,
        purpose,
        info_cache,
        pin_floor=pin_floor,
        touch_first=touch_first,
    ).commit()


def unlock_verified(
    store: Store | str | os.PathLike[str] | None,
    device: str | CtapDevice | Key,
    interaction: Interaction,
    user: str | None = None,
    rp_id: str | None = None,
    clone_policy: ClonePolicy | str = ClonePolicy.REFUSE,
    purpose: Purpose = Purpose.UNLOCK,
    info_cache: InfoCache | None = None,
    *,
    pin_floor: int = 0,
    touch_first: bool = False,
    is_account: Callable[[str], bool] | None = None,
    charge: Callable[[], None] | None = None,
) -> Verified:
    """unlock() up to the verified result, the store lock still held: commit() writes the rotated record.

    is_account (usernameless only; the PAM helper: a local account): only enrolled users for whom it holds may be
    named; a key holding none of their credentials but another enrolled name's is UnknownAccount, found by the
    up=false probe before the PIN. charge (the PAM helper's throttle): called once, right before the PIN is sent to
    the key, after every check that could refuse it; what it raises stops the PIN there."""
    store = Store.of(store)
    others: list[Record] = []  # usernameless with is_account: enrolled names that are no account
    strangers: list[tuple[str, bytes]] = []  # and their credentials: told apart by the probe, never named
    policy = ClonePolicy(clone_policy)
    if rp_id is not None:
        check_rp_id(rp_id)  # `--rp-id ""` is a mistake, not "any RP"
    if user is not None:
        record, stamp = store.read_stamped(user)
        slots = [s for s in record.slots if rp_id is None or s.rp_id == rp_id]
        if not slots:
            raise NotEnrolled(user, "no security key is enrolled for this user" + (f" at RP {rp_id}" if rp_id else ""))
        records = {user: (record, stamp)}
    else:
        records = _all_records(store)
        if is_account is not None:
            records, others = _accounts_only(records, is_account)
        slots = [s for r, _ in records.values() for s in r.slots if rp_id is None or s.rp_id == rp_id]
        strangers = [(s.rp_id, s.credential_id) for r in others for s in r.slots if rp_id in (None, s.rp_id)]
        if not slots and not strangers:
            raise NotEnrolled("(anyone)", f"no security key is enrolled in {store.path}")
    credentials = [(s.rp_id, s.credential_id) for s in slots]
    try:
        key = open_key(
            device, credentials=credentials + strangers, info_cache=info_cache, aaguids={s.aaguid for s in slots}
        )
    except NoKeyHoldsCredential as exc:  # `auto` with several keys: none holds one (discovery.pick_key)
        _hidden_from_probe(records, slots, user)
        if exc.user is None and user is not None:
            raise NoKeyHoldsCredential(user) from None
        raise
    held = contextlib.ExitStack()
    if isinstance(device, str):  # as discovery.opened_key: close only what this opened
        held.callback(key.close)
    try:
        key.require_features()
        guard = pinguard.Guard(store, key, pin_floor, charge)
        # the probe and the floor, or the key-agreement witness that vouches for them (`auto` with several keys
        # chose the key by this very probe already; not with strangers: it probed for theirs too)
        probe_key = bool(strangers) or not (key.probed and key is not device)
        # the witness compared after the prompt only where its miss needs no more than the probe and the floor:
        # not with strangers (UnknownAccount), a touch first, a finger (no PIN), credProtect 3 (its own error)
        defer = not (strangers or touch_first or key.fingerprint_ready() or any(s.cred_protect >= 3 for s in slots))
        try:
            _before_prompt(guard, key, credentials, user, probe_key, strangers, sorted(r.user for r in others), defer)
        except NoKeyHoldsCredential:
            _hidden_from_probe(records, slots, user)
            raise
        held.callback(guard.remember)  # what it learnt, for the next sign-in: after the verdict, or the failure
        if touch_first:
            interaction.touch(Purpose.PRESENCE_FIRST)
            key.confirm_presence(credentials)
        prepared = _Prepared(store, key, interaction, policy, purpose, _public_keys(slots), guard)
        key.prefetch_key_agreement()  # while the person types (unless in hand): after the PIN, token and assertion
        # the PIN (never one no key accepts, spent through the PIN guard), or the finger of a bio key with the PIN
        # as its fallback; the attempts left shown only when read (not on the witness's word)
        left = guard.state.attempts_left if guard.state else None
        label = _label_of(slots, key.matched)  # the key's name in the prompt ("PIN of 'backup-nano'"), if known
        verification = Verification(
            key,
            lambda: check_pin(interaction.ask_pin(purpose, key_label=label, attempts_left=left)),
            lambda: interaction.touch(purpose),
            prepared.pin_token,
        )
        if user is not None:
            return prepared.named(verification, records[user], slots, held)
        return prepared.usernameless(verification, records, slots, held)
    except BaseException:
        held.close()
        raise


def _label_of(slots: Sequence[Slot], matched: tuple[str, bytes] | None) -> str | None:
    """The label of the slot whose credential the probe found on the key; without a probe (a warm sign-in on the
    witness's word) the label of the one slot there is; None otherwise, or when that slot has none."""
    if matched is None:
        return slots[0].label if len(slots) == 1 else None
    rp_id, credential_id = matched
    return next((s.label for s in slots if s.credential_id == credential_id and s.rp_id == rp_id), None)


def _hidden_from_probe(records: dict[str, tuple[Record, Stamp]], slots: Sequence[Slot], user: str | None) -> None:
    """The probe found none of `slots`: if some were enrolled with credProtect 3 (which hides them from it), say
    so (CredentialHiddenFromProbe) rather than that no key holds them."""
    ids = {s.credential_id for s in slots if s.cred_protect >= 3}
    hidden = sorted(
        (n, s.credential_id_text) for n, (r, _) in records.items() for s in r.slots if s.credential_id in ids
    )
    if hidden:
        raise CredentialHiddenFromProbe(hidden, user) from None


def _public_keys(slots: Sequence[Slot]) -> dict[bytes, PublicKey]:
    """Each slot's public key parsed now; one that does not parse is left to verify_assertion, which says so."""
    parsed = {}
    for slot in slots:
        try:
            parsed[slot.public_key] = PublicKey.parse(slot.public_key)
        except (ValueError, TypeError, KeyError):
            continue
    return parsed


def _accounts_only(
    records: dict[str, tuple[Record, Stamp]], is_account: Callable[[str], bool]
) -> tuple[dict[str, tuple[Record, Stamp]], list[Record]]:
    """The records of names that are accounts (candidates), and the others' (never named, only told apart)."""
    accounts = {name: read for name, read in records.items() if is_account(name)}
    return accounts, [record for name, (record, _) in records.items() if name not in accounts]


def _before_prompt(
    guard: pinguard.Guard,
    key: Key,
    credentials: list[tuple[str, bytes]],
    user: str | None,
    probe_key: bool,
    strangers: list[tuple[str, bytes]],
    names: list[str],
    defer: bool = False,
) -> None:
    """The PIN guard's steps before the prompt (`defer`: pinguard.Guard.before_prompt). Usernameless with enrolled
    names that are no account (`strangers`, their credentials): the key must hold an account's credential; one that
    holds only the others' is UnknownAccount, before any PIN (one more up=false probe, no touch)."""
    try:
        guard.before_prompt(credentials, user, probe_key=probe_key, defer=defer)
    except NoKeyHoldsCredential:
        if strangers and key.holds_any(strangers):
            raise UnknownAccount(names) from None
        raise


def _all_records(store: Store) -> dict[str, tuple[Record, Stamp]]:
    records = {}
    hint = "a usernameless unlock looks at every user's record: run it as root, or name the user"
    for name in store.users(hint):
        try:
            records[name] = store.read_stamped(name)
        except StoreError:
            continue  # someone else's broken record must not stop this sign-in; it is reported on its own unlock
    return records


@dataclass
class _Prepared:
    """What the flow knows before the PIN: the store, the open key, the parsed public keys."""

    store: Store
    key: Key
    interaction: Interaction
    policy: ClonePolicy
    purpose: Purpose
    public_keys: dict[bytes, PublicKey]
    guard: pinguard.Guard

    def pin_token(self, pin: str, permissions: int, rp_id: str | None) -> Token:
        """The PIN spent only through the PIN guard: the key agreement and the floor again (if a PIN may have been
        sent since the first read), under the store's PIN lock."""
        return self.guard.token(pin, permissions, rp_id)

    def named(
        self, verification: Verification, read: tuple[Record, Stamp], slots: list[Slot], held: contextlib.ExitStack
    ) -> Verified:
        # The salt must be chosen before asking, so ask for one credential at a time; a slot of this key's model
        # (AAGUID) first: with one key per user, or keys of different models, that is one getAssertion.
        aaguid = bytes(self.key.info.aaguid)
        ordered = sorted(slots, key=lambda s: s.aaguid != aaguid)
        token: Token | None = None
        for slot in ordered:
            if token is None or token.rp_id != slot.rp_id:
                token = verification.token(PERMISSION.GET_ASSERTION, slot.rp_id)
            try:
                return self.finish(token, read, slot, held)
            except CredentialNotOnKey:
                continue
        raise CredentialNotOnKey(read[0].user)

    def usernameless(
        self,
        verification: Verification,
        records: dict[str, tuple[Record, Stamp]],
        slots: list[Slot],
        held: contextlib.ExitStack,
    ) -> Verified:
        owner = {s.credential_id: (name, s) for name, (r, _) in records.items() for s in r.slots}
        for rp in _rp_ids(slots):
            token = verification.token(PERMISSION.GET_ASSERTION, rp)
            try:
                accounts = self.key.accounts(token, rp)
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
            chosen = names[0] if len(names) == 1 else self.interaction.choose_account(names)
            if chosen is None or chosen not in names:
                raise AmbiguousUser(names)
            slot = next(s for name, s in found if name == chosen)
            return self.finish(token, records[chosen], slot, held)
        raise CredentialNotOnKey()

    def finish(self, token: Token, read: tuple[Record, Stamp], slot: Slot, held: contextlib.ExitStack) -> Verified:
        """The one touched getAssertion, then unwrap and verify, under the user's lock; the rotation is returned
        for commit() (the lock stays held until then)."""
        store, interaction = self.store, self.interaction
        record, stamp = read
        user = record.user
        path = str(store.record_path(user))
        new_salt = keys.new_salt()
        lock = contextlib.ExitStack()
        writable = lock.enter_context(store.locked(user))
        try:
            # under the lock, the record as it is now: another sign-in may have rotated the salt meanwhile (its
            # file is then another one: re-read only then)
            fresh = (record if store.stamp(user) == stamp else store.read(user)) if writable else None
            current = fresh.slot_for(slot.credential_id) if fresh else slot
            if current is None:
                raise NotEnrolled(user, "the credential was removed meanwhile")
            if not token.by_finger:  # a matched finger was the touch
                interaction.touch(self.purpose)
            try:
                assertion = self.key.hmac_assertion(
                    token, current.rp_id, [current.credential_id], current.salt, new_salt, up=current.require_up
                )
            except CredentialNotOnKey:
                self.guard.not_on_key(current.rp_id, current.credential_id)
                raise
            public_key = self.public_keys.get(current.public_key, current.public_key)
            unlock_key, count = _open_and_verify(interaction, path, user, current, public_key, assertion, self.policy)
            self.guard.seen(current.rp_id, current.credential_id)
        except BaseException:
            lock.close()
            raise
        held.push(lock)  # the lock is released before the key is closed (the ExitStack unwinds in reverse)
        rotate = None
        if fresh is not None:
            new_slot = current.with_(salt=new_salt, sign_count=count)
            output2 = assertion.output2

            def rotate(warnings: list[str]) -> bool:
                return _rotate(store, fresh, new_slot, output2, unlock_key, warnings)

        return Verified(UnlockResult(user, unlock_key, current.credential_id, False), held, rotate)


def _rp_ids(slots: Sequence[Slot]) -> list[str]:
    counts: dict[str, int] = {}
    for s in slots:
        counts[s.rp_id] = counts.get(s.rp_id, 0) + 1
    return sorted(counts, key=lambda rp: -counts[rp])


def _open_and_verify(
    interaction: Interaction,
    path: str,
    user: str,
    slot: Slot,
    public_key: bytes | PublicKey,
    assertion: HmacAssertion,
    policy: ClonePolicy,
) -> tuple[bytes, int]:
    if assertion.output1 is None or assertion.output2 is None:
        raise AssertionInvalid("The security key's answer has no (or a malformed) hmac-secret output.")
    unlock_key = open_slot(user, slot, assertion.output1, path)

    def warn(cloned: ClonedKey) -> None:
        from . import audit  # only when a clone is seen

        audit.clone_detected(user, cloned.stored, cloned.seen, refused=False)
        interaction.info(ClonedKeyWarning(cloned.stored, cloned.seen))

    try:
        new_count = verify_assertion(
            assertion,
            rp_id=slot.rp_id,
            credential_id=slot.credential_id,
            public_key=public_key,
            stored_count=slot.sign_count,
            require_up=slot.require_up,
            require_uv=slot.require_uv,
            clone_policy=policy,
            warn=warn,
        )
    except ClonedKey as exc:
        from . import audit

        audit.clone_detected(user, exc.stored, exc.seen, refused=True)
        raise
    return unlock_key, new_count


def _rotate(
    store: Store, record: Record, new_slot: Slot, output2: bytes | None, unlock_key: bytes, warnings: list[str]
) -> bool:
    """Rewrap under salt2's output. A failed write keeps the old record (still valid) and the sign-in.

    `record` was read under the lock that is still held, so nothing has changed it since."""
    assert output2 is not None  # noqa: S101 - narrows: _open_and_verify refused a missing output2
    try:
        updated = record.replace_slot(seal_slot(record.user, new_slot, output2, unlock_key))
        if updated.uk_check is None:  # a record older than uk_check gains it (Record.check_same_enrollment)
            updated = updated.with_(uk_check=keys.unlock_key_check(unlock_key))
        store.write(updated)
        return True
    except StoreWriteFailed as exc:
        from . import audit  # only on failure

        audit.rotation_write_failed(record.user)
        warnings.append(exc.message)
        return exc.replaced
