"""The software key's profiles, checked with python-fido2's own client classes (Ctap2, ClientPin,
CredentialManagement, Fido2Client): each answers getInfo and the PIN as the real key family it models does."""

from __future__ import annotations

import os

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.utils import websafe_decode

from libhmacunlock.fido2_compat import shared_secret
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.profiles import PROFILES, UnknownProfile, get
from tests.fixtures.softkey import ES256_PARAMS, RP_ID, TEST_PIN

ERR = CtapError.ERR
PERM = ClientPin.PERMISSION


def open_key(tmp_path, profile: str, presence: PresencePolicy | None = None, pin: bool = True) -> SoftKeyDevice:
    device = SoftKeyDevice.open(tmp_path / f"{profile}.json", presence=presence, profile=profile)
    if pin:
        ClientPin(Ctap2(device)).set_pin(TEST_PIN)
    return device


# --- getInfo ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROFILES))
def test_get_info_is_the_profiles_data(tmp_path, name):
    profile = PROFILES[name]
    info = Ctap2(open_key(tmp_path, name, pin=False)).info
    assert tuple(info.versions) == profile.versions
    assert tuple(info.extensions) == profile.extensions
    assert tuple(info.pin_uv_protocols) == profile.pin_protocols
    assert info.options == profile.options(pin_set=False)
    assert info.max_msg_size == profile.max_msg_size
    assert info.firmware_version == (profile.firmware_version or 0)  # python-fido2 reads an absent one as 0
    assert profile.sources, "every profile names its sources"


def test_the_real_key_families_answer_as_published(tmp_path):
    yk52 = Ctap2(open_key(tmp_path, "yubikey-5.2")).info
    assert yk52.versions == ["FIDO_2_0", "FIDO_2_1_PRE"] and yk52.pin_uv_protocols == [1]
    assert yk52.options.get("credentialMgmtPreview") is True and "credMgmt" not in yk52.options
    assert "pinUvAuthToken" not in yk52.options and yk52.extensions == ["credProtect", "hmac-secret"]
    yk57 = Ctap2(open_key(tmp_path, "yubikey-5.7")).info
    assert "FIDO_2_1" in yk57.versions and yk57.pin_uv_protocols == [2, 1]
    assert yk57.options["makeCredUvNotRqd"] is True and yk57.firmware_version == 0x050700
    solo = Ctap2(open_key(tmp_path, "solo1")).info
    assert solo.versions == ["FIDO_2_0"] and solo.extensions == ["hmac-secret"]
    assert not {"credMgmt", "credentialMgmtPreview", "pinUvAuthToken"} & set(solo.options)
    bio = Ctap2(open_key(tmp_path, "bio")).info
    assert bio.options["uv"] is True and bio.options["pinUvAuthToken"] is True and bio.uv_modality == 2
    assert "hmac-secret" not in Ctap2(open_key(tmp_path, "no-hmac-secret")).info.extensions
    assert Ctap2(open_key(tmp_path, "no-rk", pin=False)).info.options["rk"] is False


def test_an_unknown_profile_is_refused_by_name(tmp_path):
    with pytest.raises(UnknownProfile, match="no-such"):
        SoftKeyDevice.open(tmp_path / "k.json", profile="no-such")
    assert get(None).name == "ctap21"


# --- the PIN ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yubikey-5.2", "solo1"])
def test_legacy_keys_know_only_getpintoken(tmp_path, name):
    ctap = Ctap2(open_key(tmp_path, name))
    client_pin = ClientPin(ctap)
    assert isinstance(client_pin.protocol, PinProtocolV1)
    # python-fido2 falls back to getPinToken (0x05) by itself when the key has no pinUvAuthToken
    assert len(client_pin.get_pin_token(TEST_PIN, PERM.GET_ASSERTION, RP_ID)) == 32
    key_agreement, _ = shared_secret(client_pin)
    with pytest.raises(CtapError) as exc:
        ctap.client_pin(1, ClientPin.CMD.GET_TOKEN_USING_PIN, key_agreement=key_agreement, pin_hash_enc=b"\0" * 16)
    assert exc.value.code == ERR.INVALID_SUBCOMMAND
    with pytest.raises(CtapError) as exc:
        ctap.client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)
    assert exc.value.code == ERR.INVALID_PARAMETER  # PIN protocol 2 is not there


def test_a_legacy_pin_token_is_not_used_up_by_a_touch(tmp_path):
    ctap = Ctap2(open_key(tmp_path, "yubikey-5.2"))
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token(TEST_PIN)
    for user in (b"a", b"b"):  # CTAP 2.0: one pinToken, many commands, until power-off
        cdh = os.urandom(32)
        ctap.make_credential(
            cdh,
            {"id": RP_ID},
            {"id": user, "name": user.decode()},
            ES256_PARAMS,
            options={"rk": True},
            pin_uv_param=client_pin.protocol.authenticate(token, cdh),
            pin_uv_protocol=1,
        )


