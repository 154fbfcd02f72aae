"""unlock(): one PIN, one touch, the PIN guard's probe + three CTAP messages; verification, salt rotation and every
refusal (issue 3; the probe before the PIN: issue 12)."""

from __future__ import annotations

import json
import shutil

import pytest

from libhmacunlock.device import Key
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import (
    AmbiguousUser,
    AssertionInvalid,
    ClonedKey,
    CredentialNotOnKey,
    NotEnrolled,
    PinBlocked,
    PinSoftLocked,
    RecordTampered,
    WrongPin,
)
from libhmacunlock.interaction import ClonedKeyWarning, Purpose, ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.unlock import unlock
from tests.fixtures.library import (
    CLIENT_PIN,
    GET_ASSERTION,
    LyingDevice,
    delta,
    enroll_user,
    messages,
    pin,
    second_softkey,
)
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey


def _slot(store, user="alice"):
    return json.loads(store.record_path(user).read_text())["slots"][0]


def test_unlock_returns_the_enrolled_key_with_the_probe_and_three_messages(store, key, pinned_softkey_device):
    uk = enroll_user(store, key, "alice")
    before = messages(pinned_softkey_device)
    interaction = pin()
    result = unlock(store, key, interaction, user="alice")
    assert result.user == "alice" and result.unlock_key == uk and result.rotated
    # the up=false probe (no PIN, no touch) before the prompt, then key agreement, PIN token, the assertion
    assert delta(before, messages(pinned_softkey_device)) == {CLIENT_PIN: 2, GET_ASSERTION: 2}
    assert interaction.asked == [Purpose.UNLOCK]  # exactly one PIN prompt
    assert interaction.touched == [Purpose.UNLOCK]


def test_salt_rotates_after_each_unlock_and_the_unlock_key_does_not(store, key):
    uk = enroll_user(store, key, "alice")
    seen_salts, counts = [_slot(store)["salt"]], [_slot(store)["sign_count"]]
    for _ in range(3):
        assert unlock(store, key, pin(), user="alice").unlock_key == uk
        seen_salts.append(_slot(store)["salt"])
        counts.append(_slot(store)["sign_count"])
    assert len(set(seen_salts)) == 4
    assert counts == sorted(counts) and len(set(counts)) == 4


def test_second_key_gives_the_same_unlock_key_existing_pin_asked_first(store, key, tmp_path):
    uk = enroll_user(store, key, "alice")
    other = second_softkey(tmp_path)
    interaction = ScriptedInteraction([TEST_PIN, TEST_PIN])
    result = enroll(store, other, interaction, "alice", existing_device=key)
    assert not result.first and result.unlock_key == uk
    assert interaction.asked == [Purpose.AUTHORISE, Purpose.ENROLL_FURTHER]
    assert unlock(store, other, pin(), user="alice").unlock_key == uk
    assert unlock(store, key, pin(), user="alice").unlock_key == uk
    assert len(json.loads(store.record_path("alice").read_text())["slots"]) == 2


def test_second_key_unlock_costs_the_probe_and_three_messages_on_either_key(store, key, tmp_path):
    enroll_user(store, key, "alice")
    other = second_softkey(tmp_path)
    enroll(store, other, ScriptedInteraction([TEST_PIN, TEST_PIN]), "alice", existing_device=key)
    for k in (key, other):
        before = messages(k.device)
        unlock(store, k, pin(), user="alice")
        assert delta(before, messages(k.device)) == {CLIENT_PIN: 2, GET_ASSERTION: 2}  # AAGUID picks the slot


def test_two_users_on_one_key_get_different_keys(store, key):
    alice, bob = enroll_user(store, key, "alice"), enroll_user(store, key, "bob")
    assert alice != bob
    assert unlock(store, key, pin(), user="alice").unlock_key == alice
    assert unlock(store, key, pin(), user="bob").unlock_key == bob


def test_usernameless_with_one_account(store, key):
    uk = enroll_user(store, key, "alice")
    result = unlock(store, key, pin())
    assert (result.user, result.unlock_key) == ("alice", uk)


