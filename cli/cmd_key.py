"""`hmacunlock key info | set-pin | change-pin`: what a key can do, and its PIN."""

from __future__ import annotations

import argparse
import json

from libhmacunlock.errors import HmacUnlockError, PinPolicy
from libhmacunlock.interaction import Purpose, SecretKind, ask_new_secret

from .options import JSON_SCHEMA, add_device_option
from .terminal import TerminalInteraction


def _info(args: argparse.Namespace) -> int:
    from libhmacunlock.device import open_key

    with open_key(args.device) as key:
        features = key.features()
        retries = None
        if features.client_pin:
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
            "features": features.as_json(),
            "compatible": features.compatible and not blocked,
            "missing": features.missing(),
            "pin_blocked": blocked,
            "pin_set": features.pin_set,
            "pin_retries": retries,
            "pin_protocols": list(features.pin_protocols),
            "extensions": list(info.extensions),
        }
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    yes = {True: "yes", False: "NO"}
    print(f"device: {data['device']}")
    print(f"AAGUID: {data['aaguid']}  versions: {', '.join(data['versions'])}")
    print(f"resident keys: {yes[features.resident_key]}")
    pin = ("set" if features.pin_set else "not set") + (f", {retries} attempts left" if retries is not None else "")
    print(f"client PIN: {yes[features.client_pin]} ({pin})")
    print(f"hmac-secret: {yes[features.hmac_secret]}")
    print(f"several accounts per RP: {yes[features.multiple_accounts_per_rp]}")
    print(
        f"compatible with hmacunlock: {yes[data['compatible']]}"
        + (f" (missing: {', '.join(data['missing'])})" if data["missing"] else "")
        + (
            " (the PIN is blocked: 0 attempts left. Only a reset of the key helps, which erases its credentials: "
            "e.g. 'fido2-token -R'; sign in with a recovery key meanwhile)"
            if blocked
            else ""
        )
    )
    return 0


def _new_pin(interaction: TerminalInteraction) -> str:
    return ask_new_secret(interaction, SecretKind.NEW_PIN, PinPolicy("The two PINs differ; the PIN was not changed."))


def _set_pin(args: argparse.Namespace) -> int:
    from libhmacunlock.device import open_key

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        if key.features().pin_set:
            raise PinPolicy("This key already has a PIN: use 'hmacunlock key change-pin'.")
        key.set_pin(_new_pin(interaction))
    print("PIN set")
    return 0


def _change_pin(args: argparse.Namespace) -> int:
    from libhmacunlock.device import open_key

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        old = interaction.ask_pin(Purpose.CHANGE_PIN)
        key.change_pin(old, _new_pin(interaction))
    print("PIN changed")
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
