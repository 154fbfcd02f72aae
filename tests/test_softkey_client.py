"""The software key under python-fido2's own WebAuthn client (Fido2Client): hmac-secret and prf."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap2.extensions import CredProtectExtension, HmacSecretExtension
from fido2.utils import websafe_decode

from libhmacunlock.softkey.state import KeyState
from tests.fixtures.softkey import RP_ID, TEST_PIN

ORIGIN = "https://example.com"


class PinInteraction(UserInteraction):
    def __init__(self, pin: str | None = TEST_PIN) -> None:
        self.pin = pin
        self.pin_requests = 0

    def request_pin(self, permissions, rp_id):
        self.pin_requests += 1
        return self.pin


def _client(device, interaction=None) -> Fido2Client:
    return Fido2Client(
        device,
        DefaultClientDataCollector(ORIGIN),
        interaction or PinInteraction(),
        extensions=[HmacSecretExtension(allow_hmac_secret=True), CredProtectExtension()],
    )


def _register(client: Fido2Client, user_id: bytes, name: str, extensions: dict):
    return client.make_credential(
        {
            "rp": {"id": RP_ID, "name": "Example"},
            "user": {"id": user_id, "name": name, "displayName": name.title()},
            "challenge": os.urandom(32),
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "extensions": extensions,
        }
    )


def _assert(client: Fido2Client, extensions: dict, allow=None, uv="required"):
    options = {"rpId": RP_ID, "challenge": os.urandom(32), "userVerification": uv, "extensions": extensions}
    if allow is not None:
        options["allowCredentials"] = allow
    return client.get_assertion(options)


def _outputs(result) -> dict[str, bytes]:
    """Client extension results come JSON-ready (base64url): back to bytes."""
    return {k: websafe_decode(v) for k, v in dict(result).items() if v is not None}


def _cred_random(state_path, cred_id: bytes, uv: bool) -> bytes:
    cred = KeyState.open(state_path).find_credential(cred_id)
    return cred.cred_random_uv if uv else cred.cred_random_no_uv


def test_resident_credential_with_hmac_secret(pinned_softkey_device, softkey_path):
    client = _client(pinned_softkey_device)
    policy = {"hmacCreateSecret": True, "credentialProtectionPolicy": "userVerificationRequired"}
    reg = _register(client, b"alice-id", "alice", policy)
    assert reg.client_extension_results["hmacCreateSecret"] is True
    cred_id = reg.raw_id
    assert reg.response.attestation_object.auth_data.credential_data.credential_id == cred_id

    salt1, salt2 = os.urandom(32), os.urandom(32)
    sel = _assert(client, {"hmacGetSecret": {"salt1": salt1, "salt2": salt2}})  # usernameless
    response = sel.get_response(0)
    assert response.response.user_handle == b"alice-id"
    out = _outputs(response.client_extension_results["hmacGetSecret"])
    secret = _cred_random(softkey_path, cred_id, uv=True)
    assert out["output1"] == hmac.new(secret, salt1, hashlib.sha256).digest()
    assert out["output2"] == hmac.new(secret, salt2, hashlib.sha256).digest()

    # the same salt gives the same output next time, with an allowList too
    again = _assert(client, {"hmacGetSecret": {"salt1": salt1}}, allow=[{"type": "public-key", "id": cred_id}])
    out_again = _outputs(again.get_response(0).client_extension_results["hmacGetSecret"])
    assert out_again["output1"] == out["output1"] and not out_again.get("output2")  # one salt, one output


def test_hmac_secret_without_uv_uses_the_other_cred_random(softkey_device, softkey_path):
    client = _client(softkey_device, PinInteraction(pin=None))
    reg = client.make_credential(
        {
            "rp": {"id": RP_ID, "name": "Example"},
            "user": {"id": b"u", "name": "u"},
            "challenge": os.urandom(32),
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "authenticatorSelection": {"residentKey": "required", "userVerification": "discouraged"},
            "extensions": {"hmacCreateSecret": True},
        }
    )
    salt = os.urandom(32)
    sel = _assert(client, {"hmacGetSecret": {"salt1": salt}}, uv="discouraged")
    response = sel.get_response(0)
    assert not response.response.authenticator_data.is_user_verified()
    output = _outputs(response.client_extension_results["hmacGetSecret"])["output1"]
    no_uv = _cred_random(softkey_path, reg.raw_id, uv=False)
    assert output == hmac.new(no_uv, salt, hashlib.sha256).digest()
    assert output != hmac.new(_cred_random(softkey_path, reg.raw_id, uv=True), salt, hashlib.sha256).digest()


def test_prf(pinned_softkey_device, softkey_path):
    client = _client(pinned_softkey_device)
    reg = _register(client, b"bob-id", "bob", {"prf": {}})
    assert reg.client_extension_results["prf"]["enabled"] is True
    first = b"first input"
    sel = _assert(client, {"prf": {"eval": {"first": first}}}, allow=[{"type": "public-key", "id": reg.raw_id}])
    result = websafe_decode(sel.get_response(0).client_extension_results["prf"]["results"]["first"])
    salt = hashlib.sha256(b"WebAuthn PRF\0" + first).digest()
    assert result == hmac.new(_cred_random(softkey_path, reg.raw_id, uv=True), salt, hashlib.sha256).digest()


def test_several_accounts_through_the_client(pinned_softkey_device):
    client = _client(pinned_softkey_device)
    for user_id, name in [(b"1", "alice"), (b"2", "bob")]:
        _register(client, user_id, name, {"hmacCreateSecret": True})
    sel = _assert(client, {})
    assertions = sel.get_assertions()
    assert [a.user["name"] for a in assertions] == ["bob", "alice"]
    assert [sel.get_response(i).response.user_handle for i in range(2)] == [b"2", b"1"]


def test_wrong_pin_through_the_client(pinned_softkey_device):
    client = _client(pinned_softkey_device, PinInteraction(pin="not-the-pin"))
    with pytest.raises(ClientError):
        _register(client, b"x", "x", {})


def test_exclude_and_allow_lists_go_through_the_clients_preflight(pinned_softkey_device):
    """Fido2Client probes lists with up=false getAssertions under the same token before the real call: the probe
    must not use the token up, and must find the one credential the key holds."""
    client = _client(pinned_softkey_device)
    reg = _register(client, b"carol-id", "carol", {"hmacCreateSecret": True})
    mine = {"type": "public-key", "id": reg.raw_id}
    foreign = {"type": "public-key", "id": os.urandom(50)}
    with pytest.raises(ClientError) as exc:
        client.make_credential(
            {
                "rp": {"id": RP_ID, "name": "Example"},
                "user": {"id": b"carol-id", "name": "carol"},
                "challenge": os.urandom(32),
                "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
                "excludeCredentials": [foreign, mine],
                "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            }
        )
    assert exc.value.code == ClientError.ERR.DEVICE_INELIGIBLE
    salt = os.urandom(32)
    sel = _assert(client, {"hmacGetSecret": {"salt1": salt}}, allow=[foreign, mine])
    response = sel.get_response(0)
    assert response.raw_id == reg.raw_id
    assert response.response.authenticator_data.is_user_present()
    assert response.response.authenticator_data.is_user_verified()
