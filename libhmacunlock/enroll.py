"""Enroll a security key for a user (docs/how-it-works.md, The key hierarchy; issue 3).

First enrollment: a random unlock key (UK). A further key (or re-enrolment after recovery-only): UK comes from
something already enrolled — another key (`existing_device`, its PIN asked first) or the recovery secret — and the
same UK is wrapped for the new key. On the new key: one PIN entry, a token (mc|ga) → makeCredential (discoverable,
credProtect, hmac-secret, random 32-byte user handle) → a fresh ga token → one getAssertion whose hmac-secret output
wraps UK under the slot's first salt. That assertion is verified like any unlock.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field

from . import keys
from .device import PERMISSION, CtapDevice, Key, Verification
from .discovery import opened_key
from .errors import CredentialExcluded, CredProtectUnsupported, ExitCode, HmacUnlockError
from .interaction import Interaction, Purpose
from .names import check_label, check_rp_id
from .names import check_user_name as check_account_name
from .records import Record, Slot, now, open_slot, seal_slot
from .recovery import recovery_unlock
from .store import Store
from .unlock import unlock
from .verify import verify_assertion

USER_HANDLE_SIZE = 32
CRED_PROTECT_LEVELS = (1, 2)  # 3 hides the credential from the PIN guard's probe: no sign-in could find it


def check_cred_protect(level: int) -> None:
    """Before any PIN: a credProtect level a sign-in can use (CredProtectUnsupported otherwise)."""
    if level not in CRED_PROTECT_LEVELS:
        raise CredProtectUnsupported(level)


class AlreadyEnrolled(HmacUnlockError):
    """A further key needs the unlock key, so something already enrolled must authorise it."""

    exit_code = ExitCode.USAGE

    def __init__(self, user: str) -> None:
        super().__init__(
            f"User {user!r} is already enrolled: add a further key with --existing-device DEVICE "
            "(a key already enrolled) or --recovery (the recovery key or passphrase)."
        )


class KeyAlreadyEnrolled(HmacUnlockError):
    """The key being enrolled already holds one of the user's enrolled credentials for this RP: a second
    credential on the same key is no backup, and would only take a slot of the key's storage."""

    exit_code = ExitCode.USAGE

    def __init__(self, user: str, rp_id: str, *, asked: bool = False) -> None:
        # asked: found by makeCredential's excludeList (a credProtect-3 credential hides from the probe), after the
        # PIN and a touch; otherwise by the probe, before either
        done = "No credential was made" if asked else "Nothing was asked of the key"
        super().__init__(
            f"This security key is already enrolled for {user!r} (RP {rp_id}): a second credential on the same key "
            "is no backup. Enroll another key, or remove that key's slot first ('hmacunlock remove "
            f"{user} --credential ID'). {done} and nothing was changed."
        )


def _refuse_a_key_already_enrolled(store: Store, device: str | CtapDevice | Key, user: str, rp_id: str) -> None:
    """Before any PIN: the up=false probe (no PIN, no touch) for the user's credentials at this RP on this key."""
    if not store.exists(user):
        return
    enrolled = [(s.rp_id, s.credential_id) for s in store.read(user).slots if s.rp_id == rp_id]
    if not enrolled:
        return
    with opened_key(device) as key:
        if key.holds_any(enrolled):  # credProtect 3 credentials hide from this probe; the default 2 does not
            raise KeyAlreadyEnrolled(user, rp_id)


@dataclass(frozen=True)
class EnrollResult:
    user: str
    credential_id: bytes
    rp_id: str
    first: bool  # a new unlock key was made
    unlock_key: bytes = field(repr=False)


def default_rp_id() -> str:
    """`hmacunlock.<hostname>`: one RP per machine, shaped like a domain name as some clients expect."""
    host = re.sub(r"[^a-z0-9.-]", "-", socket.gethostname().lower()).strip(".-")
    return f"hmacunlock.{host or 'localhost'}"


