"""hmacunlock: derive a per-user unlock key from a FIDO2 key's hmac-secret output."""

__version__ = "0.1.0"
