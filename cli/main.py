"""The `hmacunlock` command: one argparse tree, one module per command group.

Each cli/cmd_*.py module exposes `register(subparsers)`, which adds its commands and sets `func` on them; `func`
takes the parsed namespace and returns an exit code. Errors from the library are printed as their message (no
traceback) and turned into their documented exit code here, in one place.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from libhmacunlock import __version__
from libhmacunlock.errors import ExitCode, HmacUnlockError

# Command groups, in the order `--help` lists them. A module missing here is a command nobody can reach.
COMMAND_MODULES = (
    "cmd_key",
    "cmd_enroll",
    "cmd_unlock",
    "cmd_recovery",
    "cmd_luks",
    "cmd_profile",
    "cmd_pam",
    "cmd_softkey",
    "cmd_demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmacunlock",
        description="Sign in offline and unlock encrypted disks and profiles with a FIDO2 security key and its PIN.",
    )
    parser.add_argument("--version", action="version", version=f"hmacunlock {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"hmacunlock_cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hmacunlock_cli.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .options import join_dash_values

    parser = build_parser()
    args = parser.parse_args(join_dash_values(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    try:
        if getattr(args, "device", None) == "list":  # `--device list` on any command: the keys present, nothing else
            return _list_keys()
        return int(args.func(args) or 0)
    except HmacUnlockError as exc:
        print(f"hmacunlock: {exc.message}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("hmacunlock: interrupted", file=sys.stderr)
        return int(ExitCode.CANCELLED)
    except Exception as exc:  # noqa: BLE001 - a bug: say so without a traceback, which could show the values in play
        print(f"hmacunlock: internal error ({type(exc).__name__}); please report it.", file=sys.stderr)
        return int(ExitCode.FAILURE)


def _list_keys() -> int:
    from libhmacunlock.discovery import present_keys

    keys = present_keys()
    if not keys:
        print("No USB security key is plugged in (the software key is named by its udp:HOST:PORT spec).")
    for k in keys:
        model = k.model or ("did not answer getInfo" if k.aaguid is None else "model not in hmacunlock's list")
        print(f"{k.spec}  {k.product}  AAGUID {k.aaguid or '?'} ({model})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