@pytest.mark.parametrize("name", list(PROFILES))
def test_pin_retries_without_a_pin_is_pin_not_set(tmp_path, name):
    if not PROFILES[name].pin_protocols:
        pytest.skip("no client PIN")
    with pytest.raises(CtapError) as exc:
        ClientPin(Ctap2(open_key(tmp_path, name, pin=False))).get_pin_retries()
    assert exc.value.code == ERR.PIN_NOT_SET


@pytest.mark.parametrize(
    "name, allowed", [("ctap21", True), ("yubikey-5.7", True), ("yubikey-5.2", False), ("solo1", False), ("bio", False)]
)
def test_make_credential_without_the_pin_only_with_make_cred_uv_not_rqd(tmp_path, name, allowed):
    """The case behind systemd #31443: with makeCredUvNotRqd a non-discoverable credential needs no PIN."""
    ctap = Ctap2(open_key(tmp_path, name))
    if allowed:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS)
    else:
        with pytest.raises(CtapError) as exc:
            ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS)
        assert exc.value.code == ERR.PUAT_REQUIRED  # PIN_REQUIRED in CTAP 2.0: the same code


# --- credential management ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ctap21", "yubikey-5.2", "yubikey-5.7", "bio"])
def test_credential_management_through_python_fido2(tmp_path, name):
    ctap = Ctap2(open_key(tmp_path, name))
    client_pin = ClientPin(ctap)
    token = client_pin.get_pin_token(TEST_PIN, PERM.MAKE_CREDENTIAL)
    cdh = os.urandom(32)
    ctap.make_credential(
        cdh,
        {"id": RP_ID},
        {"id": b"u", "name": "u"},
        ES256_PARAMS,
        options={"rk": True},
        pin_uv_param=client_pin.protocol.authenticate(token, cdh),
        pin_uv_protocol=client_pin.protocol.VERSION,
    )
    # python-fido2 picks credentialMgmtPreview (0x41) on a 5.2 and a legacy token there
    token = client_pin.get_pin_token(TEST_PIN, PERM.CREDENTIAL_MGMT)
    credman = CredentialManagement(ctap, client_pin.protocol, token)
    assert [rp[CredentialManagement.RESULT.RP]["id"] for rp in credman.enumerate_rps()] == [RP_ID]


def test_solo1_has_no_credential_management(tmp_path):
    ctap = Ctap2(open_key(tmp_path, "solo1"))
    for cmd in (0x0A, 0x41):
        with pytest.raises(CtapError) as exc:
            ctap.send_cbor(cmd, {1: 1})
        assert exc.value.code == ERR.INVALID_COMMAND


# --- hmac-secret, rk ----------------------------------------------------------------------------------------


class _Pin(UserInteraction):
    def request_pin(self, permissions, rp_id):  # type: ignore[no-untyped-def]
        return TEST_PIN

    def request_uv(self, permissions, rp_id):  # type: ignore[no-untyped-def]
        return True


def _client(device) -> Fido2Client:
    return Fido2Client(
        device,
        DefaultClientDataCollector(f"https://{RP_ID}"),
        user_interaction=_Pin(),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )


def _hmac(client: Fido2Client, credential_id: bytes, salt: bytes, uv: str) -> bytes:
    result = client.get_assertion(
        {
            "rpId": RP_ID,
            "challenge": os.urandom(32),
            "allowCredentials": [{"type": "public-key", "id": credential_id}],
            "userVerification": uv,
            "extensions": {"hmacGetSecret": {"salt1": salt}},
        }
    ).get_response(0)
    output = result.client_extension_results["hmacGetSecret"]["output1"]
    return websafe_decode(output) if isinstance(output, str) else bytes(output)


def _made(client: Fido2Client, resident: str = "required") -> bytes:
    made = client.make_credential(
        {
            "rp": {"id": RP_ID, "name": "Example"},
            "user": {"id": b"user", "name": "user"},
            "challenge": os.urandom(32),
            "pubKeyCredParams": ES256_PARAMS,
            "authenticatorSelection": {"residentKey": resident, "userVerification": "required"},
            "extensions": {"hmacCreateSecret": True},
        }
    )
    assert made.client_extension_results.get("hmacCreateSecret") is True
    return made.response.attestation_object.auth_data.credential_data.credential_id


@pytest.mark.parametrize("name", ["ctap21", "yubikey-5.2", "yubikey-5.7", "solo1", "bio", "slow"])
def test_fido2client_makes_a_resident_hmac_secret_credential_with_the_pin(tmp_path, name):
    client = _client(open_key(tmp_path, name))
    credential_id = _made(client)
    salt = os.urandom(32)
    with_uv = _hmac(client, credential_id, salt, "required")
    assert len(with_uv) == 32 and _hmac(client, credential_id, salt, "required") == with_uv
    without_uv = _hmac(client, credential_id, salt, "discouraged")
    # CTAP 2.1 keys keep two secrets (with and without UV); early Solo firmware one
    assert (with_uv == without_uv) is (not PROFILES[name].hmac_secret_uv_split)


