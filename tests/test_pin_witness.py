"""The PIN guard's key-agreement witness (issue 14, libhmacunlock/pinguard.py): a warm sign-in on a key nothing
happened to since the last one is key agreement, PIN token, assertion, and every event that could make the skipped
probe or floor read matter brings them back.

Counted at the key (the software key's own counters, clientPIN by subcommand), and every test that could spend an
attempt reads the key's own retry counter before and after. First in the library (the unlock flow with a cache, as
the warm helper's children have), then through real libpam and the warm helper daemon.
"""

from __future__ import annotations

import threading
import time

import pytest
from fido2.ctap import CtapError
from fido2.ctap2 import CredentialManagement, Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV1

from libhmacunlock import pinguard
from libhmacunlock.device import Key
from libhmacunlock.errors import (
    CredentialNotOnKey,
    NoKeyHoldsCredential,
    PinFloorReached,
    PinSoftLocked,
    WrongPin,
)
from libhmacunlock.interaction import ScriptedInteraction
from libhmacunlock.keyinfo import WITNESS, MemoryInfoCache, SharedInfoCache, Witness
from libhmacunlock.softkey.device import SoftKeyDevice
from libhmacunlock.store import Store
from libhmacunlock.unlock import unlock, unlock_verified
from tests.fixtures.library import THREE, asked, delta, enroll_user, pin
from tests.fixtures.softkey import TEST_PIN
from tests.fixtures.terminal import read_until

USER = "alice"
WRONG_PIN = "9999"
FLOOR = 3
# a sign-in the witness cannot vouch for: the probe and the floor's read before the prompt, then the three
FULL = {"getPinRetries": 1, **THREE, "getAssertion": 2}


@pytest.fixture
def served(udp_softkey):
    """The software key over UDP with TEST_PIN set (in-process, so nothing here counts)."""
    ClientPin(Ctap2(SoftKeyDevice(udp_softkey.authenticator))).set_pin(TEST_PIN)
    return udp_softkey


def retries(server) -> int:
    return server.authenticator.state.pin_retries


def other_client(server, protocol=None) -> ClientPin:
    """Another program on the same key (python-fido2 in-process): by default on the protocol hmacunlock uses."""
    ctap = Ctap2(SoftKeyDevice(server.authenticator))
    return ClientPin(ctap, protocol)


def mistype(server, protocol=None) -> None:
    with pytest.raises(CtapError):
        other_client(server, protocol).get_pin_token(WRONG_PIN)


def sign_in(store, server, cache, interaction=None, floor=FLOOR):
    return unlock(store, server.spec, interaction or pin(), user=USER, info_cache=cache, pin_floor=floor)


def counted(store, server, cache, **kw) -> dict[str, int]:
    before = asked(server)
    assert sign_in(store, server, cache, **kw).unlock_key
    return delta(before, asked(server))


@pytest.fixture(params=[MemoryInfoCache, SharedInfoCache])
def remembered(request, store, served):
    """USER enrolled on the served key, and a cache that has seen one sign-in (the witness is in it)."""
    enroll_user(store, served.spec, USER)
    cache = request.param()
    assert counted(store, served, cache) == {"getInfo": 1, **FULL}
    assert counted(store, served, cache) == THREE
    return cache


# --- what the witness is ---------------------------------------------------------------------------------------


def test_a_witness_encodes_and_anything_else_is_a_miss():
    witness = Witness(2, bytes(range(32)), 8, frozenset([bytes(32)]), 41)
    assert Witness.decode(witness.encode()) == witness
    assert Witness.decode(Witness(1, bytes(32)).encode()) == Witness(1, bytes(32), 0, frozenset(), None)
    for garbage in (b"", b"\xff", witness.encode()[:-1], b"\xa1\x01\x02"):
        assert Witness.decode(garbage) is None


@pytest.mark.parametrize("max_seen, floor, skipped", [(8, 3, True), (8, 4, True), (8, 5, False), (7, 4, False)])
def test_the_floor_is_taken_on_the_witness_word_only_when_max_seen_minus_three_is_above_it(max_seen, floor, skipped):
    # check_floor refuses at `attempts_left <= floor`; within a power cycle, at least max_seen - 3 are left
    assert pinguard.above_floor(Witness(2, bytes(32), max_seen), floor) is skipped


# --- in the library --------------------------------------------------------------------------------------------


