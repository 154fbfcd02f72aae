"""The discoverable credentials on a security key, matched to the store (issue 16): `hmacunlock key credentials`.

The key lists them through CTAP 2.1 credential management (device.Key.resident_credentials, under a PIN token with
the `cm` permission); each is matched by credential id to the slot of the user it belongs to on this machine, or
to none ("not on this machine": another computer's, a website's, or a slot removed from the store). The PIN goes to
the key through the PIN guard's lock (pinguard.token), so the PIN generation in STORE/.pin.lock counts it, and a
cm token counts as a key change there (a delete may follow; `key reset` calls pinguard.key_changed itself): a warm
sign-in that remembers what is on a key probes it again.

Which credential a delete would leave a user without is decided from the store before any PIN is asked
(`owner_of`, `Owner.last_way_in`): the CLI refuses that without --force, and confirms the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import pinguard
from .device import PERMISSION, Capacity, Key, ResidentCredential, Token
from .errors import HmacUnlockError, KeyCredentialNotFound
from .records import b64e
from .store import Store


@dataclass(frozen=True)
class Owner:
    """The store slot a credential on the key belongs to."""

    user: str
    slot_id: str  # the slot's credential id as `hmacunlock list` shows it
    label: str | None
    last_way_in: bool  # the user has no other key slot and no recovery slot
    rp_id: str
    cred_protect: int

    def describe(self) -> str:
        return f"{self.user}'s key" + (f" '{self.label}'" if self.label else "") + f" (slot {self.slot_id})"


@dataclass(frozen=True)
class KeyCredential:
    credential: ResidentCredential
    owner: Owner | None  # None: not on this machine

    @property
    def id_text(self) -> str:
        return b64e(self.credential.credential_id)

    def as_json(self) -> dict[str, object]:
        c = self.credential
        owner = self.owner
        return {
            "credential_id": self.id_text,
            "rp_id": c.rp_id,
            "user_name": c.user_name,
            "display_name": c.display_name,
            "user_handle": b64e(c.user_handle),
            "cred_protect": c.cred_protect,
            "local": None
            if owner is None
            else {"user": owner.user, "slot": owner.slot_id, "label": owner.label, "last_way_in": owner.last_way_in},
        }


@dataclass(frozen=True)
class Inventory:
    credentials: tuple[KeyCredential, ...]
    capacity: Capacity
    unreadable: tuple[str, ...]  # users whose record could not be read: their credentials may show as not local

    def find(self, credential_id: bytes) -> KeyCredential | None:
        return next((c for c in self.credentials if c.credential.credential_id == credential_id), None)


def owners(store: Store) -> tuple[dict[bytes, Owner], tuple[str, ...]]:
    """Every key slot in the store by credential id, and the users whose record could not be read."""
    found: dict[bytes, Owner] = {}
    unreadable: list[str] = []
    for user in store.users("listing the store needs root: run it with sudo"):
        try:
            record = store.read(user)
        except HmacUnlockError:
            unreadable.append(user)
            continue
        last = len(record.slots) == 1 and not record.recovery
        for slot in record.slots:
            found[slot.credential_id] = Owner(
                user, slot.credential_id_text, slot.label, last, slot.rp_id, slot.cred_protect
            )
    return found, tuple(unreadable)


def owner_of(store: Store, credential_id: bytes) -> Owner | None:
    """The store slot holding `credential_id`, if any (no key needed: asked before the PIN)."""
    return owners(store)[0].get(credential_id)


def cm_token(
    store: Store | str | os.PathLike[str] | None, key: Key, ask_pin: Callable[[], str], floor: int = 0
) -> Token:
    """A PIN token with the cm permission, the PIN (`ask_pin`) spent through the PIN guard (its lock: the PIN
    generation counts it, and it counts as a key change). With `floor` > 0 the key's PIN state is read before the
    PIN is asked: a key at `floor` attempts left or fewer is not asked (PinFloorReached; PinSoftLocked, PinBlocked),
    and the floor is checked again right before the PIN is sent if another PIN went through the guard meanwhile."""
    key.require_features()
    guard = pinguard.Guard(Store.of(store), key, floor)
    guard.before_prompt((), None, probe_key=False)  # a command has no witness: the floor's read, no probe
    return guard.token(ask_pin(), PERMISSION.CREDENTIAL_MGMT, None)


def inventory(store: Store | str | os.PathLike[str] | None, key: Key, token: Token) -> Inventory:
    """The key's discoverable credentials, each with its local owner, and the key's capacity."""
    found, unreadable = owners(Store.of(store))
    listed: Sequence[ResidentCredential] = key.resident_credentials(token)
    capacity = key.capacity(token)
    return Inventory(tuple(KeyCredential(c, found.get(c.credential_id)) for c in listed), capacity, unreadable)


def delete(store: Store | str | os.PathLike[str] | None, key: Key, token: Token, credential_id: bytes) -> None:
    """Delete the credential on the key (KeyCredentialNotFound when it holds none such). `token` came from cm_token,
    which counted a key change (STORE/.keys.changes) when it was made: no warm sign-in's memory of the key (its
    witness) vouches for the credential afterwards."""
    from .errors import CredentialNotOnKey

    try:
        key.delete_credential(token, credential_id)
    except CredentialNotOnKey:
        raise KeyCredentialNotFound(b64e(credential_id), key.spec) from None
