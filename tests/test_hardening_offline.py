"""What a stolen disk image, a stolen key, or a sniffer on the USB wire gets (docs/threat-model.md).

- The record holds no unlock key, PIN or recovery secret in any encoding; it opens only with the enrolled key.
- On the wire (CTAP messages both ways), neither the PIN, the salts nor the hmac-secret outputs appear in clear.
- A recovery passphrase is stretched with Argon2id at 64 MiB or more, so a stolen record is costly to guess at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from libhmacunlock.discovery import open_key
from libhmacunlock.errors import CredentialNotOnKey, RecordTampered
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.keys import Argon2Params
from libhmacunlock.records import b64d, open_slot
from libhmacunlock.recovery import add_recovery
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.unlock import unlock
from tests.fixtures.library import enroll_on_new_softkey
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey

USER = "alice"


class _Sniffer(SoftKeyDevice):
    """Sees every CTAP message both ways, as a USB analyser between the computer and the key would."""

    def __init__(self, inner: SoftKeyDevice) -> None:
        super().__init__(inner.authenticator)
        self.wire = bytearray()

    def call(self, cmd, data=b"", event=None, on_keepalive=None):  # type: ignore[no-untyped-def]
        answer = super().call(cmd, data, event, on_keepalive)
        self.wire += bytes(data) + answer
        return answer


def _encodings(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


@pytest.fixture
def enrolled(tmp_path):
    e = enroll_on_new_softkey(tmp_path, USER)
    return e.store, e.key, e.unlock_key


def test_a_record_holds_no_usable_secret(enrolled):
    store, key, uk = enrolled
    recovery = add_recovery(store, key, ScriptedInteraction([TEST_PIN]), USER).recovery_key
    data = store.record_path(USER).read_bytes()
    for secret in [uk, TEST_PIN.encode(), recovery.encode(), recovery.replace("-", "").encode()]:
        assert not [form for form in _encodings(secret) if form in data]


def test_a_stolen_record_does_not_open_with_another_key(enrolled, tmp_path):
    store, _, _ = enrolled
    attackers_key = make_pinned_softkey(tmp_path / "attacker.json")  # even knowing the PIN (their own key's)
    with pytest.raises(CredentialNotOnKey):
        unlock(store, attackers_key, ScriptedInteraction([TEST_PIN]), user=USER)


def test_the_wire_carries_no_pin_salt_or_hmac_output_in_clear(enrolled):
    store, key, uk = enrolled
    before = store.read(USER).slots[0]
    sniffer = _Sniffer(key)
    assert unlock(store, sniffer, ScriptedInteraction([TEST_PIN]), user=USER).unlock_key == uk
    after = store.read(USER).slots[0]
    cred = key.authenticator.state.find_credential(before.credential_id)
    outputs = [hmac.new(cred.cred_random_uv, salt, hashlib.sha256).digest() for salt in (before.salt, after.salt)]
    assert open_slot(USER, after, outputs[1], "record") == uk  # these are the real outputs
    secrets = [
        TEST_PIN.encode(),
        hashlib.sha256(TEST_PIN.encode()).digest()[:16],
        uk,
        before.salt,
        after.salt,
        *outputs,
    ]
    wire = bytes(sniffer.wire)
    assert len(wire) > 500  # the sniffer saw the exchange
    assert not [s for s in secrets if s in wire]


def test_a_recovery_passphrase_is_stretched_with_argon2id(enrolled):
    store, key, _ = enrolled
    add_recovery(store, key, ScriptedInteraction(["correct horse battery", TEST_PIN]), USER, passphrase=True)
    slot = json.loads(store.record_path(USER).read_text())["recovery"][0]
    params = Argon2Params.from_json(slot["kdf"])
    assert slot["kind"] == "passphrase"
    assert params.memory_cost >= 65536 and params.time_cost >= 3 and len(base64.b64decode(params.salt)) >= 16
    assert len(b64d(slot["wrapped"])) == 12 + 32 + 16  # nonce, UK, tag: AES-256-GCM


def test_a_stolen_key_and_disk_without_the_pin_get_an_output_that_opens_nothing(enrolled):
    # getAssertion without a PIN token still answers hmac-secret, but from the credential's no-UV secret
    # (CTAP 2.1 §12.5): the slot, wrapped under the with-UV output, does not open with it.
    store, key, _ = enrolled
    slot = store.read(USER).slots[0]
    with open_key(key) as opened:
        answer = opened.hmac_assertion(None, slot.rp_id, [slot.credential_id], slot.salt)
    assert answer.output1 is not None and not answer.auth_data.is_user_verified()
    with pytest.raises(RecordTampered):
        open_slot(USER, slot, answer.output1, "record")
