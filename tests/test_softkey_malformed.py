"""Malformed requests: each gets the status the CTAP spec names, no exception escapes, the state file is untouched.
The table pins the codes; the hypothesis tests throw random bytes and random CBOR maps at the dispatcher."""

from __future__ import annotations

import os

import pytest
from fido2 import cbor
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libhmacunlock.fido2_compat import shared_secret
from libhmacunlock.softkey.authenticator import Authenticator
from tests.fixtures.softkey import RP_ID, make_resident

E = CtapError.ERR
CDH = bytes(32)
RP = {"id": RP_ID}
USER = {"id": b"user"}
ALGS = [{"type": "public-key", "alg": -7}]


def _mc(over: dict) -> bytes:
    base = {1: CDH, 2: RP, 3: USER, 4: ALGS}
    base.update(over)
    return b"\x01" + cbor.encode({k: v for k, v in base.items() if v is not None})


def _ga(over: dict) -> bytes:
    base = {1: RP_ID, 2: CDH}
    base.update(over)
    return b"\x02" + cbor.encode({k: v for k, v in base.items() if v is not None})


def _pin(**fields) -> bytes:
    return b"\x06" + cbor.encode(fields_to_map(fields))


def fields_to_map(fields: dict) -> dict:
    names = {"proto": 1, "sub": 2, "ka": 3, "param": 4, "new": 5, "hash": 6, "perms": 9, "rp": 10}
    return {names[k]: v for k, v in fields.items()}


