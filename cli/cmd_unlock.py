"""`hmacunlock unlock [USER]`, `list`, `remove USER`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from libhmacunlock.errors import HmacUnlockError, PinFloorReached, WrongPin

from .confirm import add_yes_option, confirm_destructive
from .consequences import removal_words
from .keyfile import check_key_file_target, emit_unlock_key
from .options import JSON_SCHEMA, add_credential_option, add_device_option, add_key_file_output, add_store_option
from .pinfloor import add_pin_floor_option, managed_token, with_pin_floor
from .terminal import TerminalInteraction

# --- commands -------------------------------------------------------------------------------------------------


def _unlock(args: argparse.Namespace) -> int:
    from libhmacunlock.unlock import unlock

    check_key_file_target(args.key_file)
    interaction = TerminalInteraction()
    result = with_pin_floor(
        interaction,
        args.pin_floor,
        lambda floor: unlock(
            args.store,
            args.device,
            interaction,
            user=args.user,
            rp_id=args.rp_id,
            clone_policy="warn" if args.warn_cloned else "refuse",
            pin_floor=floor,
        ),
    )
    for warning in result.warnings:
        interaction.say(f"hmacunlock: {warning}")
    emit_unlock_key(args.key_file, result.user, result.unlock_key)
    return 0


def _list(args: argparse.Namespace) -> int:
    from libhmacunlock.records import b64e
    from libhmacunlock.store import Store

    store = Store(args.store)
    entries: list[dict[str, Any]] = []
    failed = 0
    for user in store.users("listing the store needs root: run 'sudo hmacunlock list'"):
        try:
            record = store.read(user)
        except HmacUnlockError as exc:
            failed = int(exc.exit_code)
            entries.append(
                {"user": user, "error": {"type": type(exc).__name__, "message": exc.message, "exit_code": failed}}
            )
            continue
        entries.append(
            {
                "user": user,
                "keys": [
                    {
                        "credential_id": s.credential_id_text,
                        "label": s.label,
                        "rp_id": s.rp_id,
                        "aaguid": b64e(s.aaguid),
                        "sign_count": s.sign_count,
                        "created": s.created,
                    }
                    for s in record.slots
                ],
                "recovery": [{"id": r.id, "kind": r.kind, "created": r.created} for r in record.recovery],
                "targets": [
                    {"type": t.type, "path": t.path, "uuid": t.uuid or None, "token": t.token, "created": t.created}
                    for t in record.dependents()
                ],
            }
        )
    if args.json:  # always one whole JSON document, a broken record's error inside it
        print(json.dumps({"schema": JSON_SCHEMA, "store": str(store.path), "users": entries}, indent=1))
        return failed
    if not entries:
        print(f"No users enrolled in {store.path}.")
    for e in entries:
        if "error" in e:
            print(f"hmacunlock: {e['error']['message']}", file=sys.stderr)
            continue
        print(
            f"{e['user']}: {len(e['keys'])} key{'s' if len(e['keys']) != 1 else ''}, "
            f"{len(e['recovery'])} recovery slot{'s' if len(e['recovery']) != 1 else ''}"
        )
        for k in e["keys"]:
            label = f"  '{k['label']}'" if k["label"] else ""
            print(f"  key {k['credential_id']}{label}  rp {k['rp_id']}  enrolled {k['created']}")
        for r in e["recovery"]:
            print(f"  recovery {r['id']} ({r['kind']})  added {r['created']}")
        for t in e["targets"]:
            what = "LUKS2 volume" if t["type"] == "luks" else "profile"
            print(f"  opens {what} {t['path']}  set up {t['created']}")
    return failed


def _remove(args: argparse.Namespace) -> int:
    from libhmacunlock import audit
    from libhmacunlock.removal import check_last_way_in, plan_remove_key, plan_remove_user, remove_key, remove_user
    from libhmacunlock.store import Store

    store = Store(args.store)
    record = store.read(args.user)  # NotEnrolled / a refused record first
    # the slots whose credentials may still be on a key, read before they go
    slots = [s for s in record.slots if args.credential is None or s.credential_id_text == args.credential]
    store.check_writable(args.user, f"hmacunlock remove {args.user}")
    interaction = TerminalInteraction()
    if args.credential is None:
        plan = plan_remove_user(record)
        check_last_way_in(plan, "the record", force=args.force)
        action, unopenable = removal_words(plan, None)
        command = f"hmacunlock remove {args.user}"
        confirm_destructive(interaction, action, unopenable, yes=args.yes, command=command)
        remove_user(store, args.user, force=args.force)
        audit.removed_user(args.user, forced=args.force and bool(plan.dependents))
        print(f"removed {args.user}")
        _delete_on_key(args, store, slots)
        return 0
    plan = plan_remove_key(record, args.credential)
    check_last_way_in(plan, f"Security key {args.credential}", force=args.force)
    action, unopenable = removal_words(plan, args.credential)
    command = f"hmacunlock remove {args.user} --credential {args.credential}"
    confirm_destructive(interaction, action, unopenable, yes=args.yes, command=command)
    remove_key(store, args.user, args.credential, force=args.force)
    audit.removed_key(args.user, args.credential, forced=args.force and plan.last_way_in and bool(plan.dependents))
    print(f"removed key {args.credential} of {args.user}")
    _delete_on_key(args, store, slots)
    return 0


def _delete_on_key(args: argparse.Namespace, store: Any, slots: list[Any]) -> None:
    """After a removal: delete the removed slots' credentials on the key too, with --delete-on-key, or when the
    person at the terminal says so (the key must be here: the up=false probe finds them, no PIN). Otherwise, or
    when no key here holds them, say how to delete them later."""
    from libhmacunlock import audit
    from libhmacunlock.credentials import delete
    from libhmacunlock.discovery import open_key

    if not slots:
        return
    interaction = TerminalInteraction()
    device = args.device or "auto"

    def later(which: list[Any]) -> None:
        for s in which:
            interaction.say(
                f"The credential {s.credential_id_text} stays on the security key: 'hmacunlock key credentials "
                f"delete {s.credential_id_text} --device D' deletes it there (remove --delete-on-key does both)."
            )

    if not args.delete_on_key and not interaction.interactive:
        later(slots)
        return
    try:
        key = open_key(device, credentials=[(s.rp_id, s.credential_id) for s in slots])
    except HmacUnlockError as exc:
        if args.delete_on_key:
            raise
        interaction.say(f"hmacunlock: {exc.message}")
        later(slots)
        return
    with key:
        # a credProtect-3 credential hides from the probe: it may be there all the same
        present = [s for s in slots if s.cred_protect >= 3 or key.holds_any([(s.rp_id, s.credential_id)])]
        if not present:
            interaction.say(f"The security key ({key.spec}) holds none of the removed credentials.")
            return
        if not args.delete_on_key and not interaction.confirm(
            f"The credential{'s are' if len(present) > 1 else ' is'} still on the security key ({key.spec}). "
            "Delete it there too (asks the key's PIN)? Type 'yes' to delete: ",
            "yes",
        ):
            later(present)
            return
        try:
            token = managed_token(store, key, interaction, args.pin_floor)
        except (PinFloorReached, WrongPin):
            later(present)  # the removal stands; the key step did not happen: say how to do it later
            if args.delete_on_key:
                raise  # it was asked for: the exit says it was not done
            return
        for s in present:
            delete(store, key, token, s.credential_id)
            audit.key_credential_deleted(args.user, s.credential_id_text, s.rp_id)
            print(f"deleted credential {s.credential_id_text} from the security key")


def register(subparsers: argparse._SubParsersAction) -> None:
    u = subparsers.add_parser(
        "unlock",
        help="unlock a user with the security key and PIN",
        description="Ask the PIN once, the key for one touch, and check its answer. Without "
        "USER the key says who (usernameless). Prints 'unlocked USER'; the raw "
        "unlock key only with --key-file.",
    )
    u.add_argument("user", metavar="USER", nargs="?", help="the user (default: whoever the key names)")
    add_device_option(u)
    add_store_option(u)
    add_key_file_output(u)
    u.add_argument("--rp-id", metavar="ID", help="only use credentials of this RP id")
    add_pin_floor_option(u)
    u.add_argument(
        "--warn-cloned",
        action="store_true",
        help="warn instead of refusing when the key's signature counter goes backwards",
    )
    u.set_defaults(func=_unlock)

    ls = subparsers.add_parser(
        "list",
        help="list enrolled users, their keys and recovery slots",
        description="List the store's records (no secrets).",
    )
    add_store_option(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    rm = subparsers.add_parser(
        "remove",
        help="remove a user's record, or one enrolled key of theirs",
        description="Remove USER's whole record, or with --credential only one key slot "
        "(the credential id as 'hmacunlock list' shows it). Asks first, saying what becomes unopenable (--yes "
        "without a terminal). Taking the user's last way in (no key or recovery slot left) is refused while "
        "volumes or profiles set up with their unlock key depend on it, unless --force. The credential stays on "
        "the security key unless it is deleted there too: with --delete-on-key, or at a terminal when the key is "
        "plugged in and you say so.",
    )
    rm.add_argument("user", metavar="USER")
    add_store_option(rm)
    add_credential_option(rm, "the credential id of the key slot to remove (an id starting with '-' is fine)")
    add_yes_option(rm)
    rm.add_argument(
        "--force",
        action="store_true",
        help="remove it even when it is the user's last way in while volumes or profiles depend on it",
    )
    add_device_option(rm)
    rm.add_argument(
        "--delete-on-key",
        action="store_true",
        help="also delete the credential(s) on the key (--device; asks its PIN); at a terminal you are asked",
    )
    add_pin_floor_option(rm)
    rm.set_defaults(func=_remove)
