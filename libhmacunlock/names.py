"""What a user name and an RP id must look like before anything is asked of the key (no PIN spent on a typo).

A user name is an account name as `useradd` makes them (letters, digits, `.`, `_`, `-`, `@` for directory users,
a trailing `$` for machine accounts; not starting with `-`): "Alice Smith" or " " cannot be anybody's login. An RP
id is a domain-shaped name (lowercase labels of letters, digits and `-`, joined by dots), as WebAuthn and the
default `hmacunlock.<hostname>` are; an empty one is refused rather than silently replaced by the default.
"""

from __future__ import annotations

import re

from .errors import InvalidName

MAX_USER_NAME = 200  # the store's limit on a record's file name
MAX_RP_ID = 253  # a DNS name's

_USER = re.compile(r"[A-Za-z0-9_.@][A-Za-z0-9_.@-]*\$?")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_RP_ID = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def check_user_name(user: str) -> str:
    """`user` if it is shaped like an account name; InvalidName otherwise."""
    if not isinstance(user, str) or not _USER.fullmatch(user) or len(user) > MAX_USER_NAME:
        raise InvalidName(
            f"{user!r} is not a user name: use the account's login name (letters, digits, '.', '_', '-', '@'; "
            f"no spaces; at most {MAX_USER_NAME} characters), as 'id -un' prints it."
        )
    return user


def check_rp_id(rp_id: str) -> str:
    """`rp_id` if it is domain-shaped (e.g. hmacunlock.myhost); InvalidName otherwise (also for "")."""
    if not isinstance(rp_id, str) or not _RP_ID.fullmatch(rp_id) or len(rp_id) > MAX_RP_ID:
        raise InvalidName(
            f"{rp_id!r} is not an RP id: use a domain-shaped name of lowercase letters, digits, '-' and dots "
            "(e.g. hmacunlock.myhost), or leave --rp-id out for the default hmacunlock.<hostname>."
        )
    return rp_id


MAX_KEY_LABEL = 32  # a key's label (`enroll --label`): short enough for a PIN prompt


def is_key_label(label: object) -> bool:
    """A key label as it may be shown in a prompt: 1 to MAX_KEY_LABEL printable characters, no quote, no leading
    or trailing space (a record's label is checked with this too: it reaches terminals and PAM prompts)."""
    return (
        isinstance(label, str)
        and 0 < len(label) <= MAX_KEY_LABEL
        and label.isprintable()
        and label == label.strip()
        and not any(q in label for q in "'\"`")
    )


def check_label(label: str) -> str:
    """`label` if it is a usable key label (is_key_label); InvalidName otherwise."""
    if not is_key_label(label):
        raise InvalidName(
            f"{label!r} is not a key label: use 1 to {MAX_KEY_LABEL} printable characters (e.g. backup-nano), "
            "no quotes, no leading or trailing spaces."
        )
    return label