def test_no_hmac_secret_ignores_the_extension(tmp_path):
    client = _client(open_key(tmp_path, "no-hmac-secret"))
    made = client.make_credential(
        {
            "rp": {"id": RP_ID, "name": "Example"},
            "user": {"id": b"user", "name": "user"},
            "challenge": os.urandom(32),
            "pubKeyCredParams": ES256_PARAMS,
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "extensions": {"hmacCreateSecret": True},
        }
    )
    assert "hmac-secret" not in (made.response.attestation_object.auth_data.extensions or {})


def test_no_rk_refuses_a_resident_credential(tmp_path):
    ctap = Ctap2(open_key(tmp_path, "no-rk", pin=False))
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    assert exc.value.code == ERR.UNSUPPORTED_OPTION


# --- built-in UV (bio) --------------------------------------------------------------------------------------


def test_bio_gives_a_token_for_the_finger_and_falls_back_to_the_pin(tmp_path):
    device = open_key(tmp_path, "bio")
    ctap = Ctap2(device)
    client_pin = ClientPin(ctap)
    assert isinstance(client_pin.protocol, PinProtocolV2)
    assert len(client_pin.get_uv_token(PERM.GET_ASSERTION, RP_ID)) == 32
    # a finger that does not match: UV_INVALID, then UV_BLOCKED after the profile's attempts
    device.authenticator.presence = PresencePolicy.deny()
    codes = []
    for _ in range(PROFILES["bio"].uv_retries):
        with pytest.raises(CtapError) as exc:
            client_pin.get_uv_token(PERM.GET_ASSERTION, RP_ID)
        codes.append(exc.value.code)
    assert codes == [ERR.UV_INVALID] * (len(codes) - 1) + [ERR.UV_BLOCKED]
    assert ctap.client_pin(2, ClientPin.CMD.GET_UV_RETRIES)[ClientPin.RESULT.UV_RETRIES] == 0
    device.authenticator.presence = PresencePolicy.approve()
    with pytest.raises(CtapError) as exc:
        client_pin.get_uv_token(PERM.GET_ASSERTION, RP_ID)
    assert exc.value.code == ERR.UV_BLOCKED  # even a good finger: only the PIN helps now
    client_pin.get_pin_token(TEST_PIN, PERM.GET_ASSERTION, RP_ID)
    assert ctap.client_pin(2, ClientPin.CMD.GET_UV_RETRIES)[ClientPin.RESULT.UV_RETRIES] == 3
    assert len(client_pin.get_uv_token(PERM.GET_ASSERTION, RP_ID)) == 32


def test_bio_without_a_pin_has_no_finger_enrolled(tmp_path):
    ctap = Ctap2(open_key(tmp_path, "bio", pin=False))
    assert ctap.info.options["uv"] is False
    with pytest.raises(CtapError) as exc:
        ClientPin(ctap).get_uv_token(PERM.GET_ASSERTION, RP_ID)
    assert exc.value.code == ERR.NOT_ALLOWED


def test_keys_without_a_finger_refuse_uv_true(tmp_path):
    ctap = Ctap2(open_key(tmp_path, "ctap21"))
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, os.urandom(32), options={"uv": True})
    assert exc.value.code == ERR.INVALID_OPTION


# --- slow ---------------------------------------------------------------------------------------------------


def test_slow_sends_keepalives_while_it_waits_for_the_touch(tmp_path):
    device = open_key(tmp_path, "slow")
    seen: list[STATUS] = []
    ctap = Ctap2(device)
    ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, on_keepalive=seen.append)
    assert STATUS.PROCESSING in seen and STATUS.UPNEEDED in seen


def test_softkey_serve_takes_a_profile(tmp_path):
    from libhmacunlock.udp import open_udp_device
    from tests.fixtures.udp import start_softkey_process

    key = start_softkey_process(tmp_path / "k.json", "--profile", "yubikey-5.2")
    try:
        assert "profile yubikey-5.2" in key.ready_line
        device = open_udp_device("127.0.0.1", key.port)
        try:
            assert Ctap2(device).info.versions == ["FIDO_2_0", "FIDO_2_1_PRE"]
        finally:
            device.close()
    finally:
        assert key.stop() == 0


def test_running_udp_softkey_takes_a_profile(tmp_path):
    from libhmacunlock.softkey.udp import running_udp_softkey
    from libhmacunlock.udp import open_udp_device

    with running_udp_softkey(tmp_path / "k.json", profile="solo1") as server:
        device = open_udp_device("127.0.0.1", server.port)
        try:
            assert Ctap2(device).info.versions == ["FIDO_2_0"]
        finally:
            device.close()
