"""Options several command groups share, so each reads and means the same everywhere."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NamedTuple

# Options whose value may begin with '-' (a base64url credential id does, 1 in 64): argparse would take such a
# value for an option of its own, so `join_dash_values` hands it over as `--OPTION=VALUE` before parsing.
DASH_VALUE_OPTIONS: set[str] = set()


def add_credential_option(p: argparse.ArgumentParser, help: str) -> None:
    """`--credential ID`: a credential id as `hmacunlock list` shows it (base64url; may start with '-')."""
    p.add_argument("--credential", metavar="ID", help=help)
    DASH_VALUE_OPTIONS.add("--credential")


# Commands whose one positional argument is a credential id: (group, command). `key credentials delete -abc` is
# handed over as `key credentials delete ... -- -abc` (the id last, after '--').
DASH_POSITIONAL_COMMANDS: set[tuple[str, str]] = {("credentials", "delete")}


def join_dash_values(argv: Sequence[str]) -> list[str]:
    """`--credential -abc` as `--credential=-abc`, so an id that starts with '-' is taken as the value; the same
    for the id of a DASH_POSITIONAL_COMMANDS command."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] == "--":
            out.extend(args[i:])
            break
        if (
            i >= 1
            and (args[i - 1], args[i]) in DASH_POSITIONAL_COMMANDS
            and i + 1 < len(args)
            and args[i + 1].startswith("-")
            and not args[i + 1].startswith("--")
            and args[i + 1] not in ("-h", "-y")
            and "--" not in args
        ):
            return out + [args[i]] + join_dash_values(args[i + 2 :]) + ["--", args[i + 1]]
        if args[i] in DASH_VALUE_OPTIONS and i + 1 < len(args):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


# The version of every --json output ("schema": 1 in each; docs/json.md): raised only when a field changes meaning
# or goes away, never for a field added.
JSON_SCHEMA = 1


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        metavar="SPEC",
        default=None,
        help="device spec: auto, hid:/dev/hidrawN, udp:HOST:PORT (default: the config file's device, else auto); "
        "'list' prints the keys plugged in",
    )
    p.set_defaults(device_fallback="auto")  # what main.apply_config puts in when neither flag nor file names one


def add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store", metavar="DIR", help="store directory (default: the config file's store, else /var/lib/hmacunlock)"
    )


class Operand(NamedTuple):
    """A positional argument: where args keeps it, the name usage shows, its help."""

    dest: str
    metavar: str
    help: str

    def add_to(self, p: argparse.ArgumentParser, *, optional: bool = False) -> None:
        p.add_argument(self.dest, metavar=self.metavar, nargs="?" if optional else None, help=self.help)


def add_user_and_target(
    p: argparse.ArgumentParser, target: Operand, user_help: str = "the enrolled user", *, user_optional: bool = False
) -> None:
    """A target command's operands: USER and the directory or volume USER's unlock key opens. `USER DIR`, or with
    `user_optional` (usernameless: the key says who) `VOLUME [USER]`, the operand that may be left out last."""
    user = Operand("user", "USER", user_help)
    if user_optional:
        target.add_to(p)
        user.add_to(p, optional=True)
    else:
        user.add_to(p)
        target.add_to(p)


def add_key_file_output(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key-file",
        metavar="PATH",
        dest="key_file",
        help="write the raw 32-byte unlock key to PATH (created 0600; must not exist) or '-' (stdout)",
    )


def add_unlock_key_options(p: argparse.ArgumentParser) -> None:
    """Where a target command gets the unlock key: the security key and PIN, or a key file."""
    from .pinfloor import add_pin_floor_option

    add_device_option(p)
    add_store_option(p)
    add_pin_floor_option(p)
    p.add_argument(
        "--key-file",
        metavar="PATH",
        dest="unlock_key_file",
        help="read the raw 32-byte unlock key from PATH ('-': stdin) instead of asking the key, as "
        "'hmacunlock recovery unlock --key-file -' prints it",
    )
