"""`hmacunlock key info | set-pin | change-pin | verify-pin | credentials | reset`: what a key can do, its PIN,
the credentials it holds, and erasing it."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from libhmacunlock.errors import (
    BadArguments,
    HmacUnlockError,
    KeyCredentialNotFound,
    KeyLacksFeature,
    LastWayIn,
    PinPolicy,
)
from libhmacunlock.interaction import Purpose, SecretKind, ask_new_secret

from .confirm import add_yes_option, confirm_destructive
from .options import JSON_SCHEMA, add_device_option, add_store_option
from .pinfloor import add_pin_floor_option, managed_token, with_pin_floor
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
    """The old PIN is spent like any other (a wrong one costs an attempt): behind the PIN floor."""
    from libhmacunlock.device import check_pin
    from libhmacunlock.discovery import open_key
    from libhmacunlock.pinguard import check_floor

    interaction = TerminalInteraction()
    with open_key(args.device) as key:

        def change(floor: int) -> None:
            check_floor(key, floor)  # before the old PIN is asked
            key.change_pin(check_pin(interaction.ask_pin(Purpose.CHANGE_PIN)), _new_pin(interaction))

        with_pin_floor(interaction, args.pin_floor, change, "to change it")
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

        left = with_pin_floor(interaction, args.pin_floor, verify, "to verify it")
    print(f"PIN verified ({left} attempts left)")
    return 0


# --- the key's credentials ------------------------------------------------------------------------------------


def _managed_key(key: Any) -> None:
    """Refuse, before the PIN, a key that cannot list or delete its credentials."""
    key.require_features()
    if not key.features().credential_management:
        raise KeyLacksFeature("credential management (credMgmt, CTAP 2.1)")


def _credentials(args: argparse.Namespace) -> int:
    from libhmacunlock.credentials import inventory
    from libhmacunlock.discovery import open_key

    interaction = TerminalInteraction()
    with open_key(args.device) as key:
        _managed_key(key)
        token = managed_token(args.store, key, interaction, args.pin_floor)
        inv = inventory(args.store, key, token)
        spec = key.spec
    if args.json:
        data = {
            "schema": JSON_SCHEMA,
            "device": spec,
            "capacity": {"existing": inv.capacity.existing, "remaining": inv.capacity.remaining},
            "credentials": [c.as_json() for c in inv.credentials],
            "unreadable_records": list(inv.unreadable),
        }
        print(json.dumps(data, indent=1))
        return 0
    for line in credential_lines(spec, inv):
        print(line)
    return 0


def credential_lines(spec: str, inv: Any) -> list[str]:
    """The key's credentials RP by RP, each with the local user and slot it belongs to, then the capacity."""
    lines: list[str] = []
    rp = None
    for c in inv.credentials:
        if c.credential.rp_id != rp:
            rp = c.credential.rp_id
            lines.append(f"rp {rp}")
        name = c.credential.user_name or c.credential.display_name or "(no user name)"
        whose = "not on this machine" if c.owner is None else f"{c.owner.describe()}"
        lines.append(f"  {c.id_text}  user {name!r}  -> {whose}")
    if not inv.credentials:
        lines.append(f"The security key ({spec}) holds no discoverable credentials.")
    count = inv.capacity.existing
    lines.append(
        f"{count} discoverable credential{'s' if count != 1 else ''} on the key; room for "
        f"{inv.capacity.remaining} more."
    )
    for user in inv.unreadable:
        lines.append(f"(the record of {user} could not be read: its credentials show as not on this machine)")
    return lines


