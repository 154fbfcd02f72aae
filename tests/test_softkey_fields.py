"""The software key's named CBOR fields (softkey/fields.py) and command codes agree with python-fido2's, written
independently."""

from __future__ import annotations

import dataclasses

import pytest
from fido2.ctap2.base import AssertionResponse, AttestationResponse, Info
from fido2.ctap2.credman import CredentialManagement
from fido2.ctap2.pin import ClientPin

from libhmacunlock.softkey import fields


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (fields.InfoKey, Info),
        (fields.GetAssertionResult, AssertionResponse),
        (fields.MakeCredentialResult, AttestationResponse),
    ],
)
def test_response_keys_are_python_fido2s_field_order(ours, theirs):
    # python-fido2's response classes are dataclasses whose n-th field is CBOR key n
    names = [f.name for f in dataclasses.fields(theirs)]
    for key in ours:
        assert names[key - 1] == key.name.lower(), key


def test_client_pin_and_credential_management_keys_are_python_fido2s():
    assert [int(k) for k in fields.ClientPinResult] == [int(k) for k in ClientPin.RESULT]
    ours = {k.name: int(k) for k in fields.CredMgmtResult}
    theirs = {k.name: int(k) for k in CredentialManagement.RESULT}
    assert ours.items() <= theirs.items()
    assert {k.name: int(k) for k in fields.CredMgmtSubParam} == {k.name: int(k) for k in CredentialManagement.PARAM}


def test_every_command_and_client_pin_subcommand_has_its_spec_name_and_python_fido2s_code():
    """One home for the names the tests and the benchmark's report give the messages a key was asked."""
    from fido2.ctap2 import Ctap2

    from libhmacunlock.softkey.authenticator import COMMAND_NAMES, Cmd
    from libhmacunlock.softkey.pin import SUBCOMMAND_NAMES, Sub

    assert set(COMMAND_NAMES) == set(Cmd) and set(SUBCOMMAND_NAMES) == set(Sub)
    assert len(set(COMMAND_NAMES.values())) == len(Cmd) and len(set(SUBCOMMAND_NAMES.values())) == len(Sub)
    assert {int(c) for c in Cmd} <= {int(c) for c in Ctap2.CMD}
    assert {int(s) for s in Sub} == {int(s) for s in ClientPin.CMD}
    assert (COMMAND_NAMES[0x02], SUBCOMMAND_NAMES[0x02], SUBCOMMAND_NAMES[0x09]) == (
        "getAssertion",
        "getKeyAgreement",
        "getPinUvAuthTokenUsingPin",
    )
