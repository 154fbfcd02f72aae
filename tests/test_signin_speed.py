"""Issue 14: three CTAP messages per PIN sign-in, and nothing after Enter that can wait (no timing asserted).

Issue 12's PIN guard adds the up=false probe (one getAssertion, no PIN, no touch) before the prompt, and with PAM's
pin_floor= a getPinRetries (before the prompt; again right before the PIN token, under the store's PIN lock, only if
a PIN may have been sent since): the counts below say so where they apply. Where the key is opened with a cache (the
warm helper), the key-agreement witness (pinguard.py) makes both free on a key nothing happened to since the last
sign-in: three messages again (tests/test_pin_witness.py shows when it must not).

Counted at the key (the software key's own `message_counts`); ordering observed, not timed: the record write is
made to look at the module's end of the channel, which must already hold the verdict and the end of file.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time

import pytest
from fido2 import cbor
from hmacunlock_pam import helper
from hmacunlock_pam.protocol import Channel

from libhmacunlock import store as store_mod
from libhmacunlock.errors import NoKeyHoldsCredential
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.keyinfo import MemoryInfoCache, SharedInfoCache
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from libhmacunlock.throttle import Throttle
from libhmacunlock.unlock import unlock
from tests.fixtures.library import CLIENT_PIN, GET_ASSERTION, GET_INFO, THREE, asked, delta, enroll_user, pin
from tests.fixtures.softkey import TEST_PIN

USER = "alice"


def counts(server) -> dict[int, int]:
    return dict(server.authenticator.message_counts)


@pytest.fixture
def served(udp_softkey):
    """The software key over UDP with TEST_PIN set (in-process, so nothing here counts)."""
    from fido2.ctap2 import Ctap2
    from fido2.ctap2.pin import ClientPin

    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    return udp_softkey


# --- three messages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache_type", [MemoryInfoCache, SharedInfoCache])
def test_a_key_the_cache_knows_signs_in_with_three_messages(store, served, cache_type):
    uk = enroll_user(store, served.spec, USER)
    cache = cache_type()
    before = asked(served)
    assert unlock(store, served.spec, pin(), user=USER, info_cache=cache, pin_floor=3).unlock_key == uk
    # learnt it: getInfo, the probe, the floor, then key agreement, token, assertion
    assert delta(before, asked(served)) == {"getInfo": 1, "getPinRetries": 1, **THREE, "getAssertion": 2}
    for _ in range(2):
        before = asked(served)
        result = unlock(store, served.spec, pin(), user=USER, info_cache=cache, pin_floor=3)
        assert result.unlock_key == uk and result.rotated
        assert delta(before, asked(served)) == THREE  # the witness vouched for the probe and the floor


def test_a_cached_answer_for_another_key_model_is_read_again(store, served):
    uk = enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    unlock(store, served.spec, pin(), user=USER, info_cache=cache)
    answer = cbor.decode(cache.get(served.spec))
    answer[0x03] = bytes(16)  # an AAGUID the record does not name: another key was plugged in there
    cache.put(served.spec, cbor.encode(answer))
    before = asked(served)
    assert unlock(store, served.spec, pin(), user=USER, info_cache=cache).unlock_key == uk
    assert delta(before, asked(served)) == {"getInfo": 1, **THREE}  # the key agreement still the witness's
    assert cbor.decode(cache.get(served.spec))[0x03] != bytes(16)  # the cache holds the key's own answer again


def test_a_cached_answer_the_key_contradicts_is_read_again_and_the_command_retried_once(store, served):
    """The cached answer names a message size the key does not have: the first request larger than that (the PIN
    guard's probe; with the witness, the PIN token) is refused before it is sent, getInfo is read again and the
    request retried once, successfully. No PIN attempt is spent on the way."""
    uk = enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    unlock(store, served.spec, pin(), user=USER, info_cache=cache)
    answer = cbor.decode(cache.get(served.spec))
    answer[0x05] = 64  # maxMsgSize: every PIN request is larger
    cache.put(served.spec, cbor.encode(answer))
    retries = served.authenticator.state.pin_retries
    before = asked(served)
    assert unlock(store, served.spec, pin(), user=USER, info_cache=cache).unlock_key == uk
    # the key agreement (small enough), then the token: refused before it was sent; getInfo; a key agreement and
    # the token again, and the assertion, on the fresh answer
    assert delta(before, asked(served)) == {"getInfo": 1, **THREE, "getKeyAgreement": 2}
    assert served.authenticator.state.pin_retries == retries
    assert cbor.decode(cache.get(served.spec))[0x05] != 64


def test_a_stale_answer_never_decides_a_refusal(store, served, tmp_path):
    """The cache says a PIN is set; the key (reset meanwhile, say) has none, nor the credential. The PIN guard's
    probe asks the key itself, before anything that depends on getInfo: no key holding the credential, no PIN
    asked, nothing after the probe."""
    from libhmacunlock.softkey.udp import running_udp_softkey

    enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    unlock(store, served.spec, pin(), user=USER, info_cache=cache)
    with running_udp_softkey(tmp_path / "blank.json") as blank:  # a key without a PIN at the same place
        cache.put(blank.spec, cache.get(served.spec))  # the answer of the enrolled key: its AAGUID, clientPin true
        before = counts(blank)
        asked = pin()
        with pytest.raises(NoKeyHoldsCredential):
            unlock(store, blank.spec, asked, user=USER, info_cache=cache)
        assert asked.asked == [] and delta(before, counts(blank)) == {GET_ASSERTION: 1}  # the probe only


def test_the_key_agreement_is_fetched_before_the_pin_is_given(store, served):
    """The real helper process (as the module spawns it): after the PIN guard's probe it fetches the key agreement
    and sends the prompt; only then does the test give the PIN, and only the token and the assertion follow."""
    from tests.fixtures.helper_process import HelperProcess

    enroll_user(store, served.spec, USER)
    proc = HelperProcess()
    try:
        before = counts(served)
        proc.send(b"Q", f"user={USER}\nstore={store.path}\ndevice={served.spec}\nmax_tries=1\npin_floor=0\n".encode())
        assert proc.recv() == (b"L", "started")
        assert proc.recv()[0] == b"P"
        deadline = time.monotonic() + 60  # a bound for a broken helper, not a timing assertion
        while delta(before, counts(served)).get(CLIENT_PIN, 0) < 1:
            assert time.monotonic() < deadline, "no key agreement before the PIN"
            time.sleep(0.005)
        assert delta(before, counts(served)) == {GET_INFO: 1, CLIENT_PIN: 1, GET_ASSERTION: 1}  # no PIN sent yet
        proc.send(b"S", TEST_PIN.encode())
        while (frame := proc.recv())[0] != b"V":
            pass
        assert frame[1].startswith("success")
        assert proc.close() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()


def test_a_failed_conversation_with_a_record_is_auth_err_and_sends_no_pin(store, served):
    from tests.fixtures.helper_process import HelperProcess

    enroll_user(store, served.spec, USER)
    proc = HelperProcess()
    before = counts(served)
    proc.send(b"Q", f"user={USER}\nstore={store.path}\ndevice={served.spec}\n".encode())
    assert proc.recv()[0] == b"L"
    assert proc.recv()[0] == b"P"
    proc.send(b"C")
    while (frame := proc.recv())[0] != b"V":
        pass
    assert frame[1].split("\n")[0] == "auth_err"
    assert proc.close() == 0
    assert delta(before, counts(served)).get(GET_ASSERTION, 0) == 1  # the probe (up=false) only: no unlock


# --- the verdict before the record write ------------------------------------------------------------------------


def _frames(data: bytes) -> list[bytes]:
    kinds = []
    while data:
        kinds.append(data[:1])
        data = data[3 + int.from_bytes(data[1:3], "big") :]
    return kinds


def _drained(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the module's end holds now, and whether end of file follows it (never blocks)."""
    data = b""
    sock.setblocking(False)
    try:
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                return data, False
            if not chunk:
                return data, True
            data += chunk
    finally:
        sock.setblocking(True)


@pytest.fixture
def in_process_helper(monkeypatch, store, served):
    """helper.serve + helper.finish in this process on a socketpair, the module's side pre-filled (request, PIN).
    harden() is left out: it would make the test process undumpable."""
    monkeypatch.setattr(helper, "harden", lambda: None)
    uk = enroll_user(store, served.spec, USER)

    def run(detach: bool, seen: list, cleared: list | None = None) -> None:
        module, child = socket.socketpair()
        request = f"user={USER}\nstore={store.path}\ndevice={served.spec}\n".encode()
        module.sendall(b"Q" + len(request).to_bytes(2, "big") + request)
        module.sendall(b"S" + len(TEST_PIN).to_bytes(2, "big") + TEST_PIN.encode())
        real_write = Store.write

        def observed_write(self, record):
            data, eof = _drained(module)  # what the module has been sent by the time the record is written
            seen.append((_frames(data), eof))
            real_write(self, record)

        monkeypatch.setattr(Store, "write", observed_write)
        real_succeeded = Throttle.succeeded
        if cleared is not None:

            def observed_clear(self):
                data, eof = _drained(module)  # what the module has by the time the throttle's count is cleared
                cleared.append((_frames(data), eof, _failures(store)))
                real_succeeded(self)

            monkeypatch.setattr(Throttle, "succeeded", observed_clear)
        fd = child.detach()
        chan = Channel(fd, fd)
        try:
            helper.finish(chan, helper.serve(chan), detach)
        finally:
            os.close(fd)
            monkeypatch.setattr(Store, "write", real_write)
            monkeypatch.setattr(Throttle, "succeeded", real_succeeded)
        return module

    return uk, run


def test_the_verdict_and_the_end_of_file_precede_the_record_write_warm(in_process_helper, store, served):
    """A warm helper's child (no detach): the write runs after Channel.end(), in the same process."""
    uk, run = in_process_helper
    before = store.record_path(USER).read_bytes()
    seen: list = []
    run(detach=False, seen=seen).close()
    assert len(seen) == 1
    kinds, eof = seen[0]
    assert kinds[-1] == b"V" and eof  # the verdict was out and the module saw end of file before the write began
    assert store.record_path(USER).read_bytes() != before  # and the write did happen (salt rotated)
    assert unlock(store, served.spec, pin(), user=USER).unlock_key == uk


def _failures(store) -> int:
    import json

    path = store.path / f".{USER}.throttle"
    return json.loads(path.read_text())["failures"] if path.exists() else 0


@pytest.mark.parametrize("detach", [False, True])
def test_the_throttles_count_is_cleared_after_the_verdict_and_before_the_end_of_file(in_process_helper, store, detach):
    """The PIN is charged to the throttle right before it is sent (a count of 1 during the sign-in); a verified
    sign-in clears it after the verdict and before the end of file, which the module waits for: the PAM host
    returns only after it, so the user's next sign-in cannot see this one's PIN still counted."""
    _, run = in_process_helper
    cleared: list = []
    run(detach=detach, seen=[], cleared=cleared).close()
    assert len(cleared) == 1
    kinds, eof, failures = cleared[0]
    assert kinds[-1] == b"V" and not eof and failures == 1  # the verdict was out, the end of file not yet
    assert _failures(store) == 0
    if detach:
        Store(store.path).settled(USER)
        _reap_children()


def test_the_verdict_precedes_the_record_write_spawned_and_the_writer_keeps_the_lock(in_process_helper, store):
    """A spawned helper (detach): a forked child writes; the process that gave the verdict may exit at once while
    the child still holds the user's store lock, and the child's write saw the verdict and end of file first."""
    _, run = in_process_helper
    before = store.record_path(USER).read_bytes()
    report_r, report_w = os.pipe()

    class Reporting(list):
        def append(self, item):  # runs in the forked writer: it tells the test process over a pipe
            kinds, eof = item
            os.write(report_w, b"".join(kinds) + (b"|EOF" if eof else b"|open"))

    module = run(detach=True, seen=Reporting())
    os.close(report_w)
    # finish() returned in this (the verdicted) process while the writer may still be writing: the lock tells
    lock = os.open(store.path / f".{USER}.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for the writer (ordering: it took the lock before the verdict)
    finally:
        os.close(lock)
    report = b""
    while chunk := os.read(report_r, 4096):
        report += chunk
    os.close(report_r)
    kinds, eof = report.split(b"|")
    assert kinds.endswith(b"V") and eof == b"EOF", report
    assert store.record_path(USER).read_bytes() != before
    module.close()
    _reap_children()


def _reap_children() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def test_a_failed_write_after_the_verdict_leaves_the_old_record_which_still_opens(
    in_process_helper, store, served, monkeypatch
):
    uk, run = in_process_helper
    before = store.record_path(USER).read_bytes()

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod.os, "rename", broken)
    seen: list = []
    module = run(detach=False, seen=seen)
    monkeypatch.undo()
    assert seen and seen[0][0][-1] == b"V" and seen[0][1]  # the verdict (success) was out before the write
    assert store.record_path(USER).read_bytes() == before  # the failed write left the old record...
    names = sorted(p.name for p in store.path.iterdir())
    assert names == [
        f".{USER}.lock",
        f".{USER}.throttle",
        ".pin.lock",
        f"{USER}.json",
    ]  # and no temp file (the throttle: every PIN is charged as it is sent)
    assert unlock(store, served.spec, ScriptedInteraction([TEST_PIN]), user=USER).unlock_key == uk  # ...which opens
    module.close()


# --- through real libpam: the warm helper's three messages ---------------------------------------------------


@pytest.mark.root
def test_the_warm_helper_signs_in_with_three_messages_and_spawned_with_four(served_key, enrolled, daemon):
    """Counted at the key, through pamtester and the real module: the warm helper's children share the getInfo
    answers they read and the witness a sign-in leaves (pinguard.py), so from the second sign-in on it is exactly
    key agreement, PIN token, assertion, under the PIN guard (pin_floor=3); the spawned helper has no memory: getInfo,
    the probe, the floor, then the same three."""
    from tests.fixtures.pam_signin import USER as PAM_USER
    from tests.fixtures.pam_signin import line
    from tests.pam.stack import pam_service, pamtester, record_settled

    with pam_service(line(served_key, enrolled, socket=daemon.socket)) as warm:
        seen = []
        for _ in range(3):
            before = asked(served_key)
            run = pamtester(warm, PAM_USER, TEST_PIN + "\n")
            assert run.ok, run.output
            record_settled(enrolled, PAM_USER)
            seen.append(delta(before, asked(served_key)))
    # the first: the PIN guard's probe and one getPinRetries (not read again under the PIN lock: no PIN was sent
    # since), then key agreement, PIN token, assertion; getInfo unless a child had read it already
    guarded = {"getPinRetries": 1, **THREE, "getAssertion": 2}
    assert seen[0] in ({"getInfo": 1, **guarded}, guarded)
    assert seen[1:] == [THREE] * 2
    assert daemon.served() == 3
    with pam_service(line(served_key, enrolled)) as spawned:
        before = asked(served_key)
        run = pamtester(spawned, PAM_USER, TEST_PIN + "\n")
        assert run.ok, run.output
        assert delta(before, asked(served_key)) == {"getInfo": 1, **guarded}


# --- a warm child: nothing left to import ------------------------------------------------------------------------

_IMPORTS_PROBE = """
import os, socket, sys
from hmacunlock_pam import helper, warm
from hmacunlock_pam.protocol import Channel
from libhmacunlock.keyinfo import SharedInfoCache

warm.preload()


class Looked:  # on sys.meta_path: Python asks it about every import not already loaded, found or not
    names = []

    def find_spec(self, name, path=None, target=None):
        Looked.names.append(name)
        return None


before = set(sys.modules)
module, child = socket.socketpair()
request = sys.argv[1].encode()  # the request (no secret in it); the PIN on stdin
pin = sys.stdin.readline().strip().encode()
module.sendall(b"Q" + len(request).to_bytes(2, "big") + request)
module.sendall(b"S" + len(pin).to_bytes(2, "big") + pin)
fd = child.detach()
cache = SharedInfoCache()
sys.meta_path.insert(0, Looked())
status = helper.main(Channel(fd, fd), info_cache=cache)
print(status, " ".join(sorted(set(sys.modules) - before) + Looked.names))
"""


def test_a_warm_child_imports_nothing_during_a_sign_in(store, served):
    """What the warm helper's daemon preloads (warm.preload) is all a sign-in needs: a fresh process that preloaded
    signs in (the library's unlock through helper.main, as a child serves one) and no module is imported meanwhile,
    nor looked for (a failed import, `_hmacunlock_install` in a source tree, costs the same search each time), so
    none is paid for between the connection and the verdict."""
    import subprocess
    import sys

    enroll_user(store, served.spec, USER)
    request = f"user={USER}\nstore={store.path}\ndevice={served.spec}\n"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _IMPORTS_PROBE, request],
        input=f"{TEST_PIN}\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    status, _, imported = proc.stdout.strip().partition(" ")
    assert status == "0" and imported == "", proc.stdout
