"""`hmacunlock luks enroll | unlock | remove | status | keyscript`: a LUKS2 volume opened by the security key and PIN.

The unlock key comes from the security key and its PIN, or from `--key-file PATH|-` (cli/keyfile.py).
"""

from __future__ import annotations

import argparse
import sys

from libhmacunlock.dependents import luks_target
from libhmacunlock.errors import BadArguments, TargetError
from libhmacunlock.interaction import SecretKind
from libhmacunlock.targets import luks
from libhmacunlock.targets.luks_tokens import owner_of_user

from .confirm import add_yes_option, confirm_destructive
from .consequences import forget_dependent, note_dependent
from .keyfile import obtain_unlock_key
from .options import Operand, add_unlock_key_options, add_user_and_target
from .terminal import TerminalInteraction

VOLUME = Operand("volume", "VOLUME", "the LUKS2 block device or image file")
NOT_WITH_SYSTEMD = "the enrolled user (not with --systemd)"

# --- luks -----------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "luks",
        help="a LUKS2 volume opened with the security key and PIN",
        description="Enroll, open and remove LUKS2 keyslots derived from a user's unlock "
        "key, or systemd-cryptenroll-compatible systemd-fido2 tokens "
        "(docs/luks-and-profile.md).",
    )
    sub = p.add_subparsers(dest="luks_command", metavar="COMMAND", required=True)

    e = sub.add_parser(
        "enroll",
        help="add a keyslot for USER (or a systemd-fido2 token with --systemd)",
        description="Add a keyslot whose passphrase derives from USER's unlock key and record it "
        "in an 'hmacunlock' token; asks the PIN, then an existing passphrase of the "
        "volume. With --systemd, enroll the key as systemd-cryptenroll does instead.",
    )
    add_user_and_target(e, VOLUME, NOT_WITH_SYSTEMD, user_optional=True)
    add_unlock_key_options(e)
    e.add_argument(
        "--volume-key-file",
        metavar="PATH",
        help="an existing key file of the volume authorising the new keyslot (default: ask for an existing passphrase)",
    )
    e.add_argument(
        "--systemd",
        action="store_true",
        help="write a standard systemd-fido2 token (non-resident credential, rp "
        "io.systemd.cryptsetup) that systemd-cryptsetup can open at boot",
    )
    e.set_defaults(func=_enroll)

    u = sub.add_parser(
        "unlock",
        help="check (--test-passphrase) or open (--name) the volume",
        description="Open the volume with USER's keyslot (usernameless when USER is left out: the "
        "key says who), or with its systemd-fido2 token.",
    )
    add_user_and_target(u, VOLUME, user_optional=True)
    add_unlock_key_options(u)
    u.add_argument(
        "--systemd",
        action="store_true",
        help="open with the volume's systemd-fido2 token (as systemd-cryptenroll made it), even when it also has "
        "hmacunlock tokens",
    )
    how = u.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--test-passphrase",
        action="store_true",
        help="only check that the derived passphrase opens the volume (needs no device-mapper)",
    )
    how.add_argument("--name", metavar="NAME", help="open the volume as /dev/mapper/NAME (needs device-mapper)")
    u.set_defaults(func=_unlock)

    r = sub.add_parser(
        "remove",
        help="remove USER's keyslot and token (never the last keyslot)",
        description="Remove USER's keyslot and its token, or with --systemd the systemd-fido2 "
        "token and its keyslot; the volume's last keyslot is never removed. Asks first, saying which keyslots "
        "still open the volume (--yes without a terminal).",
    )
    add_user_and_target(r, VOLUME, NOT_WITH_SYSTEMD, user_optional=True)
    r.add_argument("--systemd", action="store_true", help="remove the systemd-fido2 token and its keyslot")
    add_unlock_key_options(r)
    r.add_argument(
        "--sweep",
        action="store_true",
        help="also try every other keyslot with USER's derived passphrase and remove those it opens (asks the "
        "PIN, or give --key-file; implied by --key-file)",
    )
    add_yes_option(r)
    r.set_defaults(func=_remove)

    st = sub.add_parser(
        "status",
        help="show whose each keyslot is, and keyslots an interrupted enroll left",
        description="List the volume's keyslots with the token that names each: a user's hmacunlock token, a "
        "systemd-fido2 token, an enroll that was interrupted (its keyslot is removed by 'luks remove' or the "
        "next 'luks enroll' of that user), or none (an administrator's passphrase, or an orphan of an older "
        "version: 'luks remove --sweep' finds a user's).",
    )
    VOLUME.add_to(st)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=_status)

    k = sub.add_parser(
        "keyscript",
        help="print the volume's passphrase to stdout, for a crypttab keyscript",
        description="For Debian's crypttab keyscript=: print the derived passphrase to stdout, "
        "with no newline, for cryptsetup to read. The one command that writes key "
        "material to stdout, because that is where cryptsetup reads it.",
    )
    add_user_and_target(k, VOLUME, user_optional=True)
    add_unlock_key_options(k)
    k.set_defaults(func=_keyscript)


