"""Key material: the unlock key (UK), HKDF purpose keys, AES-256-GCM wrapping, and the recovery secrets.

Every key downstream of UK is `derive(uk, purpose)`, so no two uses ever share a key. A slot's key-encryption
key comes from the security key's hmac-secret output (256 bits computed inside the key), a recovery slot's from a
generated recovery key (160 bits, HKDF is enough) or from a passphrase through Argon2id (a person's words need a
slow, memory-hard KDF). Nothing here logs or formats a secret.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import RecoveryFailed

VERSION_LABEL = b"hmacunlock v1 "
UNLOCK_KEY_SIZE = 32
NONCE_SIZE = 12
SALT_SIZE = 32
RECOVERY_KEY_SIZE = 20  # 160 bits: 32 base32 characters, typed in groups of four
GROUP = 4
CHECK_CHARS = 4  # one extra group: 20 bits of SHA-256, so a typo is caught before anything is tried
_BODY_CHARS = -(-RECOVERY_KEY_SIZE * 8 // 5)  # base32 without padding
RECOVERY_KEY_CHARS = _BODY_CHARS + CHECK_CHARS  # what a person types, dashes and spaces aside
BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


class UnwrapError(Exception):
    """The AEAD tag did not verify: wrong key or altered ciphertext/AAD. Callers turn it into a person's error."""


def new_unlock_key() -> bytes:
    return os.urandom(UNLOCK_KEY_SIZE)


def new_salt() -> bytes:
    return os.urandom(SALT_SIZE)


