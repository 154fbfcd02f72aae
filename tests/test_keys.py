"""keys.py: HKDF purpose keys, AES-GCM wrapping, recovery key format and Argon2id."""

from __future__ import annotations

import pytest

from libhmacunlock import keys
from libhmacunlock.errors import RecoveryFailed

UK = bytes(range(32))
FAST = keys.Argon2Params(time_cost=1, memory_cost=8, parallelism=1)


def test_derive_is_deterministic_and_separates_purposes():
    assert keys.derive(UK, "login") == keys.derive(UK, "login")
    outputs = {keys.derive(UK, p) for p in ("login", "export", "luks:abc", "luks:abd", "fscrypt:v2")}
    assert len(outputs) == 5
    assert keys.derive(UK, "login") != keys.derive(bytes(32), "login")


def test_derive_length_for_fscrypt_and_rfc5869_shape():
    long = keys.derive(UK, "fscrypt:v2", 64)
    assert len(long) == 64 and long[:32] == keys.derive(UK, "fscrypt:v2", 32)  # HKDF-Expand prefixes agree


def test_derive_refuses_a_wrong_sized_key_or_empty_purpose():
    with pytest.raises(ValueError):
        keys.derive(b"short", "login")
    with pytest.raises(ValueError):
        keys.derive(UK, "")


def test_wrap_round_trip_and_aad_binding():
    kek = bytes(32)
    blob = keys.wrap(kek, UK, b"fields")
    assert keys.unwrap(kek, blob, b"fields") == UK
    assert keys.wrap(kek, UK, b"fields") != blob  # fresh nonce each time
    with pytest.raises(keys.UnwrapError):
        keys.unwrap(kek, blob, b"fieldz")
    with pytest.raises(keys.UnwrapError):
        keys.unwrap(bytes(31) + b"\1", blob, b"fields")
    with pytest.raises(keys.UnwrapError):
        keys.unwrap(kek, blob[:-1] + bytes([blob[-1] ^ 1]), b"fields")
    with pytest.raises(keys.UnwrapError):
        keys.unwrap(kek, blob[:20], b"fields")


def test_slot_kek_binds_rp_credential_and_user():
    out = bytes(32)
    base = keys.slot_kek(out, "rp", b"cred", b"user")
    assert base != keys.slot_kek(out, "rp2", b"cred", b"user")
    assert base != keys.slot_kek(out, "rp", b"cred2", b"user")
    assert base != keys.slot_kek(out, "rp", b"cred", b"user2")
    assert base != keys.slot_kek(out, "rpc", b"red", b"user")  # length-prefixed: no concatenation ambiguity


def test_recovery_key_round_trip_forgiving_of_case_spaces_and_lookalikes():
    raw = keys.new_recovery_key()
    text = keys.format_recovery_key(raw)
    groups = text.split("-")
    assert len(groups) == 9 and all(len(g) == 4 for g in groups)
    assert keys.parse_recovery_key(text) == raw
    assert keys.parse_recovery_key(" " + text.lower().replace("-", " ") + "\t") == raw
    assert keys.parse_recovery_key(text.replace("O", "0").replace("I", "1").replace("B", "8")) == raw


def test_recovery_key_typo_is_caught_before_any_kdf():
    text = keys.format_recovery_key(keys.new_recovery_key())
    i = 5
    typo = text[:i] + ("A" if text[i] != "A" else "C") + text[i + 1 :]
    with pytest.raises(RecoveryFailed, match="typo"):
        keys.parse_recovery_key(typo)
    with pytest.raises(RecoveryFailed, match="characters"):
        keys.parse_recovery_key(text[:-1])


def test_argon2id_uses_the_stored_parameters_and_salt():
    params = FAST.with_new_salt()
    again = keys.Argon2Params.from_json(params.to_json())
    assert keys.passphrase_kek("correct horse", again) == keys.passphrase_kek("correct horse", params)
    assert keys.passphrase_kek("correct horse", params) != keys.passphrase_kek("correct horsf", params)
    assert keys.passphrase_kek("correct horse", params) != keys.passphrase_kek("correct horse", FAST.with_new_salt())
    assert keys.Argon2Params().memory_cost >= 65536 and keys.Argon2Params().time_cost >= 3  # production defaults
