"""Throughput measurements: the raw crypto a sign-in costs, next to the software key's assertions per second.

A getAssertion with hmac-secret costs the key one ECDH (the platform's key agreement inside the extension), a
couple of HMAC-SHA256 and AES operations, and one ECDSA P-256 signature; the platform adds one ECDSA verify. Putting
the key's assertions per second next to those raw costs shows how much is protocol and Python overhead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


@dataclass(frozen=True)
class Rate:
    name: str
    ops: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def each(self) -> float:
        return self.seconds / self.ops if self.ops else 0.0


def measure(name: str, fn: Callable[[], object], min_seconds: float = 0.3, min_ops: int = 5) -> Rate:
    """Call fn until both min_seconds and min_ops are reached (one warm-up call first, not counted)."""
    fn()
    ops = 0
    start = time.perf_counter()
    while True:
        fn()
        ops += 1
        elapsed = time.perf_counter() - start
        if ops >= min_ops and elapsed >= min_seconds:
            return Rate(name, ops, elapsed)


def crypto_rates(min_seconds: float = 0.3) -> list[Rate]:
    private = ec.generate_private_key(ec.SECP256R1())
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    message = os.urandom(37 + 32)  # authenticator data ‖ clientDataHash, the size an assertion signs
    signature = private.sign(message, ec.ECDSA(hashes.SHA256()))
    public = private.public_key()
    key32, block = os.urandom(32), os.urandom(64)

    def hmac_sha256() -> bytes:
        h = hmac.HMAC(key32, hashes.SHA256())
        h.update(block[:32])
        return h.finalize()

    def aes_cbc_64() -> bytes:
        enc = Cipher(algorithms.AES(key32), modes.CBC(bytes(16))).encryptor()
        return enc.update(block) + enc.finalize()

    return [
        measure("ECDSA P-256 sign", lambda: private.sign(message, ec.ECDSA(hashes.SHA256())), min_seconds),
        measure(
            "ECDSA P-256 verify", lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA256())), min_seconds
        ),
        measure("ECDH P-256", lambda: private.exchange(ec.ECDH(), peer), min_seconds),
        measure(
            "ECDH P-256 incl. new ephemeral key",
            lambda: ec.generate_private_key(ec.SECP256R1()).exchange(ec.ECDH(), peer),
            min_seconds,
        ),
        measure("HMAC-SHA256 (32 bytes)", hmac_sha256, min_seconds),
        measure("AES-256-CBC (64 bytes)", aes_cbc_64, min_seconds),
    ]
