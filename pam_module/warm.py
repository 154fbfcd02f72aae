"""The warm helper: `hmacunlock pam warm-helper`, a root daemon that serves pam_hmacunlock.so's `socket=` option.

A spawned helper pays ~70 ms of imports (python-fido2, cryptography) on every sign-in. This daemon imports the
library once, then for each connection from a root process forks a child that runs the very same code path as a
spawned helper (`hmacunlock_pam.helper.serve`) on the connection, and exits right after the verdict. Each sign-in
lives and dies in its own child: nothing one sign-in holds (PIN, unlock key) can reach another, and the parent
never reads a byte from any connection.

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
from dataclasses import dataclass
from types import FrameType

from libhmacunlock.errors import HmacUnlockError

DEFAULT_SOCKET = "/run/hmacunlock/helper.sock"
SD_LISTEN_FDS_START = 3
BACKLOG = 64
CHILD_LIMIT_S = 3600  # a child is bounded like the module's longest timeout=: it cannot outlive a stuck key forever


class WarmHelperError(HmacUnlockError):
    """The daemon cannot start safely (the socket's place is not root's, or another daemon holds it)."""


class _Stop(Exception):
    """SIGTERM or SIGINT: leave the accept loop and clean up."""


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
    import fido2.client  # noqa: F401
    import fido2.ctap2  # noqa: F401

    import libhmacunlock.device  # noqa: F401
    import libhmacunlock.store  # noqa: F401
    import libhmacunlock.unlock  # noqa: F401

    from . import helper  # noqa: F401


def rehearse() -> None:
    """One whole enroll + unlock against a throwaway in-process software key, in a private temp dir.

    Imports are not all a child pays: the first ECDH, signature check, AES-GCM, HKDF and CBOR round in a process
    also fill caches (OpenSSL's method tables, python-fido2's lazily built structures). Doing it once here lets
    every forked child start where a warm process is. Nothing of it survives: the key, its state and the record
    are in a directory removed before the daemon listens.
    """
    import tempfile

    from libhmacunlock.device import open_key
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


def log(text: str) -> None:
    """One line on stderr (the journal under systemd). Never a secret: nothing from a connection is logged."""
    print(f"hmacunlock warm-helper[{os.getpid()}]: {text}", file=sys.stderr, flush=True)


def peer_uid(conn: socket.socket) -> int:
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


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


def _reap(signum: int = 0, frame: FrameType | None = None) -> None:
    """No zombies: collect every child that has exited (SIGCHLD handler, and once more at exit)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _serve_child(conn: socket.socket, listener: Listener) -> None:
    """In the forked child: exactly what a spawned helper does (helper.main), on the connection. Never returns."""
    from . import helper
    from .protocol import Channel, ProtocolError

    status = 0
    try:
        listener.sock.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.alarm(CHILD_LIMIT_S)
        helper._STARTED = time.monotonic()  # the debug timings count from this sign-in, not the daemon's start
        fd = conn.fileno()
        # As a spawned helper: nothing but the channel beyond 0..2 (whatever the daemon itself inherited is closed).
        os.closerange(3, fd)
        os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
        try:
            helper.serve(Channel(fd, fd))  # hardens itself first: prctl(PR_SET_DUMPABLE, 0), no core
        except ProtocolError:
            status = 2
        except OSError:
            status = 3
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's loop
        status = 4
    finally:
        try:
            conn.close()  # the module sees end of file right after the verdict, and requires it
        finally:
            os._exit(status)


def _accept_one(listener: Listener) -> None:
    conn, _ = listener.sock.accept()
    try:
        uid = peer_uid(conn)
        if uid != 0:
            log(f"refused a connection from uid {uid}: only root may use the warm helper")
            return
        pid = os.fork()
        if pid == 0:
            _serve_child(conn, listener)
        log(f"serving a sign-in in child {pid}")
    finally:
        conn.close()


def serve_forever(listener: Listener) -> int:
    signal.signal(signal.SIGCHLD, _reap)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log(f"listening on {listener.path or 'the socket systemd passed'}")
    try:
        while True:
            try:
                _accept_one(listener)
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:  # EMFILE, a fork that failed: that sign-in fails, the daemon goes on
                log(f"could not serve a connection: {exc.strerror or type(exc).__name__}")
                time.sleep(0.1)
    except _Stop:
        log("stopping")
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        listener.sock.close()
        _remove(listener)
        _reap()
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


def run(path: str = DEFAULT_SOCKET) -> int:
    """The daemon's entry point (`hmacunlock pam warm-helper`): 0 after SIGTERM."""
    if os.geteuid() != 0:
        raise WarmHelperError("the warm helper must run as root: the PAM module accepts only a root-owned server")
    preload()
    try:
        rehearse()
    except Exception as exc:  # a warm-up only: the children then pay the first-use costs themselves
        log(f"warm-up skipped ({type(exc).__name__})")
    # The preloaded heap is never collected again: a child's collections then scan only its own objects, and do
    # not touch (copy on write) the pages it shares with the parent. The intended use of gc.freeze before fork.
    gc.freeze()
    return serve_forever(listen(path))
