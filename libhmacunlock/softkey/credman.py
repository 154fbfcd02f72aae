"""authenticatorCredentialManagement (CTAP 2.1 §6.8): metadata, enumerate RPs and credentials, delete, update user.

Every subcommand but the two GetNext ones is authorised by a pinUvAuthParam over (subCommand || subCommandParams)
with a token holding the cm permission. An enumeration lives until the next command that is not its GetNext.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fido2 import cbor

from . import credentials as creds
from .errors import ERR, CtapFailure
from .fields import CredMgmtParam, CredMgmtResult, CredMgmtSubParam
from .pin import Permission, PinService
from .state import KeyState, StoredCredential
from .wire import Params


class Sub(IntEnum):
    GET_CREDS_METADATA = 0x01
    ENUMERATE_RPS_BEGIN = 0x02
    ENUMERATE_RPS_NEXT = 0x03
    ENUMERATE_CREDS_BEGIN = 0x04
    ENUMERATE_CREDS_NEXT = 0x05
    DELETE_CREDENTIAL = 0x06
    UPDATE_USER_INFORMATION = 0x07


@dataclass
class _Enumeration:
    kind: Sub  # which GetNext continues it
    items: list[Any] = field(default_factory=list)


class CredentialManagement:
    def __init__(self, state: KeyState, pin: PinService) -> None:
        self.state = state
        self.pin = pin
        self._enum: _Enumeration | None = None

    def clear(self) -> None:
        self._enum = None

    def handle(self, p: Params) -> dict[int, Any]:
        sub = p.uint(CredMgmtParam.SUB_COMMAND, required=True)
        sub_params_raw = p.raw_map(CredMgmtParam.SUB_COMMAND_PARAMS)
        version = p.uint(CredMgmtParam.PIN_UV_AUTH_PROTOCOL)
        param = p.bytes(CredMgmtParam.PIN_UV_AUTH_PARAM)
        if sub not in Sub.__members__.values():
            raise CtapFailure(ERR.INVALID_SUBCOMMAND)
        enum, self._enum = self._enum, None
        if sub in (Sub.ENUMERATE_RPS_NEXT, Sub.ENUMERATE_CREDS_NEXT):
            return self._next(Sub(sub), enum)
        sub_params = Params(sub_params_raw) if sub_params_raw is not None else None
        if sub in (Sub.ENUMERATE_CREDS_BEGIN, Sub.DELETE_CREDENTIAL, Sub.UPDATE_USER_INFORMATION) and (
            sub_params is None
        ):
            raise CtapFailure(ERR.MISSING_PARAMETER)
        if param is None:
            raise CtapFailure(ERR.PUAT_REQUIRED)
        message = bytes([sub]) + (cbor.encode(sub_params_raw) if sub_params_raw is not None else b"")
        token = self.pin.check_param(version, param, message, Permission.CM, None)
        rp_bound = token.rp_id
        if sub == Sub.GET_CREDS_METADATA:
            self._require_unbound(rp_bound)
            count = len(self.state.credentials)
            return {
                CredMgmtResult.EXISTING_CRED_COUNT: count,
                CredMgmtResult.MAX_REMAINING_COUNT: creds.MAX_RESIDENT_CREDENTIALS - count,
            }
        if sub == Sub.ENUMERATE_RPS_BEGIN:
            self._require_unbound(rp_bound)
            return self._rps_begin()
        if sub_params is None:  # refused above already, before the token was checked; this tells the type checker
            raise CtapFailure(ERR.MISSING_PARAMETER)
        if sub == Sub.ENUMERATE_CREDS_BEGIN:
            return self._creds_begin(sub_params, rp_bound)
        cred = self._credential(sub_params, rp_bound)
        if sub == Sub.DELETE_CREDENTIAL:
            self.state.credentials.remove(cred)
            self.state.save()
            return {}
        return self._update_user(cred, sub_params)

    @staticmethod
    def _require_unbound(rp_bound: str | None) -> None:
        # a token bound to one RP may only manage that RP's credentials
        if rp_bound is not None:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)

    def _rps(self) -> list[tuple[str, str | None]]:
        seen: dict[str, str | None] = {}
        for cred in sorted(self.state.credentials, key=lambda c: c.serial):
            if cred.rp_id not in seen or cred.rp_name is not None:
                seen[cred.rp_id] = cred.rp_name
        return list(seen.items())

    @staticmethod
    def _rp_response(rp_id: str, name: str | None) -> dict[int, Any]:
        rp: dict[str, Any] = {"id": rp_id}
        if name is not None:
            rp["name"] = name
        return {CredMgmtResult.RP: rp, CredMgmtResult.RP_ID_HASH: creds.rp_id_hash(rp_id)}

    def _rps_begin(self) -> dict[int, Any]:
        rps = self._rps()
        if not rps:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        response = self._rp_response(*rps[0])
        response[CredMgmtResult.TOTAL_RPS] = len(rps)
        if len(rps) > 1:
            self._enum = _Enumeration(Sub.ENUMERATE_RPS_NEXT, rps[1:])
        return response

    def _creds_begin(self, sub_params: Params, rp_bound: str | None) -> dict[int, Any]:
        rp_hash = sub_params.bytes(CredMgmtSubParam.RP_ID_HASH, required=True)
        found = [c for c in self.state.credentials if creds.rp_id_hash(c.rp_id) == rp_hash]
        if rp_bound is not None and creds.rp_id_hash(rp_bound) != rp_hash:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        if not found:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        found.sort(key=lambda c: -c.serial)
        response = self._cred_response(found[0])
        response[CredMgmtResult.TOTAL_CREDENTIALS] = len(found)
        if len(found) > 1:
            self._enum = _Enumeration(Sub.ENUMERATE_CREDS_NEXT, found[1:])
        return response

    @staticmethod
    def _cred_response(cred: StoredCredential) -> dict[int, Any]:
        return {
            CredMgmtResult.USER: cred.user_entity(with_names=True),
            CredMgmtResult.CREDENTIAL_ID: {"id": cred.credential_id, "type": "public-key"},
            CredMgmtResult.PUBLIC_KEY: creds.public_cose(cred),
            CredMgmtResult.CRED_PROTECT: cred.cred_protect,
        }

    def _next(self, sub: Sub, enum: _Enumeration | None) -> dict[int, Any]:
        if enum is None or enum.kind != sub or not enum.items:
            raise CtapFailure(ERR.NOT_ALLOWED)
        item = enum.items.pop(0)
        if enum.items:
            self._enum = enum
        if sub == Sub.ENUMERATE_RPS_NEXT:
            return self._rp_response(*item)
        return self._cred_response(item)

    def _credential(self, sub_params: Params, rp_bound: str | None) -> StoredCredential:
        descriptor = sub_params.map(CredMgmtSubParam.CREDENTIAL_ID, required=True)
        cred_id = descriptor.bytes("id", required=True)
        descriptor.text("type", required=True)
        cred = self.state.find_credential(cred_id) if cred_id is not None else None
        if cred is None:
            raise CtapFailure(ERR.NO_CREDENTIALS)
        if rp_bound is not None and cred.rp_id != rp_bound:
            raise CtapFailure(ERR.PIN_AUTH_INVALID)
        return cred

    def _update_user(self, cred: StoredCredential, sub_params: Params) -> dict[int, Any]:
        user = sub_params.map(CredMgmtSubParam.USER, required=True)
        user_id = user.bytes("id", required=True)
        name, display_name = user.text("name"), user.text("displayName")
        if user_id != cred.user_id:
            raise CtapFailure(ERR.INVALID_PARAMETER)
        # absent fields are removed, as CTAP 2.1 §6.8.7 says
        cred.user_name, cred.user_display_name = name, display_name
        self.state.save()
        return {}
