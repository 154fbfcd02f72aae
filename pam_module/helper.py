"""The child that pam_hmacunlock.so runs: `python -I -m hmacunlock_pam.helper`, stdin/stdout = the module's socket.

It reads the request, runs the library's unlock behind the PIN guard (throttle, probe, floor: nobody is asked for
a PIN that a check could have saved), asks for the PIN through the module's PAM conversation, and answers one
verdict (PROTOCOL.md). Its first frame (an L) goes out as soon as the request is read, before anything slow: a
warm helper's child that sends none is taken for busy, and the module spawns a helper instead. The PIN prompt
comes after the guard's checks (the record, the key, the up=false probe, the floor) and the key agreement, or, in a
warm child whose key-agreement witness vouches for the checks, at once, the agreement fetched and compared while
the person types (pinguard.py); after Enter: the checks a miss still needs, the throttle's charge, the PIN token,
the assertion, the checks, the verdict. The throttle's clearing comes after the verdict, before the end of file;
the salt rotation's record write after both (`finish`), under the store lock.

Exit status 0 means "my verdict stands"; the module believes no verdict from a helper that exits otherwise. A
spawned helper exits 0 right after its verdict: the record write is finished by a forked child that holds the
store lock (the lock is the open file's, shared across fork), so the module does not wait for it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .protocol import Channel, Frame, ProtocolError, Request, Verdict

if TYPE_CHECKING:
    from libhmacunlock.config import Config
    from libhmacunlock.interaction import Event, Purpose, SecretKind
    from libhmacunlock.keyinfo import InfoCache
    from libhmacunlock.store import Store
    from libhmacunlock.throttle import Throttle
    from libhmacunlock.unlock import Verified

_STARTED = time.monotonic()

PIN_PROMPT = "Security key PIN: "
STARTED = "started"  # the first frame's text (an L frame)


def prctl(option: int, value: int = 0) -> int:
    """prctl(2) through libc (Python has no binding); OSError on failure."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(option, value, 0, 0, 0)
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def harden() -> None:
    """No core dumps and no ptrace by same-uid processes: this process will hold a PIN and an unlock key."""
    import resource

    pr_set_dumpable, pr_get_dumpable = 4, 3
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    prctl(pr_set_dumpable, 0)
    if prctl(pr_get_dumpable) != 0:
        raise OSError(0, "prctl(PR_SET_DUMPABLE, 0) did not take")


def load_library() -> None:
    """What the sign-in needs (a warm helper has it imported already)."""
    import socket  # noqa: F401  (Channel.end, after the verdict)

    import libhmacunlock.unlock  # noqa: F401  (pulls in fido2 and cryptography)