def test_a_wrong_pin_by_another_client_makes_the_next_sign_in_probe_and_read_again(store, served, remembered):
    mistype(served)  # the key renews its key agreement (and counts the mismatch)
    assert retries(served) == 7
    assert counted(store, served, remembered) == FULL
    assert retries(served) == 8  # the right PIN restored them
    assert counted(store, served, remembered) == THREE  # and the new agreement is the witness now


def test_a_power_cycle_makes_the_next_sign_in_take_the_full_path(store, served, remembered):
    served.power_cycle()
    assert counted(store, served, remembered) == FULL
    assert counted(store, served, remembered) == THREE


class _Meanwhile(ScriptedInteraction):
    """Answers the PIN prompt after `other` ran (another sign-in, say), recording the attempts it was shown."""

    def __init__(self, other, secrets=(TEST_PIN,)) -> None:
        super().__init__(list(secrets))
        self.other = other
        self.shown: list[int | None] = []

    def ask_pin(self, purpose, key_label=None, attempts_left=None):
        self.shown.append(attempts_left)
        self.other()
        return super().ask_pin(purpose, key_label, attempts_left)


def _after_our_agreement(served, before: dict[str, int]) -> None:
    """Wait until the key has taken this sign-in's key agreement (fetched while its prompt shows): the key answers
    one request at a time, so what the test sends next reaches it after that one."""
    deadline = time.monotonic() + 30
    while asked(served).get("getKeyAgreement", 0) == before.get("getKeyAgreement", 0):
        assert time.monotonic() < deadline, "the key agreement was never fetched"
        time.sleep(0.001)


def _guarded_wrong_pin(store, served, before: dict[str, int], left: int):
    """Another sign-in through the PIN guard (no cache, its own Key) with a wrong PIN, once this sign-in's key
    agreement has reached the key; the key then has `left` attempts."""

    def other() -> None:
        _after_our_agreement(served, before)
        with pytest.raises(WrongPin):
            unlock(store, Key.from_device(SoftKeyDevice(served.authenticator)), ScriptedInteraction([WRONG_PIN]),
                   user=USER, pin_floor=FLOOR)  # fmt: skip
        assert retries(served) == left

    return other


def test_another_guarded_sign_ins_wrong_pin_before_the_token_renews_the_agreement_under_the_lock(
    store, served, remembered
):
    """While this sign-in's prompt shows (its key agreement fetched meanwhile), another sign-in through the guard
    sends a wrong PIN: the key renews the agreement this one fetched. Under the PIN lock the changed generation has
    it fetched again (and the attempts read again): the right PIN then opens, and only the other sign-in's attempt
    was used."""
    before = asked(served)
    interaction = _Meanwhile(_guarded_wrong_pin(store, served, before, left=7))
    assert sign_in(store, served, remembered, interaction).unlock_key
    assert retries(served) == 8  # our PIN was not sent under the stale agreement (that would have left 6)
    assert interaction.shown == [None]  # the witness's word is no count
    seen = delta(before, asked(served))
    # ours: agreement, (lock) agreement again + getPinRetries, token, assertion; the other's (no cache): getInfo,
    # probe, getPinRetries, agreement, token, and getPinRetries for its WrongPin's count
    assert seen == {
        "getInfo": 1,
        "getAssertion": 2,
        "getPinRetries": 3,
        "getKeyAgreement": 3,
        "getPinUvAuthTokenUsingPin": 2,
    }


def test_another_guarded_sign_ins_right_pin_before_the_token_costs_one_agreement_and_no_attempt(
    store, served, remembered
):
    before = asked(served)

    def other() -> None:
        _after_our_agreement(served, before)
        assert unlock(store, Key.from_device(SoftKeyDevice(served.authenticator)), pin(), user=USER).unlock_key

    assert sign_in(store, served, remembered, _Meanwhile(other)).unlock_key
    assert retries(served) == 8
    assert delta(before, asked(served))["getKeyAgreement"] == 3  # ours twice (the lock saw a new generation)


@pytest.mark.parametrize("floor, skipped", [(4, True), (5, False)])
def test_max_seen_near_the_floor_reads_the_attempts(store, served, floor, skipped):
    enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    sign_in(store, served, cache, floor=floor)  # max_seen 8
    seen = counted(store, served, cache, floor=floor)
    assert seen == (THREE if skipped else {**THREE, "getPinRetries": 1})


