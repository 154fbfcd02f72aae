"""The PIN guard: nothing spends a PIN attempt that a check could have saved (docs/threat-model.md, attacker 6).

A PIN attempt is the user's scarcest resource (8 in a key's life, 3 per plug-in), and whoever can start a sign-in
(`su victim`, an ssh login) can spend one. So, before the PIN is asked:

1. `probe`: the key must hold one of the user's credentials (up=false getAssertion with the allow-list, no PIN,
   no touch), always, also with one key plugged in; otherwise NoKeyHoldsCredential and nobody is asked.
2. `check_floor`: with `floor` > 0, a key with `floor` attempts left or fewer is not asked (PinFloorReached), nor a
   soft-locked one (PinSoftLocked: replug) or a blocked one (PinBlocked).

and when it is sent:

3. `device.check_pin` (inside Key.pin_token): a PIN no key accepts never leaves the machine (PinMalformed).
4. `Guard.token`: the floor is checked again right before getPinUvAuthToken, under the store's PIN lock, so
   concurrent sign-ins (ten `su victim` at once, all past step 2 with 8 attempts left) cannot together go below it.
   The attempts are read again only if a PIN may have been sent since step 2: the PIN generation in STORE/.pin.lock
   (store.PinLock), bumped under the exclusive lock before every PIN sent here and read with step 2 under the shared
   lock, changed or unknown (no lock held, a file that does not hold one) -> read again. When it changed, the key
   agreement fetched before the prompt is fetched again too: the other sign-in's PIN, if wrong, made the key
   regenerate it, and a PIN sent under a stale one decrypts to garbage on the key, which counts it as wrong. PINs
   sent by other programs, or by hmacunlock's own commands that do not go through this lock (enroll, `key
   verify-pin`, luks, systemd-fido2), are not counted.

The key-agreement witness (where the key is opened with a cache: the warm helper's children, keyinfo.py) makes steps
1 and 2 free on a key nothing happened to since our last sign-in. A key makes a new key-agreement key pair at every
power-up and at every PIN mismatch (CTAP 2.0 and 2.1, authenticatorClientPIN; the software key does the same:
softkey/pin.py), and keeps it across a successful token. So after a PIN token the key gave, the guard remembers per
device identity (keyinfo's `Witness`): the protocol and the key's key-agreement public key that token was made
under, the highest attempts count read from the key at it (`max_seen`), the credentials an assertion then showed on
the key, and hmacunlock's count of its own changes to keys (STORE/.keys.changes, `key_changed`). The next sign-in
compares the key's key agreement (the token needs it anyway) with the remembered one; if it is the same (a hit):

- no power cycle and no mismatch happened since our success, so the key's retry counter is at its maximum (a
  success resets it) and its mismatch counter at 0: the getPinRetries of step 2 is skipped. Even if the witness were
  fooled (a key that renews only the protocol a mismatch came in on, as the software key does, and another client
  mistyping on the other protocol), a key soft-locks after 3 mismatches in a row within a power cycle, so the
  attempts left are at least `max_seen` - 3: it is skipped only when that is above the floor (`check_floor` refuses
  at `<= floor`), else read as before. The prompt then shows no count (`attempts_left=None`): it is not known.
- a credential seen on the key at this agreement, with the key-change count unchanged since, is still there: within
  a power cycle a credential goes only by a PIN-authorised credential-management delete (a reset needs a power-up),
  so the probe of step 1 is skipped. The trade-off: another program deleting the credential with the right PIN, the
  key not replugged, then a mistyped PIN here, costs one attempt (the right PIN costs none: the token succeeds and
  the assertion says CredentialNotOnKey, and the witness drops the credential). hmacunlock's own commands that
  change what is on a key call `key_changed(store)` first (a credential-management token got through `Guard.token` /
  `token` counts as one by itself): every witness is then doubted until a sign-in has seen its credential again.
  (Not the PIN generation: every guarded PIN bumps that, so any other user's sign-in, or a spawned helper's, would
  cost the next warm sign-in its probe.)

A miss (another agreement, nothing remembered, a torn entry) runs steps 1 and 2 as without a witness; the fetched
agreement stays good for the token (neither a probe nor getPinRetries renews it). The witness never decides a
success (that is the verified assertion), and a wrong, soft-locked or blocked PIN answer forgets it.

When the witness would vouch for both steps on a hit (its `max_seen` above the floor; the user's credential among
those it saw, with the key-change count unchanged), the caller may show the prompt at once (`defer`): the key
agreement is then fetched while the person types (in a thread) and compared after the PIN is in, before it is sent
(`confirm`, the first thing `token` does). A hit costs nothing more; on a miss steps 1 and 2 run then, still before
the PIN leaves the machine, so a miss can cost a PIN typed in vain (the key does not hold the credential any more, or
it is at its floor: NoKeyHoldsCredential, PinFloorReached, ...), never an attempt. Misses are rare on a key with a
witness: a replugged key is a new device identity (no witness: the checks come before the prompt), so a miss needs
another client's wrong PIN on this plug-in. The PIN generation is read before the agreement is fetched, so a guarded
PIN sent in between is seen under the lock as before.

`charge` (the PAM helper's throttle) is called once, right before the PIN first goes to the key, after every check
that could refuse it (under the PIN lock: the floor read again, the key's PIN-not-set answer, its device lock): a PIN
typed in vain is not charged. (A PIN sent again under a second token, at another RP id, is not charged twice: the
key accepted it the first time.)

Each step is one CTAP message at most and a separate call, so a caller can see (and time) it on its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from .device import PERMISSION, Key, PinState, Token, check_pin
from .errors import (
    CredentialNotOnKey,
    NoKeyHoldsCredential,
    PinBlocked,
    PinFloorReached,
    PinSoftLocked,
    WrongPin,
)
from .keyinfo import MAX_PRESENT, Witness, credential_id_digest
from .store import Store

DEFAULT_FLOOR = 3  # PAM and the CLI: at 3 attempts left or fewer, the key is not asked (pin_floor=, --pin-floor)
MISMATCHES_BEFORE_SOFT_LOCK = 3  # CTAP 2.x: PIN mismatches in a row within one power cycle before a key soft-locks


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


def above_floor(witness: Witness, floor: int) -> bool:
    """A key that still has `witness`'s agreement has more than `floor` attempts left, whatever happened on
    another protocol: at least max_seen - 3 (see the module's docstring)."""
    return witness.max_seen - MISMATCHES_BEFORE_SOFT_LOCK > floor


def key_changed(store: Store) -> None:
    """hmacunlock is about to change what is on a key (delete a credential, say): count it (STORE/.keys.changes,
    under the exclusive PIN lock), so that no witness vouches for a credential until a sign-in has seen it again.
    Call it BEFORE the change; if it raises (StoreWriteFailed), do not make the change."""
    with store.pin_lock() as lock:
        if lock is not None:
            lock.bump_key_changes()


def token(
    store: Store, key: Key, pin: str, permissions: int, rp_id: str | None, floor: int, seen: int | None = None
) -> Token:
    """Step 4 for a caller with one PIN to send and no Guard of its own (a command's credential-management token):
    as Guard.token, `seen` being the PIN generation a first read saw (None: unknown, so under the lock the key
    agreement is fetched there and, with floor > 0, the attempts read)."""
    guard = Guard(store, key, floor)
    guard.generation = seen
    return guard.token(pin, permissions, rp_id)


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """A witness that would vouch for steps 1 and 2, to be compared with the key's agreement after the prompt."""

    witness: Witness
    credentials: tuple[tuple[str, bytes], ...]
    user: str | None
    probe_key: bool


class Guard:
    """One sign-in's PIN guard: steps 1 and 2 before the prompt (`before_prompt`, with `defer` finished by
    `confirm` after it), 3 and 4 when the PIN is sent (`token`), and the witness it leaves for the next sign-in on
    this key (`seen`, `not_on_key`, `remember`). `charge`: called once, right before the first PIN is sent."""

    def __init__(self, store: Store, key: Key, floor: int, charge: Callable[[], None] | None = None) -> None:
        self.store, self.key, self.floor = store, key, floor
        self._charge = charge
        self._deferred: _Deferred | None = None  # before_prompt(defer=True) left the comparison to confirm()
        self.state: PinState | None = None  # the attempts read before the prompt (None: not read)
        self.generation: int | None = None  # the PIN generation they were read at (or would have been)
        self.changes: int | None = None  # hmacunlock's count of key changes then (STORE/.keys.changes)
        self.hit = False  # the key still had the remembered witness's agreement
        self._remembered: Witness | None = None
        self._present_stands = False  # hit and no key change since: the credentials it saw are still on the key
        self._reads: list[int] = []  # getPinRetries answers read in this sign-in
        self._generation_read = False  # generation and changes are the first read's, before any agreement fetched
        self._learnt: Witness | None = None  # what to remember, once a PIN token succeeded

    def before_prompt(
        self, credentials: Sequence[tuple[str, bytes]], user: str | None, *, probe_key: bool, defer: bool = False
    ) -> None:
        """Steps 1 and 2 (`probe_key`: False when `auto` already chose the key by this very probe), each skipped
        where the witness vouches for it. `defer` (the caller asks for the PIN next, and sends nothing to the key
        before the PIN is sent): a witness that would vouch for both is compared after the prompt (`confirm`)."""
        key = self.key
        remembered = key.witness() if key.remembers else None
        if remembered is None:
            self._miss(credentials, user, probe_key)  # the agreement is fetched after (prefetch_key_agreement)
            return
        self._read(0)  # the PIN generation and the key changes, before the agreement is fetched
        if defer and self._would_vouch(remembered, credentials, probe_key):
            self._deferred = _Deferred(remembered, tuple(credentials), user, probe_key)
            key.prefetch_key_agreement()  # while the prompt shows and the person types
            return
        agreement = key.key_agreement_now()
        if agreement is None or not remembered.is_for(*agreement):
            self._miss(credentials, user, probe_key)
            return
        self.hit, self._remembered = True, remembered
        self._read(0 if above_floor(remembered, self.floor) else self.floor)
        self._present_stands = self.changes is not None and self.changes == remembered.changes
        if probe_key and not (self._present_stands and remembered.holds_any(credentials)):
            probe(key, credentials, user)

    def witness_seen(self) -> Witness | None:
        """The witness this sign-in goes on (a hit, or one left to `confirm`), for what it saw on the key (the prompt
        names the key by the label of the one slot whose credential it saw); never a decision."""
        if self._deferred is not None:
            return self._deferred.witness
        return self._remembered if self.hit else None

    def _would_vouch(self, witness: Witness, credentials: Sequence[tuple[str, bytes]], probe_key: bool) -> bool:
        """On a hit, `witness` would skip both steps: the floor's read, and the probe where one is needed."""
        present = self.changes is not None and self.changes == witness.changes and witness.holds_any(credentials)
        return above_floor(witness, self.floor) and (present or not probe_key)

    def _miss(self, credentials: Sequence[tuple[str, bytes]], user: str | None, probe_key: bool) -> None:
        if probe_key:
            probe(self.key, credentials, user)
        self._read(self.floor)

    def confirm(self) -> None:
        """The comparison before_prompt(defer=True) left, once the PIN is in and before it is sent: the agreement
        fetched meanwhile is the witness's (a hit: nothing more to do), or steps 1 and 2 run now, as on a miss
        before the prompt (NoKeyHoldsCredential, PinFloorReached, ...: the PIN is not sent). Nothing if none left."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return
        agreement = self.key.agreement_in_hand()
        if agreement is None or not deferred.witness.is_for(*agreement):
            self._miss(deferred.credentials, deferred.user, deferred.probe_key)
            return
        self.hit, self._remembered = True, deferred.witness
        self._present_stands = self.changes is not None and self.changes == deferred.witness.changes

    def _read(self, floor: int) -> None:
        """Step 2 under the shared PIN lock (so that no guarded PIN goes out between the generation and the
        attempts); with floor 0 (or the witness's word) only the generation and the key changes are read. The
        generation (and the key changes) kept are the first read's: every key agreement this sign-in holds was
        fetched after it, so `token` fetches the agreement again if any guarded PIN went out since (a later read,
        after a miss found behind the prompt, must not hide one sent while the person typed). So once they are read,
        a read with floor 0 has nothing left to do: no lock is taken for it."""
        if floor <= 0 and self._generation_read:
            return
        with self.store.pin_lock(shared=True) as lock:
            if not self._generation_read:
                self._generation_read = True
                if lock is not None:
                    self.generation, self.changes = lock.generation(), lock.key_changes()
            self.state = check_floor(self.key, floor)
        if self.state is not None:
            self._reads.append(self.state.attempts_left)

    def token(self, pin: str, permissions: int, rp_id: str | None) -> Token:
        """Step 4: under the store's PIN lock (held for these messages only), the key agreement and the floor again
        if a PIN may have been sent since `before_prompt` read the generation, the key's own refusals that need no
        PIN (PinNotSet) and its device lock, `charge` (once), the generation bumped, the PIN token. A wrong,
        soft-locked or blocked answer forgets the witness. First of all what `defer` left (`confirm`). So a PIN
        that any check refuses is neither sent nor charged."""
        check_pin(pin)  # a PIN no key accepts: refused before anything, uncharged
        self.confirm()
        with self.store.pin_lock() as lock:
            generation = lock.generation() if lock is not None else None
            changed = lock is not None and (
                self.generation is None or generation is None or generation != self.generation
            )
            if changed:
                self.key.key_agreement_now()  # another sign-in's wrong PIN may have renewed it
            if self.floor > 0 and (changed or lock is None):
                state = check_floor(self.key, self.floor)
                if state is not None:
                    self._reads.append(state.attempts_left)
            changes = lock.key_changes() if lock is not None else None
            if lock is not None and int(permissions) & int(PERMISSION.CREDENTIAL_MGMT):
                lock.bump_key_changes()  # a credential-management token may delete one: no witness vouches past it
            self.key.ready_for_pin()
            if self._charge is not None:
                charge, self._charge = self._charge, None
                charge()  # the PIN goes to the key next: nothing left that could refuse it unsent
            if lock is not None:
                lock.bump()
            try:
                token = self.key.pin_token(pin, permissions, rp_id)
            except (WrongPin, PinSoftLocked, PinBlocked):
                self.key.remember_witness(None)
                raise
        self._learn(token, changes)
        return token

    def _learn(self, token: Token, changes: int | None) -> None:
        if not self.key.remembers or token.by_finger or not token.agreement_id:
            return
        old = self._remembered
        same = old is not None and old.is_for(token.protocol.VERSION, token.agreement_id)
        max_seen = max([*self._reads, old.max_seen if old is not None and same else 0])
        stands = same and self._present_stands and changes is not None and changes == self.changes
        present = old.present if old is not None and stands else frozenset()
        self._learnt = Witness(token.protocol.VERSION, token.agreement_id, max_seen, present, changes)

    def seen(self, rp_id: str, credential_id: bytes) -> None:
        """A verified assertion showed this credential on the key (under the token `token` returned)."""
        if self._learnt is not None:
            digest = credential_id_digest(rp_id, credential_id)
            kept = sorted(self._learnt.present - {digest})[: MAX_PRESENT - 1]
            self._learnt = dataclasses.replace(self._learnt, present=frozenset([digest, *kept]))

    def not_on_key(self, rp_id: str, credential_id: bytes) -> None:
        """The key said it does not hold this credential."""
        if self._learnt is not None:
            gone = credential_id_digest(rp_id, credential_id)
            self._learnt = dataclasses.replace(self._learnt, present=self._learnt.present - {gone})

    def remember(self) -> None:
        """Keep what this sign-in learnt for the next one (after the verdict; nothing if no PIN token succeeded)."""
        if self._learnt is not None:
            self.key.remember_witness(self._learnt)
            self._learnt = None
