"""The Debian package, built with `make deb`, installed with apt on this machine, used only through what it installed.

No path into the source tree after the build: the CLI is /usr/bin/hmacunlock, the module is named by its bare name
in a PAM service, the software key is the installed `hmacunlock softkey serve`, python-pam is the one in the
package's own environment. The config file the package installed names the device, so the PAM line is the bare
module name and nothing else (the helper reads the file). The warm helper is started the way systemd starts it
(systemd is not PID 1 here: `systemd-analyze verify` checks the units, `systemd-socket-activate` runs the unit's
ExecStart= on the unit's ListenStream=); the spawned fallback is shown with the socket absent.

It installs a package system-wide, so it runs under `make test` and CI (HMACUNLOCK_INSTALL_TEST=1 or CI=true),
as root, with hmacunlock not installed already; otherwise it skips and says why. One run at a time on a machine
(a lock), and the machine is put back as it was, also on failure: the package purged, the user removed, the store
removed if the test created it, every path it touched compared before and after.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures import syslog
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.system import require_root, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
LOCK = "/run/lock/hmacunlock-install-test.lock"
BIN = "/usr/bin/hmacunlock"
LIBDIR = Path("/usr/lib/hmacunlock")
PYTHON = LIBDIR / "bin" / "python"
MODULE = Path("/lib/x86_64-linux-gnu/security/pam_hmacunlock.so")
UNITS = Path("/lib/systemd/system")
CONF = Path("/etc/hmacunlock/hmacunlock.conf")
STORE = Path("/var/lib/hmacunlock")
RUNDIR = Path("/run/hmacunlock")
SOCKET = RUNDIR / "helper.sock"
SERVED = "serving a sign-in in child"
WRONG_PIN = "999999"
# What the package may create and must not leave (the store aside): compared before and after.
WATCHED = [
    "/etc/hmacunlock",
    "/usr/lib/hmacunlock",
    "/usr/bin/hmacunlock",
    str(MODULE),
    "/lib/systemd/system/hmacunlock-helper.socket",
    "/lib/systemd/system/hmacunlock-helper.service",
    "/etc/systemd/system/sockets.target.wants/hmacunlock-helper.socket",
    "/etc/systemd/system/hmacunlock-helper.socket",
    "/var/lib/systemd/deb-systemd-helper-enabled/hmacunlock-helper.socket.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/sockets.target.wants/hmacunlock-helper.socket",
    "/usr/share/pam-configs/hmacunlock",
    "/usr/share/man/man8/hmacunlock.8.gz",
    "/usr/share/man/man8/pam_hmacunlock.8.gz",
    "/usr/share/bash-completion/completions/hmacunlock",
    str(RUNDIR),
]
PAM_COMMON = [Path("/etc/pam.d") / f"common-{p}" for p in ("auth", "account", "password", "session")]


def run(argv, stdin: str | None = None, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """A command with its output captured (secrets only ever on stdin)."""
    kw.setdefault("cwd", "/")
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *args], env=env)


def installed() -> bool:
    done = run(["dpkg-query", "-W", "-f=${Status}", "hmacunlock"], check=False)
    return "installed" in done.stdout and "not-installed" not in done.stdout


def pamtester(service: str, user: str, stdin: str) -> subprocess.CompletedProcess:
    return run(["pamtester", service, user, "authenticate"], stdin=stdin, check=False)


class Machine:
    """What the test changes on the machine, and how it puts it back."""

    def __init__(self) -> None:
        self.before = {p: os.path.lexists(p) for p in WATCHED}
        self.pam_common = {p: p.read_bytes() if p.exists() else None for p in PAM_COMMON}
        self.store_existed = STORE.exists()
        self.user = f"hmu-it-{uuid.uuid4().hex[:6]}"
        self.service = f"hmu-it-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen] = []
        self.user_made = False

    def spawn(self, argv, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd="/", **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restore(self) -> list[str]:
        for proc in self.procs:
            self.stop(proc)
        Path("/etc/pam.d", self.service).unlink(missing_ok=True)
        if installed():
            apt("purge", "hmacunlock")
        if self.user_made:
            run(["userdel", self.user], check=False)
        if not self.store_existed:
            shutil.rmtree(STORE, ignore_errors=True)
        else:
            for name in (f"{self.user}.json", f".{self.user}.lock"):
                (STORE / name).unlink(missing_ok=True)
        if not self.before[str(RUNDIR)]:
            shutil.rmtree(RUNDIR, ignore_errors=True)
        left = [p for p in WATCHED if os.path.lexists(p) != self.before[p]]
        left += [str(p) for p, data in self.pam_common.items() if (p.read_bytes() if p.exists() else None) != data]
        return left


def _requirements() -> None:
    if not (os.environ.get("HMACUNLOCK_INSTALL_TEST") == "1" or os.environ.get("CI") == "true"):
        pytest.skip(
            "the package install test runs under 'make test' and CI (HMACUNLOCK_INSTALL_TEST=1): it installs "
            "hmacunlock system-wide"
        )
    require_root()
    require_tool("apt-get", "dpkg-deb", "pamtester", "systemd-analyze", "systemd-socket-activate", "useradd")
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs Debian's /usr/bin/python3")


@pytest.fixture(scope="module")
def machine():
    _requirements()
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install test per machine at a time
        if installed():
            pytest.skip("hmacunlock is installed on this machine already: the test would remove it")
        m = Machine()
        try:
            yield m
        finally:
            left = m.restore()
            assert not left, f"the install test left these changed: {left}"


@pytest.fixture(scope="module")
def deb(machine) -> Path:
    run(["make", "-s", "deb"], cwd=str(REPO), timeout=600)
    found = sorted((REPO / "build").glob("hmacunlock_*_*.deb"))
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def package(machine, deb, tmp_path_factory):
    """Installed with apt, a software key served by the installed CLI, the config naming it, a user enrolled."""
    out = apt("install", str(deb))
    assert "pam-auth-update --enable hmacunlock" in out.stdout  # says how to enable, and did not
    state = tmp_path_factory.mktemp("softkey") / "key.state"
    ready = tmp_path_factory.mktemp("softkey-log") / "ready"
    with ready.open("w") as log:
        machine.spawn([BIN, "softkey", "serve", "--state", str(state), "--udp", "127.0.0.1:0"], stdout=log)
    deadline = time.monotonic() + 30
    while "ready on" not in ready.read_text():
        assert time.monotonic() < deadline, ready.read_text()
        time.sleep(0.05)
    spec = ready.read_text().split("ready on ", 1)[1].split()[0]
    with CONF.open("a") as conf:  # the package's conffile: purge removes it
        conf.write(f"device = {spec}\n")
    run([BIN, "key", "set-pin"], stdin=f"{TEST_PIN}\n")
    run(["useradd", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", machine.user])
    machine.user_made = True
    run([BIN, "enroll", machine.user], stdin=f"{TEST_PIN}\n")
    Path("/etc/pam.d", machine.service).write_text(
        "# hmacunlock's install test; removed when it ends\nauth required pam_hmacunlock.so debug\n"
        "account required pam_permit.so\n"
    )
    return spec


# --- the tests, in the order they run ----------------------------------------------------------------------------


def test_the_package_lays_out_the_contract(package, machine):
    for path in (BIN, MODULE, CONF, UNITS / "hmacunlock-helper.socket", UNITS / "hmacunlock-helper.service"):
        st = os.stat(path)
        assert st.st_uid == 0 and not st.st_mode & 0o022, path
    assert os.readlink(PYTHON).startswith("python3") and os.path.realpath(PYTHON).startswith("/usr/bin/python3")
    assert STORE.is_dir() and (STORE.stat().st_mode & 0o777) == 0o711 and STORE.stat().st_uid == 0
    assert not Path("/etc/pam.d/common-auth").read_text().count("pam_hmacunlock")  # the profile is not enabled
    assert "pam_hmacunlock.so" in Path("/usr/share/pam-configs/hmacunlock").read_text()
    verify = run(
        [
            "systemd-analyze",
            "verify",
            *(str(UNITS / u) for u in ("hmacunlock-helper.socket", "hmacunlock-helper.service")),
        ],
        check=False,
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    for page in ("hmacunlock", "pam_hmacunlock"):
        shown = run(["man", "-P", "cat", page], env={**os.environ, "MANWIDTH": "100"})
        assert page.upper() in shown.stdout
    # A user's `key info` needs no sudo: the installed command, the config's device, as nobody.
    info = run([BIN, "key", "info", "--json"], user="nobody", group="nogroup", extra_groups=[])
    assert json.loads(info.stdout)["compatible"] is True
    assert run([BIN, "pam", "snippet"]).stdout.split()[2] == "pam_hmacunlock.so"


def test_a_sign_in_by_bare_name_through_the_spawned_helper(package, machine):
    assert not SOCKET.exists()  # systemd is not PID 1 here: nothing listens, the module spawns (the fallback)
    with syslog.listening() as log:
        right = pamtester(machine.service, machine.user, f"{TEST_PIN}\n")
        if log is not None:
            log.settle()
        logged = log.text(machine.service) if log is not None else None
    assert "successfully authenticated" in right.stdout + right.stderr, right
    if logged is not None:  # /dev/log was free for us: the module's debug log says it spawned
        assert "no warm helper" in logged and "spawning one" in logged and "helper exited 0" in logged, logged
    wrong = pamtester(machine.service, machine.user, f"{WRONG_PIN}\n")
    assert wrong.returncode != 0 and "attempts left" in wrong.stdout + wrong.stderr, wrong


def _unit_value(unit: str, key: str) -> str:
    for line in (UNITS / unit).read_text().splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{unit} has no {key}=")


def _served_children(text: str) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if SERVED in line]


def test_a_sign_in_through_the_warm_helper_started_as_systemd_does(package, machine, tmp_path):
    listen = _unit_value("hmacunlock-helper.socket", "ListenStream")
    exec_start = _unit_value("hmacunlock-helper.service", "ExecStart").split()
    assert listen == str(SOCKET)
    RUNDIR.mkdir(mode=0o700, exist_ok=True)  # the socket unit's DirectoryMode=0700
    log_path = tmp_path / "warm.log"
    with log_path.open("w") as log:
        daemon = machine.spawn(["systemd-socket-activate", "-l", listen, *exec_start], stderr=log)

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline and daemon.poll() is None, f"{what}:\n{log_path.read_text()}"
            time.sleep(0.05)

    wait_for(SOCKET.exists, "the socket")
    # The first connection starts the daemon, as systemd's socket would on the first sign-in after boot. This one
    # says nothing (its child reads end of file and exits 2), so the sign-ins below meet warmed spares.
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.connect(listen)
    first.close()
    wait_for(lambda: "exited with status" in log_path.read_text(), "the daemon to take the first connection")
    with syslog.listening() as sys_log:
        right = pamtester(machine.service, machine.user, f"{TEST_PIN}\n")
        wrong = pamtester(machine.service, machine.user, f"{WRONG_PIN}\n")
        if sys_log is not None:
            sys_log.settle()
        logged = sys_log.text(machine.service) if sys_log is not None else None
    assert right.returncode == 0, right
    assert wrong.returncode != 0 and "attempts left" in wrong.stdout + wrong.stderr, wrong
    text = log_path.read_text()
    assert "the socket systemd passed" in text, text
    children = _served_children(text)[1:]  # after the first, silent connection
    # Served there: a child per sign-in, and none of them ended other than after a verdict (a module that gave up
    # waiting and spawned instead would leave its connection to end in "exited with status 2").
    assert len(children) == 2 and not any(f"child {pid} exited" in text for pid in children), text
    if logged is not None:
        assert logged.count("from the warm helper") == 2 and "spawning" not in logged, logged
    machine.stop(daemon)
    SOCKET.unlink(missing_ok=True)  # systemd's RemoveOnStop=
    again = pamtester(machine.service, machine.user, f"{TEST_PIN}\n")
    assert again.returncode == 0 and len(_served_children(log_path.read_text())) == 3, again  # spawned this time


def test_an_unprivileged_screen_locker_signs_its_own_user_in(package, machine):
    locker = (
        "import pam, sys\n"
        "p = pam.pam()\n"
        "ok = p.authenticate(sys.argv[1], sys.stdin.readline().rstrip('\\n'), service=sys.argv[2])\n"
        "print('ok' if ok else f'failed {p.code} {p.reason}')\n"
    )
    as_user = dict(user=machine.user, group=machine.user, extra_groups=[])
    done = run([str(PYTHON), "-I", "-c", locker, machine.user, machine.service], stdin=f"{TEST_PIN}\n", **as_user)
    assert done.stdout.strip() == "ok", done
    done = run([str(PYTHON), "-I", "-c", locker, machine.user, machine.service], stdin=f"{WRONG_PIN}\n", **as_user)
    assert done.stdout.startswith("failed"), done


def _doctor() -> tuple[int, dict]:
    done = run([BIN, "doctor", "--json"], check=False)
    return done.returncode, json.loads(done.stdout)


def _failures(report: dict, machine) -> list[dict]:
    """FAIL checks, leaving out other test suites' throw-away PAM services (hmu-test-*) this machine may hold."""
    return [c for c in report["checks"] if c["status"] == "FAIL" and "/etc/pam.d/hmu-test-" not in c["message"]]