def test_a_low_first_read_is_raised_by_the_next_read_and_then_skipped(store, served):
    enroll_user(store, served.spec, USER)
    served.authenticator.state.pin_retries = 7  # as two earlier sign-ins' wrong PINs (before a replug) left it
    served.power_cycle()
    cache = MemoryInfoCache()
    sign_in(store, served, cache, floor=4)  # reads 7: max_seen 7, and 7 - 3 is not above 4
    assert counted(store, served, cache, floor=4) == {**THREE, "getPinRetries": 1}  # reads 8 (the success reset)
    assert counted(store, served, cache, floor=4) == THREE


def test_wrong_pins_on_another_protocol_cannot_fool_the_floor(store, served, remembered):
    """A key that renews only the protocol a mismatch came in on (as the software key does): another program's
    wrong PINs on protocol 1 leave our protocol 2 agreement, so the witness still matches. It still cannot be the
    floor's undoing: 3 mismatches soft-lock the key, so at least max_seen - 3 attempts are left, and the token is then
    refused before any PIN is compared."""
    mistype(served, PinProtocolV1())
    mistype(served, PinProtocolV1())
    assert retries(served) == 6
    assert counted(store, served, remembered) == THREE  # fooled, and harmless: the right PIN restores them
    assert retries(served) == 8
    for _ in range(3):
        mistype(served, PinProtocolV1())
    assert retries(served) == 5  # soft-locked: a replug is needed before any PIN is taken
    interaction = pin()
    with pytest.raises(PinSoftLocked):
        sign_in(store, served, remembered, interaction)
    assert retries(served) == 5  # the PIN asked was not compared: no attempt spent
    served.power_cycle()
    assert counted(store, served, remembered) == FULL  # the witness was forgotten, and the key renewed anyway


def _delete_credential(store, server, user=USER) -> None:
    """Another program deletes `user`'s credential from the key with the right PIN (no replug)."""
    client_pin = other_client(server)
    token = client_pin.get_pin_token(TEST_PIN, ClientPin.PERMISSION.CREDENTIAL_MGMT)
    credential_id = Store.of(store).read(user).slots[0].credential_id
    CredentialManagement(client_pin.ctap, client_pin.protocol, token).delete_cred(
        {"type": "public-key", "id": credential_id}
    )


def test_a_credential_deleted_with_the_right_pin_fails_the_sign_in_after_the_pin_without_an_attempt(
    store, served, remembered
):
    _delete_credential(store, served)
    interaction = pin()
    with pytest.raises(CredentialNotOnKey) as err:
        sign_in(store, served, remembered, interaction)
    assert not isinstance(err.value, NoKeyHoldsCredential)  # found after the token, not by the probe
    assert interaction.asked and retries(served) == 8  # the right PIN: the token succeeded, no attempt spent
    # the witness no longer vouches for it: the next sign-in probes before the prompt, and nobody is asked
    again = pin()
    with pytest.raises(NoKeyHoldsCredential):
        sign_in(store, served, remembered, again)
    assert again.asked == []


def test_a_credential_deleted_with_the_right_pin_then_a_mistyped_pin_costs_one_attempt(store, served, remembered):
    """The documented trade-off (docs/threat-model.md, attacker 6): what the skipped probe could have saved."""
    _delete_credential(store, served)
    with pytest.raises(WrongPin):
        sign_in(store, served, remembered, ScriptedInteraction([WRONG_PIN]))
    assert retries(served) == 7


def test_key_changed_makes_the_next_sign_in_probe_again(store, served, remembered):
    pinguard.key_changed(store)  # what hmacunlock's own credential delete calls
    assert counted(store, served, remembered) == {**THREE, "getAssertion": 2}  # the probe; the floor stays skipped
    assert counted(store, served, remembered) == THREE


def test_a_key_change_count_that_cannot_be_read_makes_every_sign_in_probe(store, served, remembered):
    (store.path / ".keys.changes").write_bytes(b"odd")  # not a count: unknown, so doubted (fail safe)
    assert counted(store, served, remembered) == {**THREE, "getAssertion": 2}
    assert counted(store, served, remembered) == {**THREE, "getAssertion": 2}
    pinguard.key_changed(store)  # a count again (the odd content restarts it at 1)
    assert (store.path / ".keys.changes").read_bytes() == (1).to_bytes(8, "big")
    assert counted(store, served, remembered) == {**THREE, "getAssertion": 2}
    assert counted(store, served, remembered) == THREE


