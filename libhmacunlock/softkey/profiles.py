"""Profiles: the software key answering as a family of real authenticators does.

A profile is data: what getInfo says (versions, extensions, options, PIN/UV protocols, limits, firmware) and a few
behaviour switches that real keys differ in (legacy PIN token or CTAP 2.1 tokens with permissions, credential
management or its preview, built-in user verification, makeCredUvNotRqd, one or two hmac-secret CredRandoms,
latency). The authenticator is the same one under every profile; nothing here is a second implementation.

Each profile names the published sources it follows (docs/keys.md has the table, and what differs from the real
key: the software key never claims an extension or command it does not implement, so a real key's largeBlobs,
credBlob, bioEnroll, authnrCfg, EdDSA and U2F are left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# the extension names (extensions.py has the same: that module imports the PIN service, which imports this one)
HMAC_SECRET = "hmac-secret"  # noqa: S105 - the extension's name
CRED_PROTECT = "credProtect"


class CredMgmt(Enum):
    """Which credential-management command the key answers."""

    NONE = "none"  # CTAP 2.0 without it (early Solo firmware)
    PREVIEW = "preview"  # authenticatorCredentialManagement (0x41) of FIDO_2_1_PRE (YubiKey 5.2-5.4)
    FULL = "full"  # CTAP 2.1 credMgmt (0x0A), and the preview command too, as real 2.1 keys keep it


# Seconds per CTAP command byte for the `slow` profile (the rest take SLOW_DEFAULT): of the order of what real
# keys take (tens of ms; ECDH and signatures cost most). Approximate, not a measurement of one key.
SLOW_LATENCY: Mapping[int, float] = {
    0x04: 0.015,  # getInfo
    0x06: 0.060,  # clientPIN (ECDH, PIN hash check)
    0x01: 0.120,  # makeCredential (key generation, attestation signature)
    0x02: 0.070,  # getAssertion (ECDH for hmac-secret, signature)
    0x08: 0.040,  # getNextAssertion
}
SLOW_DEFAULT = 0.030
SLOW_TOUCH = 0.5  # seconds from "touch needed" to the touch, with keepalives meanwhile


@dataclass(frozen=True)
class Profile:
    name: str
    model: str  # the real key family, in words
    versions: tuple[str, ...]
    extensions: tuple[str, ...]
    pin_protocols: tuple[int, ...]
    cred_mgmt: CredMgmt
    # CTAP 2.1 pinUvAuthToken: getPinUvAuthTokenUsingPinWithPermissions, tokens with permissions and an RP, used
    # up by a touch. False: only the legacy getPinToken, whose token permits everything until power-off (CTAP 2.0).
    pin_uv_auth_token: bool
    # CTAP 2.1 makeCredUvNotRqd: a non-discoverable credential may be made without the PIN once a PIN is set.
    make_cred_uv_not_rqd: bool
    resident_keys: bool = True
    builtin_uv: bool = False  # a fingerprint reader: getPinUvAuthTokenUsingUvWithPermissions, uv=true; PIN fallback
    uv_retries: int = 3  # built-in UV attempts before the PIN is required (reset by a PIN or a match)
    # CTAP 2.1 hmac-secret: CredRandomWithUV and CredRandomWithoutUV. False: one secret whatever the UV (CTAP 2.0
    # firmware such as early Solo).
    hmac_secret_uv_split: bool = True
    max_msg_size: int = 1200
    max_creds_in_list: int | None = 8
    max_cred_id_length: int | None = 128
    firmware_version: int | None = None
    min_pin_length: int | None = 4
    report_remaining_credentials: bool = True
    extra_options: Mapping[str, bool] = field(default_factory=dict)
    uv_modality: int | None = None  # getInfo 0x12 (2 = fingerprint)
    latency: Mapping[int, float] = field(default_factory=dict)  # command byte -> seconds
    default_latency: float = 0.0
    touch_delay: float = 0.0
    sources: tuple[str, ...] = ()

    @property
    def ctap21(self) -> bool:
        return "FIDO_2_1" in self.versions

    @property
    def hmac_secret(self) -> bool:
        return HMAC_SECRET in self.extensions

    def options(self, pin_set: bool) -> dict[str, Any]:
        """getInfo's options map for the current PIN state."""
        opts: dict[str, Any] = {"rk": self.resident_keys, "up": True}
        if self.builtin_uv:
            opts["uv"] = pin_set  # a fingerprint is enrolled (needs a PIN first); the presence policy is the finger
        opts.update(self.extra_options)
        opts["clientPin"] = pin_set
        if self.cred_mgmt is CredMgmt.FULL:
            opts["credMgmt"] = True
        if self.cred_mgmt is not CredMgmt.NONE and not self.ctap21:
            opts["credentialMgmtPreview"] = True
        if self.pin_uv_auth_token:
            opts["pinUvAuthToken"] = True
        if self.make_cred_uv_not_rqd:
            opts["makeCredUvNotRqd"] = True
        return opts

    def command_latency(self, cmd: int) -> float:
        return self.latency.get(cmd, self.default_latency)


