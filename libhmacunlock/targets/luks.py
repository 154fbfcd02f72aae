"""A LUKS2 volume opened with a user's unlock key: the flows (enroll, find, open, remove, status).

cryptsetup.py runs the `cryptsetup` command; luks_tokens.py is what the tokens say and which passphrase a user's
unlock key gives (docs/luks-and-profile.md). The names of both are re-exported here, the one import callers need.

A keyslot is never left that no token explains (issue 17, F3): under the volume's lock, the flow picks the keyslot
number itself, writes a `hmacunlock-pending` token naming it, adds the keyslot with `--key-slot N`, checks it,
writes the real token and only then drops the pending one. A kill at any step leaves either nothing, or a pending
token that says whose keyslot N is; `remove` and the next `enroll` finish the job, `status` shows it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TargetError
from . import cryptsetup
from .cryptsetup import (
    CRYPTSETUP,
    LUKS2_KEYSLOTS,
    MINIMAL_PBKDF,
    Existing,
    device_mapper_available,
    require_device_mapper,
)
from .luks_tokens import (
    PENDING_TYPE,
    SYSTEMD_RP_ID,
    SYSTEMD_TOKEN_TYPE,
    TOKEN_TYPE,
    TOKEN_VERSION,
    HmacUnlockToken,
    PendingToken,
    SystemdFido2Token,
    encode_passphrase,
    hmacunlock_tokens,
    named_keyslots,
    owner_of_user,
    passphrase_for,
    pending_tokens,
    purpose_label,
    stale_tokens,
    systemd_tokens,
)

__all__ = [
    "CRYPTSETUP",
    "LUKS2_KEYSLOTS",
    "MINIMAL_PBKDF",
    "PENDING_TYPE",
    "SYSTEMD_RP_ID",
    "SYSTEMD_TOKEN_TYPE",
    "TOKEN_TYPE",
    "TOKEN_VERSION",
    "Existing",
    "HmacUnlockToken",
    "PendingToken",
    "Removed",
    "Status",
    "SystemdFido2Token",
    "Volume",
    "add_named_keyslot",
    "already_enrolled",
    "check_or_open",
    "device_mapper_available",
    "encode_passphrase",
    "enroll",
    "find_token",
    "passphrase_for",
    "purpose_label",
    "remove",
    "require_device_mapper",
    "status",
    "volume_passphrase",
]


class Volume(cryptsetup.Volume):
    """A LUKS2 volume read through the token types hmacunlock knows."""

    def hmacunlock_tokens(self, metadata: dict[str, Any] | None = None) -> list[HmacUnlockToken]:
        return hmacunlock_tokens(self.raw_tokens(metadata))

    def systemd_tokens(self, metadata: dict[str, Any] | None = None) -> list[SystemdFido2Token]:
        return systemd_tokens(self.raw_tokens(metadata))

    def token_for(self, user: str, tokens: Sequence[HmacUnlockToken] | None = None) -> HmacUnlockToken | None:
        """`user`'s token, among `tokens` when the caller has already read them (saves a luksDump)."""
        tokens = self.hmacunlock_tokens() if tokens is None else tokens
        return next((t for t in tokens if t.user == user), None)


# --- adding a keyslot that a token names from the start -----------------------------------------------------------


def _free_keyslot(keyslots: Sequence[int], raw: Mapping[int, Mapping[str, Any]], path: str) -> int:
    taken = set(keyslots) | named_keyslots(raw)
    for n in range(LUKS2_KEYSLOTS):
        if n not in taken:
            return n
    raise TargetError(f"{path}: all {LUKS2_KEYSLOTS} LUKS2 keyslots are in use; remove one first.")


def add_named_keyslot(
    volume: cryptsetup.Volume,
    passphrase: bytes,
    existing: Existing,
    owner: str,
    token_for_slot: Callable[[int], dict[str, Any]],
) -> tuple[int, int]:
    """Add a keyslot for `passphrase` and the token `token_for_slot(N)` naming it; (keyslot, token id).

    Call it holding `volume.locked()`. Failures roll back (the keyslot killed, the tokens removed); a kill leaves
    a pending token naming the keyslot and `owner` (module docstring)."""
    meta = volume.metadata()
    raw = volume.raw_tokens(meta)
    slot = _free_keyslot(volume.keyslots(meta), raw, volume.path)
    pending_id = volume.import_token(PendingToken(slot, owner).to_json())
    try:
        volume.add_keyslot(passphrase, existing, keyslot=slot)
    except BaseException:
        with contextlib.suppress(TargetError):
            volume.remove_token(pending_id)
        raise
    try:
        if not volume.test_passphrase(passphrase, slot):  # read back what was written before recording it
            raise TargetError(f"{volume.path}: the new keyslot {slot} does not take its passphrase; removed it.")
        token_id = volume.import_token(token_for_slot(slot))
    except BaseException:
        with contextlib.suppress(TargetError):
            volume.kill_slot(slot)  # no keyslot without the token that explains it
            volume.remove_token(pending_id)
        raise
    volume.remove_token(pending_id)  # a kill before this leaves a pending token whose keyslot a token names: tidy
    return slot, token_id


