"""`hmacunlock profile setup | unlock | lock | status | forget`: an fscrypt v2 directory opened by the key and PIN."""

from __future__ import annotations

import argparse
import json

from libhmacunlock import dependents
from libhmacunlock.dependents import profile_target
from libhmacunlock.errors import BadArguments
from libhmacunlock.targets import fscrypt

from .consequences import note_dependent
from .keyfile import obtain_unlock_key, refuse_a_key_file_not_the_users
from .options import JSON_SCHEMA, Operand, add_store_option, add_unlock_key_options, add_user_and_target
from .terminal import TerminalInteraction

PROFILE = Operand("directory", "DIR", "the encrypted profile directory")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "profile",
        help="an fscrypt-encrypted profile directory opened with the key and PIN",
        description="Encrypt a directory with fscrypt (v2 policy) under a key derived from "
        "the user's unlock key, and lock or unlock it "
        "(docs/luks-and-profile.md).",
    )
    sub = p.add_subparsers(dest="profile_command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "setup",
        help="make an empty directory an encrypted profile of USER",
        description="Make DIR (empty, on a filesystem with encryption enabled) an fscrypt v2 "
        "directory whose key derives from USER's unlock key; it is left unlocked, and USER's record notes it "
        "(PAM's 'profile' option with no value unlocks it at sign-in).",
    )
    add_user_and_target(s, Operand("directory", "DIR", "an empty directory"))
    add_unlock_key_options(s)
    s.set_defaults(func=_setup)

    u = sub.add_parser(
        "unlock",
        help="add USER's key to the filesystem: DIR's files read again",
        description="Add USER's fscrypt key (FS_IOC_ADD_ENCRYPTION_KEY) after the security key "
        "and PIN give the unlock key.",
    )
    add_user_and_target(u, PROFILE)
    add_unlock_key_options(u)
    u.set_defaults(func=_unlock)

    lk = sub.add_parser(
        "lock",
        help="remove DIR's key from the filesystem: names and contents are ciphertext",
        description="Remove DIR's key from the filesystem (as root: every user's claim on it). "
        "Files still open keep their part of the key until closed.",
    )
    PROFILE.add_to(lk)
    lk.set_defaults(func=_lock)

    st = sub.add_parser(
        "status",
        help="say whether DIR is locked, unlocked or not encrypted",
        description="Print DIR's state: locked, unlocked, partially locked (files in use) or not encrypted.",
    )
    st.add_argument("directory", metavar="DIR", help="a directory")
    st.add_argument("--json", action="store_true", help='print {"schema": 1, "directory": ..., "status": ...} as JSON')
    st.set_defaults(func=_status)

    fg = sub.add_parser(
        "forget",
        help="take DIR out of USER's record: sign-in no longer unlocks it",
        description="Drop the note of DIR from USER's record (what 'profile setup' wrote): PAM's 'profile' "
        "option no longer unlocks it at sign-in, and removing USER's last key no longer counts it. DIR stays "
        "encrypted, and 'profile unlock' still opens it.",
    )
    add_user_and_target(fg, Operand("directory", "DIR", "a directory USER's record names"))
    add_store_option(fg)
    fg.set_defaults(func=_forget)


def _setup(args: argparse.Namespace) -> int:
    interaction = TerminalInteraction()
    fscrypt.check_can_set_up(args.directory)  # before the PIN: a refusal costs no PIN attempt
    _, unlock_key = obtain_unlock_key(args, interaction, args.user)
    refuse_a_key_file_not_the_users(args, args.user, unlock_key, args.directory)  # before the directory is touched
    fscrypt.setup_profile(args.directory, unlock_key)
    note_dependent(args.store, args.user, profile_target(args.directory), unlock_key, interaction)
    interaction.say(f"{args.directory} is now encrypted with {args.user}'s key, and unlocked.")
    return 0


def _unlock(args: argparse.Namespace) -> int:
    interaction = TerminalInteraction()
    fscrypt.require_policy(args.directory)  # before the PIN: a refusal costs no PIN attempt
    _, unlock_key = obtain_unlock_key(args, interaction, args.user)
    fscrypt.unlock_profile(args.directory, unlock_key)
    interaction.say(f"{args.directory} is unlocked.")
    return 0


def _lock(args: argparse.Namespace) -> int:
    status = fscrypt.lock_profile(args.directory)
    interaction = TerminalInteraction()
    if status is fscrypt.Status.PARTIALLY_LOCKED:
        interaction.say(
            f"{args.directory}: the key is removed, but files still open keep it in use; close them "
            "and run 'profile lock' again to finish."
        )
    elif status is fscrypt.Status.UNLOCKED:
        interaction.say(
            f"{args.directory}: your claim on the key is removed, but another user added it too; "
            "as root, 'profile lock' removes every claim."
        )
    else:
        interaction.say(f"{args.directory} is locked.")
    return 0


def _status(args: argparse.Namespace) -> int:
    status = fscrypt.profile_status(args.directory)
    if args.json:
        print(json.dumps({"schema": JSON_SCHEMA, "directory": args.directory, "status": status.value}))
    else:
        print(f"{args.directory}: {status.value}")
    return 0


def _forget(args: argparse.Namespace) -> int:
    target = profile_target(args.directory)
    if not dependents.forget(args.store, args.user, target):
        raise BadArguments(f"{args.user}'s record names no profile {target.path}.")
    TerminalInteraction().say(f"{args.user}'s sign-in no longer unlocks {target.path} (it stays encrypted).")
    return 0
