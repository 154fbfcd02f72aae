"""python-fido2's internals that libhmacunlock/fido2_compat.py relies on: each must still exist AND behave as used.

If a python-fido2 upgrade changes one, these fail by name — rather than unlocks silently costing a fourth CTAP
message or encrypting hmac-secret's salts under the wrong secret.
"""

from __future__ import annotations

import os

import pytest
from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin

from libhmacunlock import fido2_compat
from libhmacunlock.device import PERMISSION, Key
from libhmacunlock.fido2_compat import RememberingClientPin, set_info, shared_secret
from tests.fixtures.library import CLIENT_PIN, delta, messages
from tests.fixtures.softkey import RP_ID, TEST_PIN


class _SpyingProtocol:
    """Wraps ClientPin's PIN protocol to record the shared secret each encrypt() used."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner
        self.secrets: list[bytes] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._inner, name)

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        self.secrets.append(key)
        return self._inner.encrypt(key, plaintext)


def test_the_import_checks_pass_on_this_python_fido2():
    fido2_compat._check()  # raises ImportError naming the internal that changed


def test_the_remembered_secret_is_the_one_the_pin_token_was_made_with(pinned_softkey_device):
    client_pin = RememberingClientPin(Ctap2(pinned_softkey_device))
    spy = _SpyingProtocol(client_pin.protocol)
    client_pin.protocol = spy  # type: ignore[assignment]
    before = messages(pinned_softkey_device)
    token = client_pin.get_pin_token(TEST_PIN, PERMISSION.GET_ASSERTION, RP_ID)
    key_agreement, secret = client_pin.remembered()
    assert spy.secrets == [secret]  # the PIN hash was encrypted under exactly the remembered secret
    assert isinstance(key_agreement, dict) and key_agreement[1] == 2  # a COSE EC2 key: the platform's public key
    assert len(token) >= 16
    # one getKeyAgreement + one getPinUvAuthToken: remembering costs no extra message
    assert delta(before, messages(pinned_softkey_device)) == {CLIENT_PIN: 2}


def test_the_remembered_secret_opens_hmac_secret(pinned_softkey_device):
    """End to end: the key decrypts salts encrypted under the remembered secret (else no or a wrong output)."""
    key = Key.from_device(pinned_softkey_device)
    token = key.pin_token(TEST_PIN, PERMISSION.MAKE_CREDENTIAL | PERMISSION.GET_ASSERTION, RP_ID)
    cred = key.make_credential(token, RP_ID, os.urandom(32), "alice")
    salt = os.urandom(32)
    with_token = key.hmac_assertion(
        key.pin_token(TEST_PIN, PERMISSION.GET_ASSERTION, RP_ID), RP_ID, [cred.credential_id], salt
    )
    again = key.hmac_assertion(
        key.pin_token(TEST_PIN, PERMISSION.GET_ASSERTION, RP_ID), RP_ID, [cred.credential_id], salt
    )
    assert with_token.output1 is not None and len(with_token.output1) == 32
    assert with_token.output1 == again.output1  # the same salt gives the same output: it was decrypted right


def test_shared_secret_is_a_fresh_agreement(pinned_softkey_device):
    client_pin = ClientPin(Ctap2(pinned_softkey_device))
    before = messages(pinned_softkey_device)
    (ka1, s1), (ka2, s2) = shared_secret(client_pin), shared_secret(client_pin)
    assert delta(before, messages(pinned_softkey_device)) == {CLIENT_PIN: 2}  # one getKeyAgreement each
    assert len(s1) == len(s2) >= 32 and s1 != s2 and ka1 != ka2  # a new ephemeral platform key each time


def test_remembered_is_loud_when_nothing_was_remembered(pinned_softkey_device):
    with pytest.raises(RuntimeError, match="fido2_compat"):
        RememberingClientPin(Ctap2(pinned_softkey_device)).remembered()


def test_set_info_is_what_ctap2_info_returns(pinned_softkey_device):
    ctap2 = Ctap2(pinned_softkey_device)
    assert ctap2.info.options.get("clientPin") is True
    fresh = ctap2.get_info()
    before = messages(pinned_softkey_device)
    set_info(ctap2, fresh)
    assert ctap2.info is fresh and delta(before, messages(pinned_softkey_device)) == {}  # no getInfo of its own


def test_a_pin_change_refreshes_the_keys_info(softkey_device):
    """Key.set_pin goes through set_info: the PIN state it reports afterwards is the key's."""
    key = Key.from_device(softkey_device)
    assert key.features().pin_set is False
    key.set_pin(TEST_PIN)
    assert key.features().pin_set is True


def test_ctap2_with_info_sends_no_getinfo_and_behaves_as_ctap2(pinned_softkey_device):
    from libhmacunlock.fido2_compat import ctap2_with_info, read_info

    plain = Ctap2(pinned_softkey_device)
    before = messages(pinned_softkey_device)
    built = ctap2_with_info(pinned_softkey_device, plain.info)
    assert delta(before, messages(pinned_softkey_device)) == {}  # no getInfo
    assert built.info == plain.info and built._max_msg_size == plain._max_msg_size
    info, raw = read_info(built)  # getInfo, with the raw answer for a cache
    assert info == plain.info and Ctap2(pinned_softkey_device).info == info
    assert delta(before, messages(pinned_softkey_device)) == {0x04: 2}
    asked = ctap2_with_info(pinned_softkey_device, None)
    assert asked.info == plain.info and asked.raw_info == raw  # type: ignore[attr-defined]


def test_type_hints_are_cached_per_class_and_parse_the_same(pinned_softkey_device):
    import typing

    import fido2.utils
    from fido2.ctap2 import Info

    assert fido2.utils.get_type_hints.__wrapped__ is typing.get_type_hints  # type: ignore[attr-defined]
    answer = Ctap2(pinned_softkey_device).send_cbor(Ctap2.CMD.GET_INFO)
    cached = Info.from_dict(answer)
    fido2.utils.get_type_hints, saved = typing.get_type_hints, fido2.utils.get_type_hints
    try:
        assert Info.from_dict(answer) == cached  # the same parse without the cache
    finally:
        fido2.utils.get_type_hints = saved
    fido2_compat.cache_type_hints()  # idempotent
    assert fido2.utils.get_type_hints is saved
