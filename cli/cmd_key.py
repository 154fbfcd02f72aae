"""`hmacunlock key info | set-pin | change-pin | verify-pin`: what a key can do, and its PIN."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from libhmacunlock.errors import HmacUnlockError, PinPolicy
from libhmacunlock.interaction import Purpose, SecretKind, ask_new_secret

from .options import JSON_SCHEMA, add_device_option
from .pinfloor import add_pin_floor_option, with_pin_floor
from .terminal import TerminalInteraction

if TYPE_CHECKING:
    from libhmacunlock.device import Features


def _info(args: argparse.Namespace) -> int:
    from libhmacunlock.discovery import open_key

    with open_key(args.device) as key:
        features = key.features()
        retries = None
        if features.pin_set:  # a key without a PIN answers getPINRetries with PIN_NOT_SET
            try:
                retries = key.pin_retries()
            except HmacUnlockError:
                retries = None
        info = key.info
        blocked = retries == 0  # the features are there, but the key will not open anything until it is reset
        data = {
            "schema": JSON_SCHEMA,
            "device": key.spec,
            "aaguid": str(info.aaguid),
            "versions": list(info.versions),
            "firmware": firmware_text(info.firmware_version),
            "features": features.as_json(),
            "microsoft_compatible": features.microsoft_compatible,
            "compatible": features.compatible and not blocked,
            "missing": features.missing(),
            "pin_blocked": blocked,
            "pin_set": features.pin_set,
            "pin_retries": retries,
            "pin_protocols": list(features.pin_protocols),
            "builtin_uv": features.builtin_uv,
            "credential_management": features.credential_management,
            "extensions": list(info.extensions),
        }
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    for line in info_lines(data, features):
        print(line)
    return 0


def firmware_text(version: int | None) -> str | None:
    """getInfo's firmwareVersion in words: vendors that pack major.minor.patch in bytes (YubiKey: 0x050700) read as
    5.7.0; a small number as itself; absent (CTAP 2.0 keys) as None."""
    if not version:
        return None
    if version > 0xFFFF:
        return f"{version >> 16}.{(version >> 8) & 0xFF}.{version & 0xFF}"
    return str(version)


def info_lines(data: dict[str, Any], features: Features) -> list[str]:
    yes = {True: "yes", False: "NO"}
    retries = data["pin_retries"]
    pin = "PIN set" if features.pin_set else "no PIN set: 'hmacunlock key set-pin' sets one"
    if retries is not None:
        pin += f", {retries} attempts left"
    lines = [
        f"device: {data['device']}",
        f"AAGUID: {data['aaguid']}",
        f"CTAP versions: {', '.join(data['versions'])}; firmware: {data['firmware'] or 'not reported'}",
        f"PIN/UV protocols: {', '.join(str(p) for p in data['pin_protocols']) or 'none'}",
        f"resident keys: {yes[features.resident_key]}",
        f"client PIN: {yes[features.client_pin]} ({pin})",
        f"fingerprint (built-in user verification): {'yes' if features.builtin_uv else 'no'}",
        f"hmac-secret: {yes[features.hmac_secret]}",
        f"several accounts per RP: {yes[features.multiple_accounts_per_rp]}",
        f"credential management: {'yes' if features.credential_management else 'no'}",
    ]
    if features.microsoft_compatible:
        lines.append(
            "Microsoft-compatible: yes - it has all four features Microsoft requires of a security key "
            "(resident keys, client PIN, hmac-secret, several accounts per RP)"
        )
    else:
        lacking = [text for name, text in features.NAMES if not getattr(features, name)]
        lines.append(f"Microsoft-compatible: no - it lacks {', '.join(lacking)}")
    lines.append(
        f"compatible with hmacunlock: {yes[data['compatible']]}"
        + (f" (missing: {', '.join(data['missing'])})" if data["missing"] else "")
        + (
            " (the PIN is blocked: 0 attempts left. Only a reset of the key helps, which erases its credentials, "
            "e.g. 'fido2-token -R'; sign in with a recovery key meanwhile)"
            if data["pin_blocked"]
            else ""
        )
    )
    return lines


def _new_pin(interaction: TerminalInteraction) -> str:
    return ask_new_secret(interaction, SecretKind.NEW_PIN, PinPolicy("The two PINs differ; the PIN was not changed."))


def _set_pin(args: argparse.Namespace) -> int:
    from libhmacunlock.discovery import open_key

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        if key.features().pin_set:
            raise PinPolicy("This key already has a PIN: use 'hmacunlock key change-pin'.")
        key.set_pin(_new_pin(interaction))
    print("PIN set")
    return 0


def _change_pin(args: argparse.Namespace) -> int:
    from libhmacunlock.discovery import open_key

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        old = interaction.ask_pin(Purpose.CHANGE_PIN)
        key.change_pin(old, _new_pin(interaction))
    print("PIN changed")
    return 0


def _verify_pin(args: argparse.Namespace) -> int:
    """A touch first (whoever runs this is at the key), then one PIN: the right one restores the attempts."""
    from libhmacunlock.device import PERMISSION
    from libhmacunlock.discovery import open_key
    from libhmacunlock.enroll import default_rp_id
    from libhmacunlock.pinguard import check_floor

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        if not key.features().pin_set:
            raise PinPolicy("This key has no PIN: set one with 'hmacunlock key set-pin'.")

        def verify(floor: int) -> int:
            state = check_floor(key, floor) or key.pin_state()
            interaction.say(f"{state.attempts_left} PIN attempts left.")
            interaction.touch(Purpose.VERIFY_PIN)
            key.confirm_presence([])
            pin = interaction.ask_pin(Purpose.VERIFY_PIN, attempts_left=state.attempts_left)
            key.pin_token(pin, PERMISSION.GET_ASSERTION, default_rp_id())
            return key.pin_retries()

        left = with_pin_floor(interaction, args.pin_floor, verify)
    print(f"PIN verified ({left} attempts left)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "key",
        help="a security key's features and PIN",
        description="Check a key for the four features hmacunlock needs, set or change its PIN.",
    )
    sub = p.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    info = sub.add_parser(
        "info",
        help="the key's features, PIN state and attempts left",
        description="Resident keys, client PIN, hmac-secret, several accounts per RP; whether a "
        "PIN is set and how many attempts are left.",
    )
    add_device_option(info)
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=_info)
    sp = sub.add_parser(
        "set-pin", help="set the PIN of a key that has none", description="Asks the new PIN (twice on a terminal)."
    )
    add_device_option(sp)
    sp.set_defaults(func=_set_pin)
    cp = sub.add_parser(
        "change-pin",
        help="change the key's PIN",
        description="Asks the current PIN, then the new one (twice on a terminal).",
    )
    add_device_option(cp)
    cp.set_defaults(func=_change_pin)
    vp = sub.add_parser(
        "verify-pin",
        help="check the PIN at the key (a touch first); the right PIN restores the attempts",
        description="Shows the attempts left, asks for a touch (so only someone at the key can spend an "
        "attempt), then the PIN once. The right PIN resets the key's counter to its maximum; PAM refuses to "
        "try the PIN at the floor (pin_floor=), this is how to get above it again. Below --pin-floor it asks "
        "before trying, and only at a terminal.",
    )
    add_device_option(vp)
    add_pin_floor_option(vp)
    vp.set_defaults(func=_verify_pin)