def test_a_commands_single_token_through_the_guard_costs_no_extra_message(store, served):
    """pinguard.token (a command's credential-management PIN, no Guard of its own): under the lock the agreement is
    fetched (nothing was read before) and used by the token: two messages, as without the guard; the generation
    counts the PIN."""
    from libhmacunlock.device import PERMISSION

    enroll_user(store, served.spec, USER)  # the store exists (enroll sends no PIN through the guard)
    with Key.from_device(SoftKeyDevice(served.authenticator)) as key:
        before = asked(served)
        assert pinguard.token(Store.of(store), key, TEST_PIN, PERMISSION.CREDENTIAL_MGMT, None, 0).value
        assert delta(before, asked(served)) == {"getKeyAgreement": 1, "getPinUvAuthTokenUsingPin": 1}
    assert (Store.of(store).path / ".pin.lock").read_bytes() == (1).to_bytes(8, "big")


def test_a_credential_management_token_through_the_guard_counts_a_key_change(store, served, remembered):
    """`key credentials` gets its cm token through the guard: that alone makes the next sign-in probe again (the
    token may have deleted the very credential the witness saw)."""
    from libhmacunlock.device import PERMISSION

    with Key.from_device(SoftKeyDevice(served.authenticator)) as key:
        pinguard.token(Store.of(store), key, TEST_PIN, PERMISSION.CREDENTIAL_MGMT, None, 0)
    assert counted(store, served, remembered) == {**THREE, "getAssertion": 2}
    assert counted(store, served, remembered) == THREE


def test_other_sign_ins_in_between_keep_the_witness(store, served, remembered):
    """Another user's sign-in, or a spawned helper's (its own PIN through the guard, the PIN generation bumped): the
    key keeps its agreement on a right PIN, and no key change was counted, so the next warm sign-in is three again."""
    assert unlock(store, Key.from_device(SoftKeyDevice(served.authenticator)), pin(), user=USER, pin_floor=FLOOR)
    assert counted(store, served, remembered) == THREE


def test_a_torn_or_foreign_witness_only_costs_messages(store, served, remembered):
    remembered.put(served.spec, b"\xa1\x01", WITNESS)
    assert counted(store, served, remembered) == FULL
    assert counted(store, served, remembered) == THREE


def test_a_torn_shared_mapping_is_a_miss(store, served):
    enroll_user(store, served.spec, USER)
    cache = SharedInfoCache()
    sign_in(store, served, cache)
    cache._map[40] ^= 0xFF  # a byte of the payload: the checksum fails, nothing is known
    assert counted(store, served, cache) == {"getInfo": 1, **FULL}


def test_the_prompt_shows_the_count_only_when_it_was_read(store, served):
    enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    first, second = _Meanwhile(lambda: None), _Meanwhile(lambda: None)
    sign_in(store, served, cache, first)
    sign_in(store, served, cache, second)
    assert first.shown == [8] and second.shown == [None]


# --- the prompt first, the witness compared while the person types ----------------------------------------------


class _HeldAgreement:
    """The software key holds back its answer to getKeyAgreement until the test lets go (`release`), so a test can
    see what was shown before the key answered, with no timing: `answered` counts the agreements it gave."""

    def __init__(self, server) -> None:
        self._auth = server.authenticator
        self.release = threading.Event()
        self.answered = 0

    def __enter__(self) -> _HeldAgreement:
        process = self._auth.process

        def held(request: bytes, **kw):
            if _is_key_agreement(request):
                self.release.wait(20)  # a flow that needs the answer before it goes on waits here, then fails below
                try:
                    return process(request, **kw)
                finally:
                    self.answered += 1
            return process(request, **kw)

        self._auth.process = held
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        del self._auth.process


def _is_key_agreement(request: bytes) -> bool:
    from fido2 import cbor

    from libhmacunlock.softkey.authenticator import Cmd
    from libhmacunlock.softkey.fields import ClientPinParam
    from libhmacunlock.softkey.pin import Sub

    if not request or request[0] != Cmd.CLIENT_PIN:
        return False
    params = cbor.decode(request[1:])
    return isinstance(params, dict) and params.get(ClientPinParam.SUB_COMMAND) == Sub.GET_KEY_AGREEMENT


