"""Fuzz target: the software key's CTAP2 dispatcher (softkey.authenticator.Authenticator.process).

The key has a PIN and a discoverable hmac-secret credential, so the fuzzer starts from a realistic state.
Invariant: process() never raises, always answers at least a status byte, and a success answer's body is one
well-formed CBOR value; the state file always reloads.
"""

from __future__ import annotations

import os
import tempfile

from tests.fuzz.engine import instrumented, main

with instrumented():
    from fido2 import cbor
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    from libhmacunlock.softkey.authenticator import Authenticator
    from libhmacunlock.softkey.device import SoftKeyDevice
    from libhmacunlock.softkey.presence import PresencePolicy
    from libhmacunlock.softkey.state import KeyState

PIN = "246810"
_PATH = os.path.join(tempfile.mkdtemp(prefix="hmu-fuzz-ctap2-"), "softkey.json")
_AUTH = Authenticator(KeyState.open(_PATH), PresencePolicy.approve())
_CALLS = 0


def _provision() -> None:
    ctap = Ctap2(SoftKeyDevice(_AUTH))
    ClientPin(ctap).set_pin(PIN)
    token = ClientPin(ctap).get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL)
    cdh = os.urandom(32)
    ctap.make_credential(
        cdh,
        {"id": "example.com"},
        {"id": b"u1", "name": "u"},
        [{"type": "public-key", "alg": -7}],
        extensions={"hmac-secret": True},
        options={"rk": True},
        pin_uv_param=ClientPin(ctap).protocol.authenticate(token, cdh),
        pin_uv_protocol=ClientPin(ctap).protocol.VERSION,
    )


_provision()


def test_one_input(data: bytes) -> None:
    global _CALLS
    _CALLS += 1
    if _CALLS % 64 == 0:
        _AUTH.power_cycle()  # lets the fuzzer out of the 3-wrong-PINs-in-a-row lock now and then
    response = _AUTH.process(data)
    assert isinstance(response, bytes) and len(response) >= 1
    if response[0] == 0 and len(response) > 1:
        _value, rest = cbor.decode_from(response[1:])
        assert rest == b"", "trailing bytes after the CBOR answer"
    if _CALLS % 256 == 0:
        KeyState.open(_PATH)  # what the key saved always loads again


if __name__ == "__main__":
    main(test_one_input)
