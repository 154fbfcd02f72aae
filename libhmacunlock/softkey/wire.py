"""Strict CBOR decoding of requests and typed access to their parameters.

python-fido2's decoder is a client's decoder: it forgives truncated strings and reads any simple value as a bool.
An authenticator must refuse such input with CTAP2_ERR_INVALID_CBOR, so requests are decoded here, strictly.
Responses are encoded with `fido2.cbor.encode`, which is canonical.
"""

from __future__ import annotations

import builtins
from collections.abc import KeysView, Mapping
from typing import Any, Literal, TypeVar, cast, overload

from .errors import ERR, CtapFailure

_T = TypeVar("_T")

MAX_DEPTH = 16  # CTAP asks for at least 4 levels; deeper input is refused rather than recursed into


def decode_request(data: bytes) -> Any:
    """Decode one CBOR item filling all of `data`; anything malformed is CTAP2_ERR_INVALID_CBOR."""
    value, pos = _item(data, 0, 0)
    if pos != len(data):
        raise CtapFailure(ERR.INVALID_CBOR)
    return value


def _head(data: bytes, pos: int) -> tuple[int, int, int]:
    if pos >= len(data):
        raise CtapFailure(ERR.INVALID_CBOR)
    first = data[pos]
    major, info = first >> 5, first & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info > 27:  # 28-30 reserved, 31 = indefinite length: not CTAP2 canonical
        raise CtapFailure(ERR.INVALID_CBOR)
    size = 1 << (info - 24)
    if pos + size > len(data):
        raise CtapFailure(ERR.INVALID_CBOR)
    return major, int.from_bytes(data[pos : pos + size], "big"), pos + size


def _item(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise CtapFailure(ERR.INVALID_CBOR)
    first_info = data[pos] & 0x1F if pos < len(data) else 0
    major, arg, pos = _head(data, pos)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        end = pos + arg
        if end > len(data):
            raise CtapFailure(ERR.INVALID_CBOR)
        raw = bytes(data[pos:end])
        if major == 2:
            return raw, end
        try:
            return raw.decode("utf-8"), end
        except UnicodeDecodeError:
            raise CtapFailure(ERR.INVALID_CBOR) from None
    if major == 4:
        items = []
        for _ in range(arg):
            value, pos = _item(data, pos, depth + 1)
            items.append(value)
        return items, pos
    if major == 5:
        result: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = _item(data, pos, depth + 1)
            if not isinstance(key, (int, str)) or isinstance(key, bool) or key in result:
                raise CtapFailure(ERR.INVALID_CBOR)
            result[key], pos = _item(data, pos, depth + 1)
        return result, pos
    if major == 7 and first_info in (20, 21):
        return first_info == 21, pos
    # tags, null, undefined, floats: CTAP2 messages never carry them
    raise CtapFailure(ERR.INVALID_CBOR)


class Params:
    """A request's CBOR map with typed getters: a missing field is MISSING_PARAMETER, a wrong type
    CBOR_UNEXPECTED_TYPE, as the CTAP spec names them."""

    def __init__(self, value: Any) -> None:
        if not isinstance(value, dict):
            raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
        self._map: Mapping[Any, Any] = value

    @classmethod
    def from_bytes(cls, data: bytes) -> Params:
        return cls(decode_request(data))

    def __contains__(self, key: object) -> builtins.bool:
        return key in self._map

    def _get(self, key: Any, kind: type[_T], required: builtins.bool) -> _T | None:
        if key not in self._map:
            if required:
                raise CtapFailure(ERR.MISSING_PARAMETER)
            return None
        value = self._map[key]
        if not _is(value, kind):
            raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
        return cast(_T, value)

    # Each getter returns the value, or None when the field is absent and not `required` (the overloads tell the
    # type checker so). The names are CBOR's types; `builtins.` spells Python's inside the class.

    @overload
    def bytes(self, key: Any, required: Literal[True]) -> builtins.bytes: ...
    @overload
    def bytes(self, key: Any, required: builtins.bool = False) -> builtins.bytes | None: ...
    def bytes(self, key: Any, required: builtins.bool = False) -> builtins.bytes | None:
        return self._get(key, builtins.bytes, required)

    @overload
    def text(self, key: Any, required: Literal[True]) -> str: ...
    @overload
    def text(self, key: Any, required: builtins.bool = False) -> str | None: ...
    def text(self, key: Any, required: builtins.bool = False) -> str | None:
        return self._get(key, str, required)

    @overload
    def uint(self, key: Any, required: Literal[True]) -> builtins.int: ...
    @overload
    def uint(self, key: Any, required: builtins.bool = False) -> builtins.int | None: ...
    def uint(self, key: Any, required: builtins.bool = False) -> builtins.int | None:
        value = self._get(key, builtins.int, required)
        if value is not None and value < 0:
            raise CtapFailure(ERR.CBOR_UNEXPECTED_TYPE)
        return value

    @overload
    def int(self, key: Any, required: Literal[True]) -> builtins.int: ...
    @overload
    def int(self, key: Any, required: builtins.bool = False) -> builtins.int | None: ...
    def int(self, key: Any, required: builtins.bool = False) -> builtins.int | None:
        return self._get(key, builtins.int, required)

    @overload
    def bool(self, key: Any, required: Literal[True]) -> builtins.bool: ...
    @overload
    def bool(self, key: Any, required: builtins.bool = False) -> builtins.bool | None: ...
    def bool(self, key: Any, required: builtins.bool = False) -> builtins.bool | None:
        return self._get(key, builtins.bool, required)

    @overload
    def map(self, key: Any, required: Literal[True]) -> Params: ...
    @overload
    def map(self, key: Any, required: builtins.bool = False) -> Params | None: ...
    def map(self, key: Any, required: builtins.bool = False) -> Params | None:
        value = self._get(key, dict, required)
        return None if value is None else Params(value)

    @overload
    def raw_map(self, key: Any, required: Literal[True]) -> dict[Any, Any]: ...
    @overload
    def raw_map(self, key: Any, required: builtins.bool = False) -> dict[Any, Any] | None: ...
    def raw_map(self, key: Any, required: builtins.bool = False) -> dict[Any, Any] | None:
        return self._get(key, dict, required)

    @overload
    def list(self, key: Any, required: Literal[True]) -> builtins.list[Any]: ...
    @overload
    def list(self, key: Any, required: builtins.bool = False) -> builtins.list[Any] | None: ...
    def list(self, key: Any, required: builtins.bool = False) -> builtins.list[Any] | None:
        return self._get(key, builtins.list, required)

    def keys(self) -> KeysView[Any]:
        return self._map.keys()


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python but a different CBOR major type: keep them apart
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