class _Typing(ScriptedInteraction):
    """Types the PIN; records, as the prompt shows, what the key had answered since `before`, then lets it go."""

    def __init__(self, hold: _HeldAgreement, served, secrets=(TEST_PIN,)) -> None:
        super().__init__(list(secrets))
        self.hold, self.served, self.before = hold, served, asked(served)
        self.at_prompt: list[dict[str, int]] = []

    def ask_pin(self, purpose, key_label=None, attempts_left=None):
        self.at_prompt.append(delta(self.before, asked(self.served)))
        self.hold.release.set()
        return super().ask_pin(purpose, key_label, attempts_left)


def test_with_the_witness_nothing_goes_to_the_key_before_the_prompt(store, served, remembered):
    """The witness vouches for the probe and the floor, so the prompt comes first: the key agreement is fetched
    while the person types (the key holds its answer back until the prompt has shown) and compared after Enter,
    before the PIN is sent. Still three messages."""
    with _HeldAgreement(served) as hold:
        typing = _Typing(hold, served)
        assert sign_in(store, served, remembered, typing).unlock_key
    assert typing.at_prompt == [{}] and hold.answered == 1
    assert delta(typing.before, asked(served)) == THREE and retries(served) == 8


def test_without_the_witness_the_probe_and_the_floor_come_before_the_prompt(store, served):
    enroll_user(store, served.spec, USER)
    with _HeldAgreement(served) as hold:
        hold.release.set()  # nothing is held back: only what was answered before the prompt is looked at
        typing = _Typing(hold, served)
        assert sign_in(store, served, MemoryInfoCache(), typing).unlock_key
    shown = typing.at_prompt[0]
    assert {k: shown.get(k) for k in ("getInfo", "getAssertion", "getPinRetries")} == dict.fromkeys(
        ("getInfo", "getAssertion", "getPinRetries"), 1
    )


def _charged(calls: list, served):
    """A `charge` that records what the key had been sent when it was called."""
    return lambda: calls.append(asked(served).get("getPinUvAuthTokenUsingPin", 0))


def test_a_miss_found_after_the_prompt_refuses_a_soft_locked_key_before_the_pin_is_sent(store, served, remembered):
    """Another program's three wrong PINs (the key renews its agreement at each, and soft-locks) while the witness
    is still remembered: the prompt shows (a PIN typed in vain), and after Enter the miss reads the PIN state first:
    PinSoftLocked, with the PIN neither sent nor charged."""
    for _ in range(3):
        mistype(served)
    assert retries(served) == 5
    before, calls = asked(served), []
    typing = pin()
    with pytest.raises(PinSoftLocked):
        unlock_verified(Store.of(store), served.spec, typing, user=USER, info_cache=remembered, pin_floor=FLOOR,
                        charge=_charged(calls, served))  # fmt: skip
    assert typing.asked and calls == []  # asked (the prompt came first), never charged
    assert retries(served) == 5
    assert delta(before, asked(served)) == {"getKeyAgreement": 1, "getAssertion": 1, "getPinRetries": 1}


def test_a_miss_found_after_the_prompt_refuses_a_key_at_its_floor(store, served):
    enroll_user(store, served.spec, USER)
    cache = MemoryInfoCache()
    sign_in(store, served, cache, floor=4)  # the witness: max_seen 8, and 8 - 3 is above 4
    served.authenticator.state.pin_retries = 4  # wrong PINs elsewhere, then a replug (a UDP key keeps its address)
    served.power_cycle()
    before, typing = asked(served), pin()
    with pytest.raises(PinFloorReached):
        sign_in(store, served, cache, typing, floor=4)
    assert typing.asked and retries(served) == 4
    assert "getPinUvAuthTokenUsingPin" not in delta(before, asked(served))


def test_a_miss_found_after_the_prompt_refuses_a_key_without_the_credential(store, served, remembered):
    """Another program deleted the credential with the right PIN, then mistyped once (a new agreement): the witness
    would have vouched for the credential, but the agreement is another; after Enter the probe finds nothing."""
    _delete_credential(store, served)
    mistype(served)
    before, calls = asked(served), []
    typing = pin()
    with pytest.raises(NoKeyHoldsCredential):
        unlock_verified(Store.of(store), served.spec, typing, user=USER, info_cache=remembered, pin_floor=FLOOR,
                        charge=_charged(calls, served))  # fmt: skip
    assert typing.asked and calls == [] and retries(served) == 7
    assert delta(before, asked(served)) == {"getKeyAgreement": 1, "getAssertion": 1}


