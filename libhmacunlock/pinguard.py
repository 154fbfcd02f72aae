"""The PIN guard: nothing spends a PIN attempt that a check could have saved (docs/threat-model.md, attacker 6).

A PIN attempt is the user's scarcest resource (8 in a key's life, 3 per plug-in), and whoever can start a sign-in
(`su victim`, an ssh login) can spend one. So, before the PIN is asked:

1. `probe`: the key must hold one of the user's credentials (up=false getAssertion with the allow-list, no PIN,
   no touch), always, also with one key plugged in; otherwise NoKeyHoldsCredential and nobody is asked.
2. `check_floor`: with `floor` > 0, a key with `floor` attempts left or fewer is not asked (PinFloorReached), nor a
   soft-locked one (PinSoftLocked: replug) or a blocked one (PinBlocked).

and when it is sent:

3. `device.check_pin` (inside Key.pin_token): a PIN no key accepts never leaves the machine (PinMalformed).
4. `token`: the floor is checked again right before getPinUvAuthToken, under the store's PIN lock, so concurrent
   sign-ins (ten `su victim` at once, all past step 2 with 8 attempts left) cannot together go below it. The
   attempts are read again only if a PIN may have been sent since step 2 (`first_read`): the PIN generation in
   STORE/.pin.lock (store.PinLock), bumped under the exclusive lock before every PIN sent here and read with step 2
   under the shared lock, changed or unknown (no lock held, a file that does not hold one) -> read again. PINs sent
   by other programs, or by hmacunlock's own commands that do not go through this lock (enroll, `key verify-pin`,
   luks, systemd-fido2), are not counted.

Each step is one CTAP message at most and a separate call, so a caller can see (and time) it on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from .device import Key, PinState, Token
from .errors import CredentialNotOnKey, NoKeyHoldsCredential, PinBlocked, PinFloorReached, PinSoftLocked
from .store import Store

DEFAULT_FLOOR = 3  # PAM and the CLI: at 3 attempts left or fewer, the key is not asked (pin_floor=, --pin-floor)


def probe(key: Key, credentials: Sequence[tuple[str, bytes]], user: str | None) -> None:
    """Step 1: the key holds one of `credentials` ((rp id, credential id) pairs), or NoKeyHoldsCredential."""
    try:
        held = key.holds_any(credentials)
    except CredentialNotOnKey:
        held = False
    if not held:
        raise NoKeyHoldsCredential(user)


def check_floor(key: Key, floor: int) -> PinState | None:
    """Step 2: the key's PIN state, refused when it must not be asked; None (no message sent) with floor 0."""
    if floor <= 0:
        return None
    state = key.pin_state()
    if state.attempts_left == 0:
        raise PinBlocked()
    if state.power_cycle_required:
        raise PinSoftLocked()
    if state.attempts_left <= floor:
        raise PinFloorReached(state.attempts_left, floor)
    return state


def first_read(store: Store, key: Key, floor: int) -> tuple[PinState | None, int | None]:
    """Step 2 under the shared PIN lock: the PIN state (check_floor) and the PIN generation it was read at (None:
    unknown, so `token` reads again; also with floor 0, where nothing is read)."""
    if floor <= 0:
        return None, None
    with store.pin_lock(shared=True) as lock:
        generation = lock.generation() if lock is not None else None
        return check_floor(key, floor), generation


def token(
    store: Store, key: Key, pin: str, permissions: int, rp_id: str | None, floor: int, seen: int | None = None
) -> Token:
    """Step 4: the floor again (unless no PIN was sent since `first_read` saw generation `seen`) and the PIN token,
    under the store's PIN lock (held for these messages only); the generation is bumped before the PIN is sent."""
    with store.pin_lock() as lock:
        generation = lock.generation() if lock is not None else None
        if floor > 0 and (seen is None or generation is None or generation != seen):
            check_floor(key, floor)
        if lock is not None:
            lock.bump()
        return key.pin_token(pin, permissions, rp_id)