def _delete(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.credentials import delete, owner_of
    from libhmacunlock.discovery import open_key
    from libhmacunlock.records import b64d
    from libhmacunlock.store import Store

    try:
        credential_id = b64d(args.id)
        if not credential_id:
            raise ValueError("empty")
    except ValueError:
        raise BadArguments(
            f"{args.id!r} is not a credential id: give one as 'hmacunlock key credentials' shows it (base64url)."
        ) from None
    store = Store(args.store)
    interaction = TerminalInteraction()
    owner = owner_of(store, credential_id)
    if owner is not None and owner.last_way_in and not args.force:
        raise LastWayIn(
            owner.user,
            f"Credential {args.id} is the last way to open {owner.user}'s unlock key (no other key and no recovery "
            "slot)",
            f"without it {owner.user}'s sign-in, volumes and profiles could not be opened again; nothing was asked "
            "of the key.",
            f"Enroll another key or add a recovery slot first ('hmacunlock recovery add {owner.user}'),",
        )
    confirm_destructive(
        interaction,
        f"This deletes credential {args.id} from the security key ({args.device}); it cannot be undone.",
        _unopenable(owner, args.id, args.remove_slot),
        yes=args.yes,
        command="hmacunlock key credentials delete",
    )
    with open_key(args.device) as key:
        _managed_key(key)
        if owner is not None and owner.cred_protect < 3 and not key.holds_any([(owner.rp_id, credential_id)]):
            raise KeyCredentialNotFound(args.id, key.spec)  # the probe, no PIN: a credProtect-3 one hides from it
        token = managed_token(store, key, interaction, args.pin_floor)
        delete(store, key, token, credential_id)
    audit.key_credential_deleted(owner.user if owner else None, args.id, owner.rp_id if owner else None)
    print(f"deleted credential {args.id} from the security key")
    if owner is not None:
        _remove_slot_too(args, interaction, owner.user, args.id)
    return 0


def _unopenable(owner: Any, credential_id: str, remove_slot: bool) -> str:
    if owner is None:
        return (
            "It belongs to no user on this machine: whatever else uses it (another computer, a website) will no "
            "longer accept this key."
        )
    slot = (
        "The slot is removed from the record too (--remove-slot)."
        if remove_slot
        else f"The slot stays in {owner.user}'s record until 'hmacunlock remove {owner.user} --credential "
        f"{credential_id}' removes it (you are asked after the delete; --remove-slot does both)."
    )
    last = (
        f" It is {owner.user}'s LAST way in (--force): their volumes and profiles can no longer be opened."
        if owner.last_way_in
        else ""
    )
    return f"{owner.describe()} can no longer be opened with this key.{last} {slot}"


def _remove_slot_too(args: argparse.Namespace, interaction: TerminalInteraction, user: str, slot_id: str) -> None:
    from libhmacunlock import audit
    from libhmacunlock.removal import remove_key

    hint = f"hmacunlock remove {user} --credential {slot_id}"
    if not args.remove_slot and not interaction.confirm(
        f"Remove the slot from {user}'s record too ('{hint}')? Type 'yes' to remove it: ", "yes"
    ):
        print(f"{user}'s record still has the slot {slot_id}, which no longer opens: '{hint}' removes it")
        return
    remove_key(args.store, user, slot_id)
    audit.removed_key(user, slot_id)
    print(f"removed key {slot_id} of {user}")


def _reset(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.credentials import owners
    from libhmacunlock.discovery import open_key
    from libhmacunlock.store import Store

    interaction = TerminalInteraction()
    try:
        found = owners(Store(args.store))[0]
    except HmacUnlockError:  # not root, say: the reset needs no store, only the warning is shorter
        found = {}
    with open_key(args.device) as key:
        held = _local_users_on(key, found)
        users = f" It holds the credentials of {', '.join(held)} on this machine." if held else ""
        confirm_destructive(
            interaction,
            f"THIS ERASES THE SECURITY KEY ({key.spec}): every credential on it (for this machine, other computers "
            f"and websites) and its PIN. It cannot be undone.{users} A key takes a reset only within about 10 "
            "seconds of being plugged in, and after a touch: unplug it and plug it back in now if it has been in "
            "for longer.",
            "Whatever opens only with this key (sign-in, volumes, profiles) can no longer be opened; use the "
            "recovery key of each user there.",
            yes=args.yes,
            command="hmacunlock key reset",
            answer="reset",
        )
        from libhmacunlock.pinguard import key_changed

        key_changed(Store(args.store))  # before: no warm sign-in's memory of the key vouches for what is erased
        interaction.touch(Purpose.RESET)
        key.reset()
        spec = key.spec
    audit.key_reset(spec)
    print(f"the security key ({spec}) was reset: no credentials, no PIN ('hmacunlock key set-pin' sets one)")
    return 0


def _local_users_on(key: Any, found: dict[bytes, Any]) -> list[str]:
    """The local users with a credential on this key, by the up=false probe (no PIN; credProtect-3 ones hide)."""
    users: list[str] = []
    for cred_id, owner in found.items():
        if owner.user not in users and key.holds_any([(owner.rp_id, cred_id)]):
            users.append(owner.user)
    return users


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "key",
        help="a security key's features, PIN and credentials",
        description="Check a key for the four features hmacunlock needs, set or change its PIN, list and delete "
        "the credentials on it, reset it.",
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
        description="Asks the current PIN, then the new one (twice on a terminal). At --pin-floor attempts left "
        "or fewer the current PIN is asked only after you type yes at a terminal (a wrong one costs an attempt).",
    )
    add_device_option(cp)
    add_pin_floor_option(cp)
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
    cr = sub.add_parser(
        "credentials",
        help="the discoverable credentials on the key, whose each is here, and the room left",
        description="Lists the key's discoverable credentials RP by RP (credential management; asks the PIN), "
        "each with the local user and store slot it belongs to, or 'not on this machine', and how many more the "
        "key has room for. 'delete ID' deletes one.",
    )
    add_device_option(cr)
    add_store_option(cr)
    cr.add_argument("--json", action="store_true", help="machine-readable output")
    add_pin_floor_option(cr)
    cr.set_defaults(func=_credentials)
    crsub = cr.add_subparsers(dest="credentials_command", metavar="COMMAND")
    de = crsub.add_parser(
        "delete",
        help="delete one credential from the key",
        description="Deletes the credential ID (as 'key credentials' shows it; after '--' if it starts with '-') "
        "from the key, after saying at the terminal what can no longer be opened (--yes off a terminal). The "
        "last way into an enrolled user is refused without --force. The user's store slot is removed too with "
        "--remove-slot, or when you say so at the terminal.",
    )
    de.add_argument("id", metavar="ID", help="the credential id")
    add_device_option(de)
    add_store_option(de)
    add_yes_option(de)
    de.add_argument("--force", action="store_true", help="delete it even when it is a user's last way in")
    de.add_argument("--remove-slot", action="store_true", help="also remove the user's slot from the store")
    add_pin_floor_option(de)
    de.set_defaults(func=_delete)
    rs = sub.add_parser(
        "reset",
        help="erase the key: every credential and the PIN (asks you to type 'reset')",
        description="authenticatorReset: erases every credential on the key (this machine's, other computers' "
        "and websites') and its PIN. At a terminal you type 'reset' to go on (--yes off a terminal). Keys take a "
        "reset only within about 10 seconds of being plugged in, and after a touch.",
    )
    add_device_option(rs)
    add_store_option(rs)
    add_yes_option(rs)
    rs.set_defaults(func=_reset)
