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
    "cmd_doctor",
    "cmd_softkey",
    "cmd_demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmacunlock",
        description="Sign in offline and unlock encrypted disks and profiles with a FIDO2 security key and its PIN.",
    )
    parser.add_argument("--version", action="version", version=f"hmacunlock {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="read defaults (device, store, rp_id, clone_policy) from FILE; an installed hmacunlock reads "
        "/etc/hmacunlock/hmacunlock.conf by default, a source tree none",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print the audit trail's lines (enroll, remove, recovery use, PIN failures; what goes to syslog) to "
        "stderr too",
    )
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


CONFIGURED = ("device", "store", "rp_id")  # options whose default the config file may set (same names there)


def apply_config(args: argparse.Namespace) -> None:
    """Fills the options the command line left unset from the config file: an explicit option always wins."""
    if getattr(args, "reads_config", False):
        return  # the command reads the file itself (doctor reports a bad file instead of refusing to run)
    if not args.config and not any(hasattr(args, k) for k in (*CONFIGURED, "warn_cloned")):
        return  # this command takes nothing from the file
    from libhmacunlock.config import load

    config = load(args.config, required=bool(args.config))
    for key in CONFIGURED:
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, getattr(config, key))
    if getattr(args, "device", "") is None:
        args.device = getattr(args, "device_fallback", None)
    if config.clone_policy == "warn" and hasattr(args, "warn_cloned"):
        args.warn_cloned = True


def main(argv: Sequence[str] | None = None) -> int:
    from .options import join_dash_values

    parser = build_parser()
    args = parser.parse_args(join_dash_values(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    if getattr(args, "verbose", False):
        from libhmacunlock import audit

        audit.verbose = True
    try:
        apply_config(args)
        if getattr(args, "device", None) == "list":  # `--device list` on any command: the keys present, nothing else
            return _list_keys()
        return int(args.func(args) or 0)
    except HmacUnlockError as exc:
        from libhmacunlock import audit

        audit.failure(getattr(args, "user", None), exc, via="cli")
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