def _volume(path: str) -> luks.Volume:
    volume = luks.Volume(path)
    volume.metadata()  # fails first, with cryptsetup's reason, when PATH is not a LUKS2 volume
    return volume


def _existing(args: argparse.Namespace, interaction: TerminalInteraction) -> luks.Existing:
    if args.volume_key_file:
        return luks.Existing(key_file=args.volume_key_file)
    passphrase = interaction.ask_secret(SecretKind.VOLUME_PASSPHRASE, args.volume)
    return luks.Existing(passphrase=passphrase.encode())


def _enroll(args: argparse.Namespace) -> int:
    from libhmacunlock import audit

    interaction = TerminalInteraction()
    volume = _volume(args.volume)
    if args.systemd:
        if args.user or args.unlock_key_file:
            raise BadArguments("--systemd enrolls the key itself: give no USER and no --key-file.")
        from libhmacunlock import systemd_fido2

        fido2_token = systemd_fido2.enroll(volume, args.device, interaction, lambda: _existing(args, interaction))
        audit.luks_enrolled(None, args.volume, fido2_token.keyslot, "systemd-fido2")
        interaction.say(
            f"Enrolled the security key in keyslot {fido2_token.keyslot} of {args.volume} "
            f"(systemd-fido2 token {fido2_token.token_id})."
        )
        return 0
    if not args.user:
        raise BadArguments("Name the USER whose unlock key opens the new keyslot (or use --systemd).")
    if volume.token_for(args.user) is not None:  # before the PIN: a refusal costs no PIN attempt
        raise luks.already_enrolled(volume, args.user)
    _, unlock_key = obtain_unlock_key(args, interaction, args.user, more_input=not args.volume_key_file)
    token = luks.enroll(volume, args.user, unlock_key, _existing(args, interaction))
    audit.luks_enrolled(args.user, args.volume, token.keyslot, "hmacunlock")
    note_dependent(
        args.store, args.user, luks_target(args.volume, volume.uuid(), token.token_id), unlock_key, interaction
    )
    interaction.say(
        f"Enrolled {args.user} in keyslot {token.keyslot} of {args.volume} (hmacunlock token {token.token_id})."
    )
    return 0


def _passphrase(args: argparse.Namespace, volume: luks.Volume, interaction: TerminalInteraction) -> tuple[int, bytes]:
    """(keyslot, passphrase) from our token for the user, or else (or with --systemd) from a systemd-fido2 token."""
    systemd = getattr(args, "systemd", False)  # `luks unlock --systemd`; keyscript has no such option
    if systemd and (args.user or args.unlock_key_file):
        raise BadArguments("--systemd opens with the key itself: give no USER and no --key-file.")
    ours = [] if systemd else volume.hmacunlock_tokens()
    if ours or args.user or args.unlock_key_file:
        if args.user is not None or args.unlock_key_file:
            token = luks.find_token(volume, args.user, ours)  # checked before the PIN is asked
            _, unlock_key = obtain_unlock_key(args, interaction, token.user)
        else:
            user, unlock_key = obtain_unlock_key(args, interaction, None)  # usernameless: the key says who
            token = luks.find_token(volume, user, ours)
        return token.keyslot, luks.volume_passphrase(volume, token, unlock_key)
    theirs = volume.systemd_tokens()
    if not theirs:
        what = "systemd-fido2" if systemd else "hmacunlock or systemd-fido2"
        raise TargetError(f"{args.volume}: no {what} token on this volume.")
    from libhmacunlock import systemd_fido2

    return systemd_fido2.passphrase(volume, args.device, interaction, theirs)


