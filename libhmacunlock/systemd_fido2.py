"""systemd-cryptenroll's FIDO2 enrollment, made and opened with the key: a `systemd-fido2` LUKS2 token.

What systemd does (src/cryptenroll/cryptenroll-fido2.c, src/shared/libfido2-util.c): a NON-resident credential for
RP `io.systemd.cryptsetup`, user id and name the volume's UUID; a random 32-byte salt sent as hmac-secret's salt1
only; with the PIN when `fido2-clientPin-required` (its default), a touch when `fido2-up-required` (its default);
the keyslot's passphrase is base64 of the raw 32-byte hmac-secret output. A key computes that output with a
different secret with and without the PIN (CTAP 2.1 CredRandomWithUV), so opening follows the token's flags exactly.

These are flows beside enroll.py and unlock.py: they need the key itself (not a user's unlock key), ask the PIN
and the touches through the Interaction, and write the token the way the target keeps it (targets/luks_tokens.py:
the token's codec; targets/cryptsetup.py: the cryptsetup calls; luks.add_named_keyslot: a keyslot a token names
from the start; targets/systemd_token.py removes it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .device import PERMISSION, Verification
from .errors import CredentialNotOnKey, KeyLacksFeature, TargetError
from .interaction import Interaction, Purpose, SystemdTokenWithoutPin
from .targets.luks import (
    SYSTEMD_RP_ID,
    SYSTEMD_TOKEN_TYPE,
    Existing,
    SystemdFido2Token,
    Volume,
    add_named_keyslot,
    encode_passphrase,
)

if TYPE_CHECKING:
    from .device import HmacAssertion, Key

SALT_SIZE = 32


def enroll(
    volume: Volume, device_spec: str, interaction: Interaction, existing: Callable[[], Existing]
) -> SystemdFido2Token:
    """Make the credential, compute the secret, add the keyslot and write the token, as systemd-cryptenroll."""
    from .discovery import opened_key

    uuid = volume.uuid()
    salt = os.urandom(SALT_SIZE)
    with opened_key(device_spec) as key:
        if not key.features().hmac_secret:
            raise KeyLacksFeature("hmac-secret")
        # the PIN, or the finger of a bio key (its secret is the same: CTAP 2.1's CredRandomWithUV either way)
        verification = Verification(
            key, lambda: interaction.ask_pin(Purpose.SYSTEMD_ENROLL), lambda: interaction.touch(Purpose.MAKE_CREDENTIAL)
        )
        token = verification.token(PERMISSION.MAKE_CREDENTIAL, SYSTEMD_RP_ID)
        if not token.by_finger:
            interaction.touch(Purpose.MAKE_CREDENTIAL)
        # systemd: user id and name = the volume's UUID, not resident, no credProtect.
        credential = key.make_credential(token, SYSTEMD_RP_ID, uuid.encode(), uuid, resident=False, cred_protect=None)
        credential_id = credential.credential_id
        token = verification.token(
            PERMISSION.GET_ASSERTION, SYSTEMD_RP_ID, lambda: interaction.touch(Purpose.VOLUME_SECRET)
        )
        if not token.by_finger:
            interaction.touch(Purpose.VOLUME_SECRET)
        secret = _output(key.hmac_assertion(token, SYSTEMD_RP_ID, [credential_id], salt, up=True))
    authority = existing()  # asked before the volume's lock is taken
    with volume.locked():  # the token names the keyslot from the start: a kill leaves no orphan (issue 17, F3)
        slot, token_id = add_named_keyslot(
            volume,
            encode_passphrase(secret),
            authority,
            SYSTEMD_TOKEN_TYPE,
            lambda n: SystemdFido2Token(keyslot=n, credential_id=credential_id, salt=salt).to_json(),
        )
    return SystemdFido2Token(keyslot=slot, credential_id=credential_id, salt=salt, token_id=token_id)


def passphrase(
    volume: Volume, device_spec: str, interaction: Interaction, tokens: Sequence[SystemdFido2Token] | None = None
) -> tuple[int, bytes]:
    """(keyslot, passphrase) from the first systemd-fido2 token whose credential is on the key.

    `tokens`: the volume's systemd-fido2 tokens when the caller has already read them (saves a luksDump).
    """
    from .discovery import opened_key

    tokens = volume.systemd_tokens() if tokens is None else tokens
    if not tokens:
        raise TargetError(f"{volume.path}: no systemd-fido2 token on this volume.")
    with opened_key(device_spec, credentials=[(t.rp_id, t.credential_id) for t in tokens]) as key:
        if any(t.uv_required for t in tokens) and not key.fingerprint_ready():
            raise TargetError(
                f"{volume.path}: a systemd-fido2 token requires built-in user verification (fido2-uv-required), "
                "and this key has no fingerprint enrolled."
            )
        verification = (
            Verification(
                key,
                lambda: interaction.ask_pin(Purpose.SYSTEMD_UNLOCK),
                lambda: interaction.touch(Purpose.SYSTEMD_UNLOCK),
            )
            if any(_verified(t) for t in tokens)
            else None
        )
        for t in tokens:
            try:
                # built-in UV or the PIN: either sets UV, and the key's secret with UV is the one systemd computed
                secret = _secret(key, t, verification if _verified(t) else None, interaction)
            except CredentialNotOnKey:
                continue  # a token of another key
            passphrase = encode_passphrase(secret)
            if (
                verification is not None
                and t.client_pin_required
                and not t.uv_required
                and not volume.test_passphrase(passphrase, t.keyslot)
            ):
                passphrase = _enrolled_without_pin(volume, key, t, interaction) or passphrase
            return t.keyslot, passphrase
    raise CredentialNotOnKey()


def _verified(t: SystemdFido2Token) -> bool:
    """The token's secret is the key's secret with user verification: by the PIN, or a bio key's finger."""
    return t.client_pin_required or t.uv_required


def _secret(key: Key, t: SystemdFido2Token, verification: Verification | None, interaction: Interaction) -> bytes:
    token = verification.token(PERMISSION.GET_ASSERTION, t.rp_id) if verification is not None else None
    if t.up_required and not (token is not None and token.by_finger):
        interaction.touch(Purpose.SYSTEMD_UNLOCK)
    return _output(key.hmac_assertion(token, t.rp_id, [t.credential_id], t.salt, up=t.up_required))


def _enrolled_without_pin(volume: Volume, key: Key, t: SystemdFido2Token, interaction: Interaction) -> bytes | None:
    """systemd issue #31443: systemd-cryptenroll 252-255, on a key with makeCredUvNotRqd, never asks the PIN, computes
    the secret without it, and still writes `fido2-clientPin-required: true`. Reached only after the PIN was
    verified and its secret did not open the keyslot, and only for a token that asks the PIN (never built-in UV):
    the no-PIN secret, said so, if it opens the keyslot; None otherwise. A volume enrolled with the PIN opened with
    the first secret and never comes here; nothing about the volume is changed."""
    interaction.info(SystemdTokenWithoutPin(volume.path, t.token_id))
    if t.up_required:
        interaction.touch(Purpose.SYSTEMD_UNLOCK)
    passphrase = encode_passphrase(
        _output(key.hmac_assertion(None, t.rp_id, [t.credential_id], t.salt, up=t.up_required))
    )
    return passphrase if volume.test_passphrase(passphrase, t.keyslot) else None


def _output(assertion: HmacAssertion) -> bytes:
    if not assertion.output1 or len(assertion.output1) != SALT_SIZE:
        raise KeyLacksFeature("the hmac-secret extension")  # the key answered without its output
    return assertion.output1
