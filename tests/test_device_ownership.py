"""A flow closes only the key it opened itself (issue 11): a CtapDevice or Key the caller passes in stays open."""

from __future__ import annotations

import libhmacunlock.udp
from libhmacunlock.device import Key
from libhmacunlock.discovery import opened_key
from libhmacunlock.enroll import enroll
from libhmacunlock.recovery import add_recovery
from libhmacunlock.unlock import unlock
from tests.fixtures.library import ClosingDevice, pin, second_softkey
from tests.fixtures.softkey import TEST_PIN, set_pin


def test_unlock_and_enroll_leave_the_callers_device_open(store, pinned_softkey_device):
    device = ClosingDevice(pinned_softkey_device)
    uk = enroll(store, device, pin(), "alice").unlock_key
    assert unlock(store, device, pin(), user="alice").unlock_key == uk
    assert unlock(store, device, pin()).unlock_key == uk  # usernameless too
    assert device.closes == 0  # and each use after the first worked: a closed ClosingDevice refuses calls


def test_enrolling_a_further_key_leaves_both_devices_open(store, pinned_softkey_device, tmp_path):
    existing = ClosingDevice(pinned_softkey_device)
    enroll(store, existing, pin(), "alice")
    new = ClosingDevice(second_softkey(tmp_path).device)
    enroll(store, new, pin(TEST_PIN), "alice", existing_device=existing)
    add_recovery(store, new, pin(), "alice")
    assert (existing.closes, new.closes) == (0, 0)
    assert unlock(store, new, pin(), user="alice").unlock_key == unlock(store, existing, pin(), user="alice").unlock_key


def test_a_passed_key_stays_open(store, pinned_softkey_device):
    device = ClosingDevice(pinned_softkey_device)
    key = Key.from_device(device)
    enroll(store, key, pin(), "alice")
    unlock(store, key, pin(), user="alice")
    assert device.closes == 0


def test_a_key_the_flow_opened_from_a_spec_is_closed(store, udp_softkey, monkeypatch):
    set_pin(udp_softkey.authenticator)
    opened: list[ClosingDevice] = []
    real = libhmacunlock.udp.open_udp_device

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(ClosingDevice(real(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(libhmacunlock.udp, "open_udp_device", counting)
    enroll(store, udp_softkey.spec, pin(), "alice")
    unlock(store, udp_softkey.spec, pin(), user="alice")
    with opened_key(udp_softkey.spec):
        pass
    assert [d.closes for d in opened] == [1, 1, 1]
