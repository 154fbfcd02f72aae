"""`hmacunlock unlock [USER]`, `list`, `remove USER`; and the options the key/enroll/recovery commands share."""

from __future__ import annotations

import argparse
import json
import os
import sys

from libhmacunlock.errors import ExitCode, HmacUnlockError

from .terminal import TerminalInteraction


class KeyFileExists(HmacUnlockError):
    """A --key-file target refused: the file exists (never overwritten), or '-' is a terminal."""

    exit_code = ExitCode.USAGE


# --- shared options -------------------------------------------------------------------------------------------


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="SPEC", default="auto",
                   help="device spec: auto (default), hid:/dev/hidrawN, udp:HOST:PORT")


def add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", help="store directory (default /var/lib/hmacunlock)")


def add_key_file_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", metavar="PATH", dest="key_file",
                   help="write the raw 32-byte unlock key to PATH (created 0600; must not exist) or '-' (stdout)")


def check_key_file(path: str | None) -> None:
    """Refuse a --key-file target before asking for anything: a terminal, or a file that already exists."""
    if path == "-" and sys.stdout.isatty():
        raise KeyFileExists("Refusing to print the raw unlock key on a terminal: redirect or pipe it.")
    if path and path != "-" and os.path.lexists(path):
        raise KeyFileExists(f"{path} already exists; the unlock key is only written to a new file.")


def emit_unlock_key(path: str | None, user: str, unlock_key: bytes) -> None:
    """Only when asked: the raw unlock key to stdout ('-', nothing else printed) or a new 0600 file."""
    if path == "-":
        if sys.stdout.isatty():
            raise KeyFileExists("Refusing to print the raw unlock key on a terminal: redirect or pipe it.")
        sys.stdout.flush()
        sys.stdout.buffer.write(unlock_key)
        sys.stdout.buffer.flush()
        return
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise KeyFileExists(f"{path} already exists; the unlock key is only written to a new file.") from None
        except OSError as exc:
            raise KeyFileExists(f"Cannot create {path}: {exc.strerror}.") from None
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, unlock_key)
            os.fsync(fd)
        finally:
            os.close(fd)
    print(f"unlocked {user}")


# --- commands -------------------------------------------------------------------------------------------------


def _unlock(args: argparse.Namespace) -> int:
    from libhmacunlock.unlock import unlock

    check_key_file(args.key_file)
    interaction = TerminalInteraction()
    result = unlock(args.store, args.device, interaction, user=args.user, rp_id=args.rp_id,
                    clone_policy="warn" if args.warn_cloned else "refuse")
    for warning in result.warnings:
        interaction.tell(f"hmacunlock: {warning}")
    emit_unlock_key(args.key_file, result.user, result.unlock_key)
    return 0


def _list(args: argparse.Namespace) -> int:
    from libhmacunlock.records import b64e
    from libhmacunlock.store import Store

    store = Store(args.store)
    entries, failed = [], 0
    for user in store.users():
        try:
            record = store.read(user)
        except HmacUnlockError as exc:
            print(f"hmacunlock: {exc.message}", file=sys.stderr)
            failed = int(exc.exit_code)
            continue
        entries.append({
            "user": user,
            "keys": [{"credential_id": s.credential_id_text, "rp_id": s.rp_id, "aaguid": b64e(s.aaguid),
                      "sign_count": s.sign_count, "created": s.created} for s in record.slots],
            "recovery": [{"id": r.id, "kind": r.kind, "created": r.created} for r in record.recovery],
        })
    if args.json:
        print(json.dumps({"store": str(store.path), "users": entries}, indent=1))
    else:
        for e in entries:
            print(f"{e['user']}: {len(e['keys'])} key{'s' if len(e['keys']) != 1 else ''}, "
                  f"{len(e['recovery'])} recovery slot{'s' if len(e['recovery']) != 1 else ''}")
            for k in e["keys"]:
                print(f"  key {k['credential_id']}  rp {k['rp_id']}  enrolled {k['created']}")
            for r in e["recovery"]:
                print(f"  recovery {r['id']} ({r['kind']})  added {r['created']}")
    return failed


def _remove(args: argparse.Namespace) -> int:
    from libhmacunlock.errors import NotEnrolled
    from libhmacunlock.store import Store

    store = Store(args.store)
    store.read(args.user)  # NotEnrolled / a refused record before anything else (and before creating a lock file)
    with store.locked(args.user):
        record = store.read(args.user)
        if args.credential is None:
            store.remove(args.user)
            print(f"removed {args.user}")
            return 0
        kept = tuple(s for s in record.slots if s.credential_id_text != args.credential)
        if len(kept) == len(record.slots):
            raise NotEnrolled(args.user, f"no enrolled key has credential id {args.credential}")
        store.write(record.with_(slots=kept))
    print(f"removed key {args.credential} of {args.user} (the credential stays on the key until you delete it "
          "there)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    u = subparsers.add_parser("unlock", help="unlock a user with the security key and PIN",
                              description="Ask the PIN once, the key for one touch, and check its answer. Without "
                                          "USER the key says who (usernameless). Prints 'unlocked USER'; the raw "
                                          "unlock key only with --key-file.")
    u.add_argument("user", metavar="USER", nargs="?", help="the user (default: whoever the key names)")
    add_device_option(u)
    add_store_option(u)
    add_key_file_option(u)
    u.add_argument("--rp-id", metavar="ID", help="only use credentials of this RP id")
    u.add_argument("--warn-cloned", action="store_true",
                   help="warn instead of refusing when the key's signature counter goes backwards")
    u.set_defaults(func=_unlock)

    ls = subparsers.add_parser("list", help="list enrolled users, their keys and recovery slots",
                               description="List the store's records (no secrets).")
    add_store_option(ls)
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)

    rm = subparsers.add_parser("remove", help="remove a user's record, or one enrolled key of theirs",
                               description="Remove USER's whole record, or with --credential only one key slot "
                                           "(the credential id as 'hmacunlock list' shows it).")
    rm.add_argument("user", metavar="USER")
    add_store_option(rm)
    rm.add_argument("--credential", metavar="ID", help="the credential id of the key slot to remove")
    rm.set_defaults(func=_remove)
