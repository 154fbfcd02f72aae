"""The raw unlock key on its way out of one command and into another (`--key-file PATH|-`).

It is the one secret the CLI hands over on purpose, so both directions refuse what could leak it: printing it on a
terminal, writing over an existing file, reading a file that others can read.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys

from libhmacunlock.errors import ExitCode, HmacUnlockError
from libhmacunlock.interaction import Interaction
from libhmacunlock.keys import UNLOCK_KEY_SIZE


class KeyFileError(HmacUnlockError):
    """A --key-file refused: an existing file (never overwritten), '-' on a terminal, or a file that is not
    exactly 32 raw bytes, unreadable, or readable by others."""

    exit_code = ExitCode.USAGE


def check_key_file_target(path: str | None) -> None:
    """Refuse a --key-file target before asking for anything: a terminal, or a file that already exists."""
    if path == "-" and sys.stdout.isatty():
        raise KeyFileError("Refusing to print the raw unlock key on a terminal: redirect or pipe it.")
    if path and path != "-" and os.path.lexists(path):
        raise KeyFileError(f"{path} already exists; the unlock key is only written to a new file.")


def emit_unlock_key(path: str | None, user: str, unlock_key: bytes) -> None:
    """Only when asked: the raw unlock key to stdout ('-', nothing else printed) or a new 0600 file."""
    if path == "-":
        check_key_file_target(path)
        sys.stdout.flush()
        sys.stdout.buffer.write(unlock_key)
        sys.stdout.buffer.flush()
        return
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{path} already exists; the unlock key is only written to a new file.") from None
        except OSError as exc:
            raise KeyFileError(f"Cannot create {path}: {exc.strerror}.") from None
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, unlock_key)
            os.fsync(fd)
        finally:
            os.close(fd)
    print(f"unlocked {user}")


def read_unlock_key_file(path: str, more_input: bool = False) -> bytes:
    """The raw unlock key from a file or stdin; a file others can read is refused (it is a secret).

    From stdin the key is the first 32 bytes; when `more_input` (a prompt follows: the volume's passphrase) the
    rest is left for it, otherwise anything after the key is refused rather than ignored.
    """
    if path == "-":
        data = sys.stdin.buffer.read(UNLOCK_KEY_SIZE if more_input else UNLOCK_KEY_SIZE + 1)
    else:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                    raise KeyFileError(
                        f"{path} is readable or writable by others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}); an unlock key file must be 0600."
                    )
                data = f.read(UNLOCK_KEY_SIZE + 1)
        except OSError as exc:
            raise KeyFileError(f"Cannot read the unlock key file {path}: {exc.strerror}.") from None
    if len(data) != UNLOCK_KEY_SIZE:
        raise KeyFileError(f"The unlock key file {path} must hold exactly {UNLOCK_KEY_SIZE} raw bytes.")
    return data


class KeyFileNotTheUsers(KeyFileError):
    """`profile setup USER DIR --key-file F`: USER's record wraps another unlock key than F's, so USER's sign-in
    would never unlock what F sets up."""

    def __init__(self, user: str, path: str, what: str) -> None:
        super().__init__(
            f"The unlock key in {path} is not {user}'s: {user}'s record wraps another one (a key file of an older "
            f"enrollment, or another user's), so {user}'s sign-in would never unlock {what}. Nothing was changed. "
            f"Get {user}'s unlock key with 'hmacunlock unlock {user} --key-file FILE' (or leave --key-file out to "
            "use the security key and its PIN)."
        )


def refuse_a_key_file_not_the_users(args: argparse.Namespace, user: str, unlock_key: bytes, what: str) -> None:
    """Before the target is touched: an unlock key from --key-file that USER's record says is another one."""
    from libhmacunlock.dependents import unlock_key_is_users

    if args.unlock_key_file and unlock_key_is_users(args.store, user, unlock_key) is False:
        raise KeyFileNotTheUsers(user, args.unlock_key_file, what)


def obtain_unlock_key(
    args: argparse.Namespace, interaction: Interaction, user: str | None, more_input: bool = False
) -> tuple[str | None, bytes]:
    """(user, unlock key): from --key-file, or from the security key and its PIN (usernameless if no user)."""
    if args.unlock_key_file:
        return user, read_unlock_key_file(args.unlock_key_file, more_input)
    from libhmacunlock.pinguard import DEFAULT_FLOOR
    from libhmacunlock.unlock import unlock

    from .pinfloor import with_pin_floor

    result = with_pin_floor(
        interaction,
        getattr(args, "pin_floor", DEFAULT_FLOOR),
        lambda floor: unlock(args.store, args.device, interaction, user=user, pin_floor=floor),
    )
    return result.user, result.unlock_key
