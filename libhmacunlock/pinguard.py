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
   sign-ins (ten `su victim` at once, all past step 2 with 8 attempts left) cannot together go below it.

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


def token(store: Store, key: Key, pin: str, permissions: int, rp_id: str | None, floor: int) -> Token:
    """Step 4: the floor again and the PIN token, under the store's PIN lock (held for these two messages only)."""
    with store.pin_lock():
        check_floor(key, floor)
        return key.pin_token(pin, permissions, rp_id)