def _tidy(volume: cryptsetup.Volume, raw: Mapping[int, Mapping[str, Any]], keyslots: Sequence[int]) -> None:
    """Drop what opens nothing: pending tokens whose keyslot is missing or has its real token, stale tokens."""
    named_by_real = named_keyslots({i: t for i, t in raw.items() if t.get("type") != PENDING_TYPE})
    for p in pending_tokens(raw):
        if p.token_id is not None and (p.keyslot not in keyslots or p.keyslot in named_by_real):
            volume.remove_token(p.token_id)
    for token_id in stale_tokens(raw):
        volume.remove_token(token_id)


# --- the flows on our token -------------------------------------------------------------------------------------


def already_enrolled(volume: cryptsetup.Volume, user: str) -> TargetError:
    return TargetError(
        f"{volume.path}: user {user!r} is already enrolled on this volume; "
        f"'hmacunlock luks remove {volume.path} {user}' first to enroll again."
    )


def enroll(volume: Volume, user: str, unlock_key: bytes, existing: Existing) -> HmacUnlockToken:
    """Add a keyslot whose passphrase derives from `user`'s unlock key, and record it in our token.

    A keyslot an interrupted enroll of `user` left (its pending token names it) is removed first when this
    passphrase opens it; one it does not open keeps its pending token, for `remove` (and `status`) to see."""
    with volume.locked():
        meta = volume.metadata()
        raw = volume.raw_tokens(meta)
        if volume.token_for(user, hmacunlock_tokens(raw)) is not None:
            raise already_enrolled(volume, user)
        uuid = volume.uuid()
        passphrase = passphrase_for(unlock_key, uuid)
        _tidy(volume, raw, volume.keyslots(meta))
        meta = volume.metadata()
        for p in pending_tokens(volume.raw_tokens(meta)):
            if (
                p.token_id is not None
                and p.owner == owner_of_user(user)
                and volume.test_passphrase(passphrase, p.keyslot)
            ):
                volume.kill_slot(p.keyslot, meta)
                volume.remove_token(p.token_id)
        purpose = purpose_label(uuid)
        slot, token_id = add_named_keyslot(
            volume,
            passphrase,
            existing,
            owner_of_user(user),
            lambda n: HmacUnlockToken(user=user, keyslot=n, purpose=purpose).to_json(),
        )
    return HmacUnlockToken(user=user, keyslot=slot, purpose=purpose, token_id=token_id)


def find_token(volume: Volume, user: str | None, tokens: Sequence[HmacUnlockToken] | None = None) -> HmacUnlockToken:
    """Our token for `user`, or the only one when no user is named; among `tokens` when already read."""
    tokens = volume.hmacunlock_tokens() if tokens is None else tokens
    if user is not None:
        token = volume.token_for(user, tokens)
        if token is None:
            raise TargetError(
                f"{volume.path}: user {user!r} is not enrolled on this volume "
                f"('hmacunlock luks enroll {volume.path} {user}')."
            )
        return token
    if not tokens:
        raise TargetError(
            f"{volume.path}: no hmacunlock token on this volume ('hmacunlock luks enroll {volume.path} USER')."
        )
    if len(tokens) > 1:
        raise TargetError(
            f"{volume.path}: several users are enrolled on this volume "
            f"({', '.join(t.user for t in tokens)}): name the user."
        )
    return tokens[0]


def volume_passphrase(volume: cryptsetup.Volume, token: HmacUnlockToken, unlock_key: bytes) -> bytes:
    """The passphrase of `token`'s keyslot: always bound to the volume's own UUID, whatever the token says."""
    uuid = volume.uuid()
    label = purpose_label(uuid)
    if token.purpose != label:
        raise TargetError(
            f"{volume.path}: token {token.token_id} names purpose {token.purpose!r}, not this "
            f"volume's {label!r}; refusing to use it."
        )
    return passphrase_for(unlock_key, uuid)


