"""The software key through python-fido2's Ctap2: getInfo, makeCredential, getAssertion(s), attestation."""

from __future__ import annotations

import os

import pytest
from cryptography import x509
from fido2.attestation import AttestationVerifier, PackedAttestation, UntrustedAttestation
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.webauthn import AttestationObject, CollectedClientData

from libhmacunlock.fido2_compat import shared_secret
from libhmacunlock.softkey.authenticator import Authenticator
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.state import KeyState
from tests.fixtures.softkey import ES256_PARAMS, RP_ID, make_resident, pin_auth

PROTOCOLS = [PinProtocolV2, PinProtocolV1]


def test_get_info_reports_the_four_features(softkey_device):
    info = Ctap2(softkey_device).info
    assert info.versions == ["FIDO_2_0", "FIDO_2_1"]
    assert set(info.extensions) == {"credProtect", "hmac-secret"}
    assert info.options["rk"] is True and info.options["up"] is True
    assert info.options["clientPin"] is False  # no PIN yet
    assert info.options["credMgmt"] is True and info.options["pinUvAuthToken"] is True
    assert info.options["makeCredUvNotRqd"] is True
    assert "uv" not in info.options  # no built-in user verification
    assert info.pin_uv_protocols == [2, 1]
    assert info.algorithms == [{"alg": -7, "type": "public-key"}]
    assert info.max_msg_size >= 1024 and info.max_creds_in_list >= 1 and info.max_cred_id_length >= 64
    assert info.remaining_disc_creds == 50
    assert len(bytes(info.aaguid)) == 16 and bytes(info.aaguid) != bytes(16)


def test_get_info_shows_pin_once_set(pinned_softkey_device):
    assert Ctap2(pinned_softkey_device).info.options["clientPin"] is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_resident_credential_with_hmac_secret_and_assertion(pinned_softkey_device, protocol):
    ctap = Ctap2(pinned_softkey_device)
    att = make_resident(ctap, protocol(), b"user-1", "alice", extensions={"hmac-secret": True, "credProtect": 2})
    assert att.auth_data.is_user_present() and att.auth_data.is_user_verified()
    assert att.auth_data.extensions == {"hmac-secret": True, "credProtect": 2}
    cred = att.auth_data.credential_data
    assert bytes(cred.aaguid) == bytes(ctap.info.aaguid)

    auth = pin_auth(ctap, protocol(), ClientPin.PERMISSION.GET_ASSERTION)
    cdh = os.urandom(32)
    assertion = ctap.get_assertion(RP_ID, cdh, **auth(cdh))
    assertion.verify(cdh, cred.public_key)
    assert assertion.credential["id"] == cred.credential_id
    assert assertion.user == {"id": b"user-1"}  # one account: the id only
    assert assertion.auth_data.is_user_verified()
    assert assertion.auth_data.counter > att.auth_data.counter


def test_packed_attestation_with_x5c_chain_verifies(pinned_softkey_device, softkey_path):
    ctap = Ctap2(pinned_softkey_device)
    client_data = CollectedClientData.create(CollectedClientData.TYPE.CREATE, b"challenge-123", "https://example.com")
    auth = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.MAKE_CREDENTIAL)
    resp = ctap.make_credential(
        client_data.hash, {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True}, **auth(client_data.hash)
    )
    assert resp.fmt == "packed" and len(resp.att_stmt["x5c"]) == 1
    result = PackedAttestation().verify(resp.att_stmt, resp.auth_data, client_data.hash)
    batch = x509.load_der_x509_certificate(result.trust_path[0])
    assert batch.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")).value.value[
        2:
    ] == bytes(ctap.info.aaguid)
    assert batch.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    ca_der = KeyState.open(softkey_path).attestation.ca_cert
    ca = x509.load_der_x509_certificate(ca_der)

    class TrustOurCa(AttestationVerifier):
        def ca_lookup(self, attestation_result, auth_data):
            return ca_der

    att_obj = AttestationObject.create(resp.fmt, resp.auth_data, resp.att_stmt)
    TrustOurCa().verify_attestation(att_obj, client_data.hash)  # chain batch -> CA checked

    other = KeyState.create(softkey_path.parent / "other.json").attestation.ca_cert

    class TrustAnotherCa(AttestationVerifier):
        def ca_lookup(self, attestation_result, auth_data):
            return other

    with pytest.raises(UntrustedAttestation):
        TrustAnotherCa().verify_attestation(att_obj, client_data.hash)
    assert ca.subject == batch.issuer


