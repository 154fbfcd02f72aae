"""clientPIN through python-fido2's ClientPin, protocols 1 and 2."""

from __future__ import annotations

import os

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2

from libhmacunlock.fido2_compat import shared_secret
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.state import KeyState
from tests.fixtures.softkey import MC_GA, RP_ID, TEST_PIN

PROTOCOLS = [PinProtocolV2, PinProtocolV1]


def _code(fn, *args) -> CtapError.ERR:
    with pytest.raises(CtapError) as exc:
        fn(*args)
    return exc.value.code


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_set_pin_then_token(softkey_device, protocol):
    ctap = Ctap2(softkey_device)
    pin = ClientPin(ctap, protocol())
    assert _code(pin.get_pin_token, TEST_PIN, MC_GA, RP_ID) == CtapError.ERR.PIN_NOT_SET
    pin.set_pin(TEST_PIN)
    assert pin.get_pin_retries() == (8, False)
    assert len(pin.get_pin_token(TEST_PIN, MC_GA, RP_ID)) == 32
    assert len(pin.get_pin_token(TEST_PIN)) == 32  # legacy getPinToken (0x05)
    assert _code(pin.set_pin, "13579") == CtapError.ERR.PIN_AUTH_INVALID  # set once; change afterwards


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_change_pin(pinned_softkey_device, protocol):
    pin = ClientPin(Ctap2(pinned_softkey_device), protocol())
    pin.change_pin(TEST_PIN, "new-pin-1")
    assert _code(pin.get_pin_token, TEST_PIN, MC_GA, RP_ID) == CtapError.ERR.PIN_INVALID
    pin.get_pin_token("new-pin-1", MC_GA, RP_ID)
    assert pin.get_pin_retries()[0] == 8  # a good PIN restores the counter
    assert _code(pin.change_pin, "wrong-pin", "x" * 8) == CtapError.ERR.PIN_INVALID
    assert pin.get_pin_retries()[0] == 7


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_change_pin_kills_the_old_token(pinned_softkey_device, protocol):
    ctap = Ctap2(pinned_softkey_device)
    pin = ClientPin(ctap, protocol())
    token = pin.get_pin_token(TEST_PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
    pin.change_pin(TEST_PIN, "another-pin")
    cdh = os.urandom(32)
    with pytest.raises(CtapError) as exc:
        ctap.make_credential(
            cdh,
            {"id": RP_ID},
            {"id": b"u"},
            [{"type": "public-key", "alg": -7}],
            pin_uv_param=protocol().authenticate(token, cdh),
            pin_uv_protocol=protocol.VERSION,
        )
    assert exc.value.code == CtapError.ERR.PIN_AUTH_INVALID


def _raw_set_pin(device, padded: bytes) -> None:
    """setPIN with a PIN block python-fido2 would refuse to build (the key must refuse it too)."""
    ctap = Ctap2(device)
    proto = PinProtocolV2()
    key_agreement, shared = shared_secret(ClientPin(ctap, proto))
    enc = proto.encrypt(shared, padded)
    ctap.client_pin(
        2,
        ClientPin.CMD.SET_PIN,
        key_agreement=key_agreement,
        new_pin_enc=enc,
        pin_uv_param=proto.authenticate(shared, enc),
    )


@pytest.mark.parametrize(
    "padded, code",
    [
        (b"123".ljust(64, b"\0"), CtapError.ERR.PIN_POLICY_VIOLATION),  # 3 code points
        ("äöü".encode().ljust(64, b"\0"), CtapError.ERR.PIN_POLICY_VIOLATION),  # 6 bytes, 3 code points
        (b"\xff\xfe\xfd\xfc".ljust(64, b"\0"), CtapError.ERR.PIN_POLICY_VIOLATION),  # not UTF-8
        (b"1234".ljust(48, b"\0"), CtapError.ERR.INVALID_PARAMETER),  # block shorter than 64 bytes
    ],
)
def test_bad_new_pin_is_refused(softkey_device, padded, code):
    assert _code(_raw_set_pin, softkey_device, padded) == code
    assert Ctap2(softkey_device).get_info().options["clientPin"] is False


def test_longer_pin_block_is_accepted(softkey_device):
    _raw_set_pin(softkey_device, b"5678".ljust(128, b"\0"))
    ClientPin(Ctap2(softkey_device)).get_pin_token("5678", MC_GA, RP_ID)


def test_pin_longer_than_63_bytes_is_refused(softkey_device):
    pin = ClientPin(Ctap2(softkey_device), PinProtocolV2())
    assert _code(pin.set_pin, "7" * 64) == CtapError.ERR.PIN_POLICY_VIOLATION
    pin.set_pin("7" * 63)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_pins_soft_lock_after_three_until_power_cycle(pinned_softkey_device, protocol):
    ctap = Ctap2(pinned_softkey_device)
    pin = ClientPin(ctap, protocol())
    assert _code(pin.get_pin_token, "0000", MC_GA, RP_ID) == CtapError.ERR.PIN_INVALID
    assert _code(pin.get_pin_token, "0000", MC_GA, RP_ID) == CtapError.ERR.PIN_INVALID
    assert _code(pin.get_pin_token, "0000", MC_GA, RP_ID) == CtapError.ERR.PIN_AUTH_BLOCKED
    assert pin.get_pin_retries() == (5, True)
    # even the right PIN is refused now, and it costs nothing
    assert _code(pin.get_pin_token, TEST_PIN, MC_GA, RP_ID) == CtapError.ERR.PIN_AUTH_BLOCKED
    assert pin.get_pin_retries() == (5, True)
    pinned_softkey_device.authenticator.power_cycle()
    assert pin.get_pin_retries() == (5, False)
    pin.get_pin_token(TEST_PIN, MC_GA, RP_ID)
    assert pin.get_pin_retries() == (8, False)


def test_eight_wrong_pins_block_until_reset(pinned_softkey_device, softkey_path):
    ctap = Ctap2(pinned_softkey_device)
    pin = ClientPin(ctap, PinProtocolV2())
    codes = []
    for attempt in range(8):
        if attempt and attempt % 3 == 0:
            pinned_softkey_device.authenticator.power_cycle()
        codes.append(_code(pin.get_pin_token, "9999", MC_GA, RP_ID))
    assert codes[-1] == CtapError.ERR.PIN_BLOCKED
    assert codes.count(CtapError.ERR.PIN_AUTH_BLOCKED) == 2
    assert pin.get_pin_retries()[0] == 0
    pinned_softkey_device.authenticator.power_cycle()
    assert _code(pin.get_pin_token, TEST_PIN, MC_GA, RP_ID) == CtapError.ERR.PIN_BLOCKED
    # a restart does not help either: the counter is on disk
    again = ClientPin(Ctap2(SoftKeyDevice.open(softkey_path)), PinProtocolV2())
    assert _code(again.get_pin_token, TEST_PIN, MC_GA, RP_ID) == CtapError.ERR.PIN_BLOCKED
    pinned_softkey_device.authenticator.power_cycle()
    ctap.reset()
    pin.set_pin(TEST_PIN)
    pin.get_pin_token(TEST_PIN, MC_GA, RP_ID)


def test_retries_survive_a_restart(pinned_softkey_device, softkey_path):
    pin = ClientPin(Ctap2(pinned_softkey_device), PinProtocolV1())
    _code(pin.get_pin_token, "1111", MC_GA, RP_ID)
    assert KeyState.open(softkey_path).pin_retries == 7
    assert ClientPin(Ctap2(SoftKeyDevice.open(softkey_path))).get_pin_retries()[0] == 7


def test_retry_counter_is_written_before_the_pin_is_checked(pinned_softkey_device, softkey_path, monkeypatch):
    """Power cut right after the comparison: the attempt must already be on disk."""
    state = pinned_softkey_device.authenticator.state
    seen: list[int] = []
    real_save = type(state).save

    def spy(self):
        seen.append(KeyState.open(softkey_path).pin_retries if softkey_path.exists() else -1)
        real_save(self)
        seen.append(KeyState.open(softkey_path).pin_retries)

    monkeypatch.setattr(type(state), "save", spy)
    ClientPin(Ctap2(pinned_softkey_device)).get_pin_token(TEST_PIN, MC_GA, RP_ID)
    assert seen[:2] == [8, 7]  # first write: decremented, before the comparison
    assert seen[-1] == 8


def test_key_agreement_survives_success_and_is_renewed_on_mismatch_and_power_up(pinned_softkey_device):
    ctap = Ctap2(pinned_softkey_device)
    pin = ClientPin(ctap, PinProtocolV2())

    def key_agreement():
        return ctap.client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)[1]

    first = key_agreement()
    pin.get_pin_token(TEST_PIN, MC_GA, RP_ID)
    assert key_agreement() == first
    _code(pin.get_pin_token, "8888", MC_GA, RP_ID)
    second = key_agreement()
    assert second != first
    pinned_softkey_device.authenticator.power_cycle()
    assert key_agreement() != second


def test_permissions_zero_and_unsupported(pinned_softkey_device):
    pin = ClientPin(Ctap2(pinned_softkey_device), PinProtocolV2())
    assert _code(pin.get_pin_token, TEST_PIN, ClientPin.PERMISSION(0), RP_ID) == CtapError.ERR.INVALID_PARAMETER
    assert (
        _code(pin.get_pin_token, TEST_PIN, ClientPin.PERMISSION.BIO_ENROLL, None)
        == CtapError.ERR.UNAUTHORIZED_PERMISSION
    )
    assert pin.get_pin_retries()[0] == 8  # refused before the PIN was looked at


def test_pin_hash_is_stored_as_ctap_says(pinned_softkey_device, softkey_path):
    import hashlib

    assert KeyState.open(softkey_path).pin_hash == hashlib.sha256(TEST_PIN.encode()).digest()[:16]
    assert TEST_PIN.encode() not in softkey_path.read_bytes()
