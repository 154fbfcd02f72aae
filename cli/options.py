"""Options several command groups share, so each reads and means the same everywhere."""

from __future__ import annotations

import argparse


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", metavar="SPEC", default="auto", help="device spec: auto (default), hid:/dev/hidrawN, udp:HOST:PORT"
    )


def add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="DIR", help="store directory (default /var/lib/hmacunlock)")


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
