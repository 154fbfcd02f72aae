"""systemd-fido2 tokens on a real LUKS2 header: the format, field by field, and its removal.

The software-key end (enroll with --systemd, then open with a hmac output obtained independently through
python-fido2) is in test_luks_softkey.py.
"""

from __future__ import annotations

import base64
import secrets

import pytest

from libhmacunlock.errors import TargetError
from libhmacunlock.targets import luks, systemd_token
from tests.fixtures.luks import FIRST_PASSPHRASE, cryptsetup_accepts, dump


def add_systemd_style_slot(volume: luks.Volume) -> tuple[luks.SystemdFido2Token, bytes]:
    """What systemd-cryptenroll leaves: a keyslot for base64(hmac output) and its token."""
    output = secrets.token_bytes(32)
    slot = volume.add_keyslot(luks.encode_passphrase(output), luks.Existing(passphrase=FIRST_PASSPHRASE))
    token = luks.SystemdFido2Token(keyslot=slot, credential_id=secrets.token_bytes(80), salt=secrets.token_bytes(32))
    token_id = volume.import_token(token.to_json())
    return luks.SystemdFido2Token(**{**token.__dict__, "token_id": token_id}), output


def test_systemd_token_is_written_field_by_field(volume):
    token, output = add_systemd_style_slot(volume)
    raw = dump(volume)["tokens"][str(token.token_id)]
    assert raw == {
        "type": "systemd-fido2",
        "keyslots": [str(token.keyslot)],
        "fido2-credential": base64.b64encode(token.credential_id).decode(),
        "fido2-salt": base64.b64encode(token.salt).decode(),
        "fido2-rp": "io.systemd.cryptsetup",
        "fido2-clientPin-required": True,
        "fido2-up-required": True,
        "fido2-uv-required": False,
    }
    assert volume.systemd_tokens() == [token]
    # The passphrase convention: base64 of the raw 32-byte output, 44 characters, as systemd's base64mem.
    assert cryptsetup_accepts(volume, base64.b64encode(output), keyslot=token.keyslot)


def test_a_token_systemd_wrote_without_the_optional_fields_reads_with_systemds_defaults(volume):
    slot = volume.add_keyslot(b"x", luks.Existing(passphrase=FIRST_PASSPHRASE))
    cid, salt = secrets.token_bytes(64), secrets.token_bytes(32)
    volume.import_token(
        {
            "type": "systemd-fido2",
            "keyslots": [str(slot)],
            "fido2-credential": base64.b64encode(cid).decode(),
            "fido2-salt": base64.b64encode(salt).decode(),
            "fido2-rp": "io.systemd.cryptsetup",
            "fido2-clientPin-required": False,
        }
    )
    (token,) = volume.systemd_tokens()
    assert (token.credential_id, token.salt, token.keyslot) == (cid, salt, slot)
    assert token.client_pin_required is False and token.up_required is True and token.uv_required is False


def test_remove_systemd_token_and_slot_but_never_the_last(volume):
    token, output = add_systemd_style_slot(volume)
    systemd_token.remove(volume)
    meta = dump(volume)
    assert list(meta["keyslots"]) == ["0"] and meta["tokens"] == {}
    token, output = add_systemd_style_slot(volume)
    volume.kill_slot(0)
    with pytest.raises(TargetError, match="last keyslot"):
        systemd_token.remove(volume)
    assert cryptsetup_accepts(volume, base64.b64encode(output))
    with pytest.raises(TargetError, match="last keyslot"):
        volume.kill_slot(token.keyslot)
