"""The PIN floor at the command line (libhmacunlock.pinguard): at `--pin-floor` attempts left or fewer the key is
not asked, except at a terminal after the person explicitly says so (a script never goes below the floor)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from libhmacunlock.errors import PinFloorReached
from libhmacunlock.interaction import Interaction
from libhmacunlock.pinguard import DEFAULT_FLOOR

from .terminal import TerminalInteraction

if TYPE_CHECKING:
    from libhmacunlock.device import Key, Token
    from libhmacunlock.store import Store

T = TypeVar("T")
GO_ON = "yes"


def add_pin_floor_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pin-floor",
        metavar="N",
        type=int,
        choices=range(1, 9),
        default=DEFAULT_FLOOR,
        help="at N PIN attempts left or fewer, try the PIN only at a terminal after you type yes "
        f"(default {DEFAULT_FLOOR})",
    )


def below_floor_allowed(interaction: Interaction, exc: PinFloorReached) -> bool:
    """True only when a person at a terminal typed 'yes' (off a terminal, or another renderer: nobody is asked)."""
    if not isinstance(interaction, TerminalInteraction):
        return False
    interaction.say(f"hmacunlock: {exc.message}")
    return interaction.confirm(
        f"Try the PIN anyway with {exc.attempts_left} attempt{'s' if exc.attempts_left != 1 else ''} left? "
        f"Type '{GO_ON}' to go on: ",
        GO_ON,
    )


def with_pin_floor(interaction: Interaction, floor: int, run: Callable[[int], T], purpose: str | None = None) -> T:
    """run(floor); at the floor, run(0) once more if the person at the terminal says so. `purpose`: what the PIN is
    for, in the refusal's words ("to change it"); None: an unlock."""
    try:
        return run(floor)
    except PinFloorReached as exc:
        worded = exc if purpose is None else PinFloorReached(exc.attempts_left, exc.floor, purpose)
        if not below_floor_allowed(interaction, worded):
            raise worded from None
    return run(0)


def managed_token(store: Store | str | None, key: Key, interaction: Interaction, floor: int) -> Token:
    """`key credentials`' PIN token (credential management), behind the floor: at `floor` attempts left or fewer,
    only after 'yes' at a terminal."""
    from libhmacunlock.credentials import cm_token
    from libhmacunlock.interaction import Purpose

    return with_pin_floor(
        interaction,
        floor,
        lambda f: cm_token(store, key, lambda: interaction.ask_pin(Purpose.MANAGE_CREDENTIALS), f),
        "to list or delete its credentials",
    )
