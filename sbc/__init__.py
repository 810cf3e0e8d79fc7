"""sbc: a session border controller for VoIP carriers.

The pure core may run compiled by mypyc (lab/compile.py); sbc.native decides, before any
of it is imported, whether that C is current or the sources run instead."""

from sbc import native

native.guard()
