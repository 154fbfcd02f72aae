"""The lying key through real libpam and the real helper (root, pamtester/libpam: skips with the reason otherwise).

A key that stalls forever while sending keepalives is bounded only by the module's `timeout=` (the library waits
for a key that says it is busy, as python-fido2 does); the result is PAM_SYSTEM_ERR, never success, and never
PAM_IGNORE even with nouserok and a permissive fallback. A lie about UV is PAM_AUTH_ERR.
"""

from __future__ import annotations

import pam
import pytest

from libhmacunlock.enroll import enroll
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.softkey.authenticator import Authenticator
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.state import KeyState
from libhmacunlock.softkey.udp import RunningUdpSoftKey, UdpSoftKeyServer
from tests.fixtures.liar import Lie, LyingAuthenticator
from tests.fixtures.softkey import TEST_PIN, set_pin
from tests.pam.stack import NOUSEROK_CONTROL, module_line, pam_service, python_pam, require_pam

pytestmark = pytest.mark.root
USER = "hmu-test-alice"


@pytest.fixture
def liar(tmp_path):
    """(store, set_lie): a software key served over UDP through a LyingAuthenticator, the user enrolled honestly."""
    require_pam()
    real = Authenticator(KeyState.open(tmp_path / "softkey.json"), PresencePolicy.approve())
    set_pin(real)
    store = tmp_path / "store"
    enroll(str(store), SoftKeyDevice(real), ScriptedInteraction([TEST_PIN]), USER)
    lying = LyingAuthenticator(real, Lie.HONEST, stall_seconds=30)
    server = RunningUdpSoftKey(UdpSoftKeyServer(lying))
    server.start()
    try:
        yield store, server.spec, lying
    finally:
        server.stop()


def test_a_key_that_stalls_with_keepalives_is_cut_off_by_the_timeout(liar):
    store, spec, lying = liar
    lying.lie = Lie.STALL
    line = module_line(NOUSEROK_CONTROL, "nouserok", store=store, device=spec, timeout=3)
    with pam_service(line, "auth required pam_permit.so") as service:
        outcome = python_pam(service, USER, TEST_PIN)
    assert lying.lies_told == 1
    assert not outcome.ok and outcome.code == pam.PAM_SYSTEM_ERR


def test_a_key_that_lies_about_uv_is_auth_err(liar):
    store, spec, lying = liar
    with pam_service(module_line("required", store=store, device=spec)) as service:
        assert python_pam(service, USER, TEST_PIN).ok  # control: the honest wrapper signs in
        lying.lie = Lie.NO_UV
        outcome = python_pam(service, USER, TEST_PIN)
    assert not outcome.ok and outcome.code == pam.PAM_AUTH_ERR
