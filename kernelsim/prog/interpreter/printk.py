"""bpf_trace_printk's format language (the kernel's bpf_bprintf_prepare rules).

Conversions: %d %i %u %x %X with an optional l or ll (without: 32-bit), %c, %s (a string
read from the program's memory), %p and %px/%pK/%ps (a pointer, printed as hex), %%;
optional flags "0+- " and a width. At most three arguments. Anything else is -EINVAL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from kernelsim.prog.interpreter.semantics import to_signed

MAX_ARGS: Final = 3
MAX_STRING: Final = 512
_SPEC: Final = re.compile(rb"%([0+\- ]*)([1-9][0-9]*)?(ll|l)?([diuxXcsp%])([a-zA-Z]?)")


class FormatError(ValueError):
    """The format is one the kernel refuses (the helper returns -EINVAL)."""


def format_printk(fmt: bytes, args: tuple[int, ...], read_string: Callable[[int], bytes]) -> bytes:
    """The formatted message of `fmt` with `args`; FormatError when the kernel refuses it."""
    out = bytearray()
    position = 0
    used = 0
    while (percent := fmt.find(b"%", position)) >= 0:
        out += fmt[position:percent]
        match = _SPEC.match(fmt, percent)
        if match is None:
            raise FormatError(f"unsupported conversion at {fmt[percent : percent + 4]!r}")
        flags, width, length, conv, suffix = (g or b"" for g in match.groups())
        position = match.end()
        if conv == b"%":
            out += b"%"
            continue
        if suffix and conv != b"p":
            position -= len(suffix)
        if used == MAX_ARGS:
            raise FormatError("more than three arguments")
        value = args[used]
        used += 1
        spec = "%" + (flags + width).decode()
        if conv in (b"d", b"i"):
            text = (spec + "d") % to_signed(value, 64 if length else 32)
        elif conv == b"u":
            text = (spec + "d") % (value & ((1 << (64 if length else 32)) - 1))
        elif conv in (b"x", b"X"):
            text = (spec + conv.decode()) % (value & ((1 << (64 if length else 32)) - 1))
        elif conv == b"c":
            text = (spec + "c") % chr(value & 0xFF)
        elif conv == b"s":
            text = (spec + "s") % read_string(value).decode("latin-1")
        else:
            text = (spec + "s") % f"{value:#018x}"
        out += text.encode("latin-1")
    out += fmt[position:]
    return bytes(out)
