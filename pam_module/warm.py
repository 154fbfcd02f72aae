"""The warm helper: `hmacunlock pam warm-helper`, a root daemon that serves pam_hmacunlock.so's `socket=` option.

A spawned helper pays ~70 ms of imports (python-fido2, cryptography) on every sign-in. This daemon imports the
library once and keeps K idle spare children (pre-fork; a busy child is replaced at once): each spare, before
anybody signs in, hardens itself, rehearses one enroll + unlock against a throwaway software key (its own pages
and caches warm), then waits in accept(). The
spare that gets a connection from a root process runs the very same code path as a spawned helper
(`hmacunlock_pam.helper.serve`) on it and exits right after the verdict; the parent forks its replacement. Each
sign-in lives and dies in its own child: nothing one sign-in holds (PIN, unlock key) can reach another, and the
parent never accepts a connection at all.

The socket is the daemon's own (created 0600 in a root-only directory) or systemd's (socket activation,
LISTEN_FDS/LISTEN_PID). The module checks the path's owner and mode and the server's SO_PEERCRED before it trusts
the daemon; the daemon checks the client's SO_PEERCRED (uid 0 only) before it serves it.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import stat
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from libhmacunlock.errors import HmacUnlockError

from .protocol import Request

DEFAULT_SOCKET = "/run/hmacunlock/helper.sock"
SD_LISTEN_FDS_START = 3
BACKLOG = 64
CHILD_LIMIT_S = 3600  # a child is bounded like the module's longest timeout=: it cannot outlive a stuck key forever
DEFAULT_SPARES = 2
MAX_CHILDREN = 64  # spares and sign-ins in progress together: what one daemon holds at most
MAX_PER_CALLER = 4  # sign-ins in progress at once for one caller (the request's ruid); more are spawned
REQUEST_WAIT_S = 30.0  # a connection that sends no request in this time is dropped (the module sends it at once)
IDLE_WAIT_S = 5.0  # the parent's longest sleep between looks at its children
STOP_WAIT_S = 10.0  # how long SIGTERM waits for the spares it ended
PR_SET_PDEATHSIG = 1
WARM_UP_NICE = 10
SERVED = "serving a sign-in in child"  # one log line per connection, from the child that serves it
BUSY = signal.SIGUSR1  # a spare took a connection: the parent forks its replacement now, not when it exits
WATCHED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, BUSY}
_info_cache = None  # the daemon's SharedInfoCache (run()), inherited by every child: getInfo answers it has seen


class WarmHelperError(HmacUnlockError):
    """The daemon cannot start safely (the socket's place is not root's, or another daemon holds it)."""


@dataclass
class Listener:
    sock: socket.socket
    path: str | None  # the path we bound and must remove at exit; None for systemd's socket
    inode: int = 0


def preload() -> None:
    """Everything a sign-in imports, once, in the parent: every child starts with it loaded (the list is what a
    warm child still imported on its own: `sorted(set(sys.modules) - before)` around one unlock())."""
    import ctypes  # noqa: F401  (helper.harden)
    import encodings.idna  # noqa: F401  (the UDP transport's address lookup)
    import grp  # noqa: F401
    import pwd  # noqa: F401
    import resource  # noqa: F401

    import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
    import fido2.client
    import fido2.ctap2  # noqa: F401

    import libhmacunlock.config  # helper._load_config, at every request
    import libhmacunlock.device
    import libhmacunlock.locks  # the key's device lock, after Enter
    import libhmacunlock.store
    import libhmacunlock.throttle
    import libhmacunlock.udp
    import libhmacunlock.unlock

    from . import helper  # noqa: F401

    libhmacunlock.config.installation()  # looked up once, here: a failed import (a source tree) is not cached


def rehearse() -> None:
    """One whole enroll + unlock against a throwaway in-process software key, in a private temp dir.

    Imports are not all a child pays: the first ECDH, signature check, AES-GCM, HKDF and CBOR round in a process
    also fill caches (OpenSSL's method tables, python-fido2's lazily built structures). Doing it once here lets
    every forked child start where a warm process is. Nothing of it survives: the key, its state and the record
    are in a directory removed before the daemon listens.
    """
    import tempfile

    from libhmacunlock.discovery import open_key
    from libhmacunlock.enroll import enroll
    from libhmacunlock.interaction import ScriptedInteraction
    from libhmacunlock.softkey.device import SoftKeyDevice
    from libhmacunlock.unlock import unlock

    pin = "rehearsal-pin"
    with tempfile.TemporaryDirectory(prefix="hmacunlock-warm-") as tmp:
        device = SoftKeyDevice.open(os.path.join(tmp, "key.state"))
        open_key(device).set_pin(pin)
        enroll(os.path.join(tmp, "store"), device, ScriptedInteraction([pin]), "rehearsal", rp_id="rehearsal.invalid")
        unlock(os.path.join(tmp, "store"), device, ScriptedInteraction([pin]), user="rehearsal")


def _try_rehearse() -> None:
    try:
        rehearse()
    except Exception as exc:  # noqa: BLE001 - a warm-up only: the sign-in then pays the first-use costs itself
        log(f"warm-up skipped ({type(exc).__name__})")


def log(text: str) -> None:
    """One line on stderr (the journal under systemd). Never a secret: nothing from a connection is logged."""
    print(f"hmacunlock warm-helper[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


def peer_uid(conn: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return int(uid)


def _systemd_socket() -> socket.socket | None:
    """The socket systemd passed (socket activation), if it passed one to this process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or not os.environ.get("LISTEN_FDS"):
        return None
    if int(os.environ["LISTEN_FDS"]) < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the children
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise WarmHelperError("systemd passed a socket that is not a unix stream socket (ListenStream=)")
    os.set_inheritable(sock.fileno(), False)
    return sock


