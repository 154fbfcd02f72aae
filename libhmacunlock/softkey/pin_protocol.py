"""The authenticator's side of PIN/UV auth protocols 1 and 2 (CTAP 2.1 §6.5.6, §6.5.7).

Written here rather than borrowed from python-fido2's client classes: the two sides of the wire are implemented
independently, so that a mistake on one side cannot hide the same mistake on the other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ERR, CtapFailure
from .fields import CoseKey


class PinProtocol:
    """Protocol 1: SHA-256 KDF, AES-256-CBC with a zero IV, HMAC-SHA-256 truncated to 16 bytes."""

    VERSION = 1
    AUTH_LEN = 16

    def __init__(self) -> None:
        self.regenerate()

    def regenerate(self) -> None:
        """A new key-agreement key (power-up, PIN mismatch)."""
        self._key = ec.generate_private_key(ec.SECP256R1())

    def key_agreement(self) -> dict[int, Any]:
        numbers = self._key.public_key().public_numbers()
        # alg -25 (ECDH-ES+HKDF-256) is what the spec tells us to put here, "although not the algorithm used"
        return {
            CoseKey.KTY: 2,  # EC2
            CoseKey.ALG: -25,
            CoseKey.CRV: 1,  # P-256
            CoseKey.X: numbers.x.to_bytes(32, "big"),
            CoseKey.Y: numbers.y.to_bytes(32, "big"),
        }

    def decapsulate(self, peer: Mapping[Any, Any]) -> bytes:
        """The shared secret with the platform's key-agreement key; a bad key is INVALID_PARAMETER."""
        x, y = peer.get(CoseKey.X), peer.get(CoseKey.Y)
        if (
            peer.get(CoseKey.KTY) != 2
            or peer.get(CoseKey.CRV) != 1
            or not isinstance(x, bytes)
            or not isinstance(y, bytes)
        ):
            raise CtapFailure(ERR.INVALID_PARAMETER)
        if len(x) != 32 or len(y) != 32:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        try:
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()
            ).public_key()
            z = self._key.exchange(ec.ECDH(), public)
        except ValueError:  # not a point on the curve
            raise CtapFailure(ERR.INVALID_PARAMETER) from None
        return self.kdf(z)

    def kdf(self, z: bytes) -> bytes:
        return hashlib.sha256(z).digest()

    def _aes_key(self, key: bytes) -> bytes:
        return key

    def _hmac_key(self, key: bytes) -> bytes:
        return key

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self._aes_key(key)), modes.CBC(b"\0" * 16)).encryptor()
        return enc.update(plaintext) + enc.finalize()

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        """None when the ciphertext cannot be decrypted (wrong length)."""
        if not ciphertext or len(ciphertext) % 16:
            return None
        dec = Cipher(algorithms.AES(self._aes_key(key)), modes.CBC(b"\0" * 16)).decryptor()
        return dec.update(ciphertext) + dec.finalize()

    def authenticate(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(self._hmac_key(key), message, hashlib.sha256).digest()[: self.AUTH_LEN]

    def verify(self, key: bytes, message: bytes, signature: bytes) -> bool:
        if len(signature) != self.AUTH_LEN:
            return False
        return hmac.compare_digest(self.authenticate(key, message), signature)

    def ciphertext_len(self, plaintext_len: int) -> int:
        return plaintext_len


class PinProtocol2(PinProtocol):
    """Protocol 2: HKDF-derived HMAC and AES keys, a random IV in front of the ciphertext, full 32-byte HMAC."""

    VERSION = 2
    AUTH_LEN = 32

    def kdf(self, z: bytes) -> bytes:
        def hkdf(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"\0" * 32, info=info).derive(z)

        return hkdf(b"CTAP2 HMAC key") + hkdf(b"CTAP2 AES key")

    def _aes_key(self, key: bytes) -> bytes:
        return key[32:]

    def _hmac_key(self, key: bytes) -> bytes:
        # a shared secret is hmac||aes; a pinUvAuthToken (32 bytes) is used whole
        return key[:32]

    def encrypt(self, key: bytes, plaintext: bytes) -> bytes:
        iv = os.urandom(16)
        enc = Cipher(algorithms.AES(self._aes_key(key)), modes.CBC(iv)).encryptor()
        return iv + enc.update(plaintext) + enc.finalize()

    def decrypt(self, key: bytes, ciphertext: bytes) -> bytes | None:
        if len(ciphertext) < 32 or len(ciphertext) % 16:
            return None
        iv, body = ciphertext[:16], ciphertext[16:]
        dec = Cipher(algorithms.AES(self._aes_key(key)), modes.CBC(iv)).decryptor()
        return dec.update(body) + dec.finalize()

    def ciphertext_len(self, plaintext_len: int) -> int:
        return 16 + plaintext_len
