"""enroll(): the credential it makes, the slot it writes, and what it refuses."""

from __future__ import annotations

import json

import pytest
from fido2.ctap2 import CredentialManagement, Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock.device import Key
from libhmacunlock.enroll import AlreadyEnrolled, default_rp_id, enroll
from libhmacunlock.errors import InvalidName, KeyLacksFeature, NotEnrolled, PinNotSet
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.records import b64d
from tests.fixtures.library import enroll_user, pin
from tests.fixtures.softkey import TEST_PIN


def test_first_enrollment_writes_a_slot_and_a_resident_credential(store, key, pinned_softkey_device):
    result = enroll(store, key, pin(), "alice", rp_id="hmacunlock.test")
    assert result.first and len(result.unlock_key) == 32
    slot = json.loads(store.record_path("alice").read_text())["slots"][0]
    assert slot["rp_id"] == "hmacunlock.test" and b64d(slot["credential_id"]) == result.credential_id
    assert len(b64d(slot["salt"])) == 32 and len(b64d(slot["user_handle"])) == 32
    assert slot["require_uv"] and slot["require_up"] and slot["cred_protect"] == 2
    # the credential is discoverable, under our RP, with the random user handle and the user's name
    ctap = Ctap2(pinned_softkey_device)
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    creds = CredentialManagement(ctap, client_pin.protocol, token)
    rp = next(r for r in creds.enumerate_rps() if r[3]["id"] == "hmacunlock.test")
    (cred,) = creds.enumerate_creds(rp[4])
    assert cred[6]["name"] == "alice" and cred[6]["id"] == b64d(slot["user_handle"])
    assert cred[10] == 2  # credProtect level


def test_default_rp_id_is_per_machine_and_domain_shaped():
    rp = default_rp_id()
    assert rp.startswith("hmacunlock.") and rp == rp.lower() and " " not in rp


def test_a_further_key_needs_an_enrolled_authority(store, key, tmp_path):
    enroll_user(store, key, "alice")
    with pytest.raises(AlreadyEnrolled, match="--existing-device"):
        enroll(store, key, pin(), "alice")
    with pytest.raises(NotEnrolled):
        enroll(store, key, ScriptedInteraction([TEST_PIN, TEST_PIN]), "bob", existing_device=key)


def test_key_without_pin_is_refused_before_anything_is_written(store, softkey_device):
    with pytest.raises(PinNotSet, match="set-pin"):
        enroll(store, Key.from_device(softkey_device), pin(), "alice")
    assert store.users() == []


def test_bad_user_name_is_refused(store, key):
    with pytest.raises(InvalidName):
        enroll(store, key, pin(), "../root")


def test_key_lacking_hmac_secret_is_refused_naming_it(store, key):
    key.ctap2.info.extensions.remove("hmac-secret")  # what a key without the extension reports
    with pytest.raises(KeyLacksFeature, match="hmac-secret"):
        enroll(store, key, pin(), "alice")