def check_or_open(volume: cryptsetup.Volume, keyslot: int, passphrase: bytes, name: str | None) -> None:
    """Check (`name` None: --test-passphrase) or open the volume with `keyslot`."""
    if name is None:
        if not volume.test_passphrase(passphrase, keyslot):
            raise TargetError(f"{volume.path}: the derived passphrase does not open keyslot {keyslot}.")
        return
    volume.open(name, passphrase, keyslot)


@dataclass(frozen=True)
class Removed:
    """What `remove` took out: keyslots (sorted) and token ids."""

    user: str
    keyslots: tuple[int, ...]
    token_ids: tuple[int, ...]
    swept: bool  # every other keyslot was tried with the user's passphrase


def remove(volume: Volume, user: str, unlock_key: bytes | None = None) -> Removed:
    """Remove every keyslot of `user`: the one their token names, any an interrupted enroll left (pending
    tokens), and, given their `unlock_key`, every other keyslot their derived passphrase opens (an orphan of an
    older version); then their tokens. Never the volume's last keyslot (nothing is removed then)."""
    with volume.locked():
        meta = volume.metadata()
        raw = volume.raw_tokens(meta)
        keyslots = volume.keyslots(meta)
        token = volume.token_for(user, hmacunlock_tokens(raw))
        pending = [p for p in pending_tokens(raw) if p.owner == owner_of_user(user)]
        stale = [i for i, u in stale_tokens(raw).items() if u == user]
        if token is None and not pending and not stale and unlock_key is None:
            find_token(volume, user, [])  # raises: not enrolled on this volume
        doomed = {p.keyslot for p in pending if p.keyslot in keyslots}
        if token is not None:
            doomed.add(token.keyslot)
        if unlock_key is not None:
            passphrase = passphrase_for(unlock_key, volume.uuid())
            others = named_keyslots({i: t for i, t in raw.items() if i != (token.token_id if token else None)})
            for n in keyslots:
                if n not in doomed and n not in others and volume.test_passphrase(passphrase, n):
                    doomed.add(n)
        if doomed and set(keyslots) <= doomed:
            which = f"keyslot {min(doomed)} is" if len(doomed) == 1 else f"keyslots {sorted(doomed)} are"
            raise TargetError(
                f"{volume.path}: {user}'s {which} the volume's last keyslot; refusing to remove "
                f"{'it' if len(doomed) == 1 else 'them'} (add another passphrase first with 'cryptsetup luksAddKey')."
            )
        for n in sorted(doomed):
            volume.kill_slot(n)
        token_ids = [t for t in ([token.token_id] if token else []) if t is not None]
        token_ids += [p.token_id for p in pending if p.token_id is not None] + stale
        for token_id in token_ids:
            volume.remove_token(token_id)
    return Removed(user, tuple(sorted(doomed)), tuple(token_ids), unlock_key is not None)


# --- status -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyslotStatus:
    keyslot: int
    owner: str | None  # "user NAME", "systemd-fido2", another token's type, or None: no token names it
    interrupted: bool  # only a pending token names it: an enroll was killed before its token was written


@dataclass(frozen=True)
class Status:
    keyslots: tuple[KeyslotStatus, ...]

    @property
    def interrupted(self) -> tuple[KeyslotStatus, ...]:
        return tuple(k for k in self.keyslots if k.interrupted)

    @property
    def unexplained(self) -> tuple[KeyslotStatus, ...]:
        """Keyslots no token names: an administrator's passphrase, or an orphan of an older hmacunlock."""
        return tuple(k for k in self.keyslots if k.owner is None)


def status(volume: Volume) -> Status:
    """Who each keyslot belongs to, as the tokens say."""
    meta = volume.metadata()
    raw = volume.raw_tokens(meta)
    owners: dict[int, tuple[str, bool]] = {}
    for p in pending_tokens(raw):
        owners[p.keyslot] = (p.owner, True)
    for t in raw.values():
        if t.get("type") == PENDING_TYPE or not isinstance(t.get("keyslots"), list):
            continue
        who = owner_of_user(str(t.get("hmacunlock-user"))) if t.get("type") == TOKEN_TYPE else str(t.get("type"))
        for s in t["keyslots"]:
            with contextlib.suppress(TypeError, ValueError):
                owners[int(s)] = (who, False)
    return Status(
        tuple(
            KeyslotStatus(n, owners.get(n, (None, False))[0], owners.get(n, (None, False))[1])
            for n in volume.keyslots(meta)
        )
    )
