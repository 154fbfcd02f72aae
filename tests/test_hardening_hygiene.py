"""Memory and process hygiene: the helper cannot be dumped or traced, refuses to ask for a PIN when it cannot make
itself so, files holding key material are private whatever the umask, and secrets stay out of messages,
tracebacks, reprs and logs (and the helper wipes its copy of the PIN's bytes).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from hmacunlock_pam.protocol import Channel, Frame

from libhmacunlock.enroll import enroll
from libhmacunlock.errors import AssertionInvalid, WrongPin
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock
from tests.fixtures.helper_process import HelperProcess
from tests.fixtures.liar import Lie, LyingAuthenticator
from tests.fixtures.library import enroll_on_new_softkey
from tests.fixtures.softkey import TEST_PIN, make_pinned_softkey, set_pin

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
SECRET_PIN = "864209"  # distinctive, so a search for it cannot match anything else


# --- the helper process -------------------------------------------------------------------------------------------


def _as_unprivileged() -> tuple[list[str], dict]:
    """How to run Python code as a user without CAP_SYS_PTRACE: nobody (via the system python, since this
    venv's interpreter may sit under root's home) when we are root, else ourselves."""
    if os.geteuid() != 0:
        return [sys.executable], {}
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3 to run the helper as nobody")
    if any(not os.stat(d).st_mode & stat.S_IXOTH for d in (REPO, *REPO.parents)):
        pytest.skip(f"nobody cannot reach {REPO} (a parent directory is not o+x) to run the helper from it")
    return ["/usr/bin/python3"], {"user": NOBODY, "group": NOBODY, "extra_groups": [], "_paths": _import_dir()}


_IMPORT_DIR: list[str] = []


def _import_dir() -> str:
    """A world-readable directory that makes the project importable for nobody (links; removed at exit)."""
    if not _IMPORT_DIR:
        paths = tempfile.mkdtemp(prefix="hmu-hygiene-")
        atexit.register(shutil.rmtree, paths, True)
        os.chmod(paths, 0o755)
        os.symlink(REPO / "pam_module", os.path.join(paths, "hmacunlock_pam"))
        os.symlink(REPO / "libhmacunlock", os.path.join(paths, "libhmacunlock"))
        _IMPORT_DIR.append(paths)
    return _IMPORT_DIR[0]


def _spawn(code: str, **kw):  # type: ignore[no-untyped-def]
    python, opts = _as_unprivileged()
    paths = opts.pop("_paths", str(REPO))
    code = f"import sys; sys.path.insert(0, {paths!r})\n" + code
    return subprocess.Popen([*python, "-I", "-c", code], env={"PATH": "/usr/bin:/bin"}, **opts, **kw)


def _ptrace_from_same_user(pid: int) -> int:
    """errno of PTRACE_ATTACH to `pid` from a process of the same (unprivileged) user; 0 if it attached."""
    code = (
        f"import ctypes, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        f"r = libc.ptrace({PTRACE_ATTACH}, {pid}, None, None)\nerr = ctypes.get_errno()\n"
        f"if r == 0:\n    time.sleep(0.2)\n    libc.ptrace({PTRACE_DETACH}, {pid}, None, None)\n"
        f"print(0 if r == 0 else err)\n"
    )
    out = _spawn(code, stdout=subprocess.PIPE, text=True).communicate(timeout=60)[0]
    return int(out.strip())


def test_the_helper_cannot_be_dumped_or_traced_while_it_holds_the_pin():
    module, child = socket.socketpair()
    helper = _spawn(
        "from hmacunlock_pam.helper import main\nsys.exit(main())", stdin=child, stdout=child, stderr=subprocess.DEVNULL
    )
    control = _spawn("import time; time.sleep(60)")  # the same user, not hardened: the test can tell them apart
    child.close()
    try:
        module.settimeout(60)
        module.sendall(b"Q" + (17).to_bytes(2, "big") + b"user=hmu-nobody1\n")
        # Its first frame (L "started") comes once it has hardened itself and read the request; from then on it
        # goes on to the PIN guard's checks and the PIN (an unenrolled user here: it would end at once), so it is
        # frozen right there. Hardening is for the life of the process: what holds now holds while it has the PIN.
        assert module.recv(3)[:1] == b"L"
        os.kill(helper.pid, signal.SIGSTOP)
        uid = os.stat(f"/proc/{helper.pid}").st_uid  # the directory always belongs to the process's user
        assert uid != 0 and os.stat(f"/proc/{control.pid}/status").st_uid == uid  # an ordinary process
        # A non-dumpable process's /proc/PID/* files belong to root (proc(5)), whoever runs it.
        assert os.stat(f"/proc/{helper.pid}/status").st_uid == 0
        with open(f"/proc/{helper.pid}/limits") as f:
            assert next(x for x in f if x.startswith("Max core file size")).split()[4:6] == ["0", "0"]
        if _ptrace_from_same_user(control.pid) != 0:  # e.g. Yama's ptrace_scope >= 1 on a developer machine
            pytest.skip("ptrace between processes of one user is restricted here (Yama): only the /proc checks ran")
        assert _ptrace_from_same_user(helper.pid) != 0  # the same user traces an ordinary process, not the helper
    finally:
        for p in (helper, control):
            p.kill()
            p.wait(10)
        module.close()


def test_the_helper_asks_for_no_pin_when_it_cannot_harden_itself():
    inject = "import resource\ndef no(*a): raise OSError(1, 'Operation not permitted')\nresource.setrlimit = no"
    helper = HelperProcess(inject=inject)
    helper.send(b"Q", b"user=alice\n")
    kind, text = helper.recv()
    assert kind == b"V" and text.startswith("system_err")  # the first frame is the verdict: no PIN prompt
    assert helper.close() == 0


def test_the_helper_wipes_its_copy_of_the_pin():
    r, w = os.pipe()
    kept: list[bytearray] = []
    chan = Channel(r, -1)
    real_read = chan.read

    def spy():  # type: ignore[no-untyped-def]
        kind, payload = real_read()
        kept.append(payload)
        return kind, payload

    chan.read = spy  # type: ignore[method-assign]
    os.write(w, Frame.SECRET.value + len(SECRET_PIN).to_bytes(2, "big") + SECRET_PIN.encode())
    try:
        assert chan.read_secret() == SECRET_PIN
    finally:
        os.close(r)
        os.close(w)
    assert kept and kept[0] == bytearray(len(SECRET_PIN))  # zeroed in place


def test_an_internal_error_in_the_helper_shows_no_secret(tmp_path):
    # what the module shows and logs for an unexpected exception: its type only, never its text
    store = tmp_path / "store"
    inject = (
        f"import libhmacunlock.unlock as u\ndef boom(*a, **k): raise RuntimeError({SECRET_PIN!r})\n"
        "u.unlock_verified = boom"
    )
    helper = HelperProcess(inject=inject)
    helper.send(b"Q", f"user=alice\nstore={store}\n".encode())
    frames = []
    while True:
        kind, text = helper.recv()
        frames.append((kind, text))
        if kind == b"P":
            helper.send(b"S", SECRET_PIN.encode())
        if kind == b"V":
            break
    assert helper.close() == 0
    assert frames[-1][1].startswith("system_err")
    assert not [f for f in frames if SECRET_PIN in f[1]]


# --- file modes ---------------------------------------------------------------------------------------------------


def test_key_material_files_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        state = tmp_path / "softkey.json"
        key = make_pinned_softkey(state)
        store = Store(tmp_path / "store")
        enroll(store, key, ScriptedInteraction([TEST_PIN]), "alice")
        unlock(store, key, ScriptedInteraction([TEST_PIN]), user="alice")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (state, store.path, *store.path.iterdir())}
    assert modes == {
        "softkey.json": 0o600,
        "store": 0o711,
        "alice.json": 0o600,
        ".alice.lock": 0o600,
        ".pin.lock": 0o600,
    }, modes
    if os.geteuid() == 0:
        assert store.record_path("alice").stat().st_uid == 0


# --- secrets in messages, tracebacks, reprs and logs --------------------------------------------------------------


@pytest.fixture
def enrolled(tmp_path):
    e = enroll_on_new_softkey(tmp_path, "alice")
    return e.store, e.key, e.unlock_key


def _texts(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def _forms(secret: bytes) -> list[str]:
    return [secret.hex(), repr(secret)[2:-1], secret.hex().upper()]


def test_no_secret_in_errors_reprs_or_logs(enrolled, caplog):
    store, key, uk = enrolled
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WrongPin) as wrong:
        unlock(store, key, ScriptedInteraction([SECRET_PIN]), user="alice")
    assert SECRET_PIN not in _texts(wrong.value)

    liar = SoftKeyDevice(LyingAuthenticator(key.authenticator, Lie.NO_UV))
    with pytest.raises(AssertionInvalid) as refused:  # refused only after the slot opened: UK was in memory
        unlock(store, liar, ScriptedInteraction([TEST_PIN]), user="alice")
    text = _texts(refused.value)
    assert TEST_PIN not in text and not [f for f in _forms(uk) if f in text]

    result = unlock(store, key, ScriptedInteraction([TEST_PIN]), user="alice")
    assert result.unlock_key == uk and not [f for f in _forms(uk) if f in repr(result)]
    logged = caplog.text
    assert TEST_PIN not in logged and SECRET_PIN not in logged and not [f for f in _forms(uk) if f in logged]


def test_the_unlock_key_file_is_private_and_never_written_through_a_link(tmp_path, udp_softkey):

    set_pin(udp_softkey.authenticator)
    store = Store(tmp_path / "store")
    uk = enroll(store, udp_softkey.spec, ScriptedInteraction([TEST_PIN]), "alice").unlock_key

    def cli(key_file: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "hmacunlock_cli",
                "unlock",
                "alice",
                "--device",
                udp_softkey.spec,
                "--store",
                str(store.path),
                "--key-file",
                str(key_file),
            ],
            input=TEST_PIN + "\n",
            capture_output=True,
            text=True,
            timeout=120,
            umask=0,
        )

    key_file = tmp_path / "uk.bin"
    run = cli(key_file)
    assert run.returncode == 0, run.stderr
    assert key_file.read_bytes() == uk and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "planted"
    link.symlink_to(victim)
    refused = cli(link)
    assert refused.returncode != 0 and victim.read_text() == "precious"
