"""python-fido2's own client classes against the software key over CTAPHID/UDP.

The framing, channel and keepalive handling on the client side is python-fido2's `CtapHidDevice`; ours is only the
socket (`libhmacunlock.udp`), so a CTAPHID bug in the key cannot hide behind a matching bug in our client.
"""

from __future__ import annotations

import os
import socket
import threading

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import STATUS, CtapError
from fido2.ctap2 import Ctap2
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.extensions import HmacSecretExtension
from fido2.ctap2.pin import ClientPin, PinProtocolV1, PinProtocolV2
from fido2.hid import CAPABILITY
from fido2.utils import websafe_decode

from libhmacunlock.errors import DeviceSpecInvalid, ExitCode, KeyRemoved, NoKeyFound
from libhmacunlock.softkey.presence import PresencePolicy
from libhmacunlock.softkey.udp import running_udp_softkey
from libhmacunlock.udp import open_udp_device, parse_udp_spec

PIN = "246810"
RP_ID = "example.com"
RP = {"id": RP_ID, "name": "Example"}  # Ctap2 takes the CTAP (CBOR) form: bytes ids, not WebAuthn JSON


def open_key(server, timeout: float = 5.0):
    return open_udp_device("127.0.0.1", server.port, timeout=timeout)


@pytest.fixture
def device(udp_softkey):
    dev = open_key(udp_softkey)
    yield dev
    dev.close()


@pytest.fixture
def pinned(device):
    ClientPin(Ctap2(device)).set_pin(PIN)
    return device


def user(name: str) -> dict:
    return {"id": name.encode(), "name": name, "displayName": name.title()}


def test_spec_names_the_bound_port(udp_softkey):
    assert udp_softkey.spec == f"udp:127.0.0.1:{udp_softkey.port}" and udp_softkey.port > 0
    assert parse_udp_spec(udp_softkey.spec) == ("127.0.0.1", udp_softkey.port)


def test_ctaphid_init_ping_and_get_info(device):
    assert device.version == 2
    assert device.capabilities & CAPABILITY.CBOR and device.capabilities & CAPABILITY.NMSG
    payload = os.urandom(500)
    assert device.ping(payload) == payload
    device.wink()
    info = Ctap2(device).get_info()
    assert "FIDO_2_1" in info.versions and "hmac-secret" in info.extensions
    assert info.options["rk"] is True and info.options["clientPin"] is False