_EXTENSIONS = (CRED_PROTECT, HMAC_SECRET)
_CTAP21_VERSIONS = ("FIDO_2_0", "FIDO_2_1")

CTAP21 = Profile(
    name="ctap21",
    model="the software key as built: CTAP 2.1, PIN/UV protocols 2 and 1, makeCredUvNotRqd",
    versions=_CTAP21_VERSIONS,
    extensions=_EXTENSIONS,
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.FULL,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=True,
    firmware_version=1,
    sources=("CTAP 2.1 Proposed Standard (2021-06-15), §6.4 authenticatorGetInfo",),
)

YUBIKEY_52 = Profile(
    name="yubikey-5.2",
    model="YubiKey 5 Series, firmware 5.2-5.4 (CTAP 2.0 + FIDO_2_1_PRE)",
    versions=("FIDO_2_0", "FIDO_2_1_PRE"),
    extensions=_EXTENSIONS,
    pin_protocols=(1,),
    cred_mgmt=CredMgmt.PREVIEW,
    pin_uv_auth_token=False,
    make_cred_uv_not_rqd=False,
    max_creds_in_list=8,
    max_cred_id_length=128,
    min_pin_length=None,
    report_remaining_credentials=False,
    extra_options={"plat": False},
    sources=(
        "Yubico, 'YubiKey 5.2.3 enhancements to FIDO 2 support' (credProtect, credentialMgmtPreview)",
        "Yubico YubiKey 5 Series technical manual, FIDO2 getInfo of firmware 5.2",
        "python-fido2 ClientPin: legacy getPinToken when 'pinUvAuthToken' is absent",
    ),
)

YUBIKEY_57 = Profile(
    name="yubikey-5.7",
    model="YubiKey 5 Series, firmware 5.7 (CTAP 2.1)",
    versions=("FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"),
    extensions=_EXTENSIONS,
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.FULL,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=True,
    max_msg_size=1280,
    max_creds_in_list=8,
    max_cred_id_length=128,
    firmware_version=0x050700,
    extra_options={"plat": False, "alwaysUv": False, "credentialMgmtPreview": True},
    sources=(
        "Yubico YubiKey 5 Series technical manual, 'YubiKey 5.7 firmware specifics' (CTAP 2.1, PIN/UV protocol 2)",
        "systemd issue #31443 (makeCredUvNotRqd keys: systemd-cryptenroll never asks the PIN)",
    ),
)