def _own_directory(directory: str) -> None:
    """Creates the directory 0700, or accepts an existing one only if it is ours and nobody else can write it."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise WarmHelperError(f"{directory} must be a directory owned by uid {os.geteuid()} and writable by it only")


def _clear_stale(path: str) -> None:
    """A socket left by a daemon that died is removed; one that answers belongs to a running daemon."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise WarmHelperError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise WarmHelperError(f"another warm helper is already listening on {path}")


def listen(path: str) -> Listener:
    """systemd's socket if it passed one, otherwise PATH created 0600 in a root-only directory."""
    sock = _systemd_socket()
    if sock is not None:
        return Listener(sock, None)
    if not os.path.isabs(path):
        raise WarmHelperError(f"--socket must be an absolute path: {path}")
    _own_directory(os.path.dirname(path))
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600: no window in which another user could connect
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(BACKLOG)
    return Listener(sock, path, os.lstat(path).st_ino)


@dataclass
class Spares:
    """The parent's side of the pool: keeps `count` spare children alive, and backs off when they fail."""

    listener: Listener
    count: int
    slots: str = ""  # the per-caller cap's lock files (a private directory of the daemon's)
    pids: set[int] = field(default_factory=set)
    failures: deque[float] = field(default_factory=deque)  # when children last exited other than after a sign-in

    def top_up(self) -> float:
        """Forks spares up to `count`, unless `count` children failed within the last second; the seconds until
        it should look again. The back-off is what keeps a broken install (a child that dies at once) from
        becoming a fork loop: then at most `count` new children a second. A served sign-in is no failure, so
        sign-ins in quick succession are never held back."""
        now = time.monotonic()
        while self.failures and now - self.failures[0] >= 1.0:
            self.failures.popleft()
        if len(self.failures) >= self.count:
            return 1.0 - (now - self.failures[0])
        # Only children waiting in accept() count: one busy with a sign-in (an unanswered prompt, say) is no spare.
        while len(self.idle()) < self.count and len(self.pids) < MAX_CHILDREN:
            try:
                self.pids.add(_fork_spare(self.listener, self.slots))
            except OSError as exc:  # EAGAIN, ENOMEM: no spare now; the daemon goes on and tries again
                log(f"could not fork a spare: {exc.strerror or type(exc).__name__}")
                self.failures.append(now)
                return 1.0
        return IDLE_WAIT_S

    def idle(self) -> set[int]:
        """The spares: children still in the daemon's process group (a serving child moves to its own)."""
        idle = set()
        for pid in self.pids:
            try:
                if os.getpgid(pid) == os.getpgrp():
                    idle.add(pid)
            except ProcessLookupError:
                pass
        return idle

    def reap(self, quiet: bool = False) -> None:
        """No zombies: collects every child that has exited (a spare that served, or one that died)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.pids.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and not quiet:  # 0: it served a sign-in (whatever the verdict)
                self.failures.append(time.monotonic())
                log(f"child {pid} exited with status {code}")

    def stop(self) -> None:
        """Ends the spares still waiting for a connection; a child in the middle of a sign-in finishes it."""
        ended = set()
        for pid in self.pids:
            try:
                if os.getpgid(pid) == os.getpgrp():  # a serving child has moved to a group of its own
                    os.kill(pid, signal.SIGTERM)
                    ended.add(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_WAIT_S
        while ended & self.pids and time.monotonic() < deadline:
            self.reap(quiet=True)
            time.sleep(0.01)


def _fork_spare(listener: Listener, slots: str) -> int:
    pid = os.fork()
    if pid == 0:
        _spare(listener, slots, parent=os.getppid())
    return pid


def _spare(listener: Listener, slots: str, parent: int) -> None:
    """In a forked spare: warm up, wait for one root connection, serve it, exit. Never returns."""
    from . import helper

    status = 0
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, BUSY):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the parent's mask (it waits for these) is not ours
        helper.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # a spare does not outlive its parent (nobody would replace it)
        if os.getppid() != parent:
            os._exit(0)  # the parent died before the line above
        helper.harden()  # before the rehearsal: it will hold a PIN and an unlock key
        _warm_up()
        conn = _accept_root(listener)
        os.setpgid(0, 0)  # no longer a spare: the parent's SIGTERM is not for a sign-in in progress
        helper.prctl(PR_SET_PDEATHSIG, 0)
        try:
            os.kill(parent, BUSY)  # fork a replacement now: this one may wait long for a person (or nobody)
        except ProcessLookupError:
            pass
        log(f"{SERVED} {os.getpid()}")
        status = _serve(conn, listener, slots)
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's loop
        status = 4
    finally:
        os._exit(status)


def _warm_up() -> None:
    """This child's own rehearsal: it faults in (copies on write) the pages a sign-in touches and fills this
    process's caches while nobody waits, then freezes what it made so no collection scans it mid sign-in."""
    priority = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, WARM_UP_NICE)  # a sign-in in another child goes first
    _try_rehearse()
    if _info_cache is not None:
        from libhmacunlock.keyinfo import parse_ahead

        parse_ahead(_info_cache)  # the keys' getInfo answers as the next sign-in will want them
    gc.collect()
    gc.freeze()
    os.setpriority(os.PRIO_PROCESS, 0, priority)  # root may raise it back: the sign-in runs at the daemon's