class PamInteraction:
    """libhmacunlock's Interaction rendered as PAM conversation turns over the module's channel.

    Every PIN prompt reads PIN_PROMPT whatever its purpose, or names the key by its label ("PIN of 'backup-nano': ");
    the touch cue only with `cue` (as pam-u2f does), in the admin's words if cue_prompt= is set; the touch before
    the PIN (touch_first) always, nobody expects it; info events (warnings, a retry) always.

    Under PAM_SILENT (sudo before 1.9.16 passes it to every sign-in) the module shows no PAM_TEXT_INFO, so what
    the person must see goes another way: an info event (the attempts left) rides in the text of the next prompt,
    a cue that cannot wait (touch the key) and the reason for a failure go as E frames (PAM_ERROR_MSG), which the
    module always shows."""

    def __init__(self, chan: Channel, request: Request) -> None:
        self._chan = chan
        self._request = request
        self._held: list[str] = []  # under PAM_SILENT: for the next prompt, or the final message

    def ask_pin(self, purpose: Purpose, key_label: str | None = None, attempts_left: int | None = None) -> str:
        # a labelled key is named (`enroll --label`): "PIN of 'backup-nano': "; the label was checked on reading
        return self._ask(PIN_PROMPT if not key_label else f"PIN of '{key_label}': ")

    def ask_secret(self, kind: SecretKind, subject: str | None = None) -> str:
        from libhmacunlock.interaction import secret_prompt

        return self._ask(secret_prompt(kind, subject))

    def _ask(self, prompt: str, kind: Frame = Frame.PROMPT_SECRET) -> str:
        text = "\n".join([*self._held, prompt])
        self._held.clear()
        self._chan.send(kind, text)
        answer = self._chan.read_secret()
        if answer is None:
            from libhmacunlock.errors import Cancelled

            raise Cancelled("The PIN prompt was cancelled." if kind is Frame.PROMPT_SECRET else "No account chosen.")
        return answer

    def confirm_secret(self, kind: SecretKind, subject: str | None = None) -> str | None:
        return None

    def touch(self, purpose: Purpose) -> None:
        from libhmacunlock.interaction import Purpose, touch_text

        if purpose is Purpose.PRESENCE_FIRST:
            self._now(touch_text(purpose))
        elif self._request.cue:
            self._now(self._request.cue_prompt or touch_text(purpose))

    def _now(self, text: str) -> None:
        """Must be seen now: no prompt follows before the person has to act."""
        self._chan.send(Frame.ERROR if self._request.silent else Frame.INFO, text)

    def info(self, event: Event) -> None:
        """Must be seen before the next prompt (a retry: 'Wrong PIN: 6 attempts left'), or a warning."""
        if self._request.silent:
            self._held.append(event.text)
        else:
            self._chan.send(Frame.INFO, event.text)

    def final(self, text: str | None) -> str | None:
        """The failure's message with what no prompt carried (PAM_SILENT), for one E frame."""
        lines = [*self._held, *([text] if text else [])]
        self._held.clear()
        return "\n".join(lines) or None

    def choose_account(self, names: Sequence[str]) -> str | None:
        """Usernameless with several accounts on the key: "Which account?" with echo (an A frame), the numbered
        list in the prompt's own text (so PAM_SILENT shows it too), asked again after an answer that is neither a
        number of the list nor one of its names. None after MAX_CHOICE_ANSWERS such answers (AmbiguousUser); a
        conversation that gives no answer is Cancelled."""
        from libhmacunlock.interaction import (
            CHOICE_PROMPT,
            MAX_CHOICE_ANSWERS,
            account_choice,
            account_list,
            choice_retry_text,
        )

        listing = account_list(names)
        for _ in range(MAX_CHOICE_ANSWERS):
            chosen = account_choice(self._ask(f"{listing}\n{CHOICE_PROMPT}", Frame.PROMPT_ECHO), names)
            if chosen is not None:
                return chosen
            self._held.append(choice_retry_text(names))
        self._held.clear()
        return None

    def log(self, text: str) -> None:
        if self._request.debug:
            self._chan.send(Frame.LOG, text)

    def mark(self, step: str) -> None:
        """Under `debug`, when each step ended, in ms since the helper's code started (for the benchmark)."""
        self.log(f"timing: {step} {(time.monotonic() - _STARTED) * 1000:.1f} ms")


class SignedIn(NamedTuple):
    """A verified sign-in, its verdict still to be given; after it, `finish` clears `throttles` and commits."""

    verified: Verified
    throttles: tuple[Throttle, ...]


def _sign_in(
    interaction: PamInteraction, request: Request, info_cache: InfoCache | None, clone_policy: str = "refuse"
) -> SignedIn:
    """The throttle, then the unlock with retries. Every PIN sent to the key is charged to the throttle right
    before it goes (the PIN guard's `charge`, after every check that could refuse it: a PIN typed in vain is not
    charged; nor is anything where no PIN was sent: a key already soft-locked, the floor reached, no key holding
    the credential). A verified unlock clears the count, after the verdict (finish)."""
    from libhmacunlock.store import Store
    from libhmacunlock.throttle import Throttle

    store = Store(request.store)
    if request.nouserok:
        _require_record(store, request)
    throttle = Throttle(store, request.user)  # usernameless (user None): the count those sign-ins share
    throttle.check()  # before anything is asked or sent to the key
    verified = _unlock_with_retries(interaction, store, request, throttle, info_cache, clone_policy)
    if request.user is None:  # the key named the user, and the user proved the PIN: their own count is cleared too
        return SignedIn(verified, (throttle, Throttle(store, verified.result.user)))
    return SignedIn(verified, (throttle,))


