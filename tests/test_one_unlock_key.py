"""One user, one unlock key (issue 17, F1/F2): every decision about a record is made under the user's lock.

The races are made deterministic: an Interaction holds each flow at a chosen prompt or message (a barrier, or a
callback that removes and re-enrolls the user meanwhile), so the interleaving the sweep found by chance happens
every round. After every round the invariant is checked with the real keys: every slot of the record, and every
recovery slot, opens the same unlock key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from libhmacunlock.device import Key
from libhmacunlock.enroll import AlreadyEnrolled, enroll
from libhmacunlock.errors import CredentialNotOnKey, EnrollmentChanged, HmacUnlockError
from libhmacunlock.interaction import Purpose, ScriptedInteraction, SecretKind
from libhmacunlock.recovery import add_recovery, recovery_unlock
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

USER = "zed"
PASSPHRASE = "correct horse battery"


class HookedInteraction(ScriptedInteraction):
    """ScriptedInteraction that runs `hook` once: before the `at`-th secret or PIN (0-based) is answered, or at the
    first touch for `on_touch`."""

    def __init__(
        self,
        secrets: Sequence[str],
        hook: Callable[[], None],
        at: int | None = None,
        on_touch: Purpose | None = None,
    ) -> None:
        super().__init__(secrets)
        self.hook, self.at, self.on_touch, self.fired = hook, at, on_touch, False

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.hook()

    def _next(self, asked: Purpose | SecretKind, prompt: str) -> str:
        if self.at is not None and len(self.asked) == self.at:
            self._fire()
        return super()._next(asked, prompt)

    def touch(self, purpose: Purpose) -> None:
        super().touch(purpose)
        if purpose == self.on_touch:
            self._fire()


def keys(tmp_path: Path, n: int, tag: str = "") -> list[Key]:
    return [Key.from_device(make_pinned_softkey(tmp_path / f"sk{tag}{i}.json")) for i in range(n)]


def assert_one_unlock_key(store: Store, devices: Sequence[Key], passphrases: Sequence[str] = ()) -> bytes:
    """Every slot (with the key that holds it) and every recovery slot opens the same unlock key."""
    record = store.read(USER)
    found = set()
    for device in devices:
        for slot in record.slots:
            try:
                r = unlock(store, device, ScriptedInteraction([TEST_PIN]), user=USER, rp_id=slot.rp_id)
            except HmacUnlockError:
                continue
            found.add(r.unlock_key)
    for secret in passphrases:
        found.add(recovery_unlock(store, USER, ScriptedInteraction([secret])).unlock_key)
    assert len(found) == 1, f"{len(found)} different unlock keys in {len(record.slots)} slots"
    return found.pop()


# --- F1: two first enrollments at the same moment ----------------------------------------------------------------


def _enroll_into(results: list[object], i: int, store: Store, device: Key, barrier: threading.Barrier) -> None:
    interaction = HookedInteraction([TEST_PIN], barrier.wait, on_touch=Purpose.CHECK_CREDENTIAL)
    try:
        results[i] = enroll(store, device, interaction, USER)
    except HmacUnlockError as exc:
        results[i] = exc


@pytest.mark.parametrize("store_exists", [True, False], ids=["existing-store", "missing-store"])
def test_concurrent_first_enrollments_give_one_unlock_key_or_a_clean_refusal(tmp_path, store_exists):
    rounds = 4
    for n in range(rounds):
        root = tmp_path / f"round{n}"
        root.mkdir()
        store = Store(root / "store")
        if store_exists:
            store.path.mkdir(mode=0o711)
        a, b = keys(root, 2)
        # both decide "first enrollment" (nothing enrolled yet), then wait for each other before writing
        both_decided = threading.Barrier(2, timeout=30)
        results: list[object] = [None, None]
        threads = [
            threading.Thread(target=_enroll_into, args=(results, i, store, d, both_decided))
            for i, d in enumerate((a, b))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        wins = [r for r in results if not isinstance(r, BaseException)]
        losses = [r for r in results if isinstance(r, BaseException)]
        assert len(wins) == 1, results  # never two "enrolled" with two unlock keys
        assert isinstance(losses[0], EnrollmentChanged), losses
        assert f"{USER}'s enrollment changed while you were typing" in losses[0].message
        record = store.read(USER)
        assert len(record.slots) == 1
        assert assert_one_unlock_key(store, (a, b)) == wins[0].unlock_key  # type: ignore[union-attr]


def test_first_enrollment_refused_when_someone_enrolled_while_typing(tmp_path):
    store = Store(tmp_path / "store")
    a, b = keys(tmp_path, 2)

    def meanwhile() -> None:
        enroll(store, b, ScriptedInteraction([TEST_PIN]), USER)

    with pytest.raises(EnrollmentChanged):
        enroll(store, a, HookedInteraction([TEST_PIN], meanwhile, on_touch=Purpose.CHECK_CREDENTIAL), USER)
    assert len(store.read(USER).slots) == 1
    assert_one_unlock_key(store, (a, b))


def test_already_enrolled_is_still_refused_before_any_pin(tmp_path):
    store = Store(tmp_path / "store")
    a, b = keys(tmp_path, 2)
    enroll(store, a, ScriptedInteraction([TEST_PIN]), USER)
    interaction = ScriptedInteraction([TEST_PIN])
    with pytest.raises(AlreadyEnrolled):
        enroll(store, b, interaction, USER)
    assert interaction.asked == []


# --- F2: the user removed and enrolled afresh while a further secret is being typed ------------------------------


def _remove_and_reenroll(store: Store, device: Key) -> Callable[[], None]:
    def hook() -> None:
        store.remove(USER)
        enroll(store, device, ScriptedInteraction([TEST_PIN]), USER)

    return hook


def test_recovery_add_while_the_user_is_re_enrolled_keeps_one_unlock_key(tmp_path):
    store = Store(tmp_path / "store")
    a, b = keys(tmp_path, 2)
    enroll(store, a, ScriptedInteraction([TEST_PIN]), USER)
    # The new passphrase is asked before the PIN (issue 16: a short one then costs no PIN attempt), so the window
    # in which UK is held while someone types is gone. If zed is removed and enrolled afresh on b while the
    # passphrase is typed, the PIN is then asked for a's credential, which the new record does not have: refused,
    # nothing written, and the old unlock key never reaches the new enrollment.
    interaction = HookedInteraction([PASSPHRASE, TEST_PIN], _remove_and_reenroll(store, b), at=0)
    with pytest.raises((CredentialNotOnKey, EnrollmentChanged)):
        add_recovery(store, a, interaction, USER, passphrase=True)
    assert interaction.fired
    assert store.read(USER).recovery == ()
    assert_one_unlock_key(store, (a, b))


def test_enroll_existing_device_refused_when_the_user_was_re_enrolled_while_typing(tmp_path):
    store = Store(tmp_path / "store")
    a, b, c = keys(tmp_path, 3)
    enroll(store, a, ScriptedInteraction([TEST_PIN]), USER)
    # a's PIN is answered (old UK unlocked); before the new key's PIN is answered, zed is re-enrolled on b
    interaction = HookedInteraction([TEST_PIN, TEST_PIN], _remove_and_reenroll(store, b), at=1)
    with pytest.raises(EnrollmentChanged):
        enroll(store, c, interaction, USER, existing_device=a)
    assert interaction.fired
    assert len(store.read(USER).slots) == 1
    assert_one_unlock_key(store, (a, b, c))


def test_enroll_recovery_refused_when_the_user_was_re_enrolled_while_typing(tmp_path):
    store = Store(tmp_path / "store")
    a, b, c = keys(tmp_path, 3)
    enroll(store, a, ScriptedInteraction([TEST_PIN]), USER)
    add_recovery(store, a, ScriptedInteraction([PASSPHRASE, TEST_PIN]), USER, passphrase=True)
    interaction = HookedInteraction([PASSPHRASE, TEST_PIN], _remove_and_reenroll(store, b), at=1)
    with pytest.raises(EnrollmentChanged):
        enroll(store, c, interaction, USER, recovery=True)
    assert_one_unlock_key(store, (a, b, c))


def test_further_enrollments_and_recovery_keep_one_unlock_key(tmp_path):
    store = Store(tmp_path / "store")
    a, b, c = keys(tmp_path, 3)
    uk = enroll(store, a, ScriptedInteraction([TEST_PIN]), USER).unlock_key
    add_recovery(store, a, ScriptedInteraction([PASSPHRASE, TEST_PIN]), USER, passphrase=True)
    enroll(store, b, ScriptedInteraction([TEST_PIN, TEST_PIN]), USER, existing_device=a)
    enroll(store, c, ScriptedInteraction([PASSPHRASE, TEST_PIN]), USER, recovery=True)
    assert len(store.read(USER).slots) == 3
    assert assert_one_unlock_key(store, (a, b, c), [PASSPHRASE]) == uk


def test_a_record_without_the_unlock_key_check_still_takes_further_slots(tmp_path):
    """Records written before the check existed: the flow accepts them while a slot it opened is still there."""
    store = Store(tmp_path / "store")
    a, b = keys(tmp_path, 2)
    enroll(store, a, ScriptedInteraction([TEST_PIN]), USER)
    store.write(store.read(USER).with_(uk_check=None))
    enroll(store, b, ScriptedInteraction([TEST_PIN, TEST_PIN]), USER, existing_device=a)
    assert store.read(USER).uk_check is not None
    assert_one_unlock_key(store, (a, b))


def test_a_sign_in_gives_an_older_record_its_unlock_key_check(tmp_path):
    from libhmacunlock.keys import unlock_key_check

    store = Store(tmp_path / "store")
    (a,) = keys(tmp_path, 1)
    uk = enroll(store, a, ScriptedInteraction([TEST_PIN]), USER).unlock_key
    store.write(store.read(USER).with_(uk_check=None))
    assert unlock(store, a, ScriptedInteraction([TEST_PIN]), user=USER).rotated
    assert store.read(USER).uk_check == unlock_key_check(uk)


# --- the same race with real processes, as the sweep ran it (no barrier: whatever the scheduler does) -----------


@pytest.mark.parametrize("store_exists", [True, False], ids=["existing-store", "missing-store"])
def test_concurrent_first_enrollments_in_processes_never_give_two_unlock_keys(tmp_path, store_exists):
    import subprocess
    import sys

    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.softkey.device import SoftKeyDevice
    from libhmacunlock.softkey.udp import running_udp_softkey

    with running_udp_softkey(tmp_path / "a.json") as a, running_udp_softkey(tmp_path / "b.json") as b:
        for server in (a, b):
            ClientPin(Ctap2(SoftKeyDevice(server.authenticator))).set_pin(TEST_PIN)
        for n in range(3):
            store = Store(tmp_path / f"store{n}")
            if store_exists:
                store.path.mkdir(mode=0o711)
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hmacunlock_cli",
                        "enroll",
                        USER,
                        "--device",
                        s.spec,
                        "--store",
                        str(store.path),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for s in (a, b)
            ]
            outcomes = [p.communicate(TEST_PIN + "\n", timeout=120) for p in procs]
            codes = [p.returncode for p in procs]
            assert codes.count(0) == 1, (codes, outcomes)  # one enrolled, never two
            loser = outcomes[codes.index(0) ^ 1][1]
            assert "enrollment changed while you were typing" in loser or "already enrolled" in loser, loser
            assert "internal error" not in loser
            devices = [Key.from_device(SoftKeyDevice(s.authenticator)) for s in (a, b)]
            assert len(store.read(USER).slots) == 1
            assert_one_unlock_key(store, devices)