SOLO1 = Profile(
    name="solo1",
    model="SoloKeys Solo 1, firmware 2.x-3.x (CTAP 2.0, before credProtect and credential management)",
    versions=("FIDO_2_0",),
    extensions=(HMAC_SECRET,),
    pin_protocols=(1,),
    cred_mgmt=CredMgmt.NONE,
    pin_uv_auth_token=False,
    make_cred_uv_not_rqd=False,
    hmac_secret_uv_split=False,
    max_creds_in_list=None,
    max_cred_id_length=None,
    min_pin_length=None,
    report_remaining_credentials=False,
    extra_options={"plat": False},
    sources=(
        "solokeys/solo1 fido2/ctap.c, ctap_get_info() and ctap_make_extensions() of firmware 2.x/3.x "
        "(versions U2F_V2 + FIDO_2_0, extensions hmac-secret, options rk/up/plat/clientPin, pinProtocols [1]; "
        "one CredRandom per credential)",
        "solokeys/solo1 release 2.1.0 (adds hmac-secret)",
    ),
)

BIO = Profile(
    name="bio",
    model="YubiKey Bio Series, FIDO edition (CTAP 2.1, fingerprint; the PIN as fallback)",
    versions=("FIDO_2_0", "FIDO_2_1_PRE", "FIDO_2_1"),
    extensions=_EXTENSIONS,
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.FULL,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=False,
    builtin_uv=True,
    uv_retries=3,
    firmware_version=0x050600,
    extra_options={"plat": False, "alwaysUv": False, "credentialMgmtPreview": True},
    uv_modality=0x02,
    sources=(
        "CTAP 2.1 §6.5.5.7.3 getPinUvAuthTokenUsingUvWithPermissions, §6.4 'uv' and uvModality",
        "python-fido2 issue #268 (YubiKey Bio: three failed matches give UV_BLOCKED; the PIN is the fallback)",
    ),
)

NO_HMAC_SECRET = Profile(
    name="no-hmac-secret",
    model="a CTAP 2.1 key without the hmac-secret extension (synthetic: ctap21 less one feature)",
    versions=_CTAP21_VERSIONS,
    extensions=(CRED_PROTECT,),
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.FULL,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=True,
    firmware_version=1,
    sources=("CTAP 2.1 §12.5: hmac-secret is optional; Microsoft-compatible keys must have it",),
)

NO_RK = Profile(
    name="no-rk",
    model="a key without resident (discoverable) credentials (synthetic: ctap21 less one feature)",
    versions=_CTAP21_VERSIONS,
    extensions=_EXTENSIONS,
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.NONE,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=True,
    resident_keys=False,
    firmware_version=1,
    report_remaining_credentials=False,
    sources=("CTAP 2.1 §6.4 option 'rk' false; §6.1.2 step 7: rk=true is CTAP2_ERR_UNSUPPORTED_OPTION",),
)

SLOW = Profile(
    name="slow",
    model="ctap21 with a real key's timing: tens of ms per command, ~0.5 s to the touch (keepalives meanwhile)",
    versions=_CTAP21_VERSIONS,
    extensions=_EXTENSIONS,
    pin_protocols=(2, 1),
    cred_mgmt=CredMgmt.FULL,
    pin_uv_auth_token=True,
    make_cred_uv_not_rqd=True,
    firmware_version=1,
    latency=SLOW_LATENCY,
    default_latency=SLOW_DEFAULT,
    touch_delay=SLOW_TOUCH,
    sources=("CTAPHID §11.2.9.1.5: KEEPALIVE at least every 100 ms while a request waits",),
)

PROFILES: dict[str, Profile] = {
    p.name: p for p in (CTAP21, YUBIKEY_52, YUBIKEY_57, SOLO1, BIO, NO_HMAC_SECRET, NO_RK, SLOW)
}
DEFAULT = CTAP21


class UnknownProfile(ValueError):
    """No profile has that name."""


def get(name: str | Profile | None) -> Profile:
    """The profile called `name` (a Profile passes through; None is the default)."""
    if name is None:
        return DEFAULT
    if isinstance(name, Profile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise UnknownProfile(f"no software-key profile {name!r} (known: {', '.join(PROFILES)})") from None