def test_a_miss_found_after_the_prompt_still_sees_a_guarded_wrong_pin_sent_while_the_person_typed(
    store, served, remembered
):
    """Found by review: another program's wrong PIN makes the witness stale (a miss, found after Enter); while the
    person types, another sign-in through the guard sends a wrong PIN too, and the key renews the agreement fetched
    behind the prompt. The miss's checks after Enter must not take the PIN generation as new: under the PIN lock it
    has changed since the agreement was fetched, so the agreement is fetched again, and the right PIN opens."""
    mistype(served)
    assert retries(served) == 7
    before = asked(served)
    assert sign_in(store, served, remembered, _Meanwhile(_guarded_wrong_pin(store, served, before, left=6))).unlock_key
    assert retries(served) == 8  # our right PIN went under the renewed agreement (else 5, soft-locked)


def test_a_pin_refused_under_the_lock_is_not_charged(store, served):
    """Found by review: the floor read again under the PIN lock (another sign-in's wrong PIN while the prompt
    showed left the key at the floor) refuses the PIN before it is sent, so it must not be charged either."""
    enroll_user(store, served.spec, USER)
    served.authenticator.state.pin_retries = 5

    def other() -> None:
        with pytest.raises(WrongPin):
            unlock(store, Key.from_device(SoftKeyDevice(served.authenticator)), ScriptedInteraction([WRONG_PIN]),
                   user=USER, pin_floor=3)  # fmt: skip

    calls: list[int] = []
    with pytest.raises(PinFloorReached):
        unlock_verified(Store.of(store), served.spec, _Meanwhile(other), user=USER, pin_floor=4,
                        charge=_charged(calls, served))  # fmt: skip
    assert calls == [] and retries(served) == 4


def test_the_charge_comes_once_right_before_the_pin_is_sent(store, served, remembered):
    calls: list[int] = []
    before = asked(served).get("getPinUvAuthTokenUsingPin", 0)
    unlock_verified(Store.of(store), served.spec, pin(), user=USER, info_cache=remembered, pin_floor=FLOOR,
                    charge=_charged(calls, served)).commit()  # fmt: skip
    assert calls == [before]  # once, and the token was not yet asked for
    assert asked(served)["getPinUvAuthTokenUsingPin"] == before + 1


def test_without_a_cache_nothing_is_remembered(store, served):
    """The CLI and the spawned helper: no memory across sign-ins, the full guard every time."""
    enroll_user(store, served.spec, USER)
    for _ in range(2):
        before = asked(served)
        assert unlock(store, served.spec, pin(), user=USER, pin_floor=FLOOR).unlock_key
        assert delta(before, asked(served)) == {"getInfo": 1, **FULL}


# --- through real libpam and the warm helper -------------------------------------------------------------------


def _pam(served_key, enrolled, daemon, **options):
    from tests.fixtures.pam_signin import line
    from tests.pam.stack import pam_service

    return pam_service(line(served_key, enrolled, socket=daemon.socket, **options))


def _pam_counted(service, served_key, enrolled, typed=TEST_PIN) -> tuple[bool, str, dict[str, int]]:
    from tests.fixtures.pam_signin import USER as PAM_USER
    from tests.pam.stack import pamtester, record_settled

    before = asked(served_key)
    run = pamtester(service, PAM_USER, typed + "\n")
    record_settled(enrolled, PAM_USER)
    return run.ok, run.output, delta(before, asked(served_key))


def _warmed(service, served_key, enrolled) -> None:
    """Two sign-ins: the second one is the witness's (three messages)."""
    for _ in range(2):
        ok, output, _ = _pam_counted(service, served_key, enrolled)
        assert ok, output
    ok, output, seen = _pam_counted(service, served_key, enrolled)
    assert ok and seen == THREE, (output, seen)


@pytest.mark.root
def test_pam_warm_a_wrong_pin_by_another_client_brings_the_probe_and_the_floor_back(served_key, enrolled, daemon):
    with _pam(served_key, enrolled, daemon) as service:
        _warmed(service, served_key, enrolled)
        mistype(served_key)
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert ok and seen == FULL, (output, seen)
        assert retries(served_key) == 8
        ok, _, seen = _pam_counted(service, served_key, enrolled)
        assert ok and seen == THREE


@pytest.mark.root
def test_pam_warm_a_power_cycle_brings_the_full_path_back(served_key, enrolled, daemon):
    with _pam(served_key, enrolled, daemon) as service:
        _warmed(service, served_key, enrolled)
        served_key.power_cycle()
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert ok and seen == FULL, (output, seen)


