"""device.py: specs, getInfo features, PIN token errors, hmac-secret, and picking among several keys."""

from __future__ import annotations

import os

import pytest

from libhmacunlock.device import PERMISSION, Key
from libhmacunlock.discovery import open_key, pick_key
from libhmacunlock.errors import (
    CredentialNotOnKey,
    DeviceSpecInvalid,
    KeyRemoved,
    NoKeyFound,
    PinNotSet,
    PinPolicy,
    WrongPin,
)
from libhmacunlock.softkey.device import SoftKeyDevice
from tests.fixtures.library import GET_ASSERTION, delta, messages
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

RP = "hmacunlock.test"


def test_features_of_the_software_key(key, tmp_path):
    f = key.features()
    assert (f.resident_key, f.client_pin, f.hmac_secret, f.multiple_accounts_per_rp) == (True,) * 4
    assert f.pin_set and f.compatible and f.missing() == [] and 2 in f.pin_protocols
    assert key.pin_retries() == 8
    assert not Key.from_device(SoftKeyDevice.open(tmp_path / "bare.json")).features().pin_set


def test_missing_feature_is_named(key):
    key.ctap2.info.options["rk"] = False
    assert key.features().missing() == ["resident keys (discoverable credentials)", "several accounts per RP"]
    assert not key.features().compatible and not key.features().microsoft_compatible


def test_credential_management_is_not_one_of_the_four(key):
    del key.ctap2.info.options["credMgmt"]  # as on a Solo 1 before firmware 4.0
    features = key.features()
    assert not features.credential_management
    assert features.multiple_accounts_per_rp and features.compatible and features.microsoft_compatible


@pytest.mark.parametrize("spec", ["bogus", "udp:nohost", "udp:127.0.0.1:0", "hid:foo", "usb:1", ""])
def test_invalid_specs(spec):
    with pytest.raises(DeviceSpecInvalid):
        open_key(spec)


def test_nothing_there():
    with pytest.raises(NoKeyFound):
        open_key("udp:127.0.0.1:9", timeout=0.5)
    with pytest.raises(NoKeyFound):
        open_key("hid:/dev/hidraw-none")


def test_auto_without_usb_keys_says_so(monkeypatch):
    monkeypatch.setattr("libhmacunlock.discovery.list_hid_keys", lambda: [])
    with pytest.raises(NoKeyFound, match="plug one in"):
        open_key("auto")


def test_pin_token_errors(key, tmp_path):
    with pytest.raises(WrongPin) as err:
        key.pin_token("000000", PERMISSION.GET_ASSERTION, RP)
    assert err.value.attempts_left == 7
    with pytest.raises(PinNotSet):
        Key.from_device(SoftKeyDevice.open(tmp_path / "bare.json")).pin_token(TEST_PIN, PERMISSION.GET_ASSERTION, RP)


def test_set_and_change_pin(softkey_device):
    key = Key.from_device(softkey_device)
    with pytest.raises(PinPolicy, match="at least 4"):
        key.set_pin("12")
    key.set_pin("1234")
    assert key.features().pin_set
    with pytest.raises(WrongPin, match="7 attempts"):
        key.change_pin("9999", "5678")
    key.change_pin("1234", "5678")
    key.pin_token("5678", PERMISSION.GET_ASSERTION, RP)


def test_hmac_secret_is_a_function_of_credential_and_salt(key):
    token = key.pin_token(TEST_PIN, PERMISSION.MAKE_CREDENTIAL | PERMISSION.GET_ASSERTION, RP)
    cred = key.make_credential(token, RP, os.urandom(32), "alice", resident=False)
    salt1, salt2 = os.urandom(32), os.urandom(32)
    first = key.hmac_assertion(None, RP, [cred.credential_id], salt1, salt2, up=True)
    again = key.hmac_assertion(None, RP, [cred.credential_id], salt2, salt1, up=True)
    assert first.output1 == again.output2 and first.output2 == again.output1 and first.output1 != first.output2
    with pytest.raises(CredentialNotOnKey):
        key.hmac_assertion(None, RP, [os.urandom(32)], salt1)


def test_pick_key_probes_without_pin_or_touch(tmp_path):
    keys = [Key.from_device(make_pinned_softkey(tmp_path / f"k{i}.json")) for i in range(3)]
    token = keys[2].pin_token(TEST_PIN, PERMISSION.MAKE_CREDENTIAL, RP)
    cred = keys[2].make_credential(token, RP, os.urandom(32), "alice")
    before = messages(keys[2].device)
    assert pick_key(keys, [(RP, cred.credential_id)]) is keys[2]
    assert delta(before, messages(keys[2].device)) == {GET_ASSERTION: 1}
    with pytest.raises(CredentialNotOnKey):
        pick_key(keys[:2], [(RP, cred.credential_id)])
    with pytest.raises(NoKeyFound, match="2 security keys"):
        pick_key(keys[:2], [])


def test_key_gone_mid_session_is_key_removed(tmp_path):
    from libhmacunlock.softkey.udp import running_udp_softkey

    with running_udp_softkey(tmp_path / "k.json") as server:
        key = open_key(server.spec, timeout=0.5)
    with pytest.raises(KeyRemoved):
        key.pin_retries()
    key.close()


def test_an_open_ctap_device_or_key_is_accepted(pinned_softkey_device):
    key = open_key(pinned_softkey_device)
    assert isinstance(key, Key) and key.device is pinned_softkey_device and open_key(key) is key
