"""Credential management through python-fido2's CredentialManagement."""

from __future__ import annotations

import hashlib
import os

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2

from libhmacunlock.softkey.device import SoftKeyDevice
from tests.fixtures.softkey import RP_ID, TEST_PIN, make_resident

R = CredentialManagement.RESULT


def _credman(ctap: Ctap2, protocol=None, rp_id=None) -> CredentialManagement:
    protocol = protocol or PinProtocolV2()
    token = ClientPin(ctap, protocol).get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT, rp_id)
    return CredentialManagement(ctap, protocol, token)


@pytest.fixture
def populated(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    made = {}
    for user_id, name, rp in [(b"a", "alice", RP_ID), (b"b", "bob", RP_ID), (b"c", "carol", "other.example")]:
        made[name] = make_resident(ctap, PinProtocolV2(), user_id, name, rp_id=rp, display_name=name.upper())
    return ctap, made


@pytest.mark.parametrize("protocol", [PinProtocolV2, PinProtocolV1])
def test_metadata_and_enumeration(populated, protocol):
    ctap, made = populated
    cm = _credman(ctap, protocol())
    meta = cm.get_metadata()
    assert meta[R.EXISTING_CRED_COUNT] == 3 and meta[R.MAX_REMAINING_COUNT] == 47
    rps = cm.enumerate_rps()
    assert sorted(rp[R.RP]["id"] for rp in rps) == ["example.com", "other.example"]
    assert all(rp[R.RP_ID_HASH] == hashlib.sha256(rp[R.RP]["id"].encode()).digest() for rp in rps)
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    assert [c[R.USER]["name"] for c in creds] == ["bob", "alice"]
    assert creds[0][R.USER] == {"id": b"b", "name": "bob", "displayName": "BOB"}
    assert creds[0][R.CREDENTIAL_ID]["id"] == made["bob"].auth_data.credential_data.credential_id
    assert creds[0][R.PUBLIC_KEY] == made["bob"].auth_data.credential_data.public_key
    assert creds[0][R.CRED_PROTECT] == 1
    assert cm.enumerate_creds(hashlib.sha256(b"nobody.example").digest()) == []


def test_delete_credential(populated):
    ctap, made = populated
    cm = _credman(ctap)
    cred_id = made["alice"].auth_data.credential_data.credential_id
    cm.delete_cred({"type": "public-key", "id": cred_id})
    assert cm.get_metadata()[R.EXISTING_CRED_COUNT] == 2
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, os.urandom(32), [{"type": "public-key", "id": cred_id}])
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(CtapError) as exc:
        cm.delete_cred({"type": "public-key", "id": cred_id})
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    # persisted
    again = _credman(Ctap2(SoftKeyDevice.open(ctap.device.authenticator.state.path)))
    assert again.get_metadata()[R.EXISTING_CRED_COUNT] == 2


def test_update_user_information(populated):
    ctap, made = populated
    cm = _credman(ctap)
    descriptor = {"type": "public-key", "id": made["alice"].auth_data.credential_data.credential_id}
    cm.update_user_info(descriptor, {"id": b"a", "name": "alice@new", "displayName": "Alice N."})
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    assert {"id": b"a", "name": "alice@new", "displayName": "Alice N."} in [c[R.USER] for c in creds]
    cm.update_user_info(descriptor, {"id": b"a"})  # absent fields are removed
    creds = cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())
    assert {"id": b"a"} in [c[R.USER] for c in creds]
    with pytest.raises(CtapError) as exc:  # the user handle cannot change
        cm.update_user_info(descriptor, {"id": b"zz", "name": "x"})
    assert exc.value.code == CtapError.ERR.INVALID_PARAMETER


def test_needs_a_cm_token(populated):
    ctap, _ = populated
    token = ClientPin(ctap, PinProtocolV2()).get_pin_token(TEST_PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    with pytest.raises(CtapError) as exc:
        CredentialManagement(ctap, PinProtocolV2(), token).get_metadata()
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID
    with pytest.raises(CtapError) as exc:
        ctap.credential_mgmt(CredentialManagement.CMD.GET_CREDS_METADATA)
    assert exc.value.code == CtapError.ERR.PUAT_REQUIRED


def test_rp_bound_token_sees_only_its_rp(populated):
    ctap, _ = populated
    cm = _credman(ctap, rp_id=RP_ID)
    assert len(cm.enumerate_creds(hashlib.sha256(RP_ID.encode()).digest())) == 2
    with pytest.raises(CtapError) as exc:
        cm.enumerate_creds(hashlib.sha256(b"other.example").digest())
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


def test_get_next_without_begin_is_not_allowed(populated):
    ctap, _ = populated
    cm = _credman(ctap)
    with pytest.raises(CtapError) as exc:
        cm.enumerate_rps_next()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED
    cm.enumerate_rps_begin()
    ctap.get_info()  # another command ends the enumeration
    with pytest.raises(CtapError) as exc:
        cm.enumerate_rps_next()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED


def test_preview_command_code_is_accepted(populated):
    ctap, _ = populated
    cm = _credman(ctap)
    message = bytes([CredentialManagement.CMD.GET_CREDS_METADATA])
    token_auth = cm.pin_uv.protocol.authenticate(cm.pin_uv.token, message)
    from fido2 import cbor

    request = bytes([0x41]) + cbor.encode({1: 1, 3: 2, 4: token_auth})
    response = ctap.device.authenticator.process(request)
    assert response[0] == 0 and cbor.decode(response[1:])[1] == 3
