"""`hmacunlock key info | set-pin | change-pin | verify-pin`: what a key can do, and its PIN."""

from __future__ import annotations

import argparse
import json

from libhmacunlock.errors import HmacUnlockError, PinPolicy
from libhmacunlock.interaction import ask_new_secret

from .options import add_device_option
from .pinfloor import add_pin_floor_option, with_pin_floor
from .terminal import TerminalInteraction

TOUCH_TO_VERIFY = "Touch your security key (to show you are at it; no PIN attempt is used yet)"


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
        data = {
            "device": key.spec,
            "aaguid": str(info.aaguid),
            "versions": list(info.versions),
            "features": features.as_json(),
            "compatible": features.compatible,
            "missing": features.missing(),
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
        f"compatible with hmacunlock: {yes[features.compatible]}"
        + (f" (missing: {', '.join(data['missing'])})" if data["missing"] else "")
    )
    return 0


def _new_pin(interaction: TerminalInteraction) -> str:
    return ask_new_secret(
        interaction, "New PIN: ", "Repeat the new PIN: ", PinPolicy("The two PINs differ; the PIN was not changed.")
    )


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
        old = interaction.ask_secret("Current PIN: ")
        key.change_pin(old, _new_pin(interaction))
    print("PIN changed")
    return 0


def _verify_pin(args: argparse.Namespace) -> int:
    """A touch first (whoever runs this is at the key), then one PIN: the right one restores the attempts."""
    from libhmacunlock.device import PERMISSION, open_key
    from libhmacunlock.enroll import default_rp_id
    from libhmacunlock.pinguard import check_floor

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        if not key.features().pin_set:
            raise PinPolicy("This key has no PIN: set one with 'hmacunlock key set-pin'.")

        def verify(floor: int) -> int:
            state = check_floor(key, floor) or key.pin_state()
            interaction.tell(f"{state.attempts_left} PIN attempts left.")
            interaction.tell(TOUCH_TO_VERIFY)
            key.confirm_presence([])
            key.pin_token(interaction.ask_secret("PIN: "), PERMISSION.GET_ASSERTION, default_rp_id())
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
