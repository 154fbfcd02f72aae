"""`hmacunlock softkey serve`: run the software security key over CTAPHID/UDP in the foreground.

One line on stdout once the socket is bound (it names the real port). SIGHUP unplugs the key and plugs it back in
(tokens, key agreement and the 3-wrong-PINs lock are dropped); SIGTERM and SIGINT end it cleanly with exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from libhmacunlock.errors import HmacUnlockError, StoreError

if TYPE_CHECKING:  # imported where used: `softkey` commands only pay for the software key when they run
    from libhmacunlock.softkey.authenticator import Authenticator
    from libhmacunlock.softkey.presence import PresencePolicy

SIGNALS = {signal.SIGHUP, signal.SIGTERM, signal.SIGINT}


class ListenFailed(HmacUnlockError):
    """The UDP address cannot be bound (in use, not local, bad host)."""


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (PORT may be 0; HOST may be [v6]) -> (host, port); argparse turns ValueError into a usage error."""
    host, sep, port = text.removeprefix("udp:").rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:0), got {text!r}")
    return host, int(port)


def _presence(mode: str, timeout: float) -> PresencePolicy:
    from libhmacunlock.softkey.presence import PresencePolicy

    if mode == "prompt":
        return PresencePolicy.prompt(timeout=timeout)
    return PresencePolicy.deny() if mode == "deny" else PresencePolicy.approve()


def _open_authenticator(state_path: str, presence: PresencePolicy, profile: str = "ctap21") -> Authenticator:
    from libhmacunlock.softkey.authenticator import Authenticator
    from libhmacunlock.softkey.errors import KeyStateError
    from libhmacunlock.softkey.state import KeyState

    try:
        state = KeyState.open(state_path)
    except KeyStateError as exc:  # the softkey knows nothing of exit codes: a state file is a store
        raise StoreError(f"software key state unusable: {exc}") from None
    return Authenticator(state, presence, profile)


def _serve(args: argparse.Namespace) -> int:
    from libhmacunlock.softkey.udp import UdpSoftKeyServer

    authenticator = _open_authenticator(args.state, _presence(args.presence, args.presence_timeout), args.profile)
    host, port = args.udp
    # Block the signals before any thread starts, so that every thread inherits the mask and they are taken
    # here, synchronously: a handler running inside the server loop could interrupt it while it holds its lock.
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        try:
            server = UdpSoftKeyServer(authenticator, host, port)
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise ListenFailed(f"cannot listen on udp:{where}: {exc.strerror or exc}") from None
        thread = threading.Thread(target=server.serve_forever, name="udp-softkey")
        thread.start()
        named = "" if args.profile == "ctap21" else f", profile {args.profile}"
        print(f"softkey ready on {server.spec} (state {args.state}{named})", flush=True)
        crashed = False
        try:
            while True:
                if not thread.is_alive():  # the loop ended with nobody asking it to
                    crashed = True
                    break
                info = signal.sigtimedwait(SIGNALS, 0.5)
                if info is None:
                    continue
                if info.si_signo != signal.SIGHUP:
                    break
                server.power_cycle()
                print("softkey: unplugged and plugged back in", file=sys.stderr, flush=True)
        finally:
            server.shutdown()
            thread.join(timeout=10.0)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    if crashed:
        raise HmacUnlockError("the software key stopped unexpectedly (its UDP loop ended)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "softkey",
        help="the software security key (for tests and the demo)",
        description="A CTAP 2.1 software security key served over CTAPHID/UDP.",
    )
    sub = p.add_subparsers(dest="softkey_command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve the software key over UDP in the foreground",
        description="Serve the software key over CTAPHID/UDP (device spec udp:HOST:PORT). Prints one line when "
        "ready. SIGHUP = unplug and plug back in; SIGTERM / SIGINT = exit.",
    )
    serve.add_argument(
        "--state", required=True, metavar="FILE", help="the key's state file (created, mode 0600, if missing)"
    )
    serve.add_argument(
        "--udp",
        required=True,
        metavar="HOST:PORT",
        type=parse_listen,
        help="address to listen on; PORT 0 picks a free port (the ready line names it)",
    )
    serve.add_argument(
        "--presence",
        choices=("approve", "prompt", "deny"),
        default="approve",
        help="how a touch is given: approve at once (default), ask on the terminal, or refuse",
    )
    serve.add_argument(
        "--presence-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds to wait for a touch with --presence prompt (default 30)",
    )
    serve.add_argument(
        "--profile",
        choices=_profile_names(),
        default="ctap21",
        help="answer as this family of real keys (docs/keys.md): " + ", ".join(_profile_names()),
    )
    serve.set_defaults(func=_serve)


def _profile_names() -> list[str]:
    from libhmacunlock.softkey.profiles import PROFILES

    return list(PROFILES)
