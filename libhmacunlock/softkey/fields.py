"""The CBOR map keys of CTAP 2.1 requests and responses, named (CTAP 2.1 §6), as python-fido2 names them.

The software key's own definitions, written from the specification: tests/test_softkey_fields.py checks them
against python-fido2's (the client side), so a wrong number fails there instead of on both sides at once.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class InfoKey(IntEnum):
    """authenticatorGetInfo response (§6.4)."""

    VERSIONS = 0x01
    EXTENSIONS = 0x02
    AAGUID = 0x03
    OPTIONS = 0x04
    MAX_MSG_SIZE = 0x05
    PIN_UV_PROTOCOLS = 0x06
    MAX_CREDS_IN_LIST = 0x07
    MAX_CRED_ID_LENGTH = 0x08
    TRANSPORTS = 0x09
    ALGORITHMS = 0x0A
    MAX_LARGE_BLOB = 0x0B
    FORCE_PIN_CHANGE = 0x0C
    MIN_PIN_LENGTH = 0x0D
    FIRMWARE_VERSION = 0x0E
    MAX_CRED_BLOB_LENGTH = 0x0F
    MAX_RPIDS_FOR_MIN_PIN = 0x10
    PREFERRED_PLATFORM_UV_ATTEMPTS = 0x11
    UV_MODALITY = 0x12
    CERTIFICATIONS = 0x13
    REMAINING_DISC_CREDS = 0x14


@unique
class MakeCredentialParam(IntEnum):
    """authenticatorMakeCredential request (§6.1)."""

    CLIENT_DATA_HASH = 0x01
    RP = 0x02
    USER = 0x03
    PUB_KEY_CRED_PARAMS = 0x04
    EXCLUDE_LIST = 0x05
    EXTENSIONS = 0x06
    OPTIONS = 0x07
    PIN_UV_AUTH_PARAM = 0x08
    PIN_UV_AUTH_PROTOCOL = 0x09
    ENTERPRISE_ATTESTATION = 0x0A


@unique
class MakeCredentialResult(IntEnum):
    """authenticatorMakeCredential response (§6.1.2)."""

    FMT = 0x01
    AUTH_DATA = 0x02
    ATT_STMT = 0x03


@unique
class GetAssertionParam(IntEnum):
    """authenticatorGetAssertion request (§6.2)."""

    RP_ID = 0x01
    CLIENT_DATA_HASH = 0x02
    ALLOW_LIST = 0x03
    EXTENSIONS = 0x04
    OPTIONS = 0x05
    PIN_UV_AUTH_PARAM = 0x06
    PIN_UV_AUTH_PROTOCOL = 0x07


@unique
class GetAssertionResult(IntEnum):
    """authenticatorGetAssertion / getNextAssertion response (§6.2.2)."""

    CREDENTIAL = 0x01
    AUTH_DATA = 0x02
    SIGNATURE = 0x03
    USER = 0x04
    NUMBER_OF_CREDENTIALS = 0x05


@unique
class ClientPinParam(IntEnum):
    """authenticatorClientPIN request (§6.5.5)."""

    PIN_UV_AUTH_PROTOCOL = 0x01
    SUB_COMMAND = 0x02
    KEY_AGREEMENT = 0x03
    PIN_UV_AUTH_PARAM = 0x04
    NEW_PIN_ENC = 0x05
    PIN_HASH_ENC = 0x06
    PERMISSIONS = 0x09
    RP_ID = 0x0A


@unique
class ClientPinResult(IntEnum):
    """authenticatorClientPIN response (§6.5.5)."""

    KEY_AGREEMENT = 0x01
    PIN_UV_AUTH_TOKEN = 0x02
    PIN_RETRIES = 0x03
    POWER_CYCLE_STATE = 0x04
    UV_RETRIES = 0x05


@unique
class CredMgmtParam(IntEnum):
    """authenticatorCredentialManagement request (§6.8)."""

    SUB_COMMAND = 0x01
    SUB_COMMAND_PARAMS = 0x02
    PIN_UV_AUTH_PROTOCOL = 0x03
    PIN_UV_AUTH_PARAM = 0x04


@unique
class CredMgmtSubParam(IntEnum):
    """authenticatorCredentialManagement subCommandParams (§6.8)."""

    RP_ID_HASH = 0x01
    CREDENTIAL_ID = 0x02
    USER = 0x03


@unique
class CredMgmtResult(IntEnum):
    """authenticatorCredentialManagement response (§6.8)."""

    EXISTING_CRED_COUNT = 0x01
    MAX_REMAINING_COUNT = 0x02
    RP = 0x03
    RP_ID_HASH = 0x04
    TOTAL_RPS = 0x05
    USER = 0x06
    CREDENTIAL_ID = 0x07
    PUBLIC_KEY = 0x08
    TOTAL_CREDENTIALS = 0x09
    CRED_PROTECT = 0x0A
    LARGE_BLOB_KEY = 0x0B


@unique
class HmacSecretInput(IntEnum):
    """The hmac-secret extension's getAssertion input (§12.5)."""

    KEY_AGREEMENT = 0x01
    SALT_ENC = 0x02
    SALT_AUTH = 0x03
    PIN_UV_AUTH_PROTOCOL = 0x04


@unique
class CoseKey(IntEnum):
    """The COSE_Key labels of a P-256 key-agreement key (RFC 8152 §7, §13.1.1)."""

    KTY = 1
    ALG = 3
    CRV = -1
    X = -2
    Y = -3
