"""What depends on a user's unlock key, at the command line: the words of a removal's confirmation (what it takes,
what it leaves unopenable; cli/confirm.py asks, libhmacunlock/removal.py decides), and noting a volume or profile
newly set up with it (libhmacunlock/dependents.py)."""

from __future__ import annotations

from libhmacunlock.records import Target
from libhmacunlock.removal import Plan, lost

from .terminal import TerminalInteraction


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(plan: Plan) -> str:
    names = [t.description for t in plan.dependents]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _gone(plan: Plan) -> str:
    """After the last way in is gone: what the noted volumes and profiles still open with."""
    if plan.dependents:
        text = lost(plan.dependents)
        return text[0].upper() + text[1:] + "."
    return (
        "No volume or profile is noted in the record ('luks enroll' and 'profile setup' note them); one set up with "
        "this unlock key before they did would no longer open with it."
    )


def removal_words(plan: Plan, slot_id: str | None) -> tuple[str, str | None]:
    """(what is about to happen, what becomes unopenable or None) for confirm_destructive. `slot_id`: the
    credential id or recovery slot id removed (None: the whole record)."""
    before, after, user = plan.before, plan.after, plan.before.user
    if after is None:
        action = (
            f"This removes {user}'s whole record ({_count(len(before.slots), 'security key')}, "
            f"{_count(len(before.recovery), 'recovery slot')}): their unlock key is gone for good (enrolling again "
            "makes a new one)."
        )
        return action, _gone(plan)
    removed_key = len(after.slots) < len(before.slots)
    what = f"security key {slot_id}" if removed_key else f"recovery slot {slot_id}"
    if plan.last_way_in:
        return (
            f"This removes {user}'s {what}, the last way to open their unlock key: it is gone for good.",
            _gone(plan),
        )
    if plan.only_recovery_left:
        slots = ", ".join(r.id for r in after.recovery)
        opened = f"{_names(plan)} will no longer open with a key" if plan.dependents else "Nothing opens with a key"
        return (
            f"This removes {user}'s last security key ({slot_id}): {user} can no longer sign in with a security key.",
            f"{opened}; only the recovery key or passphrase (slot {slots}) opens their unlock key then.",
        )
    if removed_key:
        left = _count(len(after.slots), "other security key") + (
            f" and {_count(len(after.recovery), 'recovery slot')}" if after.recovery else ""
        )
        return (
            f"This removes {user}'s {what} from their record: it no longer signs {user} in or opens their unlock key "
            f"({left} still do).",
            None,
        )
    unopenable = None
    if not after.recovery:
        what_opens = _names(plan) if plan.dependents else "their unlock key"
        unopenable = f"It is {user}'s last recovery slot: if their security keys are lost, nothing opens {what_opens}."
    return f"This removes {user}'s {what}: it no longer opens their unlock key.", unopenable


def note_dependent(
    store: str | None, user: str, target: Target, unlock_key: bytes, interaction: TerminalInteraction
) -> None:
    """Note in USER's record that `target` now depends on their unlock key; a note that cannot be written, or that
    has no record to go in, is said, not fatal (the volume or profile is set up either way)."""
    from libhmacunlock import dependents
    from libhmacunlock.errors import HmacUnlockError

    try:
        if not dependents.note(store, user, target, unlock_key):
            interaction.say(
                f"hmacunlock: {target.path} is not noted in a record: {user} has no record here that wraps this "
                f"unlock key, so 'hmacunlock remove' will not know that it depends on it, and a sign-in does not "
                "unlock it by the record."
            )
    except HmacUnlockError as exc:
        interaction.say(
            f"hmacunlock: {target.path} could not be noted in {user}'s record ({exc.message}); 'hmacunlock remove' "
            f"will not know that it depends on {user}'s unlock key."
        )


def forget_dependent(store: str | None, user: str, target: Target, interaction: TerminalInteraction) -> None:
    """Drop USER's note of `target` (taken off); a record that cannot be written is said, not fatal."""
    from libhmacunlock import dependents
    from libhmacunlock.errors import HmacUnlockError

    try:
        dependents.forget(store, user, target)
    except HmacUnlockError as exc:
        interaction.say(f"hmacunlock: {target.path} is still noted in {user}'s record ({exc.message}).")