def test_several_accounts_per_rp_newest_first(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    proto = PinProtocolV2()
    for i, name in enumerate(["alice", "bob", "carol"]):
        make_resident(ctap, proto, f"user-{i}".encode(), name, display_name=name.title())
    make_resident(ctap, proto, b"other", "dave", rp_id="other.example")

    auth = pin_auth(ctap, proto, ClientPin.PERMISSION.GET_ASSERTION)
    cdh = os.urandom(32)
    assertions = ctap.get_assertions(RP_ID, cdh, **auth(cdh))
    assert [a.user["name"] for a in assertions] == ["carol", "bob", "alice"]
    assert [a.user["displayName"] for a in assertions] == ["Carol", "Bob", "Alice"]
    assert assertions[0].number_of_credentials == 3
    assert all(a.number_of_credentials is None for a in assertions[1:])
    counters = [a.auth_data.counter for a in assertions]
    assert counters == sorted(counters) and len(set(counters)) == 3

    # without user verification: ids only, no names
    cdh = os.urandom(32)
    plain = ctap.get_assertions(RP_ID, cdh)
    assert [a.user for a in plain] == [{"id": b"user-2"}, {"id": b"user-1"}, {"id": b"user-0"}]
    assert not plain[0].auth_data.is_user_verified()


def test_get_next_assertion_needs_a_preceding_get_assertion(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED
    for i in range(2):
        make_resident(ctap, PinProtocolV2(), bytes([i]), f"u{i}")
    ctap.get_assertion(RP_ID, os.urandom(32))
    ctap.get_info()  # any other command ends the sequence
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED


def test_same_rp_and_user_handle_replaces_the_credential(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    first = make_resident(ctap, PinProtocolV2(), b"same", "alice")
    second = make_resident(ctap, PinProtocolV2(), b"same", "alice2")
    assertions = ctap.get_assertions(RP_ID, os.urandom(32))
    assert len(assertions) == 1
    assert assertions[0].credential["id"] == second.auth_data.credential_data.credential_id
    with pytest.raises(CtapError) as exc:
        old_id = first.auth_data.credential_data.credential_id
        ctap.get_assertion(RP_ID, os.urandom(32), [{"type": "public-key", "id": old_id}])
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS


def test_resident_credential_needs_the_pin_once_set(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    assert exc.value.code == CtapError.ERR.PUAT_REQUIRED
    # makeCredUvNotRqd: a non-discoverable one is fine without
    resp = ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS)
    assert not resp.auth_data.is_user_verified()


def test_non_resident_credential_round_trip_and_rp_binding(softkey_device):
    ctap = Ctap2(softkey_device)
    resp = ctap.make_credential(
        os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, extensions={"hmac-secret": True}
    )
    cred = resp.auth_data.credential_data
    assert len(cred.credential_id) <= ctap.info.max_cred_id_length
    cdh = os.urandom(32)
    allow = [{"type": "public-key", "id": cred.credential_id}]
    assertion = ctap.get_assertion(RP_ID, cdh, allow)
    assertion.verify(cdh, cred.public_key)
    assert assertion.user is None  # nothing stored about the user of a non-discoverable credential
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("evil.example", cdh, allow)
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(CtapError) as exc:  # not discoverable
        ctap.get_assertion(RP_ID, cdh)
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS


def test_exclude_list_refuses_a_second_registration(softkey_device):
    ctap = Ctap2(softkey_device)
    resp = ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    exclude = [{"type": "public-key", "id": resp.auth_data.credential_data.credential_id}]
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, exclude, options={"rk": True})
    assert exc.value.code == CtapError.ERR.CREDENTIAL_EXCLUDED


def test_up_false_preflight_does_not_consume_the_token(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    att = make_resident(ctap, PinProtocolV2(), b"u", "alice")
    allow = [{"type": "public-key", "id": att.auth_data.credential_data.credential_id}]
    auth = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.GET_ASSERTION)
    cdh = os.urandom(32)
    probe = ctap.get_assertion(RP_ID, cdh, allow, options={"up": False}, **auth(cdh))
    assert not probe.auth_data.is_user_present() and probe.auth_data.is_user_verified()
    real = ctap.get_assertion(RP_ID, cdh, allow, **auth(cdh))
    assert real.auth_data.is_user_present() and real.auth_data.is_user_verified()
    # the touch used the token up: CTAP 2.1 clears its permissions
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, cdh, allow, **auth(cdh))
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


def test_token_is_bound_to_its_rp_and_permission(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    make_resident(ctap, PinProtocolV2(), b"u", "alice", rp_id="other.example")
    auth = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.GET_ASSERTION, rp_id=RP_ID)
    cdh = os.urandom(32)
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("other.example", cdh, **auth(cdh))
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID
    with pytest.raises(CtapError) as exc:  # ga-only token cannot make credentials
        ctap.make_credential(cdh, {"id": RP_ID}, {"id": b"x"}, ES256_PARAMS, options={"rk": True}, **auth(cdh))
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


def test_token_without_rp_binds_at_first_use(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    make_resident(ctap, PinProtocolV2(), b"u", "alice", rp_id="a.example")
    make_resident(ctap, PinProtocolV2(), b"u", "alice", rp_id="b.example")
    auth = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.GET_ASSERTION, rp_id=None)
    cdh = os.urandom(32)
    ctap.get_assertion("a.example", cdh, options={"up": False}, **auth(cdh))
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion("b.example", cdh, options={"up": False}, **auth(cdh))
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


@pytest.mark.parametrize(
    "level, without_uv_discoverable, without_uv_allow_list",
    [(1, True, True), (2, False, True), (3, False, False)],
)
def test_cred_protect_levels_are_enforced(pinned_softkey_device, level, without_uv_discoverable, without_uv_allow_list):
    ctap = Ctap2(pinned_softkey_device)
    att = make_resident(ctap, PinProtocolV2(), b"u", "alice", extensions={"credProtect": level})
    assert att.auth_data.extensions == {"credProtect": level}
    allow = [{"type": "public-key", "id": att.auth_data.credential_data.credential_id}]

    def works(allow_list) -> bool:
        try:
            ctap.get_assertion(RP_ID, os.urandom(32), allow_list)
            return True
        except CtapError as exc:
            assert exc.code == CtapError.ERR.NO_CREDENTIALS
            return False

    assert works(None) is without_uv_discoverable
    assert works(allow) is without_uv_allow_list
    auth = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.GET_ASSERTION)
    cdh = os.urandom(32)
    assert ctap.get_assertion(RP_ID, cdh, options={"up": False}, **auth(cdh)).auth_data.is_user_verified()


