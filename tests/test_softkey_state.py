"""The state file: 0600, atomic writes, written only when persistent state changes, corruption refused."""

from __future__ import annotations

import json
import os
import stat

import pytest
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock.softkey.authenticator import Authenticator
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.errors import KeyStateCorrupt
from libhmacunlock.softkey.state import KeyState
from tests.fixtures.softkey import ES256_PARAMS, RP_ID, TEST_PIN, make_pinned_softkey


def test_new_key_is_created_0600(softkey_path):
    state = KeyState.open(softkey_path)
    assert stat.S_IMODE(softkey_path.stat().st_mode) == 0o600
    state.sign_count += 1
    state.save()
    assert stat.S_IMODE(softkey_path.stat().st_mode) == 0o600
    assert os.listdir(softkey_path.parent) == [softkey_path.name]  # no temp file left behind


def test_two_keys_differ(tmp_path):
    a, b = KeyState.open(tmp_path / "a"), KeyState.open(tmp_path / "b")
    assert a.aaguid != b.aaguid and a.attestation.batch_key != b.attestation.batch_key


def _valid(softkey_path) -> dict:
    KeyState.open(softkey_path)
    return json.loads(softkey_path.read_text())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw, obj: b"",
        lambda raw, obj: b"\x00\xff garbage",
        lambda raw, obj: raw[: len(raw) // 2],
        lambda raw, obj: json.dumps({**obj, "format": 99}).encode(),
        lambda raw, obj: json.dumps({**obj, "pin_retries": "8"}).encode(),
        lambda raw, obj: json.dumps({**obj, "pin_retries": 9}).encode(),
        lambda raw, obj: json.dumps({**obj, "aaguid": "!!notbase64"}).encode(),
        lambda raw, obj: json.dumps({k: v for k, v in obj.items() if k != "credentials"}).encode(),
        lambda raw, obj: json.dumps({**obj, "credentials": [{"id": "AAAA"}]}).encode(),
        lambda raw, obj: json.dumps([obj]).encode(),
    ],
)
def test_corrupt_state_is_refused_and_left_alone(softkey_path, mangle):
    obj = _valid(softkey_path)
    bad = mangle(softkey_path.read_bytes(), obj)
    softkey_path.write_bytes(bad)
    with pytest.raises(KeyStateCorrupt) as exc:
        KeyState.open(softkey_path)
    assert str(softkey_path) in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    with pytest.raises(KeyStateCorrupt):
        SoftKeyDevice.open(softkey_path)
    assert softkey_path.read_bytes() == bad


def test_failed_write_keeps_the_old_file(softkey_path, monkeypatch):
    state = KeyState.open(softkey_path)
    before = softkey_path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    state.sign_count = 1234
    with pytest.raises(OSError):
        state.save()
    assert softkey_path.read_bytes() == before
    assert os.listdir(softkey_path.parent) == [softkey_path.name]


def test_writes_only_when_persistent_state_changes(pinned_softkey_device, monkeypatch):
    auth: Authenticator = pinned_softkey_device.authenticator
    saves = []
    real = KeyState.save
    monkeypatch.setattr(KeyState, "save", lambda self: (saves.append(1), real(self)))
    ctap = Ctap2(pinned_softkey_device)
    pin = ClientPin(ctap)
    pin.get_pin_retries()
    ctap.client_pin(2, ClientPin.CMD.GET_KEY_AGREEMENT)
    ctap.get_info()
    ctap.selection()
    assert saves == []
    ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS)
    assert len(saves) == 1  # credential (non-resident: the counter) in one write
    before = len(saves)
    token = pin.get_pin_token(TEST_PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    assert len(saves) == before + 2  # retry counter down before the check, back up after
    assert token and auth.state.pin_retries == 8


def test_failed_write_during_a_request_is_answered_and_forgotten(pinned_softkey_device, monkeypatch):
    """Disk full while the retry counter is written: the key answers CTAP2_ERR_OTHER, has not checked the PIN,
    and memory falls back to the file; once the disk is back, everything works."""
    from fido2.ctap import CtapError

    auth: Authenticator = pinned_softkey_device.authenticator
    real_replace = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")

    ctap = Ctap2(pinned_softkey_device)
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CtapError) as exc:
        ClientPin(ctap).get_pin_token(TEST_PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
    assert exc.value.code == CtapError.ERR.OTHER
    with pytest.raises(CtapError):
        ctap.make_credential(os.urandom(32), {"id": RP_ID}, {"id": b"u"}, ES256_PARAMS)
    assert auth.state.pin_retries == 8 and auth.state.credentials == [] and auth.state.sign_count == 0
    monkeypatch.setattr(os, "replace", real_replace)
    ClientPin(ctap).get_pin_token(TEST_PIN, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)


def test_repr_of_the_state_shows_no_key_material(softkey_path):
    # a state printed by a failing assertion or a log line must not hand out the key's secrets
    from fido2.ctap2.pin import PinProtocolV2

    from tests.fixtures.softkey import make_resident

    device = make_pinned_softkey(softkey_path)
    make_resident(Ctap2(device), PinProtocolV2(), b"u" * 16, "u")
    state = KeyState.open(softkey_path)
    assert state.credentials and state.pin_hash  # something secret to leak
    text = repr(state)
    secrets = [state.wrap_secret, state.pin_hash, state.attestation.batch_key]
    for cred in state.credentials:
        secrets += [cred.private_key, cred.cred_random_uv, cred.cred_random_no_uv]
    for secret in filter(None, secrets):
        assert secret.hex() not in text and repr(secret) not in text
