"""The format language of bpf_trace_printk and bpf_snprintf (bpf_bprintf_prepare, bstr_printf).

Theory of operation
-------------------
`bprintf(fmt, args, strings)` checks `fmt` as kernel/bpf/helpers.c bpf_bprintf_prepare does
and formats it as lib/vsprintf.c bstr_printf would; `BprintfError(errno)` is the helper's
negative result. The checks, in order, character by character:

* every character must be printable ASCII or white space (EINVAL);
* "%%" is a literal percent; any other '%' consumes one argument, and a conversion beyond the
  arguments given is EINVAL (fewer conversions than arguments is fine);
* optional flags "0+- " and a width of digits;
* 'p' conversions: "%p" followed by the end, a space or punctuation, and "%pK", "%px",
  "%ps", "%pS", "%pB" take a pointer; "%pks"/"%pus" a kernel/user string; "%pi4", "%pI4",
  "%pi6", "%pI6" read 4 or 16 bytes from a kernel address; any other letter after 'p' is EINVAL;
* 's' must be followed by the end, a space or punctuation (EINVAL); a string that cannot be
  read prints as empty;
* 'c'; then integers: optional 'l' / 'll' and one of "iduxX" (anything else EINVAL). Without
  a length modifier an integer is 32 bits.

The kernel copies the arguments into one 512-byte buffer (MAX_BPRINTF_BIN_ARGS) first: an
integer or pointer takes 4 or 8 bytes at a 4-aligned place, a character 1, a string its bytes
and the NUL (cut to what is left), an IP address its text; a conversion that finds too little
room is ENOSPC.
`strings(kind, address, limit)` reads a string for the caller ("k" kernel, "u" user, "s" either
by address); None when it faults. Pointer conversions print the raw value in hex (the kernel
hashes %p and resolves %ps to symbols: see docs/fidelity/helpers.md).
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable, Sequence
from typing import Final

from kernelsim.prog.interpreter.semantics import to_signed

MAX_BPRINTF_BIN_ARGS: Final = 512
MAX_BPRINTF_BUF: Final = 512
_FLAGS: Final = b"0+- "
_PUNCT: Final = frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_SPACE: Final = frozenset(b" \t\n\v\f\r")

StringReader = Callable[[str, int, int], bytes | None]
"""(kind "k" / "u" / "s", address, limit) -> the string's bytes (no NUL), None on a fault."""
IpReader = Callable[[int, int], bytes | None]
"""(kernel address, size) -> the bytes, None on a fault."""


class BprintfError(Exception):
    """The format (or its arguments) is refused: the helper returns -errno."""

    def __init__(self, err: int, why: str) -> None:
        super().__init__(why)
        self.errno = err


def _ends_conversion(byte: int) -> bool:
    return byte == 0 or byte in _SPACE or byte in _PUNCT


def _printable(byte: int) -> bool:
    return 0x20 <= byte < 0x7F or byte in _SPACE