def _platform_key() -> dict:
    """A well-formed platform key-agreement key (not the authenticator's)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    n = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {1: 2, 3: -25, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")}


def _hmac_secret(key_agreement: dict, protocol: int = 2) -> dict:
    """An hmac-secret input whose saltAuth is wrong (zeros) unless something earlier fails first."""
    return {"hmac-secret": {1: key_agreement, 2: bytes(48), 3: bytes(32), 4: protocol}}


OFF_CURVE = {1: 2, 3: -25, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}
KA = _platform_key()

TABLE = [
    # transport-level and dispatch
    ("empty request", b"", E.INVALID_LENGTH),
    ("unknown command 0x03", b"\x03", E.INVALID_COMMAND),
    ("unknown command 0x0c (largeBlobs)", b"\x0c\xa0", E.INVALID_COMMAND),
    ("unknown command 0x40 (bio preview)", b"\x40", E.INVALID_COMMAND),
    ("vendor command 0xff", b"\xff", E.INVALID_COMMAND),
    ("too large", b"\x02" + cbor.encode({1: "x" * 1300}), E.REQUEST_TOO_LARGE),
    ("getInfo with parameters", b"\x04\xa0", E.INVALID_LENGTH),
    ("getNextAssertion with parameters", b"\x08\xa0", E.INVALID_LENGTH),
    ("reset with parameters", b"\x07\xa0", E.INVALID_LENGTH),
    ("getNextAssertion with nothing pending", b"\x08", E.NOT_ALLOWED),
    # CBOR itself
    ("reserved initial byte", b"\x01\xff", E.INVALID_CBOR),
    ("truncated byte string", b"\x01\xa1\x01\x58\x20ab", E.INVALID_CBOR),
    ("truncated length", b"\x01\xa1\x01\x59\x01", E.INVALID_CBOR),
    ("map missing a value", b"\x01\xa1\x01", E.INVALID_CBOR),
    ("trailing bytes", b"\x01\xa0\x00", E.INVALID_CBOR),
    ("null", b"\x01\xf6", E.INVALID_CBOR),
    ("float", b"\x01\xfa\x00\x00\x00\x00", E.INVALID_CBOR),
    ("tag", b"\x01\xc0\xa0", E.INVALID_CBOR),
    ("indefinite map", b"\x01\xbf\xff", E.INVALID_CBOR),
    ("duplicate key", b"\x01\xa2\x01\x00\x01\x00", E.INVALID_CBOR),
    ("bad UTF-8 text", b"\x02\xa1\x01\x62\xff\xfe", E.INVALID_CBOR),
    ("nested too deep", b"\x01\xa1\x01" + b"\x81" * 40 + b"\x00", E.INVALID_CBOR),
    ("array instead of map", b"\x01\x80", E.CBOR_UNEXPECTED_TYPE),
    ("integer instead of map", b"\x06\x01", E.CBOR_UNEXPECTED_TYPE),
    # makeCredential
    ("mc without parameters", b"\x01", E.MISSING_PARAMETER),
    ("mc missing clientDataHash", _mc({1: None}), E.MISSING_PARAMETER),
    ("mc missing rp", _mc({2: None}), E.MISSING_PARAMETER),
    ("mc missing user", _mc({3: None}), E.MISSING_PARAMETER),
    ("mc missing pubKeyCredParams", _mc({4: None}), E.MISSING_PARAMETER),
    ("mc clientDataHash as text", _mc({1: "hash"}), E.CBOR_UNEXPECTED_TYPE),
    ("mc clientDataHash 31 bytes", _mc({1: bytes(31)}), E.INVALID_LENGTH),
    ("mc rp without id", _mc({2: {"name": "x"}}), E.MISSING_PARAMETER),
    ("mc rp id as bytes", _mc({2: {"id": b"x"}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc user without id", _mc({3: {"name": "x"}}), E.MISSING_PARAMETER),
    ("mc user id too long", _mc({3: {"id": bytes(65)}}), E.INVALID_LENGTH),
    ("mc user name as int", _mc({3: {"id": b"u", "name": 5}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc user icon as bytes", _mc({3: {"id": b"u", "icon": b"https://x/i.png"}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc rp icon as int", _mc({2: {"id": "example.com", "icon": 7}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc only RS256", _mc({4: [{"type": "public-key", "alg": -257}]}), E.UNSUPPORTED_ALGORITHM),
    ("mc empty pubKeyCredParams", _mc({4: []}), E.UNSUPPORTED_ALGORITHM),
    ("mc alg entry not a map", _mc({4: [-7]}), E.CBOR_UNEXPECTED_TYPE),
    ("mc alg entry without alg", _mc({4: [{"type": "public-key"}]}), E.MISSING_PARAMETER),
    ("mc excludeList not a list", _mc({5: {"id": b"x"}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc excludeList entry without id", _mc({5: [{"type": "public-key"}]}), E.MISSING_PARAMETER),
    ("mc extensions not a map", _mc({6: ["hmac-secret"]}), E.CBOR_UNEXPECTED_TYPE),
    ("mc hmac-secret not a bool", _mc({6: {"hmac-secret": 1}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc credProtect 4", _mc({6: {"credProtect": 4}}), E.INVALID_PARAMETER),
    ("mc option not a bool", _mc({7: {"rk": 1}}), E.CBOR_UNEXPECTED_TYPE),
    ("mc up=false", _mc({7: {"up": False}}), E.INVALID_OPTION),
    ("mc uv=true (no built-in UV)", _mc({7: {"uv": True}}), E.INVALID_OPTION),
    ("mc rk without a token", _mc({7: {"rk": True}}), E.PUAT_REQUIRED),
    ("mc pinUvAuthParam without protocol", _mc({8: bytes(32)}), E.MISSING_PARAMETER),
    ("mc unsupported protocol", _mc({8: bytes(32), 9: 3}), E.INVALID_PARAMETER),
    ("mc wrong pinUvAuthParam", _mc({8: bytes(32), 9: 2}), E.PIN_AUTH_INVALID),
    ("mc enterprise attestation", _mc({10: 1}), E.INVALID_PARAMETER),
    # getAssertion
    ("ga without parameters", b"\x02", E.MISSING_PARAMETER),
    ("ga missing rpId", _ga({1: None}), E.MISSING_PARAMETER),
    ("ga missing clientDataHash", _ga({2: None}), E.MISSING_PARAMETER),
    ("ga rpId as bytes", _ga({1: b"x"}), E.CBOR_UNEXPECTED_TYPE),
    ("ga clientDataHash 33 bytes", _ga({2: bytes(33)}), E.INVALID_LENGTH),
    ("ga allowList entry not a map", _ga({3: [b"id"]}), E.CBOR_UNEXPECTED_TYPE),
    ("ga allowList too long", _ga({3: [{"type": "public-key", "id": bytes([i])} for i in range(9)]}), E.LIMIT_EXCEEDED),
    ("ga rk option", _ga({5: {"rk": True}}), E.UNSUPPORTED_OPTION),
    ("ga uv option", _ga({5: {"uv": True}}), E.INVALID_OPTION),
    ("ga wrong pinUvAuthParam", _ga({6: bytes(32), 7: 2}), E.PIN_AUTH_INVALID),
    ("ga v1 pinUvAuthParam wrong length", _ga({6: bytes(32), 7: 1}), E.PIN_AUTH_INVALID),
    ("ga hmac-secret not a map", _ga({4: {"hmac-secret": True}}), E.CBOR_UNEXPECTED_TYPE),
    ("ga hmac-secret missing saltAuth", _ga({4: {"hmac-secret": {1: KA, 2: bytes(48)}}}), E.MISSING_PARAMETER),
    ("ga hmac-secret off-curve key", _ga({4: _hmac_secret(OFF_CURVE)}), E.INVALID_PARAMETER),
    ("ga hmac-secret bad saltAuth", _ga({4: _hmac_secret(KA)}), E.PIN_AUTH_INVALID),
    ("ga hmac-secret protocol 7", _ga({4: _hmac_secret(KA, protocol=7)}), E.INVALID_PARAMETER),
    ("ga unknown rp", _ga({1: "nobody.example"}), E.NO_CREDENTIALS),
    # clientPIN
    ("clientPIN without parameters", b"\x06", E.MISSING_PARAMETER),
    ("clientPIN without subCommand", _pin(proto=2), E.MISSING_PARAMETER),
    ("clientPIN unknown subCommand", _pin(proto=2, sub=0x0F), E.INVALID_SUBCOMMAND),
    ("clientPIN getUVRetries (no built-in UV)", _pin(proto=2, sub=7), E.INVALID_SUBCOMMAND),
    ("getKeyAgreement without protocol", _pin(sub=2), E.MISSING_PARAMETER),
    ("getKeyAgreement protocol 9", _pin(proto=9, sub=2), E.INVALID_PARAMETER),
    ("getKeyAgreement protocol as text", _pin(proto="2", sub=2), E.CBOR_UNEXPECTED_TYPE),
    ("setPIN when set", _pin(proto=2, sub=3, ka=KA, param=bytes(32), new=bytes(80)), E.PIN_AUTH_INVALID),
    ("setPIN missing newPinEnc", _pin(proto=2, sub=3, ka=KA, param=bytes(32)), E.MISSING_PARAMETER),
    (
        "changePIN bad pinUvAuthParam",
        _pin(proto=2, sub=4, ka=KA, param=bytes(32), new=bytes(80), hash=bytes(32)),
        E.PIN_AUTH_INVALID,
    ),
    ("getPinToken missing pinHashEnc", _pin(proto=2, sub=5, ka=KA), E.MISSING_PARAMETER),
    ("getPinToken with permissions", _pin(proto=2, sub=5, ka=KA, hash=bytes(32), perms=3), E.INVALID_PARAMETER),
    ("getPinToken pinHashEnc wrong length", _pin(proto=2, sub=5, ka=KA, hash=bytes(16)), E.INVALID_PARAMETER),
    ("getPinToken off-curve key", _pin(proto=2, sub=5, ka=OFF_CURVE, hash=bytes(32)), E.INVALID_PARAMETER),
    ("getPinToken key agreement not a map", _pin(proto=2, sub=5, ka=b"k", hash=bytes(32)), E.CBOR_UNEXPECTED_TYPE),
    ("token with permissions missing", _pin(proto=2, sub=9, ka=KA, hash=bytes(32)), E.MISSING_PARAMETER),
    ("token with permissions 0", _pin(proto=2, sub=9, ka=KA, hash=bytes(32), perms=0), E.INVALID_PARAMETER),
    ("token with largeBlobWrite", _pin(proto=2, sub=9, ka=KA, hash=bytes(32), perms=0x10), E.UNAUTHORIZED_PERMISSION),
    ("token with rpId as bytes", _pin(proto=2, sub=9, ka=KA, hash=bytes(32), perms=1, rp=b"x"), E.CBOR_UNEXPECTED_TYPE),
    # credentialManagement
    ("credMgmt without parameters", b"\x0a", E.MISSING_PARAMETER),
    ("credMgmt unknown subCommand", b"\x0a" + cbor.encode({1: 0x20}), E.INVALID_SUBCOMMAND),
    ("credMgmt without pinUvAuthParam", b"\x0a" + cbor.encode({1: 1}), E.PUAT_REQUIRED),
    ("credMgmt without protocol", b"\x0a" + cbor.encode({1: 1, 4: bytes(32)}), E.MISSING_PARAMETER),
    ("credMgmt bad pinUvAuthParam", b"\x0a" + cbor.encode({1: 1, 3: 2, 4: bytes(32)}), E.PIN_AUTH_INVALID),
    ("credMgmt enumerate creds without params", b"\x0a" + cbor.encode({1: 4, 3: 2, 4: bytes(32)}), E.MISSING_PARAMETER),
    ("credMgmt GetNextRP with nothing pending", b"\x0a" + cbor.encode({1: 3}), E.NOT_ALLOWED),
    ("credMgmt preview code, bad auth", b"\x41" + cbor.encode({1: 1, 3: 2, 4: bytes(32)}), E.PIN_AUTH_INVALID),
]


@pytest.fixture
def busy_key(pinned_softkey_device):
    """A key with a PIN and a discoverable credential, so that requests reach deep into each command."""
    make_resident(Ctap2(pinned_softkey_device), PinProtocolV2(), b"u", "alice")
    auth: Authenticator = pinned_softkey_device.authenticator
    return auth


@pytest.mark.parametrize("request_bytes, code", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_malformed_request_gets_the_named_code_and_changes_nothing(busy_key, request_bytes, code):
    before = busy_key.state.path.read_bytes()
    response = busy_key.process(request_bytes)
    assert response == bytes([code]), f"got {CtapError(response[0]).code}"
    assert busy_key.state.path.read_bytes() == before
    # the key still works afterwards
    assert busy_key.process(b"\x04")[0] == 0
    assert ClientPin(Ctap2(_Device(busy_key))).get_pin_retries()[0] == 8


class _Device:
    """Enough of a CtapDevice for Ctap2 around a bare Authenticator."""

    def __init__(self, auth):
        from libhmacunlock.softkey.device import SoftKeyDevice

        self._dev = SoftKeyDevice(auth)
        self.capabilities = self._dev.capabilities
        self.call = self._dev.call


KNOWN = {int(e) for e in E} - {E.OTHER}
COMMANDS = [0x01, 0x02, 0x04, 0x06, 0x07, 0x08, 0x0A, 0x0B, 0x41]

NAMES = ["id", "type", "name", "alg", "up", "rk", "uv", "hmac-secret", "credProtect"]
cbor_values = st.recursive(
    st.one_of(
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.binary(max_size=80),
        st.text(max_size=20),
        st.booleans(),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.integers(-5, 12), st.sampled_from(NAMES)), children, max_size=5),
    ),
    max_leaves=20,
)
request_maps = st.dictionaries(st.integers(min_value=-2, max_value=12), cbor_values, max_size=8)
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check(auth: Authenticator, request: bytes, before: bytes) -> None:
    response = auth.process(request)
    assert isinstance(response, bytes) and len(response) >= 1
    assert response[0] == 0 or response[0] in KNOWN, f"status {response[0]:#x} for {request.hex()}"
    assert auth.state.path.read_bytes() == before


@_SETTINGS
@given(request=st.binary(max_size=200))
def test_random_bytes_never_escape(busy_key, request):
    if request == b"\x07":  # a well-formed reset (the key is freshly powered up): not malformed
        return
    _check(busy_key, request, busy_key.state.path.read_bytes())


@_SETTINGS
@given(command=st.sampled_from(COMMANDS), body=request_maps)
def test_random_cbor_maps_never_escape(busy_key, command, body):
    _check(busy_key, bytes([command]) + cbor.encode(body), busy_key.state.path.read_bytes())


def test_internal_error_is_answered_not_raised(busy_key, monkeypatch):
    monkeypatch.setattr(busy_key.pin, "handle", lambda params: 1 / 0)
    assert busy_key.process(_pin(proto=2, sub=1)) == bytes([E.OTHER])
    assert os.path.exists(busy_key.state.path)


@pytest.mark.parametrize("salt_len, code", [(16, E.INVALID_LENGTH), (48, E.INVALID_LENGTH), (96, E.INVALID_LENGTH)])
def test_hmac_secret_salts_of_the_wrong_length(busy_key, salt_len, code):
    """A well-authenticated saltEnc that holds neither one nor two 32-byte salts."""
    ctap = Ctap2(_Device(busy_key))
    proto = PinProtocolV2()
    key_agreement, shared = shared_secret(ClientPin(ctap, proto))
    salt_enc = proto.encrypt(shared, os.urandom(salt_len))
    request = _ga({4: {"hmac-secret": {1: key_agreement, 2: salt_enc, 3: proto.authenticate(shared, salt_enc), 4: 2}}})
    before = busy_key.state.path.read_bytes()
    assert busy_key.process(request) == bytes([code])
    assert busy_key.state.path.read_bytes() == before