def _unlock_with_retries(
    interaction: PamInteraction,
    store: Store,
    request: Request,
    throttle: Throttle,
    info_cache: InfoCache | None = None,
    clone_policy: str = "refuse",
) -> Verified:
    """Run the library's unlock up to the verified result, re-asking the PIN after a wrong one, up to max_tries.
    Each attempt goes through the PIN guard again: after a wrong PIN that left the key at its floor, the next one
    is not asked; each PIN sent is charged to `throttle` first."""
    from libhmacunlock.errors import WrongPin
    from libhmacunlock.interaction import WrongPinRetry
    from libhmacunlock.unlock import unlock_verified

    for attempt in range(1, request.max_tries + 1):
        try:
            return unlock_verified(
                store,
                request.device or "auto",
                interaction,
                user=request.user,
                rp_id=request.rp_id,
                clone_policy=clone_policy,
                info_cache=info_cache,
                pin_floor=request.pin_floor,
                touch_first=request.touch_first and attempt == 1,
                is_account=_local_account if request.user is None else None,
                charge=throttle.charge,
            )
        except WrongPin as exc:
            from libhmacunlock import audit  # only on failure

            audit.failure(request.user, exc, via="pam")
            interaction.log(f"wrong PIN, attempt {attempt} of {request.max_tries}")
            if attempt == request.max_tries:
                raise
            interaction.info(WrongPinRetry(exc.attempts_left))
    raise AssertionError("unreachable")


def _local_account(name: str) -> bool:
    """A usernameless sign-in names only an account of this machine (the module checks it again)."""
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _who(request: Request) -> str:
    """The user as the log names them before the key has said who (usernameless)."""
    return f"user {request.user}" if request.user is not None else "usernameless sign-in"


def serve(
    chan: Channel, info_cache: InfoCache | None = None, admit: Callable[[Request], bool] | None = None
) -> SignedIn | None:
    """One sign-in: request in, conversation turns, exactly one verdict out. A success's record write and the
    throttle's clearing are left to the caller (finish), after the verdict: the Verified holds the store lock until
    then. `admit` (the warm
    helper's per-caller cap): a request it refuses gets no frame at all, so the module spawns a helper instead."""
    try:
        harden()
    except OSError:
        chan.send(Frame.VERDICT, f"{Verdict.SYSTEM_ERR.value}\nhelper could not make itself undumpable")
        return None
    raw = _read_request(chan)
    try:
        config = _load_config()
    except Exception as exc:  # noqa: BLE001 - ConfigError (file and line) or an unreadable file: not a sign-in
        chan.send(Frame.ERROR, "Security key sign-in is not configured correctly (see the system log).")
        chan.send(Frame.VERDICT, f"{Verdict.SYSTEM_ERR.value}\n{getattr(exc, 'message', type(exc).__name__)}")
        return None
    request = Request.parse(raw, defaults={k: v for k, v in config._asdict().items() if k in _CONFIGURABLE and v})
    if admit is not None and not admit(request):
        return None  # nothing said, nothing asked: the module sees end of file before a first frame
    chan.send(Frame.LOG, STARTED)  # at once: the module knows a (warm) helper is there before anything slow
    if request.session:  # lock_on_logout's open/close_session: no key, no PIN (profiles.py)
        from .profiles import serve_session

        serve_session(chan, request)
        return None
    interaction = PamInteraction(chan, request)
    try:
        load_library()
        interaction.mark("library loaded")
        signed_in = _sign_in(interaction, request, info_cache, config.clone_policy or "refuse")
        interaction.mark("unlocked")
    except ProtocolError:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a verdict; none is a success
        from .verdicts import verdict_for  # only on failure

        if type(exc).__name__ != "WrongPin":  # each wrong PIN was logged as it happened (_unlock_with_retries)
            from libhmacunlock import audit

            audit.failure(request.user, exc, via="pam")
        verdict, shown = verdict_for(exc, nouserok=request.nouserok)
        interaction.log(f"unlock failed: {type(exc).__name__} -> {verdict.value}")
        shown = interaction.final(shown)
        if shown:
            chan.send(Frame.ERROR, shown)
        from libhmacunlock.errors import UnknownAccount

        detail = f" ({', '.join(exc.users)})" if isinstance(exc, UnknownAccount) else ""  # for the admin's log
        chan.send(Frame.VERDICT, f"{verdict.value}\n{_who(request)}: {type(exc).__name__}{detail}")
        return None
    result = signed_in.verified.result
    user = result.user  # the record the assertion verified: named or usernameless, this is who signed in
    problems: list[str] = []
    if request.profile or request.profile_record:
        from .profiles import unlock_profiles

        problems = unlock_profiles(chan, interaction.log, request, user, result.unlock_key)
        interaction.mark("profile done")
    said = "".join(f"; {p}" for p in problems)  # the module logs the verdict's line: a profile problem reaches syslog
    if request.user is None:
        chan.send(Frame.USER, user)  # the module checks it is an account, then sets PAM_USER
    chan.send(Frame.VERDICT, f"{Verdict.SUCCESS.value}\nuser {user}: unlocked with the security key{said}")
    return signed_in


