"""The software key's getAssertion + hmac-secret per second, in-process and over UDP, with python-fido2 as client."""

from __future__ import annotations

import os
from typing import Any

from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2

from libhmacunlock.fido2_compat import shared_secret

from .micro import Rate, measure

RP_ID = "bench.hmacunlock"


class _Assertions:
    """A credential with hmac-secret on the key; each call is one getAssertion with hmac-secret.

    With `with_pin`, each call is a whole PIN sign-in as the key sees it: getKeyAgreement, getPinUvAuthToken and
    getAssertion with UV. A token cannot be reused: CTAP 2.1 clears its permissions once a touch was used under it.
    Without, the assertion alone (up=false, no UV), which is the key's assertion + hmac-secret cost.
    """

    def __init__(self, device: Any, pin: str, with_pin: bool) -> None:
        self.ctap = Ctap2(device)
        self.protocol = PinProtocolV2()
        self.client_pin = ClientPin(self.ctap, self.protocol)
        self.pin, self.with_pin = pin, with_pin
        token = self.client_pin.get_pin_token(pin, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        cdh = os.urandom(32)
        made = self.ctap.make_credential(
            cdh,
            {"id": RP_ID, "name": RP_ID},
            {"id": b"bench-user", "name": "bench"},
            [{"type": "public-key", "alg": -7}],
            extensions={"hmac-secret": True},
            pin_uv_param=self.protocol.authenticate(token, cdh),
            pin_uv_protocol=self.protocol.VERSION,
        )
        self.credential = made.auth_data.credential_data.credential_id
        self.key_agreement, self.secret = shared_secret(self.client_pin)

    def __call__(self) -> None:
        cdh, salt = os.urandom(32), os.urandom(32)
        uv: dict[str, Any] = {"options": {"up": False}}
        if self.with_pin:
            self.key_agreement, self.secret = shared_secret(self.client_pin)
            token = self.client_pin.get_pin_token(self.pin, ClientPin.PERMISSION.GET_ASSERTION, RP_ID)
            uv = {"pin_uv_param": self.protocol.authenticate(token, cdh), "pin_uv_protocol": self.protocol.VERSION}
        salt_enc = self.protocol.encrypt(self.secret, salt)
        hmac_in = {
            1: self.key_agreement,
            2: salt_enc,
            3: self.protocol.authenticate(self.secret, salt_enc),
            4: self.protocol.VERSION,
        }
        response = self.ctap.get_assertion(
            RP_ID, cdh, [{"type": "public-key", "id": self.credential}], extensions={"hmac-secret": hmac_in}, **uv
        )
        if not response.auth_data.extensions or "hmac-secret" not in response.auth_data.extensions:
            raise RuntimeError("the key answered without an hmac-secret output")


def assertion_rate(name: str, device: Any, pin: str, *, with_pin: bool, min_seconds: float = 0.5) -> Rate:
    return measure(name, _Assertions(device, pin, with_pin), min_seconds)