@pytest.mark.root
@pytest.mark.parametrize("floor, read", [(4, False), (5, True)])
def test_pam_warm_the_floor_is_read_when_max_seen_is_near_it(served_key, enrolled, daemon, floor, read):
    with _pam(served_key, enrolled, daemon, pin_floor=floor) as service:
        for _ in range(2):
            assert _pam_counted(service, served_key, enrolled)[0]
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert ok and seen == ({**THREE, "getPinRetries": 1} if read else THREE), (output, seen)


@pytest.mark.root
def test_pam_warm_a_credential_deleted_with_the_right_pin_fails_without_an_attempt(served_key, enrolled, daemon):
    with _pam(served_key, enrolled, daemon) as service:
        _warmed(service, served_key, enrolled)
        from tests.fixtures.pam_signin import USER as PAM_USER

        _delete_credential(enrolled, served_key, PAM_USER)
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert not ok and "holds no credential" in output, output
        assert seen == THREE and retries(served_key) == 8  # the PIN was right: no attempt spent
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert not ok and "No PIN was asked" in output and seen == {"getKeyAgreement": 1, "getAssertion": 1}, (
            output,
            seen,
        )
        assert retries(served_key) == 8


@pytest.mark.root
def test_pam_warm_another_sign_ins_wrong_pin_while_the_prompt_shows_costs_only_its_own_attempt(
    served_key, enrolled, daemon
):
    """Sign-in A (warm, on the witness's word) shows its prompt; sign-in B (spawned, through the same PIN guard)
    sends a wrong PIN meanwhile, which renews the key's agreement; A's right PIN then opens: under the PIN lock it saw
    the new generation and fetched the agreement again. The key's counter: 8, 7 after B, 8 after A."""
    from tests.fixtures.pam_signin import USER as PAM_USER
    from tests.fixtures.pam_signin import line
    from tests.pam.stack import pam_service, pamtester, pamtester_waiting

    with _pam(served_key, enrolled, daemon) as warm, pam_service(line(served_key, enrolled, max_tries=1)) as spawned:
        _warmed(warm, served_key, enrolled)
        before = asked(served_key)
        a = pamtester_waiting(warm, PAM_USER)
        try:
            read_until(a, "PIN:")
            _after_our_agreement(served_key, before)  # fetched while A's prompt shows: B's wrong PIN comes after it
            b = pamtester(spawned, PAM_USER, WRONG_PIN + "\n")
            assert not b.ok and retries(served_key) == 7, b.output
            out, _ = a.communicate(TEST_PIN + "\n", timeout=60)
        finally:
            a.kill()
        assert a.returncode == 0, out
        assert retries(served_key) == 8
        seen = delta(before, asked(served_key))
        # A: agreement, again under the lock + getPinRetries, token, assertion; B: getInfo, probe, getPinRetries,
        # agreement, token
        assert seen["getKeyAgreement"] == 3 and seen["getPinUvAuthTokenUsingPin"] == 2, seen


@pytest.mark.root
def test_pam_warm_the_prompt_shows_before_the_key_has_answered_the_key_agreement(served_key, enrolled, daemon):
    """Through real libpam and the warm helper: with the witness, the PIN prompt is on pamtester's terminal while
    the key still holds back its answer to getKeyAgreement; the sign-in then opens with three messages."""
    from tests.fixtures.pam_signin import USER as PAM_USER
    from tests.pam.stack import pamtester_waiting

    with _pam(served_key, enrolled, daemon) as service:
        _warmed(service, served_key, enrolled)
        before = asked(served_key)
        with _HeldAgreement(served_key) as hold:
            a = pamtester_waiting(service, PAM_USER)
            try:
                read_until(a, "PIN:")
                shown = delta(before, asked(served_key))
                hold.release.set()
                out, _ = a.communicate(TEST_PIN + "\n", timeout=60)
            finally:
                a.kill()
        assert shown == {} and hold.answered == 1  # nothing at all answered by the key before the prompt
        assert a.returncode == 0, out
        from tests.pam.stack import record_settled

        record_settled(enrolled, PAM_USER)
        assert delta(before, asked(served_key)) == THREE