def finish(chan: Channel, signed_in: SignedIn | None, detach: bool) -> None:
    """After the verdict: a success's throttle count cleared (before the end of file, which the module waits for:
    the PAM host returns only after it, so the user's next sign-in never sees this one's PIN counted), end of file
    for the module, then the record write (salt rotation, sign count).

    detach (a spawned helper, whose exit the module waits for): the write is done by a forked child, which shares
    the store lock's open file and so keeps the lock after this process exits; this one returns at once. If it
    cannot fork, it is done here. A write that fails, or a child that dies, leaves the old record, which still
    opens (its salt is the one the key just answered for)."""
    if signed_in is not None:
        _clear(signed_in.throttles)
    chan.end()
    if signed_in is None:
        return
    verified = signed_in.verified
    if detach:
        try:
            pid = os.fork()
        except OSError:
            pid = -1
        if pid == 0:  # the writer: nothing of the sign-in is left to say, and nobody to say it to
            status = 0
            try:
                verified.commit()
            except BaseException:  # noqa: BLE001 - the old record stays; there is no one to tell
                status = 1
            finally:
                os._exit(status)
        if pid > 0:
            # The child holds the lock now. Close this process's copies of the lock's and the key's descriptors
            # (a flock lives on while the child's copy is open): a caller that goes on living, such as a test
            # calling finish() in-process, must not keep the key's device lock, which made a later sign-in on a
            # software key that happened to get the same UDP port wait and fail as KeyBusy.
            verified.abandon()
            return
    verified.commit()


def _clear(throttles: Sequence[Throttle]) -> None:
    """A verified sign-in clears the counts its PINs were charged to. One that cannot be cleared stays (the next
    sign-in may wait for it); the sign-in stands."""
    for throttle in throttles:
        try:
            throttle.succeeded()
        except Exception:  # noqa: BLE001, S112 - after a verified sign-in: nothing to undo, nobody to tell
            continue


_CONFIGURABLE = frozenset({"store", "device", "rp_id", "max_tries", "cue", "cue_prompt"})


def _load_config() -> Config:
    """The installed system file's defaults (none in a source tree: libhmacunlock.config)."""
    from libhmacunlock.config import load

    return load()


def _require_record(store: Store, request: Request) -> None:
    """With nouserok, someone with no record is passed on to the next method without being asked for a PIN.

    A record that is there but unsafe or broken still gets the full unlock, which refuses it (auth_err), never
    the silent pass. (Without nouserok the unlock itself refuses a user with no record, before any prompt.)
    """
    from libhmacunlock.errors import NoRecord

    if request.user is not None and not store.exists(request.user):
        raise NoRecord(request.user)


def _read_request(chan: Channel) -> bytes:
    kind, payload = chan.read()
    if kind is not Frame.REQUEST:
        raise ProtocolError(f"expected the request, got {kind.name}")
    return bytes(payload)


def main(
    chan: Channel | None = None, info_cache: InfoCache | None = None, admit: Callable[[Request], bool] | None = None
) -> int:
    """Serve one sign-in on `chan` (default: stdin/stdout, as the module spawns us); the exit status. Spawned (no
    `chan`), the record write after the verdict is left to a forked child (finish)."""
    detach = chan is None
    chan = chan or Channel(0, 1)
    try:
        finish(chan, serve(chan, info_cache, admit), detach)
    except ProtocolError:
        return 2  # the module sees a non-zero exit and fails closed; there is nobody sane to answer
    except OSError:
        return 3  # the channel broke (module gone or timed out)
    return 0


def _exit_after_verdict() -> None:
    """The verdict is out (frames go straight to the socket with os.write): end now, skipping the interpreter's
    teardown (module and thread finalisation, ~14 ms per sign-in) that the module would otherwise wait for."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr is /dev/null and nothing writes to stdout but the channel: nothing to lose
    for fd in (0, 1):  # the module's end has seen end of file already (Channel.end)
        try:
            os.close(fd)
        except OSError:
            pass
    os._exit(0)


if __name__ == "__main__":
    status = main()
    if status == 0:
        _exit_after_verdict()
    sys.exit(status)
