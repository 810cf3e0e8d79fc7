"""Bencode, the encoding of rtpengine's ng control protocol (BEP 3): byte strings, integers,
lists and dictionaries. Strings decode to ``bytes``; callers decode what they know is text.
"""

from __future__ import annotations

Value = bytes | int | list["Value"] | dict[bytes, "Value"]
Encodable = (
    str | bytes | int | bool | list["Encodable"] | tuple["Encodable", ...] | dict[str, "Encodable"]
)


class BencodeError(ValueError):
    """Input that is not one complete bencoded value."""


def encode(value: Encodable) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Encodable, out: list[bytes]) -> None:
    if isinstance(value, bool):  # before int: bool is an int; rtpengine reads flags as strings
        raise TypeError("encode a flag as a string, not a bool")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str):
        raw = value.encode()
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, bytes):
        out.append(b"%d:" % len(value))
        out.append(value)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value):  # BEP 3: keys sorted as raw strings
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Value:
    """Decode exactly one value; anything left over is an error."""
    try:
        value, end = _decode(data, 0, 0)
    except (IndexError, ValueError) as e:
        raise BencodeError(str(e) or "truncated") from None
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


MAX_DEPTH = 32  # a hostile reply must not exhaust the stack


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    c = data[at]
    if c == 0x69:  # i
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if c == 0x6C:  # l
        items: list[Value] = []
        at += 1
        while data[at] != 0x65:
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if c == 0x64:  # d
        d: dict[bytes, Value] = {}
        at += 1
        while data[at] != 0x65:
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, bytes):
                raise ValueError("dictionary key is not a string")
            d[key], at = _decode(data, at, depth + 1)
        return d, at + 1
    if 0x30 <= c <= 0x39:
        colon = data.index(b":", at)
        n = int(data[at:colon])
        start = colon + 1
        if start + n > len(data):
            raise ValueError("string runs past the end")
        return data[start : start + n], start + n
    raise ValueError(f"unexpected byte {chr(c)!r} at {at}")
