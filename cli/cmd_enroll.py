"""`hmacunlock enroll USER`: a security key (first, or a further one) for a user."""

from __future__ import annotations

import argparse

from .options import add_device_option, add_store_option
from .terminal import TerminalInteraction


def _enroll(args: argparse.Namespace) -> int:
    from libhmacunlock.enroll import enroll
    from libhmacunlock.records import b64e

    result = enroll(
        args.store,
        args.device,
        TerminalInteraction(),
        args.user,
        rp_id=args.rp_id,
        existing_device=args.existing_device,
        recovery=args.recovery,
        cred_protect=args.cred_protect,
        label=args.label,
    )
    from libhmacunlock import audit

    audit.enrolled(result.user, b64e(result.credential_id), result.rp_id, result.first)
    what = "first key" if result.first else "further key"
    label = f", label '{args.label}'" if args.label else ""
    print(f"enrolled {result.user} ({what}{label}, rp {result.rp_id}, credential {b64e(result.credential_id)})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "enroll",
        help="enroll a security key for a user",
        description="Make a PIN-protected discoverable credential with hmac-secret on the "
        "key and wrap the user's unlock key for it. A further key needs "
        "something already enrolled: --existing-device (its PIN is asked "
        "first) or --recovery.",
    )
    p.add_argument("user", metavar="USER")
    add_device_option(p)
    add_store_option(p)
    p.add_argument("--rp-id", metavar="ID", help="RP id of the credential (default hmacunlock.<hostname>)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--existing-device", metavar="SPEC", help="an already enrolled key that authorises this one")
    how.add_argument(
        "--recovery", action="store_true", help="authorise with the user's recovery key or passphrase instead"
    )
    p.add_argument(
        "--label",
        metavar="NAME",
        help="a name for this key (e.g. backup-nano; up to 32 printable characters), shown by 'hmacunlock list' "
        "and in PIN prompts (\"PIN of 'backup-nano'\")",
    )
    p.add_argument(
        "--cred-protect",
        type=int,
        choices=(1, 2, 3),
        default=2,
        help="credProtect level (default 2: the credential is not listed without the PIN; 3 is refused before any "
        "PIN, CredProtectUnsupported: the key would hide the credential from the check that finds it before the PIN)",
    )
    p.set_defaults(func=_enroll)