class _Formatter:
    def __init__(
        self, fmt: bytes, args: Sequence[int], strings: StringReader, ip_bytes: IpReader
    ) -> None:
        self.fmt = fmt + b"\0\0\0"
        self.size = len(fmt)
        self.args = args
        self.strings = strings
        self.ip_bytes = ip_bytes
        self.used = 0
        self.bin_used = 0
        """Bytes of the kernel's argument buffer taken so far."""
        self.out = bytearray()

    def arg(self) -> int:
        if self.used >= len(self.args):
            raise BprintfError(errno.EINVAL, "more conversions than arguments")
        value = self.args[self.used] & ((1 << 64) - 1)
        self.used += 1
        return value

    def take(self, size: int, align: int = 1) -> None:
        """Reserve `size` bytes of the argument buffer (ENOSPC when they do not fit)."""
        at = -(-self.bin_used // align) * align
        if MAX_BPRINTF_BIN_ARGS - at < size:
            raise BprintfError(errno.ENOSPC, "the arguments do not fit the kernel's buffer")
        self.bin_used = at + size

    def string(self, kind: str, address: int) -> bytes:
        room = MAX_BPRINTF_BIN_ARGS - self.bin_used
        if not room:
            raise BprintfError(errno.ENOSPC, "no room left for strings")
        text = self.strings(kind, address, room)
        text = b"" if text is None else text[: room - 1]
        self.bin_used += len(text) + 1
        return text

    def run(self) -> bytes:
        fmt = self.fmt
        i = 0
        while i < self.size:
            byte = fmt[i]
            if not _printable(byte):
                raise BprintfError(errno.EINVAL, f"unprintable character {byte:#x} in the format")
            if byte != ord("%"):
                self.out.append(byte)
                i += 1
                continue
            if fmt[i + 1] == ord("%"):
                self.out += b"%"
                i += 2
                continue
            if self.used >= len(self.args):
                raise BprintfError(errno.EINVAL, "more conversions than arguments")
            i = self.conversion(i + 1)
        return bytes(self.out)

    def conversion(self, i: int) -> int:
        """Format the conversion whose flags start at `i`; the index after it."""
        fmt = self.fmt
        start = i
        while fmt[i] in _FLAGS:
            i += 1
        if ord("1") <= fmt[i] <= ord("9"):
            while ord("0") <= fmt[i] <= ord("9"):
                i += 1
        spec = "%" + fmt[start:i].decode()
        conv = chr(fmt[i])
        if conv == "p":
            return self.pointer(i, spec)
        if conv == "s":
            if not _ends_conversion(fmt[i + 1]):
                raise BprintfError(errno.EINVAL, "%s followed by a letter or digit")
            self.emit(spec + "s", self.string("s", self.arg()).decode("latin-1"))
            return i + 1
        if conv == "c":
            self.take(1)
            self.emit(spec + "c", chr(self.arg() & 0xFF))
            return i + 1
        bits = 32
        if fmt[i] == ord("l"):
            bits, i = 64, i + 1
        if fmt[i] == ord("l"):
            i += 1
        conv = chr(fmt[i])
        if conv not in "iduxX":
            raise BprintfError(errno.EINVAL, f"unknown conversion %{conv}")
        self.take(bits // 8, 4)
        value = self.arg() & ((1 << bits) - 1)
        if conv in "id":
            self.emit(spec + "d", to_signed(value, bits))
        else:
            self.emit(spec + ("d" if conv == "u" else conv), value)
        return i + 1

    def pointer(self, i: int, spec: str) -> int:
        fmt = self.fmt
        nxt = chr(fmt[i + 1]) if fmt[i + 1] else ""
        if not nxt or _ends_conversion(fmt[i + 1]):
            self.take(8, 4)
            self.emit(spec + "s", f"{self.arg():016x}")
            return i + 1
        if nxt in "ku" and fmt[i + 2] == ord("s"):
            if not _ends_conversion(fmt[i + 3]):
                raise BprintfError(errno.EINVAL, f"%p{nxt}s followed by a letter or digit")
            self.emit(spec + "s", self.string(nxt, self.arg()).decode("latin-1"))
            return i + 3
        if nxt in "KxsS":
            self.take(8, 4)
            self.emit(spec + "s", f"{self.arg():016x}" if nxt in "Kx" else hex(self.arg()))
            return i + 2
        if nxt == "B":
            text = hex(self.arg())
            self.take(len(text) + 1)
            self.emit(spec + "s", text)
            return i + 2
        version = chr(fmt[i + 2]) if fmt[i + 2] else ""
        if nxt not in "iI" or version not in "46":
            raise BprintfError(errno.EINVAL, f"unsupported pointer conversion %p{nxt}")
        size = 4 if version == "4" else 16
        if MAX_BPRINTF_BIN_ARGS - self.bin_used < size:
            raise BprintfError(errno.ENOSPC, "no room left for an IP address")
        raw = self.ip_bytes(self.arg(), size) or bytes(size)
        text = _ip_text(raw, leading_zeros=nxt == "i")
        self.bin_used = min(MAX_BPRINTF_BIN_ARGS, self.bin_used + len(text) + 1)
        self.emit(spec + "s", text)
        return i + 3

    def emit(self, spec: str, value: object) -> None:
        self.out += (spec % value).encode("latin-1")


def _ip_text(raw: bytes, *, leading_zeros: bool) -> str:
    """%pI4 / %pi4 / %pI6 / %pi6."""
    if len(raw) == 4:
        return ".".join(f"{b:03d}" if leading_zeros else str(b) for b in raw)
    if leading_zeros:
        return raw.hex()
    return ipaddress.IPv6Address(raw).exploded


def bprintf(fmt: bytes, args: Sequence[int], strings: StringReader, ip_bytes: IpReader) -> bytes:
    """The text `fmt` (without its NUL) formats to with `args`; BprintfError when refused."""
    return _Formatter(fmt, args, strings, ip_bytes).run()


def check_format(fmt: bytes, num_args: int) -> None:
    """The load-time check of a constant format (bpf_bprintf_prepare without arguments: no
    argument buffer, so only the format's own rules and the argument count); BprintfError."""
    _Formatter(
        fmt, [0] * num_args, lambda kind, address, limit: b"", lambda address, size: None
    ).run()
