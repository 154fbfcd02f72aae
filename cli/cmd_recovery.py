"""`hmacunlock recovery add | unlock | remove USER`: the same unlock key, without the security key."""

from __future__ import annotations

import argparse

from .confirm import add_yes_option, confirm_destructive
from .consequences import removal_words
from .keyfile import check_key_file_target, emit_unlock_key
from .options import add_device_option, add_key_file_output, add_store_option
from .terminal import TerminalInteraction


def _add(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.recovery import add_recovery

    added = add_recovery(args.store, args.device, TerminalInteraction(), args.user, passphrase=args.passphrase)
    audit.recovery_added(added.user, added.slot_id, "key" if added.recovery_key is not None else "passphrase")
    if added.recovery_key is None:
        print(f"recovery passphrase added for {added.user} (slot {added.slot_id})")
        return 0
    print(f"recovery key added for {added.user} (slot {added.slot_id}). Write it down: it is shown only once.")
    print(added.recovery_key, flush=True)  # alone, on the last line
    return 0


def _unlock(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.errors import HmacUnlockError
    from libhmacunlock.recovery import recovery_unlock

    check_key_file_target(args.key_file)
    try:
        result = recovery_unlock(args.store, args.user, TerminalInteraction())
    except HmacUnlockError as exc:
        audit.recovery_failed(args.user, type(exc).__name__)
        raise
    audit.recovery_unlocked(result.user)
    emit_unlock_key(args.key_file, result.user, result.unlock_key)
    return 0


def _remove(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.removal import check_last_way_in, plan_remove_recovery, remove_recovery
    from libhmacunlock.store import Store

    store = Store(args.store)
    record = store.read(args.user)  # NotEnrolled / a refused record first
    store.check_writable(args.user, f"hmacunlock recovery remove {args.user} {args.slot}")
    plan = plan_remove_recovery(record, args.slot)
    check_last_way_in(plan, f"Recovery slot {args.slot}", force=args.force, always=True)
    action, unopenable = removal_words(plan, args.slot)
    command = f"hmacunlock recovery remove {args.user} {args.slot}"
    confirm_destructive(TerminalInteraction(), action, unopenable, yes=args.yes, command=command)
    remove_recovery(store, args.user, args.slot, force=args.force)
    audit.recovery_removed(args.user, args.slot, forced=args.force and plan.last_way_in)
    print(f"removed recovery slot {args.slot} of {args.user}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recovery",
        help="recovery key or passphrase for when the security key is lost",
        description="A recovery key (generated, shown once) or passphrase (Argon2id) that "
        "wraps the same unlock key as the user's security keys.",
    )
    sub = p.add_subparsers(dest="recovery_command", metavar="COMMAND", required=True)
    add = sub.add_parser(
        "add",
        help="add a recovery key (printed alone on the last line) or a passphrase",
        description="Unlock with the security key and PIN, then add a recovery slot.",
    )
    add.add_argument("user", metavar="USER")
    add_device_option(add)
    add_store_option(add)
    add.add_argument(
        "--passphrase", action="store_true", help="ask for a passphrase (Argon2id) instead of generating a recovery key"
    )
    add.set_defaults(func=_add)
    un = sub.add_parser(
        "unlock",
        help="unlock USER with the recovery key or passphrase",
        description="Ask the recovery key or passphrase and open the unlock key. Prints "
        "'unlocked USER'; the raw unlock key only with --key-file.",
    )
    un.add_argument("user", metavar="USER")
    add_store_option(un)
    add_key_file_output(un)
    un.set_defaults(func=_unlock)
    rm = sub.add_parser(
        "remove",
        help="remove one of USER's recovery slots",
        description="Remove the recovery slot SLOT (its id as 'hmacunlock list' shows it). Asks first, saying "
        "what becomes unopenable (--yes without a terminal). The user's last way in (no security key left) is kept "
        "unless --force.",
    )
    rm.add_argument("user", metavar="USER")
    rm.add_argument("slot", metavar="SLOT", help="the recovery slot's id")
    add_store_option(rm)
    add_yes_option(rm)
    rm.add_argument("--force", action="store_true", help="remove it even when it is the user's last way in")
    rm.set_defaults(func=_remove)