def test_cred_protect_3_is_not_revealed_by_the_exclude_list_without_uv(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    att = make_resident(ctap, PinProtocolV2(), b"u", "alice", extensions={"credProtect": 3})
    exclude = [{"type": "public-key", "id": att.auth_data.credential_data.credential_id}]
    resp = ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"v"}, ES256_PARAMS, exclude)
    assert resp.auth_data.credential_data is not None


def test_sign_counter_and_credentials_survive_a_restart(softkey_path):
    device = SoftKeyDevice.open(softkey_path)
    ctap = Ctap2(device)
    resp = ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    first = ctap.get_assertion(RP_ID, os.urandom(32))
    aaguid = ctap.info.aaguid

    again = Ctap2(SoftKeyDevice.open(softkey_path))  # a new Authenticator on the same file
    cdh = os.urandom(32)
    second = again.get_assertion(RP_ID, cdh)
    second.verify(cdh, resp.auth_data.credential_data.public_key)
    assert second.auth_data.counter > first.auth_data.counter
    assert again.info.aaguid == aaguid


def test_reset_only_just_after_power_up_and_erases(pinned_softkey_device, monkeypatch):
    from libhmacunlock.softkey import authenticator as auth_module

    ctap = Ctap2(pinned_softkey_device)
    make_resident(ctap, PinProtocolV2(), b"u", "alice")
    auth: Authenticator = pinned_softkey_device.authenticator
    monkeypatch.setattr(auth_module, "RESET_WINDOW", 0.0)
    with pytest.raises(CtapError) as exc:
        ctap.reset()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED
    monkeypatch.setattr(auth_module, "RESET_WINDOW", 10.0)
    auth.power_cycle()
    ctap.reset()
    info = ctap.get_info()
    assert info.options["clientPin"] is False and info.remaining_disc_creds == 50
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, os.urandom(32))
    assert exc.value.code == CtapError.ERR.NO_CREDENTIALS
    with pytest.raises(CtapError) as exc:  # as real keys answer after a reset (python-fido2's device tests)
        ClientPin(ctap).get_pin_retries()
    assert exc.value.code == CtapError.ERR.PIN_NOT_SET


def test_reset_and_selection_need_a_touch(softkey_path):
    ctap = Ctap2(SoftKeyDevice.open(softkey_path, presence=PresencePolicy.deny()))
    for call in (ctap.reset, ctap.selection):
        with pytest.raises(CtapError) as exc:
            call()
        assert exc.value.code == CtapError.ERR.OPERATION_DENIED
    Ctap2(SoftKeyDevice.open(softkey_path)).selection()


def test_denied_touch_makes_no_credential_and_keeps_the_counter(softkey_path):
    ctap = Ctap2(SoftKeyDevice.open(softkey_path, presence=PresencePolicy.deny()))
    before = softkey_path.read_bytes()
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    assert exc.value.code == CtapError.ERR.OPERATION_DENIED
    assert softkey_path.read_bytes() == before


