"""A one-key ``{"tag": value}`` parameters dict at half the size: the ``__dict__`` of an
instance of a plain class, which CPython stores as a split dict (its key table shared by
every instance, only the value its own): about 96 B instead of 192. A held call keeps four
tagged From/To addresses. Still a ``dict`` in every way (equality, copies, iteration); a
key added later makes it an ordinary one. Kept out of sbc/native.py: mypyc's native
classes have no ``__dict__``.
"""

from __future__ import annotations


class _Tagged:
    tag: str | None


def tag_params(tag: str | None) -> dict[str, str | None]:
    holder = _Tagged()
    holder.tag = tag
    params: dict[str, str | None] = holder.__dict__
    return params
