"""The lying key (tests/fixtures/liar.py): every lie a malicious or cloned device can tell is refused by
`libhmacunlock.unlock.unlock` with the error a person can act on, and the record is left exactly as it was.

The user is enrolled with the honest software key; the liar is the same key (same credential, same PIN) with its
getAssertion answers falsified, re-signed with the real credential key so that only the lie is wrong.
"""

from __future__ import annotations

import pytest

from libhmacunlock.discovery import open_key
from libhmacunlock.enroll import enroll
from libhmacunlock.errors import AssertionInvalid, ClonedKey, KeyCommandFailed, KeyRemoved, RecordTampered
from libhmacunlock.interaction import ClonedKeyWarning, ScriptedInteraction
from libhmacunlock.softkey.authenticator import Authenticator
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.state import KeyState
from libhmacunlock.softkey.udp import RunningUdpSoftKey, UdpSoftKeyServer
from libhmacunlock.unlock import unlock
from tests.fixtures.liar import Lie, LyingAuthenticator, SilentProxy
from tests.fixtures.softkey import TEST_PIN, set_pin

USER = "alice"


@pytest.fixture
def real(tmp_path) -> Authenticator:
    auth = Authenticator(KeyState.open(tmp_path / "softkey.json"), PresencePolicy.approve())
    set_pin(auth)
    return auth


@pytest.fixture
def store(tmp_path, real):
    path = tmp_path / "store"
    enroll(str(path), SoftKeyDevice(real), ScriptedInteraction([TEST_PIN]), USER)
    return path


def _record(store) -> bytes:
    return (store / f"{USER}.json").read_bytes()


def _unlock(store, device, **kw):
    return unlock(str(store), device, ScriptedInteraction([TEST_PIN]), user=USER, **kw)


def _refused(store, liar: LyingAuthenticator, error: type[Exception], **kw) -> Exception:
    before = _record(store)
    with pytest.raises(error) as caught:
        _unlock(store, SoftKeyDevice(liar), **kw)
    assert liar.lies_told >= 1, "the liar was never asked: the test proves nothing"
    assert _record(store) == before, "a refused unlock must leave the record as it was"
    return caught.value


def test_the_honest_wrapper_unlocks(store, real):
    # The control: the liar telling no lie is accepted, so each refusal below is due to its lie alone.
    honest = LyingAuthenticator(real, Lie.HONEST)
    assert _unlock(store, SoftKeyDevice(honest)).rotated


def test_an_assertion_without_uv_is_refused(store, real):
    # CVE-2021-31924 class (pam-u2f did not check that the PIN was verified): valid signature, output, count.
    error = _refused(store, LyingAuthenticator(real, Lie.NO_UV), AssertionInvalid)
    assert "UV flag" in error.message


def test_a_signature_by_another_key_is_refused(store, real):
    error = _refused(store, LyingAuthenticator(real, Lie.OTHER_SIGNER), AssertionInvalid)
    assert "signature does not verify" in error.message


def test_a_lower_sign_count_is_refused_as_a_cloned_key(store, real):
    _unlock(store, SoftKeyDevice(real))  # the stored count is now above 1, so "lower" is meaningful
    error = _refused(store, LyingAuthenticator(real, Lie.LOWER_COUNT), ClonedKey)
    assert error.seen < error.stored


def test_a_lower_sign_count_only_warns_under_the_warn_policy(store, real):
    _unlock(store, SoftKeyDevice(real))
    told = ScriptedInteraction([TEST_PIN])
    result = unlock(
        str(store), SoftKeyDevice(LyingAuthenticator(real, Lie.LOWER_COUNT)), told, user=USER, clone_policy="warn"
    )
    assert result.unlock_key and [type(e) for e in told.informed] == [ClonedKeyWarning]
    assert "cloned" in told.informed[0].text


def test_a_replayed_hmac_output_does_not_open_the_rotated_slot(store, real):
    liar = LyingAuthenticator(real, Lie.REPLAY_OUTPUT)
    first = _unlock(store, SoftKeyDevice(liar))  # the liar captures this output; the salt rotates
    assert liar.captured is not None and first.rotated
    error = _refused(store, liar, RecordTampered)
    assert "wrong secret" in error.message


def test_garbage_cbor_is_a_key_error_not_a_crash(store, real):
    _refused(store, LyingAuthenticator(real, Lie.GARBAGE_CBOR), KeyCommandFailed)


def test_a_key_that_goes_silent_mid_unlock_is_key_removed(store, real):
    server = RunningUdpSoftKey(UdpSoftKeyServer(real))
    server.start()
    try:
        with SilentProxy(server.port) as proxy:
            before = _record(store)
            with open_key(proxy.spec, timeout=1.0) as key, pytest.raises(KeyRemoved):
                _unlock(store, key)  # closed by the test, which opened it: an open Key keeps the device's lock
            assert proxy.silent.is_set() and _record(store) == before
    finally:
        server.stop()