def enroll(
    store: Store | str | os.PathLike[str] | None,
    device: str | CtapDevice | Key,
    interaction: Interaction,
    user: str,
    *,
    rp_id: str | None = None,
    existing_device: str | CtapDevice | Key | None = None,
    recovery: bool = False,
    cred_protect: int = 2,
    label: str | None = None,
) -> EnrollResult:
    """`label` names the new key in `hmacunlock list` and in PIN prompts ("PIN of 'backup-nano'")."""
    store = Store.of(store)
    # Everything that can be checked without the key, before any PIN or touch (a refusal costs nothing).
    check_account_name(user)  # shaped like a login name (which also makes it safe as a file name)
    check_cred_protect(cred_protect)
    rp_id = check_rp_id(default_rp_id() if rp_id is None else rp_id)
    if label is not None:
        label = check_label(label)
    store.check_writable(user, f"hmacunlock enroll {user}")
    if existing_device is not None or recovery:  # without either, _authorise refuses an enrolled user anyway
        _refuse_a_key_already_enrolled(store, device, user, rp_id)
    unlock_key, first, seen = _authorise(store, interaction, user, existing_device, recovery)
    enrolled_ids = [s.credential_id for s in store.read(user).slots if s.rp_id == rp_id] if store.exists(user) else []
    with opened_key(device) as key:
        key.require_features()
        # the PIN, or the finger of a bio key with the PIN as its fallback (device.Verification)
        verification = Verification(
            key,
            lambda: interaction.ask_pin(Purpose.ENROLL_FIRST if first else Purpose.ENROLL_FURTHER, key_label=label),
            lambda: interaction.touch(Purpose.MAKE_CREDENTIAL),
        )
        token = verification.token(PERMISSION.MAKE_CREDENTIAL | PERMISSION.GET_ASSERTION, rp_id)
        if not token.by_finger:  # a matched finger was the touch
            interaction.touch(Purpose.MAKE_CREDENTIAL)
        try:  # the excludeList: the backstop for a credProtect-3 credential of the user, which the probe cannot see
            cred = key.make_credential(
                token, rp_id, os.urandom(USER_HANDLE_SIZE), user, cred_protect=cred_protect, exclude=enrolled_ids
            )
        except CredentialExcluded:
            raise KeyAlreadyEnrolled(user, rp_id, asked=True) from None
        # a touched makeCredential uses up the token's permissions (CTAP 2.1 §6.5.5.7): a fresh one for ga
        token = verification.token(PERMISSION.GET_ASSERTION, rp_id, lambda: interaction.touch(Purpose.CHECK_CREDENTIAL))
        salt = keys.new_salt()
        if not token.by_finger:
            interaction.touch(Purpose.CHECK_CREDENTIAL)
        assertion = key.hmac_assertion(token, rp_id, [cred.credential_id], salt)
    count = verify_assertion(
        assertion,
        rp_id=rp_id,
        credential_id=cred.credential_id,
        public_key=cred.public_key,
        stored_count=cred.sign_count,
    )
    assert assertion.output1 is not None  # noqa: S101 - narrows: verify_assertion refused a missing output1
    slot = Slot(
        credential_id=cred.credential_id,
        rp_id=rp_id,
        user_handle=cred.user_handle,
        public_key=cred.public_key,
        aaguid=cred.aaguid,
        sign_count=count,
        salt=salt,
        wrapped=b"",
        require_uv=True,
        require_up=True,
        cred_protect=int(cred.cred_protect or 0),
        created=now(),
        label=label,
    )
    slot = seal_slot(user, slot, assertion.output1, unlock_key)
    open_slot(user, slot, assertion.output1, str(store.record_path(user)))  # the new slot opens, before saving it
    # Decide and write under one lock: the record as it is now must still want this UK (issue 17, F1/F2).
    with store.locked(user, for_write=True):
        record = store.read(user) if store.exists(user) else Record(user)
        record.check_same_enrollment(None if first else unlock_key, seen)
        store.write(record.with_(slots=record.slots + (slot,), uk_check=keys.unlock_key_check(unlock_key)))
    return EnrollResult(user, cred.credential_id, rp_id, first, unlock_key)


def _authorise(
    store: Store, interaction: Interaction, user: str, existing_device: str | CtapDevice | Key | None, recovery: bool
) -> tuple[bytes, bool, frozenset[str]]:
    """(UK, first?, the record's slot ids seen before UK was unlocked) — a new UK only when the user has nothing
    enrolled; otherwise from an enrolled secret. Only a hint: the decision is taken again under the lock."""
    before = store.read(user) if store.exists(user) else Record(user)
    seen = before.secret_ids()
    if existing_device is not None:
        return unlock(store, existing_device, interaction, user=user, purpose=Purpose.AUTHORISE).unlock_key, False, seen
    if recovery:
        return recovery_unlock(store, user, interaction).unlock_key, False, seen
    if before.has_secrets:
        raise AlreadyEnrolled(user)
    return keys.new_unlock_key(), True, seen
