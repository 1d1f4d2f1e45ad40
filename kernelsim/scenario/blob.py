"""Memory contents in a scenario: bytes <-> JSON, exactly.

Theory of operation
-------------------
A blob is the content of user memory that a call reads or writes. Its JSON forms, each decoding
to exactly one byte string:

==============================  ===============================================================
``"0a0b"``                      hex, the bytes themselves
``{"hex": "0a", "len": 8}``     hex, then zero bytes up to `len` (trailing zeros are not spelt)
``{"text": "GPL", "len": 4}``   UTF-8 text, then zero bytes up to `len` (names, paths, logs)
``{"fd": "$perf1"}``            a u32 fd (map values of fd maps), `len` as above
``{"id": "@prog1"}``            a u32 object id
``{"ids": ["@map1"], "len": 8}``  u32 object ids (PROG_QUERY, prog info map_ids)
``{"insns": [...], "len": n}``  instructions as assembler text, one per entry (``lddw`` takes
                                two slots), map fds as symbols: ``lddw %r1, map_fd($map1)``; a
                                slot with no text form is ``raw 0x<16 hex digits>``
==============================  ===============================================================

The encoder picks the form from a `Form` that the caller knows from the field: plain bytes,
text, instructions, fds, ids. Decoding needs the `SymbolTable` to turn symbols into the values
of the run at hand.
"""

from __future__ import annotations

import enum
import re
import struct
from typing import Any, Final

from bpfsys.abi import BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE
from bpfsys.asm import AsmError, Insn, assemble_text, decode, disassemble, encode
from kernelsim.scenario.symbols import SymbolTable, is_symbol

_PRINTABLE = re.compile(r"^[\t\n\r\x20-\x7e]*$")
_FD_REF = re.compile(r"map_(fd|value)\((\$[a-z]+\d+)")
_U32 = struct.Struct("<I")
UNRESOLVED_FD: Final = 0x7FFF_FFFF
"""The fd number a symbol that the run at hand never bound decodes to (no process has it)."""


class Form(enum.Enum):
    """How a blob is best shown."""

    BYTES = "bytes"
    TEXT = "text"
    INSNS = "insns"
    FD = "fd"
    ID = "id"
    IDS = "ids"


class BlobError(ValueError):
    """A blob that does not decode (the file's reader turns it into a ScenarioError)."""


def _trimmed(data: bytes) -> tuple[bytes, int]:
    return data.rstrip(b"\0"), len(data)


SHORT: Final = 16
"""Blobs up to this size are always plain hex."""


def _bytes_form(data: bytes) -> Any:
    body, size = _trimmed(data)
    if len(body) == size or size <= SHORT:
        return data.hex()
    return {"hex": body.hex(), "len": size}


def _text_form(data: bytes) -> Any:
    body, size = _trimmed(data)
    if b"\0" not in body:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and _PRINTABLE.match(text):
            return {"text": text, "len": size}
    return _bytes_form(data)


def _insn_lines(data: bytes, symbols: SymbolTable) -> list[str] | None:
    """Instruction text per instruction, map fds as symbols; None when `data` is no program."""
    if not data or len(data) % 8:
        return None
    insns = decode(data)
    lines: list[str] = []
    index = 0
    while index < len(insns):
        width = 2 if index + 1 < len(insns) and insns[index].code == 0x18 else 1
        try:
            text = disassemble(insns[index : index + width]).strip()
        except AsmError:
            width, text = 1, f"raw {data[index * 8 : index * 8 + 8].hex()}"
        else:
            insn = insns[index]
            if width == 2 and insn.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
                name = symbols.fd_symbol(insn.imm)
                if name is not None:
                    kind = "fd" if insn.src == BPF_PSEUDO_MAP_FD else "value"
                    text = text.replace(f"map_{kind}({insn.imm}", f"map_{kind}({name}", 1)
        lines.append(text)
        index += width
    return lines