def test_doctor_reports_healthy_and_each_injected_fault(package, machine):
    code, report = _doctor()
    assert not _failures(report, machine), report
    names = {c["name"]: c for c in report["checks"]}
    assert names["helper"]["status"] == "ok" and "nobody" in names["helper"]["message"]
    assert names["module"]["status"] == "ok" and names["key"]["status"] == "ok"
    assert machine.service in names["pam services"]["message"]

    LIBDIR.chmod(0o750)  # the helper's environment: no longer usable by an unprivileged user
    try:
        code, report = _doctor()
    finally:
        LIBDIR.chmod(0o755)
    assert code == 1 and [c["name"] for c in _failures(report, machine)] == ["helper"], report

    STORE.chmod(0o731)  # group-writable
    try:
        code, report = _doctor()
    finally:
        STORE.chmod(0o711)
    assert code == 1 and "store" in [c["name"] for c in _failures(report, machine)], report

    moved = MODULE.with_name("pam_hmacunlock.so.moved-by-test")
    MODULE.rename(moved)
    try:
        code, report = _doctor()
    finally:
        moved.rename(MODULE)
    failed = _failures(report, machine)
    assert code == 1 and failed[0]["name"] == "module" and "missing" in failed[0]["message"], report
    assert _doctor()[0] == 0


def test_purge_removes_the_package_and_leaves_the_store(package, machine):
    record = STORE / f"{machine.user}.json"
    assert record.exists()
    apt("remove", "hmacunlock")
    assert not os.path.exists(BIN) and not MODULE.exists() and record.exists()  # remove keeps the records
    assert CONF.exists()  # and the conffile, until purge
    out = apt("purge", "hmacunlock")
    assert "Left in place: /var/lib/hmacunlock" in out.stdout, out.stdout
    assert record.exists()
    gone = [p for p in WATCHED if p != str(RUNDIR) and os.path.lexists(p) and not machine.before[p]]
    assert not gone, gone