def _unlock(args: argparse.Namespace) -> int:
    interaction = TerminalInteraction()
    volume = _volume(args.volume)
    if args.name:
        luks.require_device_mapper()  # before the PIN: it could not open anyway
    keyslot, passphrase = _passphrase(args, volume, interaction)
    luks.check_or_open(volume, keyslot, passphrase, args.name)
    if args.name:
        interaction.say(f"Opened {args.volume} as /dev/mapper/{args.name}.")
    else:
        interaction.say(f"The key opens keyslot {keyslot} of {args.volume}.")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from libhmacunlock import audit

    interaction = TerminalInteraction()
    volume = _volume(args.volume)
    if args.systemd:
        if args.user:
            raise BadArguments("--systemd removes the systemd-fido2 token: give no USER.")
        from libhmacunlock.targets import systemd_token

        tokens = volume.systemd_tokens()
        if len(tokens) == 1:  # otherwise systemd_token.remove refuses: nothing to confirm
            confirm_destructive(
                interaction,
                f"This removes keyslot {tokens[0].keyslot} and its systemd-fido2 token from {args.volume}: the "
                "security key enrolled with 'luks enroll --systemd' no longer opens it (nor systemd-cryptsetup at "
                "boot).",
                _still_opens(volume, {tokens[0].keyslot}),
                yes=args.yes,
                command=f"hmacunlock luks remove {args.volume} --systemd",
            )
        fido2_token = systemd_token.remove(volume)
        audit.luks_removed(None, args.volume, (fido2_token.keyslot,), "systemd-fido2")
        interaction.say(
            f"Removed keyslot {fido2_token.keyslot} and systemd-fido2 token {fido2_token.token_id} from {args.volume}."
        )
        return 0
    if not args.user:
        raise BadArguments("Name the USER to remove (or use --systemd).")
    sweep = args.sweep or bool(args.unlock_key_file)
    mine = {k.keyslot for k in luks.status(volume).keyslots if k.owner == owner_of_user(args.user)}
    if not mine and not sweep:
        luks.find_token(volume, args.user, [])  # raises: not enrolled on this volume (before any question)
    others = _still_opens(volume, mine)
    if others is not None:  # else luks.remove refuses to take the volume's last keyslot: nothing to confirm
        slots = ", ".join(str(n) for n in sorted(mine)) or "none found yet"
        confirm_destructive(
            interaction,
            f"This removes {args.user}'s keyslots of {args.volume} ({slots})"
            + (" and every other keyslot their unlock key's passphrase opens" if sweep else "")
            + f": {args.user}'s security keys and recovery key no longer open it.",
            others,
            yes=args.yes,
            command=f"hmacunlock luks remove {args.volume} {args.user}" + (" --sweep" if args.sweep else ""),
        )
    unlock_key = None
    if sweep:
        _, unlock_key = obtain_unlock_key(args, interaction, args.user)
    removed = luks.remove(volume, args.user, unlock_key)
    audit.luks_removed(args.user, args.volume, removed.keyslots, "hmacunlock")
    forget_dependent(args.store, args.user, luks_target(args.volume, volume.uuid(), None), interaction)
    n = len(removed.keyslots)
    slots = ", ".join(str(k) for k in removed.keyslots) or "none"
    swept = " (every keyslot was tried with the user's passphrase)" if removed.swept else ""
    interaction.say(
        f"Removed {n} keyslot{'s' if n != 1 else ''} of {args.user} ({slots}) and "
        f"{len(removed.token_ids)} token{'s' if len(removed.token_ids) != 1 else ''} from {args.volume}{swept}."
    )
    return 0


def _still_opens(volume: luks.Volume, doomed: set[int]) -> str | None:
    """The sentence saying which keyslots still open the volume once `doomed` go; None when none would (the removal
    is then refused: the last keyslot is never removed)."""
    rest = [k for k in luks.status(volume).keyslots if k.keyslot not in doomed]
    if not rest:
        return None
    named = ", ".join(f"{k.keyslot} ({k.owner or 'a passphrase'})" for k in rest)
    return f"{volume.path} still opens with its other keyslot{'s' if len(rest) != 1 else ''}: {named}."


def _status(args: argparse.Namespace) -> int:
    import json

    volume = _volume(args.volume)
    state = luks.status(volume)
    if args.json:
        rows = [{"keyslot": k.keyslot, "owner": k.owner, "interrupted": k.interrupted} for k in state.keyslots]
        print(json.dumps({"volume": args.volume, "keyslots": rows}, indent=1))
        return 0
    for k in state.keyslots:
        if k.owner is None:
            what = "no token (an administrator's passphrase, or an orphan of an older hmacunlock)"
        elif k.interrupted:
            what = f"{k.owner}: left by an interrupted enroll ('hmacunlock luks remove' removes it)"
        else:
            what = k.owner
        print(f"keyslot {k.keyslot}: {what}")
    if state.interrupted:
        print(f"{len(state.interrupted)} keyslot(s) left by an interrupted enroll.")
    return 0


def _keyscript(args: argparse.Namespace) -> int:
    if sys.stdout.isatty():  # cryptsetup reads it from a pipe; a screen is never the place for a passphrase
        raise BadArguments(
            "luks keyscript prints the volume's passphrase for cryptsetup: pipe it, never run it on a terminal."
        )
    interaction = TerminalInteraction()
    volume = _volume(args.volume)
    _, passphrase = _passphrase(args, volume, interaction)
    # No newline: cryptsetup reads the keyscript's whole output (--key-file=-) as the passphrase.
    sys.stdout.buffer.write(passphrase)
    sys.stdout.buffer.flush()
    return 0