def encode_blob(data: bytes, form: Form, symbols: SymbolTable, space: str = "") -> Any:
    """The JSON form of `data` (`space`: the id space of ID/IDS forms)."""
    if form is Form.TEXT:
        return _text_form(data)
    if form is Form.INSNS:
        lines = _insn_lines(data, symbols)
        return _bytes_form(data) if lines is None else {"insns": lines}
    if form in (Form.FD, Form.ID) and len(data) in (4, 8) and not any(data[4:]):
        (value,) = _U32.unpack(data[:4])
        extra = {"len": len(data)} if len(data) == 8 else {}
        if form is Form.FD:
            name = symbols.fd_symbol(value)
            return {"fd": name, **extra} if name is not None else data.hex()
        return {"id": symbols.id_symbol(space, value), **extra} if value else data.hex()
    if form is Form.IDS and len(data) % 4 == 0:
        values = [v for (v,) in _U32.iter_unpack(data)]
        while values and values[-1] == 0:
            values.pop()
        shown: list[str | int] = [symbols.id_symbol(space, v) if v else 0 for v in values]
        return {"ids": shown, "len": len(data)}
    return _bytes_form(data)


def _pad(body: bytes, spec: dict[str, Any]) -> bytes:
    size = spec.get("len", len(body))
    if not isinstance(size, int) or size < len(body):
        raise BlobError(f"len {size!r} is shorter than the {len(body)} bytes given")
    return body.ljust(size, b"\0")


def _symbol_value(name: object, symbols: SymbolTable, what: str) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if not is_symbol(name):
        raise BlobError(f"{what} must be a symbol or a number, got {name!r}")
    assert isinstance(name, str)
    value = symbols.fd_of(name) if name.startswith("$") else symbols.id_of(name)
    return UNRESOLVED_FD if value is None else value


def _assemble(lines: object, symbols: SymbolTable) -> bytes:
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise BlobError("insns must be a list of strings")
    out = bytearray()
    for line in lines:
        if line.startswith("raw "):
            out += bytes.fromhex(line[4:])
            continue
        text = _FD_REF.sub(
            lambda m: f"map_{m.group(1)}({_symbol_value(m.group(2), symbols, 'map fd')}", line
        )
        try:
            insns: list[Insn] = assemble_text(text)
        except AsmError as exc:
            raise BlobError(f"instruction {line!r}: {exc}") from None
        out += encode(insns)
    return bytes(out)


def decode_blob(value: Any, symbols: SymbolTable) -> bytes:
    """The bytes of a blob's JSON form; BlobError when it is not one."""
    try:
        if isinstance(value, str):
            return bytes.fromhex(value)
        if not isinstance(value, dict):
            raise BlobError(f"a blob is a hex string or an object, got {value!r}")
        if "hex" in value:
            return _pad(bytes.fromhex(value["hex"]), value)
        if "text" in value:
            return _pad(str(value["text"]).encode("utf-8"), value)
        if "fd" in value:
            return _pad(_U32.pack(_symbol_value(value["fd"], symbols, "fd") & 0xFFFFFFFF), value)
        if "id" in value:
            return _pad(_U32.pack(_symbol_value(value["id"], symbols, "id") & 0xFFFFFFFF), value)
        if "ids" in value:
            ids = value["ids"]
            if not isinstance(ids, list):
                raise BlobError("ids must be a list")
            body = b"".join(_U32.pack(_symbol_value(v, symbols, "id") & 0xFFFFFFFF) for v in ids)
            return _pad(body, value)
        if "insns" in value:
            return _pad(_assemble(value["insns"], symbols), value)
    except (ValueError, TypeError, struct.error) as exc:
        if isinstance(exc, BlobError):
            raise
        raise BlobError(f"bad blob {value!r}: {exc}") from None
    raise BlobError(f"a blob object needs hex, text, fd, id, ids or insns: {value!r}")
