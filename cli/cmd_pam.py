"""`hmacunlock pam path | snippet | warm-helper`: where the PAM module is, the line that adds it to a PAM service,
and the warm helper daemon that its `socket=` option talks to."""

from __future__ import annotations

import argparse
from pathlib import Path

from libhmacunlock.errors import HmacUnlockError

MODULE_NAME = "pam_hmacunlock.so"


class ModuleNotBuilt(HmacUnlockError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"The PAM module is not built or not installed: {path} is missing. In a source tree run 'make pam' "
            "(needs gcc and libpam0g-dev); an installed hmacunlock needs reinstalling."
        )


def installed_module() -> Path | None:
    """Where `make install` (the Debian package) put the module, if this is an installed hmacunlock."""
    from libhmacunlock.config import installation

    installed = installation()
    return Path(installed.pam_module) if installed else None


def module_path() -> Path:
    """The module's absolute path: the installed one (in the PAM directory), or the one built beside the
    hmacunlock_pam package in a source tree (`make pam`)."""
    import hmacunlock_pam

    path = installed_module() or Path(hmacunlock_pam.__file__).resolve().parent / MODULE_NAME
    if not path.is_file():
        raise ModuleNotBuilt(path)
    return path


def snippet(control: str, device: str | None = None, store: str | None = None, usernameless: bool = False) -> str:
    """One `auth` line for /etc/pam.d/SERVICE: the module by its bare name where it is installed in the PAM
    directory, by its absolute path in a source tree; `usernameless`: the key says who when no user is named."""
    path = module_path()
    words = ["auth", control, MODULE_NAME if installed_module() else str(path)]
    if store:
        words.append(f"store={Path(store).absolute()}")  # PAM hosts run from any directory
    if device:
        words.append(f"device={device}")
    if usernameless:
        words.append("usernameless")
    words.append("cue")
    for word in words[3:]:
        if any(c.isspace() for c in word) or "\n" in word:
            raise HmacUnlockError(f"Cannot put {word!r} in a PAM line: it contains white space.")
    return " ".join(words)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pam",
        help="the PAM module: its path and the line to add to a PAM service",
        description="Sign in through PAM with the security key (docs/pam.md).",
    )
    sub = p.add_subparsers(dest="pam_command", metavar="COMMAND", required=True)

    path = sub.add_parser("path", help="print the absolute path of the built PAM module")
    path.set_defaults(func=_path)

    snip = sub.add_parser("snippet", help="print the line to add to /etc/pam.d/SERVICE")
    control = snip.add_mutually_exclusive_group()
    control.add_argument(
        "--sufficient",
        dest="control",
        action="store_const",
        const="sufficient",
        help="the key alone signs in; otherwise the next methods are tried (default)",
    )
    control.add_argument(
        "--required",
        dest="control",
        action="store_const",
        const="required",
        help="the key is needed, in addition to the rest of the stack",
    )
    snip.add_argument("--device", metavar="SPEC", help="device spec: auto, hid:/dev/hidrawN, udp:HOST:PORT")
    snip.add_argument("--store", metavar="DIR", help="store directory (default /var/lib/hmacunlock)")
    snip.add_argument(
        "--usernameless",
        action="store_true",
        help="when the application names no user (a greeter, login with no name), the key says who (docs/pam.md)",
    )
    snip.set_defaults(func=_snippet, control="sufficient")

    warm = sub.add_parser(
        "warm-helper",
        help="run the warm helper daemon for the module's socket= option (root)",
        description="Import the library once and serve each sign-in in a pre-forked, warmed "
        "child over a root-only unix socket (docs/pam.md, 'Warm helper'). "
        "Stops on SIGTERM.",
    )
    warm.add_argument(
        "--socket",
        metavar="PATH",
        default=None,
        help="the socket to create (default /run/hmacunlock/helper.sock); ignored under systemd socket activation",
    )
    warm.add_argument(
        "--spares",
        metavar="K",
        type=int,
        default=None,
        help="children kept started and warmed, each waiting to serve one sign-in (default 2)",
    )
    warm.set_defaults(func=_warm_helper)


def _path(args: argparse.Namespace) -> int:
    print(module_path())
    return 0


def _snippet(args: argparse.Namespace) -> int:
    print(snippet(args.control, device=args.device, store=args.store, usernameless=args.usernameless))
    return 0


def _warm_helper(args: argparse.Namespace) -> int:
    from hmacunlock_pam.warm import DEFAULT_SOCKET, DEFAULT_SPARES, run

    return run(args.socket or DEFAULT_SOCKET, DEFAULT_SPARES if args.spares is None else args.spares)
