"""Recovery slots: a recovery key or passphrase opens the same unlock key as the security keys."""

from __future__ import annotations

import json

import pytest

from libhmacunlock import keys
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import NoRecoverySlot, RecoveryFailed
from libhmacunlock.interaction import ScriptedInteraction, SecretKind
from libhmacunlock.recovery import PassphraseTooShort, add_recovery, recovery_unlock
from libhmacunlock.unlock import unlock
from tests.fixtures.library import enroll_user, pin, second_softkey
from tests.fixtures.softkey import TEST_PIN

FAST = keys.Argon2Params(time_cost=1, memory_cost=8, parallelism=1)


def test_recovery_key_gives_the_same_unlock_key(store, key):
    uk = enroll_user(store, key, "alice")
    added = add_recovery(store, key, pin(), "alice")
    assert added.recovery_key and len(added.recovery_key.split("-")) == 9
    assert recovery_unlock(store, "alice", ScriptedInteraction([added.recovery_key])).unlock_key == uk
    assert added.recovery_key.replace("-", "") not in store.record_path("alice").read_text()


def test_recovery_key_typo_and_wrong_key(store, key):
    enroll_user(store, key, "alice")
    added = add_recovery(store, key, pin(), "alice")
    typo = ("B" if added.recovery_key[0] != "B" else "C") + added.recovery_key[1:]
    with pytest.raises(RecoveryFailed, match="typo"):
        recovery_unlock(store, "alice", ScriptedInteraction([typo]))
    other = keys.format_recovery_key(keys.new_recovery_key())
    with pytest.raises(RecoveryFailed, match="does not open"):
        recovery_unlock(store, "alice", ScriptedInteraction([other]))


def test_passphrase_slot_with_stored_argon2_parameters(store, key):
    uk = enroll_user(store, key, "alice")
    # the new passphrase is asked before the PIN: a refused one costs no PIN attempt
    added = add_recovery(
        store, key, ScriptedInteraction(["a long passphrase", TEST_PIN]), "alice", passphrase=True, argon2=FAST
    )
    assert added.recovery_key is None
    slot = json.loads(store.record_path("alice").read_text())["recovery"][0]
    assert slot["kind"] == "passphrase" and slot["kdf"]["memory_cost"] == 8 and slot["kdf"]["salt"]
    assert recovery_unlock(store, "alice", ScriptedInteraction(["a long passphrase"])).unlock_key == uk
    with pytest.raises(RecoveryFailed):
        recovery_unlock(store, "alice", ScriptedInteraction(["a long passphrasE"]))
    short = ScriptedInteraction(["short", TEST_PIN])
    with pytest.raises(PassphraseTooShort, match="at least"):
        add_recovery(store, key, short, "alice", passphrase=True, argon2=FAST)
    assert short.asked == [SecretKind.NEW_PASSPHRASE]  # refused before the PIN was asked


def test_altered_recovery_slot_does_not_open(store, key):
    enroll_user(store, key, "alice")
    added = add_recovery(store, key, pin(), "alice")
    path = store.record_path("alice")
    record = json.loads(path.read_text())
    record["recovery"][0]["id"] = "deadbeef"  # bound by the AAD
    path.write_text(json.dumps(record))
    with pytest.raises(RecoveryFailed):
        recovery_unlock(store, "alice", ScriptedInteraction([added.recovery_key]))


def test_no_recovery_slot(store, key):
    enroll_user(store, key, "alice")
    with pytest.raises(NoRecoverySlot, match=r"no recovery key or passphrase.*--existing-device"):
        recovery_unlock(store, "alice", ScriptedInteraction(["x"]))


def test_new_key_enrolled_with_the_recovery_key_shares_the_unlock_key(store, key, tmp_path):
    uk = enroll_user(store, key, "alice")
    added = add_recovery(store, key, pin(), "alice")
    replacement = second_softkey(tmp_path)
    interaction = ScriptedInteraction([added.recovery_key, TEST_PIN])
    assert enroll(store, replacement, interaction, "alice", recovery=True).unlock_key == uk
    assert interaction.asked[0] is SecretKind.RECOVERY
    assert unlock(store, replacement, pin(), user="alice").unlock_key == uk