@pytest.mark.root
def test_pam_warm_a_miss_after_the_prompt_sends_no_pin_and_charges_nothing(served_key, enrolled, daemon):
    """The witness is remembered, but another program's three wrong PINs soft-locked the key meanwhile (each one a
    new agreement): the prompt shows, and after Enter the sign-in says to replug, with the PIN not sent and the
    user's throttle count unchanged."""
    from tests.fixtures.pam_signin import USER as PAM_USER

    with _pam(served_key, enrolled, daemon) as service:
        _warmed(service, served_key, enrolled)
        throttle = enrolled / f".{PAM_USER}.throttle"
        counted_before = throttle.read_bytes()
        for _ in range(3):
            mistype(served_key)
        ok, output, seen = _pam_counted(service, served_key, enrolled)
        assert not ok and "PIN:" in output and "plug it back in" in output, output
        assert seen == {"getKeyAgreement": 1, "getAssertion": 1, "getPinRetries": 1}, seen
        assert retries(served_key) == 5 and throttle.read_bytes() == counted_before


def test_a_prompt_on_the_witness_word_still_names_the_key_by_its_label(store, served, tmp_path):
    """A user with two keys (labels 'desk-nano' and 'backup-nano'): the probe names the key it found; a warm
    sign-in that skips the probe names it by the one slot whose credential the witness saw on this key."""
    from libhmacunlock.enroll import enroll
    from libhmacunlock.softkey.udp import running_udp_softkey

    with running_udp_softkey(tmp_path / "desk.json") as desk:
        ClientPin(Ctap2(SoftKeyDevice(desk.authenticator))).set_pin(TEST_PIN)
        enroll(store, desk.spec, pin(), USER, label="desk-nano")
        enroll(store, served.spec, ScriptedInteraction([TEST_PIN, TEST_PIN]), USER, existing_device=desk.spec,
               label="backup-nano")  # fmt: skip
    cache = MemoryInfoCache()
    labels = []
    for _ in range(2):
        shown = _Labels()
        assert sign_in(store, served, cache, shown).unlock_key
        labels.append(shown.labels)
    assert labels == [["backup-nano"], ["backup-nano"]]


class _Labels(ScriptedInteraction):
    def __init__(self) -> None:
        super().__init__([TEST_PIN])
        self.labels: list[str | None] = []

    def ask_pin(self, purpose, key_label=None, attempts_left=None):
        self.labels.append(key_label)
        return super().ask_pin(purpose, key_label, attempts_left)


@pytest.mark.root
def test_pam_warm_a_wrong_pin_on_the_witness_word_is_asked_again_after_the_full_checks(served_key, enrolled, daemon):
    """The prompt came first on the witness's word; the PIN was wrong (the key renews its agreement, the witness is
    forgotten): the retry prompt comes only after the probe and the floor (counted at the key when it shows), with
    the attempts left, and the right PIN opens. Two attempts' worth of messages, none more."""
    from tests.fixtures.pam_signin import USER as PAM_USER
    from tests.pam.stack import pamtester_waiting, record_settled

    with _pam(served_key, enrolled, daemon, max_tries=2) as service:
        _warmed(service, served_key, enrolled)
        before = asked(served_key)
        a = pamtester_waiting(service, PAM_USER)
        try:
            read_until(a, "PIN:")
            assert a.stdin is not None
            a.stdin.write(WRONG_PIN + "\n")
            a.stdin.flush()
            shown = read_until(a, "PIN:")  # the retry prompt
            at_retry = delta(before, asked(served_key))
            out, _ = a.communicate(TEST_PIN + "\n", timeout=60)
        finally:
            a.kill()
        assert a.returncode == 0 and "7 attempts left" in shown + out, shown + out
        # 1st: agreement (behind the prompt), token (wrong), getPinRetries (the count the retry shows); then, before
        # the retry prompt, the probe and the floor's getPinRetries (the retry's agreement may be on its way too)
        agreements = at_retry.pop("getKeyAgreement")
        assert agreements in (1, 2) and at_retry == {
            "getPinUvAuthTokenUsingPin": 1,
            "getPinRetries": 2,
            "getAssertion": 1,
        }, at_retry
        record_settled(enrolled, PAM_USER)
        assert retries(served_key) == 8
        # 2nd: agreement, token, assertion
        assert delta(before, asked(served_key)) == {
            "getKeyAgreement": 2,
            "getPinUvAuthTokenUsingPin": 2,
            "getPinRetries": 2,
            "getAssertion": 2,
        }