@pytest.mark.parametrize("protocol", [PinProtocolV1, PinProtocolV2])
def test_client_pin_both_protocols(pinned, protocol):
    ctap = Ctap2(pinned)
    client_pin = ClientPin(ctap, protocol())
    assert client_pin.get_pin_retries()[0] == 8
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
    assert len(token) == 32
    with pytest.raises(CtapError) as wrong:
        client_pin.get_pin_token("000000", ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
    assert wrong.value.code == CtapError.ERR.PIN_INVALID
    assert client_pin.get_pin_retries()[0] == 7
    client_pin.change_pin(PIN, "135790")
    assert client_pin.get_pin_retries()[0] == 8
    client_pin.get_pin_token("135790", ClientPin.PERMISSION.GET_ASSERTION, RP_ID)


def test_credential_management_several_accounts(pinned):
    ctap = Ctap2(pinned)
    client_pin = ClientPin(ctap)
    for name in ("alice", "bob"):
        protocol = client_pin.protocol
        token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.MAKE_CREDENTIAL, RP_ID)
        cdh = os.urandom(32)
        ctap.make_credential(
            cdh,
            RP,
            user(name),
            [{"type": "public-key", "alg": -7}],
            options={"rk": True},
            pin_uv_param=protocol.authenticate(token, cdh),
            pin_uv_protocol=protocol.VERSION,
        )
    token = client_pin.get_pin_token(PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    credman = CredentialManagement(ctap, client_pin.protocol, token)
    assert credman.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 2
    rps = credman.enumerate_rps()
    assert [rp[CredentialManagement.RESULT.RP]["id"] for rp in rps] == [RP_ID]
    creds = credman.enumerate_creds(rps[0][CredentialManagement.RESULT.RP_ID_HASH])
    names = sorted(c[CredentialManagement.RESULT.USER]["name"] for c in creds)
    assert names == ["alice", "bob"]
    credman.delete_cred(creds[0][CredentialManagement.RESULT.CREDENTIAL_ID])
    assert credman.get_metadata()[CredentialManagement.RESULT.EXISTING_CRED_COUNT] == 1


class PinInteraction(UserInteraction):
    def __init__(self) -> None:
        self.keepalives = 0

    def prompt_up(self) -> None:
        self.keepalives += 1

    def request_pin(self, permissions, rp_id):
        return PIN


def test_fido2_client_hmac_secret(pinned):
    client = Fido2Client(
        pinned,
        DefaultClientDataCollector("https://example.com"),
        PinInteraction(),
        extensions=[HmacSecretExtension(allow_hmac_secret=True)],
    )
    made = client.make_credential(
        {
            "rp": {"id": RP_ID, "name": RP["name"]},
            "user": {"id": b"alice", "name": "alice"},
            "challenge": os.urandom(32),
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
            "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
            "extensions": {"hmacCreateSecret": True},
        }
    )
    assert made.client_extension_results["hmacCreateSecret"] is True
    cred_id = made.raw_id

    def hmac_output(salt: bytes) -> bytes:
        result = client.get_assertion(
            {
                "rpId": RP_ID,
                "challenge": os.urandom(32),
                "userVerification": "required",
                "extensions": {"hmacGetSecret": {"salt1": salt}},
            }
        ).get_response(0)
        assert result.raw_id == cred_id
        return websafe_decode(result.client_extension_results["hmacGetSecret"]["output1"])  # JSON form

    salt = os.urandom(32)
    first = hmac_output(salt)
    assert len(first) == 32
    assert hmac_output(salt) == first
    assert hmac_output(os.urandom(32)) != first


def test_cancel_while_waiting_for_a_touch(tmp_path):
    with running_udp_softkey(tmp_path / "key.json", presence=PresencePolicy.approve(delay=30.0)) as server:
        device = open_key(server)
        statuses: list[STATUS] = []
        cancel = threading.Event()

        def on_keepalive(status: STATUS) -> None:
            statuses.append(status)
            cancel.set()  # the key is waiting for a touch: give up, as a browser's cancel button would

        with pytest.raises(CtapError) as cancelled:
            Ctap2(device).selection(event=cancel, on_keepalive=on_keepalive)
        assert cancelled.value.code == CtapError.ERR.KEEPALIVE_CANCEL
        assert STATUS.UPNEEDED in statuses
        assert device.ping(b"still here") == b"still here"
        device.close()


def test_two_clients_take_turns(udp_softkey):
    devices = [open_key(udp_softkey) for _ in range(2)]
    errors: list[BaseException] = []

    def work(dev) -> None:
        try:
            for _ in range(10):
                assert "FIDO_2_1" in Ctap2(dev).get_info().versions
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and not any(t.is_alive() for t in threads)
    for d in devices:
        d.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_listening_is_no_key_found():
    with pytest.raises(NoKeyFound) as err:
        open_udp_device("127.0.0.1", free_port(), timeout=2.0)
    assert err.value.exit_code == ExitCode.NO_KEY and "udp:127.0.0.1:" in err.value.message


def test_silent_peer_is_no_key_found_after_the_timeout():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(NoKeyFound) as err:
            open_udp_device("127.0.0.1", silent.getsockname()[1], timeout=0.3)
    assert "softkey serve" in err.value.message


def test_key_going_away_mid_session_is_key_removed(tmp_path):
    with running_udp_softkey(tmp_path / "key.json") as server:
        device = open_key(server, timeout=1.0)
        assert device.ping(b"x") == b"x"
    with pytest.raises(KeyRemoved):
        Ctap2(device).get_info()
    device.close()


@pytest.mark.parametrize(
    "spec", ["udp:", "udp:host", "udp:127.0.0.1:", "udp:127.0.0.1:0", "udp:1.2.3.4:99999", "hid:/dev/hidraw0", "udp::5"]
)
def test_bad_specs_are_refused(spec):
    with pytest.raises(DeviceSpecInvalid):
        parse_udp_spec(spec)


def test_ipv6_spec():
    assert parse_udp_spec("udp:[::1]:8111") == ("::1", 8111)


def test_something_else_on_the_port_is_no_key_found():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
        impostor.bind(("127.0.0.1", 0))
        impostor.settimeout(5)

        def answer_zeros() -> None:
            _, peer = impostor.recvfrom(100)
            impostor.sendto(bytes(64), peer)

        thread = threading.Thread(target=answer_zeros)
        thread.start()
        with pytest.raises(NoKeyFound) as err:
            open_udp_device("127.0.0.1", impostor.getsockname()[1], timeout=2.0)
        thread.join(5)
    assert "not a FIDO security key" in err.value.message


def test_ipv6_loopback(tmp_path):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with running_udp_softkey(tmp_path / "key.json", host="::1") as server:
        assert server.spec == f"udp:[::1]:{server.port}"
        device = open_udp_device(*parse_udp_spec(server.spec))
        assert "FIDO_2_1" in Ctap2(device).get_info().versions
        device.close()


@pytest.mark.parametrize("answer, denied", [(b"\n", False), (b"n\n", True)])
def test_prompt_presence_answered_on_a_terminal(tmp_path, answer, denied):
    master, slave = os.openpty()  # the terminal the software key asks on; the test is the person at it
    try:
        policy = PresencePolicy.prompt(timeout=20.0, tty=os.ttyname(slave))
        with running_udp_softkey(tmp_path / "key.json", presence=policy) as server:
            device = open_key(server)
            seen: list[STATUS] = []

            def on_keepalive(status: STATUS) -> None:
                seen.append(status)
                if status == STATUS.UPNEEDED:
                    os.write(master, answer)  # only once asked: python-fido2 reports each new status once

            try:
                Ctap2(device).selection(on_keepalive=on_keepalive)
                outcome = None
            except CtapError as exc:
                outcome = exc.code
            device.close()
        assert seen and seen[-1] == STATUS.UPNEEDED
        assert outcome == (CtapError.ERR.OPERATION_DENIED if denied else None)
        assert b"touch requested" in os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)