def test_usernameless_with_several_accounts_asks_which(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    bob = enroll_user(store, key, "bob")
    before = messages(pinned_softkey_device)
    result = unlock(store, key, ScriptedInteraction([TEST_PIN], choice="bob"))
    assert (result.user, result.unlock_key) == ("bob", bob)
    # the probe, the listing (up=false) and its getNextAssertion come before the one touched assertion
    assert delta(before, messages(pinned_softkey_device)) == {CLIENT_PIN: 2, GET_ASSERTION: 3, 0x08: 1}


def test_usernameless_with_several_accounts_and_nobody_to_ask(store, key):
    enroll_user(store, key, "alice")
    enroll_user(store, key, "bob")
    with pytest.raises(AmbiguousUser) as err:
        unlock(store, key, pin())
    assert err.value.users == ["alice", "bob"] and "alice, bob" in err.value.message


def test_usernameless_ignores_accounts_not_enrolled_here(store, key, tmp_path):
    uk = enroll_user(store, key, "alice")
    enroll_user(tmp_path / "other-store", key, "carol")  # same key and RP, recorded elsewhere
    assert unlock(store, key, pin()).user == "alice"
    assert unlock(store, key, pin()).unlock_key == uk


def test_unenrolled_user_and_credential_not_on_key(store, key, tmp_path):
    enroll_user(store, key, "alice")
    with pytest.raises(NotEnrolled, match="'bob' is not enrolled"):
        unlock(store, key, pin(), user="bob")
    asked = pin()
    with pytest.raises(CredentialNotOnKey, match="No security key holding alice's credential"):
        unlock(store, second_softkey(tmp_path), asked, user="alice")
    assert asked.asked == []  # found by the probe: nobody was asked for a PIN
    with pytest.raises(CredentialNotOnKey):
        unlock(store, second_softkey(tmp_path, "third.json"), pin())


def test_wrong_pin_shows_attempts_left_and_three_in_a_row_asks_for_a_replug(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    with pytest.raises(WrongPin) as err:
        unlock(store, key, ScriptedInteraction(["999999"]), user="alice")
    assert err.value.attempts_left == 7 and "7 attempts left" in err.value.message
    with pytest.raises(WrongPin, match="6 attempts left"):
        unlock(store, key, ScriptedInteraction(["999999"]), user="alice")
    with pytest.raises(PinSoftLocked, match="unplug the security key and plug it back in"):
        unlock(store, key, ScriptedInteraction(["999999"]), user="alice")
    with pytest.raises(PinSoftLocked):
        unlock(store, key, pin(), user="alice")  # even the right PIN, until replugged
    pinned_softkey_device.authenticator.power_cycle()
    assert unlock(store, key, pin(), user="alice").user == "alice"


def test_blocked_pin_points_to_the_recovery_key(store, key, pinned_softkey_device):
    enroll_user(store, key, "alice")
    with pytest.raises(PinBlocked, match="recovery"):
        for _attempt in range(9):
            try:
                unlock(store, key, ScriptedInteraction(["999999"]), user="alice")
            except PinSoftLocked:
                pinned_softkey_device.authenticator.power_cycle()
            except WrongPin:
                pass


def test_altered_slot_is_refused_as_tampered_and_left_as_it_was(store, key):
    enroll_user(store, key, "alice")
    path = store.record_path("alice")
    record = json.loads(path.read_text())
    record["slots"][0]["require_up"] = False  # a field the AAD binds (would let a key sign without a touch)
    path.write_text(json.dumps(record))
    data = path.read_bytes()
    with pytest.raises(RecordTampered, match=str(path)):
        unlock(store, key, pin(), user="alice")
    assert path.read_bytes() == data


def test_altered_salt_is_refused_as_tampered(store, key):
    enroll_user(store, key, "alice")
    path = store.record_path("alice")
    text = path.read_text()
    salt = json.loads(text)["slots"][0]["salt"]
    path.write_text(text.replace(salt, ("A" if salt[0] != "A" else "B") + salt[1:]))
    data = path.read_bytes()
    with pytest.raises(RecordTampered):
        unlock(store, key, pin(), user="alice")
    assert path.read_bytes() == data


# --- forged assertions (a lying test double in front of the real software key) ------------------------------


def _flip_signature(m):
    m[3] = m[3][:-1] + bytes([m[3][-1] ^ 1])
    return m


def _drop_uv(m):
    m[2] = m[2][:32] + bytes([m[2][32] & ~0x04]) + m[2][33:]
    return m


def _drop_up(m):
    m[2] = m[2][:32] + bytes([m[2][32] & ~0x01]) + m[2][33:]
    return m


def _other_rp(m):
    m[2] = bytes(32) + m[2][32:]
    return m


def _lower_count(m):
    m[2] = m[2][:33] + (0).to_bytes(4, "big") + m[2][37:]
    return m


@pytest.mark.parametrize(
    "forge, resign, error, message",
    [
        (_flip_signature, False, AssertionInvalid, "signature does not verify"),
        # re-signed with the credential's real key: each forgery meets the check made for it, not the signature's
        (_drop_uv, True, AssertionInvalid, "UV flag missing"),
        (_drop_up, True, AssertionInvalid, "UP flag missing"),
        (_other_rp, True, AssertionInvalid, "rpIdHash mismatch"),
        (_lower_count, True, ClonedKey, "counter went backwards"),
        (_lower_count, False, AssertionInvalid, "signature does not verify"),  # not re-signed: the signature fails
    ],
)
def test_forged_assertions_are_refused(store, key, pinned_softkey_device, forge, resign, error, message):
    uk = enroll_user(store, key, "alice")
    liar = Key.from_device(LyingDevice(pinned_softkey_device, forge, resign=resign))
    data = store.record_path("alice").read_bytes()
    before = messages(pinned_softkey_device)
    with pytest.raises(error, match=message) as refused:
        unlock(store, liar, pin(), user="alice")
    assert type(refused.value) is error
    if error is ClonedKey:
        assert refused.value.seen == 0 < refused.value.stored
    assert delta(before, messages(pinned_softkey_device)) == {CLIENT_PIN: 2, GET_ASSERTION: 2}  # probe + unlock
    assert store.record_path("alice").read_bytes() == data  # nothing rotated on a refused assertion
    assert unlock(store, key, pin(), user="alice").unlock_key == uk


def test_cloned_key_with_a_counter_that_went_backwards_is_refused(store, key, softkey_path, tmp_path):
    uk = enroll_user(store, key, "alice")
    clone_path = tmp_path / "clone.json"
    shutil.copy(softkey_path, clone_path)  # a genuine clone: same secrets, same (now old) counter
    for _ in range(3):
        unlock(store, key, pin(), user="alice")
    clone = Key.from_device(SoftKeyDevice.open(clone_path))
    data = store.record_path("alice").read_bytes()
    with pytest.raises(ClonedKey, match="went backwards"):
        unlock(store, clone, pin(), user="alice")
    assert store.record_path("alice").read_bytes() == data
    warned = pin()
    result = unlock(store, clone, warned, user="alice", clone_policy="warn")
    assert result.unlock_key == uk and [type(e) for e in warned.informed] == [ClonedKeyWarning]
    assert "cloned" in warned.informed[0].text


def test_unlock_over_udp(store, udp_softkey):
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.discovery import open_key

    with open_key(udp_softkey.spec) as k:
        ClientPin(Ctap2(k.device)).set_pin(TEST_PIN)
    uk = enroll_user(store, udp_softkey.spec, "alice")
    before = dict(udp_softkey.authenticator.message_counts)
    assert unlock(store, udp_softkey.spec, pin(), user="alice").unlock_key == uk
    assert delta(before, dict(udp_softkey.authenticator.message_counts)) == {
        CLIENT_PIN: 2,
        GET_ASSERTION: 2,
        0x04: 1,
    }  # + getInfo at open, + the probe
    assert unlock(store, udp_softkey.spec, pin()).unlock_key == uk


def test_auto_picks_the_plugged_key_that_holds_the_credential(store, key, pinned_softkey_device, tmp_path, monkeypatch):
    """`auto` with several keys: the up=false probe finds the enrolled one (USB HID is not available here, so the
    HID listing is replaced by two in-process software keys; everything after the listing is the real code)."""
    uk = enroll_user(store, key, "alice")
    stranger = make_pinned_softkey(tmp_path / "stranger.json")
    monkeypatch.setattr("libhmacunlock.discovery.list_hid_keys", lambda: [stranger, pinned_softkey_device])
    before, stranger_before = messages(pinned_softkey_device), messages(stranger)
    assert unlock(store, "auto", pin(), user="alice").unlock_key == uk
    # getInfo at open, the probe (up=false, no PIN; it chose the key, so not repeated), then the unlock's three
    assert delta(before, messages(pinned_softkey_device)) == {0x04: 1, CLIENT_PIN: 2, GET_ASSERTION: 2}
    assert delta(stranger_before, messages(stranger)) == {0x04: 1, GET_ASSERTION: 1}  # probed: no PIN sent there


def test_touch_refused(store, key, softkey_path):
    from libhmacunlock.errors import UserPresenceFailed
    from libhmacunlock.softkey.presence import PresencePolicy

    enroll_user(store, key, "alice")
    refusing = Key.from_device(SoftKeyDevice.open(softkey_path, presence=PresencePolicy.deny()))
    data = store.record_path("alice").read_bytes()
    with pytest.raises(UserPresenceFailed):
        unlock(store, refusing, pin(), user="alice")
    assert store.record_path("alice").read_bytes() == data