def derive(unlock_key: bytes, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256(UK, info = "hmacunlock v1 " + purpose), `length` bytes (fscrypt v2 wants 64)."""
    if len(unlock_key) != UNLOCK_KEY_SIZE:
        raise ValueError("an unlock key is 32 bytes")
    if not purpose:
        raise ValueError("a purpose label is required")
    return _hkdf(unlock_key, VERSION_LABEL + purpose.encode(), length)


def unlock_key_check(unlock_key: bytes) -> bytes:
    """What a record stores to say which unlock key its slots wrap: HKDF of UK (one-way), never UK itself.

    Flows that unlocked UK earlier compare it under the record's lock before adding a slot (issue 17)."""
    return derive(unlock_key, "record check")


def _hkdf(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(hashes.SHA256(), length, salt=None, info=info).derive(secret)


def _fields(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: no two different field lists give the same bytes."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def slot_kek(hmac_output: bytes, rp_id: str, credential_id: bytes, user_handle: bytes) -> bytes:
    """KEK = HKDF(hmac-secret output, info = version ‖ rp id ‖ credential id ‖ user handle)."""
    return _hkdf(hmac_output, VERSION_LABEL + b"slot" + _fields(rp_id.encode(), credential_id, user_handle))


def wrap(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM with a random 96-bit nonce; returns nonce ‖ ciphertext ‖ tag."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unwrap(key: bytes, blob: bytes, aad: bytes) -> bytes:
    if len(blob) < NONCE_SIZE + 16:
        raise UnwrapError("wrapped key too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
    except InvalidTag:
        raise UnwrapError("authentication tag mismatch") from None


# --- recovery key -----------------------------------------------------------------------------------------------


def new_recovery_key() -> bytes:
    return os.urandom(RECOVERY_KEY_SIZE)


def _check(raw: bytes) -> str:
    return base64.b32encode(hashlib.sha256(b"hmacunlock recovery " + raw).digest())[:CHECK_CHARS].decode()


def format_recovery_key(raw: bytes) -> str:
    """Base32 in groups of four, then one checksum group: e.g. ABCD-EFGH-...-WXYZ."""
    text = base64.b32encode(raw).decode().rstrip("=") + _check(raw)
    return "-".join(text[i : i + GROUP] for i in range(0, len(text), GROUP))


_LOOKALIKES = str.maketrans({"0": "O", "1": "I", "8": "B"})


def clean_recovery_key(text: str) -> str:
    """A typed recovery key as base32: upper case, no spaces or dashes, look-alike digits read as letters."""
    return "".join(ch for ch in text.upper() if ch not in " -\t").translate(_LOOKALIKES)


def parse_recovery_key(text: str) -> bytes:
    """The raw recovery key from what a person typed (case, spaces and dashes ignored). RecoveryFailed on a typo."""
    cleaned = clean_recovery_key(text)
    if len(cleaned) != RECOVERY_KEY_CHARS:
        raise RecoveryFailed(
            f"That is not a recovery key: it has {len(cleaned)} characters, a recovery key has "
            f"{RECOVERY_KEY_CHARS} (in groups of four)."
        )
    body, check = cleaned[:_BODY_CHARS], cleaned[_BODY_CHARS:]
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError:
        raise RecoveryFailed("That recovery key has characters a recovery key never uses; check it.") from None
    if len(raw) != RECOVERY_KEY_SIZE or check != _check(raw):
        raise RecoveryFailed("That recovery key has a typo (its last group does not match); check it.")
    return raw


def recovery_key_kek(raw: bytes) -> bytes:
    return _hkdf(raw, VERSION_LABEL + b"recovery-key")


# --- passphrase: Argon2id ---------------------------------------------------------------------------------------


# Bounds a stored slot's Argon2id parameters must keep (docs/recovery.md): a record cannot turn an unlock into a
# CPU or memory sink, nor hand argon2 a value it fails on. The defaults are well inside them.
ARGON2_TIME_COST = (1, 16)  # passes
ARGON2_MEMORY_COST = (8, 1 << 20)  # KiB: up to 1 GiB (argon2 wants at least 8 per lane)
ARGON2_PARALLELISM = (1, 16)  # lanes
ARGON2_SALT_SIZE = (16, 64)  # bytes


@dataclass(frozen=True)
class Argon2Params:
    """Stored with the slot, so later unlocks use what enrollment used even after defaults change."""

    time_cost: int = 3
    memory_cost: int = 65536  # KiB: 64 MiB
    parallelism: int = 4
    salt: str = ""  # base64 of 16 random bytes

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Argon2Params:
        """ValueError (naming the parameter) for a missing, mistyped or out-of-bounds one, or a salt that is not
        strict base64 of 16 to 64 bytes."""
        if not isinstance(data, dict):
            raise ValueError("the Argon2 parameters are not a JSON object")
        values = []
        for name, (lo, hi) in (
            ("time_cost", ARGON2_TIME_COST),
            ("memory_cost", ARGON2_MEMORY_COST),
            ("parallelism", ARGON2_PARALLELISM),
        ):
            value = data.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"Argon2 {name} is not an integer from {lo} to {hi}")
            values.append(value)
        if values[1] < 8 * values[2]:
            raise ValueError("Argon2 memory_cost is below 8 KiB per lane")
        salt = data.get("salt")
        try:
            raw = base64.b64decode(salt, validate=True) if isinstance(salt, str) else b""
        except ValueError:
            raw = b""
        if not isinstance(salt, str) or not ARGON2_SALT_SIZE[0] <= len(raw) <= ARGON2_SALT_SIZE[1]:
            raise ValueError(f"Argon2 salt is not base64 of {ARGON2_SALT_SIZE[0]} to {ARGON2_SALT_SIZE[1]} bytes")
        return cls(values[0], values[1], values[2], salt)

    def with_new_salt(self) -> Argon2Params:
        return Argon2Params(
            self.time_cost, self.memory_cost, self.parallelism, base64.b64encode(os.urandom(16)).decode()
        )


def passphrase_kek(passphrase: str, params: Argon2Params) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    return hash_secret_raw(
        passphrase.encode(),
        base64.b64decode(params.salt),
        time_cost=params.time_cost,
        memory_cost=params.memory_cost,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )
