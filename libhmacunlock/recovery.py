"""Recovery slots: the same unlock key wrapped under a generated recovery key or a passphrase (docs/recovery.md).

A recovery key is 160 random bits, shown once as base32 in groups of four with a checksum group (a typo is
caught before anything is tried); HKDF turns it into the wrapping key. A passphrase goes through Argon2id with
its parameters and salt stored in the slot. Adding a slot first unlocks UK with an enrolled security key.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from . import keys
from .device import CtapDevice, Key
from .errors import ExitCode, HmacUnlockError, NoRecoverySlot, RecoveryFailed
from .interaction import Interaction, Purpose, SecretKind, ask_new_secret
from .records import Record, RecoverySlot, now
from .store import Store
from .unlock import UnlockResult, unlock

MIN_PASSPHRASE = 8


class PassphraseTooShort(HmacUnlockError):
    """A new recovery passphrase under MIN_PASSPHRASE characters: a usage error, found before the PIN is asked."""

    exit_code = ExitCode.USAGE

    def __init__(self, minimum: int) -> None:
        super().__init__(f"A recovery passphrase needs at least {minimum} characters; nothing was added.")


@dataclass(frozen=True)
class AddedRecovery:
    user: str
    slot_id: str
    recovery_key: str | None = field(repr=False)  # the formatted key to show once (None for a passphrase)


def add_recovery(
    store: Store | str | os.PathLike[str] | None,
    device: str | CtapDevice | Key,
    interaction: Interaction,
    user: str,
    *,
    passphrase: bool = False,
    argon2: keys.Argon2Params = keys.Argon2Params(),
) -> AddedRecovery:
    """Add a recovery-key slot (default) or a passphrase slot, after unlocking UK with the security key.

    Everything that can fail without the key is done first, so that it costs no PIN attempt and no touch: the
    record must exist and the store be writable, and a new passphrase is asked (and checked) before the PIN.
    """
    store = Store.of(store)
    seen = store.read(user).secret_ids()  # before UK is unlocked: see Record.check_same_enrollment
    store.check_writable(user, f"hmacunlock recovery add {user}")
    secret: str | None = None
    if passphrase:
        secret = ask_new_secret(
            interaction, SecretKind.NEW_PASSPHRASE, RecoveryFailed("The two passphrases differ; nothing was added.")
        )
        if len(secret) < MIN_PASSPHRASE:
            raise PassphraseTooShort(MIN_PASSPHRASE)
    unlock_key = unlock(store, device, interaction, user=user, purpose=Purpose.AUTHORISE).unlock_key
    slot_id = secrets.token_hex(4)
    shown: str | None = None
    if secret is not None:
        params = argon2.with_new_salt()
        kek, kind, kdf = keys.passphrase_kek(secret, params), "passphrase", params.to_json()
    else:
        raw = keys.new_recovery_key()
        kek, kind, kdf, shown = keys.recovery_key_kek(raw), "recovery-key", None, keys.format_recovery_key(raw)
    slot = RecoverySlot(slot_id, kind, b"", kdf, now())
    slot = RecoverySlot(slot_id, kind, keys.wrap(kek, unlock_key, slot.aad(user)), kdf, slot.created)
    # the passphrase took time to type: under the lock, the record must still be the enrollment UK came from
    with store.locked(user, for_write=True):
        record = store.read(user) if store.exists(user) else Record(user)
        record.check_same_enrollment(unlock_key, seen)
        store.write(record.with_(recovery=record.recovery + (slot,), uk_check=keys.unlock_key_check(unlock_key)))
    return AddedRecovery(user, slot_id, shown)


def recovery_unlock(store: Store | str | os.PathLike[str] | None, user: str, interaction: Interaction) -> UnlockResult:
    """The unlock key from a recovery key or passphrase (asked once). RecoveryFailed if neither opens a slot."""
    store = Store.of(store)
    record = store.read(user)
    if not record.recovery:
        raise NoRecoverySlot(user)
    text = interaction.ask_secret(SecretKind.RECOVERY)
    kinds = {s.kind for s in record.recovery}
    if "recovery-key" in kinds and (_looks_like_recovery_key(text) or "passphrase" not in kinds):
        raw = keys.parse_recovery_key(text)  # RecoveryFailed on a typo, before any unwrap
        kek = keys.recovery_key_kek(raw)  # one key opens every recovery-key slot: derive it once
        candidates = [(s, kek) for s in record.recovery if s.kind == "recovery-key"]
    else:
        candidates = [(s, _passphrase_kek(text, s)) for s in record.recovery if s.kind == "passphrase"]
    for slot, kek in candidates:
        try:
            return UnlockResult(user, keys.unwrap(kek, slot.wrapped, slot.aad(user)), b"", rotated=False)
        except keys.UnwrapError:
            continue
    raise RecoveryFailed(
        f"That recovery key or passphrase does not open any recovery slot of {user!r} (or the record was altered)."
    )


def _looks_like_recovery_key(text: str) -> bool:
    cleaned = keys.clean_recovery_key(text)  # look-alikes 0/1/8 already read as O/I/B
    return len(cleaned) == keys.RECOVERY_KEY_CHARS and all(ch in keys.BASE32_ALPHABET for ch in cleaned)


def _passphrase_kek(text: str, slot: RecoverySlot) -> bytes:
    try:
        params = keys.Argon2Params.from_json(slot.kdf or {})
    except (KeyError, TypeError, ValueError):
        raise RecoveryFailed(f"The passphrase slot {slot.id} of {slot.kind} has unreadable parameters.") from None
    return keys.passphrase_kek(text, params)