def test_touch_probe_with_empty_pin_auth(softkey_device, pinned_softkey_device):
    cases = ((softkey_device, CtapError.ERR.PIN_NOT_SET), (pinned_softkey_device, CtapError.ERR.PIN_INVALID))
    for device, code in cases:
        with pytest.raises(CtapError) as exc:
            Ctap2(device).make_credential(
                bytes(32), {"id": RP_ID}, {"id": b"d"}, ES256_PARAMS, pin_uv_param=b"", pin_uv_protocol=2
            )
        assert exc.value.code == code


def test_message_counts(softkey_device):
    ctap = Ctap2(softkey_device)  # one getInfo
    ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS, options={"rk": True})
    ctap.get_assertion(RP_ID, os.urandom(32))
    counts = softkey_device.authenticator.message_counts
    assert counts[0x04] == 1 and counts[0x01] == 1 and counts[0x02] == 1


def test_get_next_assertion_carries_hmac_secret_for_each_account(pinned_softkey_device, softkey_path):
    import hashlib
    import hmac as hmac_mod

    ctap = Ctap2(pinned_softkey_device)
    proto = PinProtocolV2()
    for user_id in (b"one", b"two"):
        make_resident(ctap, proto, user_id, user_id.decode())
    client_pin = ClientPin(ctap, proto)
    key_agreement, shared = shared_secret(client_pin)
    salt = os.urandom(32)
    salt_enc = proto.encrypt(shared, salt)
    auth = pin_auth(ctap, proto, ClientPin.PERMISSION.GET_ASSERTION)
    cdh = os.urandom(32)
    hmac_input = {"hmac-secret": {1: key_agreement, 2: salt_enc, 3: proto.authenticate(shared, salt_enc), 4: 2}}
    assertions = ctap.get_assertions(RP_ID, cdh, extensions=hmac_input, **auth(cdh))
    state = KeyState.open(softkey_path)
    for assertion in assertions:
        cred = state.find_credential(assertion.credential["id"])
        output = proto.decrypt(shared, assertion.auth_data.extensions["hmac-secret"])
        assert output == hmac_mod.new(cred.cred_random_uv, salt, hashlib.sha256).digest()
    assert [a.user["id"] for a in assertions] == [b"two", b"one"]


def test_key_store_full(softkey_device, monkeypatch):
    from libhmacunlock.softkey import credentials as creds_module

    monkeypatch.setattr(creds_module, "MAX_RESIDENT_CREDENTIALS", 3)
    ctap = Ctap2(softkey_device)
    for i in range(3):
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": bytes([i])}, ES256_PARAMS, options={"rk": True})
    assert ctap.get_info().remaining_disc_creds == 0
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"new"}, ES256_PARAMS, options={"rk": True})
    assert exc.value.code == CtapError.ERR.KEY_STORE_FULL
    # replacing an account needs no new slot
    ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": bytes([0])}, ES256_PARAMS, options={"rk": True})
    # a non-discoverable credential needs none either
    ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"new"}, ES256_PARAMS)


def test_expired_token_and_token_of_the_other_protocol_are_refused(pinned_softkey_device, monkeypatch):
    from libhmacunlock.softkey import pin as pin_module

    ctap = Ctap2(pinned_softkey_device)
    make_resident(ctap, PinProtocolV2(), b"u", "alice")
    cdh = os.urandom(32)
    v1 = pin_auth(ctap, PinProtocolV1(), ClientPin.PERMISSION.GET_ASSERTION)
    forged = v1(cdh)
    forged["pin_uv_protocol"] = 2  # a v1 token presented as v2
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, cdh, options={"up": False}, **forged)
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID

    monkeypatch.setattr(pin_module, "TOKEN_LIFETIME", -1.0)
    expired = pin_auth(ctap, PinProtocolV2(), ClientPin.PERMISSION.GET_ASSERTION)
    with pytest.raises(CtapError) as exc:
        ctap.get_assertion(RP_ID, cdh, options={"up": False}, **expired(cdh))
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


def test_get_next_assertion_times_out(pinned_softkey_device, monkeypatch):
    from libhmacunlock.softkey import authenticator as auth_module

    ctap = Ctap2(pinned_softkey_device)
    for i in range(2):
        make_resident(ctap, PinProtocolV2(), bytes([i]), f"u{i}")
    monkeypatch.setattr(auth_module, "NEXT_ASSERTION_TIMEOUT", -1.0)
    assert ctap.get_assertion(RP_ID, os.urandom(32)).number_of_credentials == 2
    with pytest.raises(CtapError) as exc:
        ctap.get_next_assertion()
    assert exc.value.code == CtapError.ERR.NOT_ALLOWED
