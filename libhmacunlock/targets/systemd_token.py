"""A `systemd-fido2` LUKS2 token on a volume, apart from the key: removing it (keyslot, then token).

Enrolling and opening one needs the key: those are flows, in libhmacunlock/systemd_fido2.py. The token's fields
(its codec) are in targets/luks_tokens.py, the cryptsetup calls in targets/cryptsetup.py.
"""

from __future__ import annotations

from ..errors import TargetError
from .luks import SystemdFido2Token, Volume


def remove(volume: Volume) -> SystemdFido2Token:
    """Remove the (only) systemd-fido2 token's keyslot, then the token; never the last keyslot."""
    tokens = volume.systemd_tokens()
    if not tokens:
        raise TargetError(f"{volume.path}: no systemd-fido2 token on this volume.")
    if len(tokens) > 1:
        raise TargetError(
            f"{volume.path}: {len(tokens)} systemd-fido2 tokens; remove them with "
            "'systemd-cryptenroll --wipe-slot=fido2'."
        )
    token = tokens[0]
    volume.kill_slot(token.keyslot)
    assert token.token_id is not None  # noqa: S101 - narrows: a token read from the volume has its id
    volume.remove_token(token.token_id)
    return token
