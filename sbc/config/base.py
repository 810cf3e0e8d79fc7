"""What every part of the config contract is made of: frozen msgspec structs that refuse
unknown keys, each field with a one-line description (sbc.config.schema)."""

from __future__ import annotations

from typing import Literal

from msgspec import Meta, Struct


def d(text: str) -> Meta:
    return Meta(description=text)


class Base(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


Transport = Literal["udp", "tcp", "tls"]
Status = Literal["enabled", "disabled"]