def _accept_root(listener: Listener) -> socket.socket:
    """The next connection from a root process (the kernel hands each connection to one waiting spare)."""
    while True:
        try:
            conn, _ = listener.sock.accept()
        except (ConnectionAbortedError, InterruptedError):
            continue
        uid = peer_uid(conn)
        if uid == 0:
            return conn
        log(f"refused a connection from uid {uid}: only root may use the warm helper")
        conn.close()


def _serve(conn: socket.socket, listener: Listener, slots: str = "") -> int:
    """Exactly what a spawned helper does (helper.main), on the connection; the exit status."""
    from . import helper
    from .protocol import Channel

    try:
        listener.sock.close()
        signal.alarm(CHILD_LIMIT_S)
        helper._STARTED = time.monotonic()  # the debug timings count from this sign-in, not the spare's start
        fd = conn.fileno()
        # As a spawned helper: nothing but the channel beyond 0..2 (whatever the daemon itself inherited is closed).
        os.closerange(3, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        import select

        if not select.select([fd], [], [], REQUEST_WAIT_S)[0]:
            return 0  # a connection that says nothing: dropped, and no failure of ours
        # hardens itself again (a no-op by now): prctl(PR_SET_DUMPABLE, 0); the record write after the verdict and
        # the end of file is done here (nobody waits for this child's exit)
        return helper.main(Channel(fd, fd), info_cache=_info_cache, admit=lambda request: _admit(slots, request))
    finally:
        conn.close()  # the module sees end of file right after the verdict, and requires it


def _admit(slots: str, request: Request) -> bool:
    """At most MAX_PER_CALLER sign-ins at once in this daemon for one caller: the request's `ruid`, the PAM host's
    real uid, which the module sends (SO_PEERCRED says only "root": su, sudo and login all connect as root). One
    lock file per (caller, place); the lock is held until this child exits. Over the cap: refused before any
    frame, so the module spawns a helper for it instead. Nothing to lock with (no directory): admitted."""
    if not slots:
        return True
    import fcntl

    caller = "unknown" if request.ruid is None else str(request.ruid)
    for place in range(MAX_PER_CALLER):
        fd = os.open(os.path.join(slots, f"{caller}.{place}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # fd stays open: the place is ours until this child exits
        except BlockingIOError:
            os.close(fd)
    log(f"caller uid {caller} has {MAX_PER_CALLER} sign-ins in progress here; the module spawns this one")
    return False


def serve_forever(listener: Listener, spares: int = DEFAULT_SPARES) -> int:
    """The parent: keeps the spares alive until SIGTERM or SIGINT. It never accepts a connection itself."""
    import shutil
    import tempfile

    slots = tempfile.mkdtemp(prefix="hmacunlock-warm-callers-")  # 0700, the daemon's own
    pool = Spares(listener, spares, slots)
    log(f"listening on {listener.path or 'the socket systemd passed'} with {spares} spare children")
    try:
        while True:
            wait = pool.top_up()
            info = signal.sigtimedwait(WATCHED, wait)  # blocked in run(): they arrive here, not as handlers
            pool.reap()  # on SIGCHLD, and on every turn: a lost wake-up costs one IDLE_WAIT_S at most
            if info is not None and info.si_signo not in (signal.SIGCHLD, BUSY):
                break
        log("stopping")
    finally:
        listener.sock.close()
        _remove(listener)
        pool.stop()
        shutil.rmtree(slots, ignore_errors=True)
    return 0


def _remove(listener: Listener) -> None:
    """Removes the socket we created, and only it (not one a newer daemon put at the same path)."""
    if listener.path is None:
        return
    try:
        if os.lstat(listener.path).st_ino == listener.inode:
            os.unlink(listener.path)
    except FileNotFoundError:
        pass


def run(path: str = DEFAULT_SOCKET, spares: int = DEFAULT_SPARES) -> int:
    """The daemon's entry point (`hmacunlock pam warm-helper`): 0 after SIGTERM."""
    if os.geteuid() != 0:
        raise WarmHelperError("the warm helper must run as root: the PAM module accepts only a root-owned server")
    if spares < 1:
        raise WarmHelperError(f"--spares must be at least 1: {spares}")
    # Before anything can start a thread: the parent takes these signals with sigtimedwait, never in a handler, so
    # no handler can run between a fork and the child's own set-up. A SIGTERM during the start-up waits its turn.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    global _info_cache
    from libhmacunlock.keyinfo import SharedInfoCache

    _info_cache = SharedInfoCache()  # before any fork: one mapping shared by the daemon and all its children
    preload()
    _try_rehearse()  # once here too: what it fills is shared by every spare, which then warms only its own pages
    # The preloaded heap is never collected again: a child's collections then scan only its own objects, and do
    # not touch (copy on write) the pages it shares with the parent. The intended use of gc.freeze before fork.
    gc.freeze()
    return serve_forever(listen(path), spares)
