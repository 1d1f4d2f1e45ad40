"""eBPF instructions: encoder, label assembler, text assembler and disassembler.

Theory of operation
-------------------
`Insn` is one 8-byte instruction slot exactly as the kernel's `struct bpf_insn` holds it:
``code`` (class | size/op | mode/source), ``dst`` and ``src`` (sharing one byte, dst in the low
nibble), a signed 16-bit ``off`` and a signed 32-bit ``imm``; `to_bytes` packs it little-endian.
A 64-bit immediate load (`ld_imm64`, text ``lddw``) occupies two slots: the second has code 0 and
carries the upper 32 bits (or, for the pseudo loads, the map value offset / BTF object fd) in its
``imm``. Every opcode number comes from `bpfsys.abi`; this module only arranges them.

Three layers sit on top of `Insn`, each built on the previous one:

1. *Encoders* -- pure functions, one per instruction family (`alu64`, `jmp32`, `ldx`, `atomic`,
   `ld_imm64`, `call_local`, ...). The operation names (``"add"``, ``"jeq"``, ``"dw"``, ...)
   are keys of small tables that map them to the abi constants; an operand that is a `Reg`
   selects the register source (BPF_X), a plain `int` the immediate (BPF_K). Jumps and local
   calls take a numeric relative offset (target = index of the next slot + offset).
2. `Assembler` -- a builder that appends encoder output (each family is exposed as a method that
   wraps the encoder, so signatures are shared, not copied) and accepts *labels* wherever a jump
   or pc-relative target is expected. `assemble` resolves labels to offsets counting slots (so an
   ``lddw`` counts two) and raises `AsmError` naming the label if it is unknown or too far.
3. Text -- `assemble_text` parses the uBPF-style syntax of the bpf_conformance suite line by line
   into an `Assembler` (a table maps every mnemonic to a handler); `disassemble` prints that
   syntax back. Jumps are printed with signed numeric offsets (``jeq %r1, 5, +2``), so the text
   needs no labels and ``assemble_text(disassemble(p)) == p`` holds for every program whose
   instructions are *canonical*: the disassembler re-assembles each line it prints and raises
   `AsmError` when that does not reproduce the instruction (a reserved field set, as in the
   ``negative/unused-*`` conformance files, or an opcode that has no meaning).

Text syntax (one statement per line, ``#`` starts a comment, ``name:`` defines a label, optionally
followed by a statement on the same line)::

    mov %r0, 1           add32 %r0, -3        neg %r1        movsx832 %r0, %r1
    le16 %r0             be64 %r0             bswap32 %r0    (swapNN is accepted as bswapNN)
    ldxdw %r0, [%r1+2]   ldxsh %r0, [%r10-2]  stw [%r10-4], 7            stxb [%r1], %r2
    lock add [%r10-8], %r1     lock fetch xor32 [%r1], %r2     lock cmpxchg [%r10-8], %r1
    lddw %r0, 0x123456789      lddw %r1, map_fd(3)      lddw %r1, map_value(3, 16)
    lddw %r1, func(label)      (also btf_id(id, fd), map_idx(i), map_idx_value(i, off))
    ldabsw 12            ldindh %r1, 4
    jeq %r1, 0x10, +2    jsgt32 %r1, %r2, label   ja -1   ja32 label (imm offset, "gotol")
    call 1               call helper 1    call local func    call kfunc 42 (or runtime)
    call %r2 (callx: register in dst)     exit

ALU mnemonics without a suffix are 64-bit (``add64`` is accepted too), ``...32`` are 32-bit;
``sdiv``/``smod`` set off=1 and ``movsxBBWW`` sign-extends BB bits into a WW-bit operation.
Immediates are decimal within the signed 32-bit range, or hexadecimal up to ``0xffffffff`` (the
two's complement bit pattern: ``0xffffffff`` is -1); ``lddw`` takes any 64-bit value. Offsets are
signed 16-bit. A jump target is a label or a signed number (``+2``, ``-1``): an unsigned number
is rejected rather than guessed at. As in the conformance assembler, the name ``exit`` refers to
the first ``exit`` instruction unless a label of that name is defined.
"""

from __future__ import annotations

import ctypes
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from enum import IntEnum
from functools import partial
from typing import (
    Any,
    ClassVar,
    Concatenate,
    Final,
    Literal,
    NoReturn,
    ParamSpec,
    TypeAlias,
    TypeVar,
)

import attrs

from bpfsys.abi import (
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_ATOMIC,
    BPF_B,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_H,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_LSH,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_BTF_ID,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_MAP_VALUE,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_SUB,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    MAX_BPF_REG,
    BpfInsn,
)

__all__ = [
    "R0",
    "R1",
    "R2",
    "R3",
    "R4",
    "R5",
    "R6",
    "R7",
    "R8",
    "R9",
    "R10",
    "AluOp",
    "AsmError",
    "Assembler",
    "AtomicOp",
    "Insn",
    "JmpOp",
    "Operand",
    "PseudoKind",
    "Reg",
    "RegLike",
    "Size",
    "Target",
    "alu32",
    "alu64",
    "assemble_text",
    "atomic",
    "bswap",
    "call",
    "call_kfunc",
    "call_local",
    "callx",
    "decode",
    "disassemble",
    "encode",
    "endian",
    "exit_insn",
    "from_ctypes",
    "ja",
    "ja32",
    "jmp",
    "jmp32",
    "ld_abs",
    "ld_func",
    "ld_imm64",
    "ld_ind",
    "ld_map_fd",
    "ld_map_value",
    "ld_pseudo",
    "ldx",
    "ldxs",
    "mov32",
    "mov64",
    "movsx32",
    "movsx64",
    "neg32",
    "neg64",
    "st",
    "stx",
    "to_ctypes",
]


class AsmError(ValueError):
    """An instruction that cannot be encoded, assembled, resolved or disassembled.

    `reason` says what is wrong; `line` and `text` locate it in assembler source when it came
    from there (the message then reads ``line N: reason (in 'text')``).
    """

    def __init__(self, reason: str, *, line: int | None = None, text: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.text = text
        super().__init__(reason if line is None else f"line {line}: {reason} (in {text!r})")

    def located(self, line: int, text: str) -> AsmError:
        """This error placed at source `line` (whose text is `text`), unless already placed."""
        return self if self.line is not None else AsmError(self.reason, line=line, text=text)


# ---------------------------------------------------------------------------------------------
# Registers, operation names and their opcode tables
# ---------------------------------------------------------------------------------------------
class Reg(IntEnum):
    """A register r0..r10. As an ALU/jump source it selects BPF_X (a plain int is an imm)."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10


R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = Reg

RegLike: TypeAlias = "Reg | int"
"""A register operand: a `Reg` or its number 0..10."""
Operand: TypeAlias = "Reg | int"
"""A source operand: a `Reg` (encoded as BPF_X, src register) or an int (BPF_K, 32-bit imm)."""
Target: TypeAlias = "str | int"
"""A jump or pc-relative target for `Assembler`: a label name or a relative slot offset."""

AluOp: TypeAlias = Literal[
    "add", "sub", "mul", "div", "sdiv", "or", "and", "lsh", "rsh", "mod", "smod", "xor", "mov",
    "arsh",
]  # fmt: skip
JmpOp: TypeAlias = Literal[
    "jeq", "jgt", "jge", "jset", "jne", "jsgt", "jsge", "jlt", "jle", "jslt", "jsle"
]  # fmt: skip
Size: TypeAlias = Literal["b", "h", "w", "dw"]
AtomicOp: TypeAlias = Literal["add", "or", "and", "xor", "xchg", "cmpxchg"]
PseudoKind: TypeAlias = Literal[
    "map_fd", "map_value", "btf_id", "func", "map_idx", "map_idx_value"
]  # fmt: skip

# name -> (operation bits, off): the signed division and modulo are BPF_DIV/BPF_MOD with off=1.
_ALU_OPS: Final[dict[AluOp, tuple[int, int]]] = {
    "add": (BPF_ADD, 0),
    "sub": (BPF_SUB, 0),
    "mul": (BPF_MUL, 0),
    "div": (BPF_DIV, 0),
    "sdiv": (BPF_DIV, 1),
    "or": (BPF_OR, 0),
    "and": (BPF_AND, 0),
    "lsh": (BPF_LSH, 0),
    "rsh": (BPF_RSH, 0),
    "mod": (BPF_MOD, 0),
    "smod": (BPF_MOD, 1),
    "xor": (BPF_XOR, 0),
    "mov": (BPF_MOV, 0),
    "arsh": (BPF_ARSH, 0),
}
_JMP_OPS: Final[dict[JmpOp, int]] = {
    "jeq": BPF_JEQ,
    "jgt": BPF_JGT,
    "jge": BPF_JGE,
    "jset": BPF_JSET,
    "jne": BPF_JNE,
    "jsgt": BPF_JSGT,
    "jsge": BPF_JSGE,
    "jlt": BPF_JLT,
    "jle": BPF_JLE,
    "jslt": BPF_JSLT,
    "jsle": BPF_JSLE,
}
_SIZES: Final[dict[Size, int]] = {"b": BPF_B, "h": BPF_H, "w": BPF_W, "dw": BPF_DW}
# The imm of BPF_STX | BPF_ATOMIC; xchg and cmpxchg include BPF_FETCH by definition.
_ATOMIC_OPS: Final[dict[AtomicOp, int]] = {
    "add": BPF_ADD,
    "or": BPF_OR,
    "and": BPF_AND,
    "xor": BPF_XOR,
    "xchg": BPF_XCHG,
    "cmpxchg": BPF_CMPXCHG,
}
_PSEUDO: Final[dict[PseudoKind, int]] = {
    "map_fd": BPF_PSEUDO_MAP_FD,
    "map_value": BPF_PSEUDO_MAP_VALUE,
    "btf_id": BPF_PSEUDO_BTF_ID,
    "func": BPF_PSEUDO_FUNC,
    "map_idx": BPF_PSEUDO_MAP_IDX,
    "map_idx_value": BPF_PSEUDO_MAP_IDX_VALUE,
}
_MOVSX_BITS: Final[dict[int, tuple[int, ...]]] = {BPF_ALU: (8, 16), BPF_ALU64: (8, 16, 32)}
_SWAP_BITS: Final = (16, 32, 64)
_LD_IMM64: Final = BPF_LD | BPF_IMM | BPF_DW
_INT16: Final = (-(1 << 15), (1 << 15) - 1)
_INT32: Final = (-(1 << 31), (1 << 31) - 1)
_V = TypeVar("_V")


def _lookup(table: Mapping[Any, _V], key: str, what: str) -> _V:
    """`table[key]`, or AsmError naming the unknown `what`."""
    if key not in table:
        raise AsmError(f"unknown {what} {key!r}")
    return table[key]


# ---------------------------------------------------------------------------------------------
# The instruction slot
# ---------------------------------------------------------------------------------------------
# True while decoding raw bytes: registers 11..15 (unusable, but encodable) are then accepted.
_RAW_REGISTERS: ContextVar[bool] = ContextVar("_RAW_REGISTERS", default=False)


def _plain_int(value: int) -> int:
    """`value` as a plain int (a `Reg` loses its enum type); TypeError for bool and non-ints."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {value!r}")
    return int(value)


def _check_range(what: str, value: int, bounds: tuple[int, int]) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise AsmError(f"{what} {value} out of range {bounds[0]}..{bounds[1]}")
    return value


def _field_range(bounds: tuple[int, int]) -> Callable[[Any, attrs.Attribute[int], int], None]:
    def check(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
        _check_range(attribute.name, value, bounds)

    return check


def _check_register(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    _check_range(
        f"{attribute.name} register", value, (0, 0x0F if _RAW_REGISTERS.get() else MAX_BPF_REG - 1)
    )


@attrs.frozen
class Insn:
    """One instruction slot (`struct bpf_insn`).

    Registers are 0..10 (0..15 only in what `from_bytes`/`decode` return), ``off`` is int16 and
    ``imm`` int32; out-of-range values raise AsmError, non-ints TypeError. A `Reg` is stored as
    its plain number.
    """

    SIZE: ClassVar[int] = 8
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<BBhi")

    code: int = attrs.field(converter=_plain_int, validator=_field_range((0, 0xFF)))
    dst: int = attrs.field(default=0, converter=_plain_int, validator=_check_register)
    src: int = attrs.field(default=0, converter=_plain_int, validator=_check_register)
    off: int = attrs.field(default=0, converter=_plain_int, validator=_field_range(_INT16))
    imm: int = attrs.field(default=0, converter=_plain_int, validator=_field_range(_INT32))

    def to_bytes(self) -> bytes:
        """The 8 kernel bytes: code, dst | src << 4, off (LE int16), imm (LE int32)."""
        return self._LAYOUT.pack(self.code, self.dst | self.src << 4, self.off, self.imm)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Insn:
        """The instruction in exactly 8 bytes; any register nibble 0..15 is accepted."""
        if len(data) != cls.SIZE:
            raise AsmError(f"an instruction is {cls.SIZE} bytes, got {len(data)}")
        code, regs, off, imm = cls._LAYOUT.unpack(data)
        token = _RAW_REGISTERS.set(True)
        try:
            return cls(code, regs & 0x0F, regs >> 4, off, imm)
        finally:
            _RAW_REGISTERS.reset(token)


def encode(insns: Iterable[Insn]) -> bytes:
    """The program's bytes: each slot's `Insn.to_bytes`, in order."""
    return b"".join(insn.to_bytes() for insn in insns)


def decode(data: bytes | bytearray | memoryview) -> list[Insn]:
    """The slots in `data` (a multiple of 8 bytes), without judging whether they are valid."""
    if len(data) % Insn.SIZE:
        raise AsmError(f"program length {len(data)} is not a multiple of {Insn.SIZE}")
    view = memoryview(data)
    return [Insn.from_bytes(view[at : at + Insn.SIZE]) for at in range(0, len(data), Insn.SIZE)]


def to_ctypes(insns: Sequence[Insn]) -> ctypes.Array[BpfInsn]:
    """The program as a `BpfInsn` array (what `BPF_PROG_LOAD` points `insns` at)."""
    return (BpfInsn * len(insns)).from_buffer_copy(encode(insns))


def from_ctypes(array: ctypes.Array[BpfInsn]) -> list[Insn]:
    """The slots of a `BpfInsn` array (the inverse of `to_ctypes`)."""
    return decode(bytes(array))


# ---------------------------------------------------------------------------------------------
# Encoders: one pure function per family
# ---------------------------------------------------------------------------------------------
def _reg(value: RegLike) -> int:
    return _check_range("register", _plain_int(value), (0, MAX_BPF_REG - 1))


def _imm(value: int, what: str = "imm", bounds: tuple[int, int] = _INT32) -> int:
    if isinstance(value, Reg):
        raise TypeError(f"{what} must be an int, got register {value!r}")
    return _check_range(what, _plain_int(value), bounds)


def _source(src: Operand) -> tuple[int, int, int]:
    """(source bit, src register, imm) of an ALU/jump operand."""
    if isinstance(src, Reg):
        return BPF_X, int(src), 0
    return BPF_K, 0, _imm(src)


def _alu(cls: int, op: str, dst: RegLike, src: Operand) -> Insn:
    bits, off = _lookup(_ALU_OPS, op, "ALU operation")
    source, src_reg, imm = _source(src)
    return Insn(cls | bits | source, _reg(dst), src_reg, off, imm)


def alu64(op: AluOp, dst: RegLike, src: Operand) -> Insn:
    """``dst = dst op src`` in 64 bits (BPF_ALU64); ``sdiv``/``smod`` are signed (off=1)."""
    return _alu(BPF_ALU64, op, dst, src)


def alu32(op: AluOp, dst: RegLike, src: Operand) -> Insn:
    """``dst = (u32)(dst op src)`` (BPF_ALU): operates on and zero-extends the low 32 bits."""
    return _alu(BPF_ALU, op, dst, src)


def mov64(dst: RegLike, src: Operand) -> Insn:
    """``dst = src`` (an imm is sign-extended to 64 bits)."""
    return alu64("mov", dst, src)


def mov32(dst: RegLike, src: Operand) -> Insn:
    """``dst = (u32)src``."""
    return alu32("mov", dst, src)


def neg64(dst: RegLike) -> Insn:
    """``dst = -dst`` (BPF_ALU64 | BPF_NEG, K source, no operand)."""
    return Insn(BPF_ALU64 | BPF_NEG | BPF_K, _reg(dst))


def neg32(dst: RegLike) -> Insn:
    """``dst = (u32)-dst``."""
    return Insn(BPF_ALU | BPF_NEG | BPF_K, _reg(dst))


def _movsx(cls: int, dst: RegLike, src: RegLike, bits: int) -> Insn:
    if bits not in _MOVSX_BITS[cls]:
        raise AsmError(f"movsx cannot sign-extend {bits} bits here (only {_MOVSX_BITS[cls]})")
    return Insn(cls | BPF_MOV | BPF_X, _reg(dst), _reg(src), bits)


def movsx64(dst: RegLike, src: RegLike, bits: Literal[8, 16, 32]) -> Insn:
    """``dst = (s64)(sN)src``: BPF_ALU64 | BPF_MOV | BPF_X with off = `bits`."""
    return _movsx(BPF_ALU64, dst, src, bits)


def movsx32(dst: RegLike, src: RegLike, bits: Literal[8, 16]) -> Insn:
    """``dst = (u32)(s32)(sN)src``: BPF_ALU | BPF_MOV | BPF_X with off = `bits`."""
    return _movsx(BPF_ALU, dst, src, bits)


def _end(code: int, dst: RegLike, bits: int) -> Insn:
    if bits not in _SWAP_BITS:
        raise AsmError(f"byte swaps take 16, 32 or 64 bits, not {bits}")
    return Insn(code, _reg(dst), imm=bits)


def endian(order: Literal["le", "be"], dst: RegLike, bits: Literal[16, 32, 64]) -> Insn:
    """Convert the low `bits` of dst to little/big endian, zero-extended (BPF_ALU | BPF_END)."""
    return _end(BPF_ALU | BPF_END | (BPF_TO_BE if order == "be" else BPF_TO_LE), dst, bits)


def bswap(dst: RegLike, bits: Literal[16, 32, 64]) -> Insn:
    """Unconditionally byte-swap the low `bits` of dst (BPF_ALU64 | BPF_END | BPF_TO_LE)."""
    return _end(BPF_ALU64 | BPF_END | BPF_TO_LE, dst, bits)


def _size(size: str, allowed: Iterable[str] = _SIZES) -> int:
    if size not in allowed:
        raise AsmError(f"unknown or unsupported access size {size!r}")
    return _lookup(_SIZES, size, "access size")


def _ldx(mode: int, size: str, dst: RegLike, src: RegLike, off: int) -> Insn:
    code = BPF_LDX | mode | _size(size, _SIZES if mode == BPF_MEM else ("b", "h", "w"))
    return Insn(code, _reg(dst), _reg(src), _imm(off, "off", _INT16))


def ldx(size: Size, dst: RegLike, src: RegLike, off: int = 0) -> Insn:
    """``dst = *(uN *)(src + off)``, zero-extended (BPF_LDX | BPF_MEM)."""
    return _ldx(BPF_MEM, size, dst, src, off)


def ldxs(size: Literal["b", "h", "w"], dst: RegLike, src: RegLike, off: int = 0) -> Insn:
    """``dst = *(sN *)(src + off)``, sign-extended (BPF_LDX | BPF_MEMSX)."""
    return _ldx(BPF_MEMSX, size, dst, src, off)


def st(size: Size, dst: RegLike, off: int, imm: int) -> Insn:
    """``*(uN *)(dst + off) = imm`` (BPF_ST | BPF_MEM)."""
    return Insn(BPF_ST | BPF_MEM | _size(size), _reg(dst), 0, _imm(off, "off", _INT16), _imm(imm))


def stx(size: Size, dst: RegLike, off: int, src: RegLike) -> Insn:
    """``*(uN *)(dst + off) = src`` (BPF_STX | BPF_MEM)."""
    return Insn(BPF_STX | BPF_MEM | _size(size), _reg(dst), _reg(src), _imm(off, "off", _INT16))


def atomic(
    op: AtomicOp,
    size: Literal["w", "dw"],
    dst: RegLike,
    off: int,
    src: RegLike,
    *,
    fetch: bool = False,
) -> Insn:
    """Atomic ``*(uN *)(dst + off) op= src`` (BPF_STX | BPF_ATOMIC, the op in imm).

    `fetch` adds BPF_FETCH (src receives the old value); xchg and cmpxchg always fetch, and
    cmpxchg compares with r0 and leaves the old value in r0.
    """
    code = BPF_STX | BPF_ATOMIC | _size(size, ("w", "dw"))
    imm = _lookup(_ATOMIC_OPS, op, "atomic operation") | (BPF_FETCH if fetch else 0)
    return Insn(code, _reg(dst), _reg(src), _imm(off, "off", _INT16), imm)


def ld_abs(size: Literal["b", "h", "w"], imm: int) -> Insn:
    """Legacy packet load ``r0 = ntoh(*(uN *)(skb->data + imm))`` (BPF_LD | BPF_ABS)."""
    return Insn(BPF_LD | BPF_ABS | _size(size, ("b", "h", "w")), imm=_imm(imm))


def ld_ind(size: Literal["b", "h", "w"], src: RegLike, imm: int) -> Insn:
    """Legacy packet load ``r0 = ntoh(*(uN *)(skb->data + src + imm))`` (BPF_LD | BPF_IND)."""
    return Insn(BPF_LD | BPF_IND | _size(size, ("b", "h", "w")), 0, _reg(src), 0, _imm(imm))


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def ld_imm64(dst: RegLike, value: int) -> tuple[Insn, Insn]:
    """``dst = value`` for any 64-bit value (signed or unsigned): two slots."""
    value = _imm(value, "64-bit immediate", (-(1 << 63), (1 << 64) - 1))
    return Insn(_LD_IMM64, _reg(dst), imm=_signed32(value)), Insn(0, imm=_signed32(value >> 32))


def ld_pseudo(dst: RegLike, kind: PseudoKind, imm: int, next_imm: int = 0) -> tuple[Insn, Insn]:
    """A pseudo 64-bit load (src = BPF_PSEUDO_*), resolved by the kernel at load time.

    `imm` is the map fd / map index / BTF id, or for ``func`` the relative offset of the
    subprogram; `next_imm` (the second slot) is the map value offset or the BTF object fd.
    """
    pseudo = _lookup(_PSEUDO, kind, "pseudo load kind")
    return Insn(_LD_IMM64, _reg(dst), pseudo, imm=_imm(imm)), Insn(0, imm=_imm(next_imm))


def ld_map_fd(dst: RegLike, fd: int) -> tuple[Insn, Insn]:
    """``dst = map`` (BPF_PSEUDO_MAP_FD, imm = fd)."""
    return ld_pseudo(dst, "map_fd", fd)


def ld_map_value(dst: RegLike, fd: int, off: int) -> tuple[Insn, Insn]:
    """``dst = &map.value[off]`` (BPF_PSEUDO_MAP_VALUE, imm = fd, next imm = off)."""
    return ld_pseudo(dst, "map_value", fd, off)


def ld_func(dst: RegLike, off: int) -> tuple[Insn, Insn]:
    """``dst = &subprogram`` at slot ``index + 1 + off`` (BPF_PSEUDO_FUNC)."""
    return ld_pseudo(dst, "func", off)


def _jmp(cls: int, op: str, dst: RegLike, src: Operand, off: int) -> Insn:
    source, src_reg, imm = _source(src)
    code = cls | _lookup(_JMP_OPS, op, "jump operation") | source
    return Insn(code, _reg(dst), src_reg, _imm(off, "jump offset", _INT16), imm)


def jmp(op: JmpOp, dst: RegLike, src: Operand, off: int) -> Insn:
    """``if (dst op src) goto +off`` comparing 64 bits (BPF_JMP)."""
    return _jmp(BPF_JMP, op, dst, src, off)


def jmp32(op: JmpOp, dst: RegLike, src: Operand, off: int) -> Insn:
    """``if ((u32)dst op (u32)src) goto +off`` (BPF_JMP32)."""
    return _jmp(BPF_JMP32, op, dst, src, off)


def ja(off: int) -> Insn:
    """``goto +off`` (BPF_JMP | BPF_JA, 16-bit offset)."""
    return Insn(BPF_JMP | BPF_JA, off=_imm(off, "jump offset", _INT16))


def ja32(off: int) -> Insn:
    """``gotol +off`` (BPF_JMP32 | BPF_JA, 32-bit offset in imm)."""
    return Insn(BPF_JMP32 | BPF_JA, imm=_imm(off, "jump offset"))


def call(helper_id: int) -> Insn:
    """Call helper function `helper_id` (src 0)."""
    return Insn(BPF_JMP | BPF_CALL, imm=_imm(helper_id, "helper id"))


def call_local(off: int) -> Insn:
    """Call the subprogram at slot ``index + 1 + off`` (src = BPF_PSEUDO_CALL)."""
    return Insn(BPF_JMP | BPF_CALL, src=BPF_PSEUDO_CALL, imm=_imm(off, "call offset"))


def call_kfunc(btf_id: int) -> Insn:
    """Call kernel function `btf_id` (src = BPF_PSEUDO_KFUNC_CALL)."""
    return Insn(BPF_JMP | BPF_CALL, src=BPF_PSEUDO_KFUNC_CALL, imm=_imm(btf_id, "kfunc id"))


def callx(reg: RegLike) -> Insn:
    """Call the address in `reg` (BPF_JMP | BPF_CALL | BPF_X, the register in dst as LLVM 19
    and GCC encode it). Linux rejects it; the conformance suite's ``callx`` test uses it."""
    return Insn(BPF_JMP | BPF_CALL | BPF_X, _reg(reg))


def exit_insn() -> Insn:
    """Return r0 from the current (sub)program (BPF_JMP | BPF_EXIT)."""
    return Insn(BPF_JMP | BPF_EXIT)


# ---------------------------------------------------------------------------------------------
# The label assembler
# ---------------------------------------------------------------------------------------------
_P = ParamSpec("_P")
_Made: TypeAlias = "Insn | tuple[Insn, ...]"


def _slots(made: _Made) -> tuple[Insn, ...]:
    return made if isinstance(made, tuple) else (made,)


def _emitter(
    encoder: Callable[_P, _Made], name: str | None = None
) -> Callable[Concatenate[Assembler, _P], Assembler]:
    """An `Assembler` method (named `name`, by default as `encoder`) appending what `encoder`
    returns for the same arguments."""

    def method(self: Assembler, /, *args: _P.args, **kwargs: _P.kwargs) -> Assembler:
        return self.emit(*_slots(encoder(*args, **kwargs)))

    method.__name__ = name or encoder.__name__
    method.__qualname__ = f"Assembler.{method.__name__}"
    method.__doc__ = f"Append `{encoder.__name__}`: {encoder.__doc__}"
    return method


@attrs.frozen
class _Fixup:
    """A slot whose `field` (off or imm) must become the offset to `label`."""

    index: int
    label: str
    field: Literal["off", "imm"]
    location: tuple[int, str] | None  # (line, text) when assembled from text


class Assembler:
    """A program builder: instruction families as chainable methods, plus labels.

    Every method appends and returns the builder. Jump, ``ja32``, ``call_local`` and ``ld_func``
    targets are a label name (resolved by `assemble`, defined before or after its use) or a
    relative slot offset. `len()` is the number of slots so far (the next label's index).
    """

    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._labels: dict[str, int] = {}
        self._fixups: list[_Fixup] = []
        self._location: tuple[int, str] | None = None  # set by the text assembler per line

    def __len__(self) -> int:
        return len(self._insns)

    def emit(self, *insns: Insn) -> Assembler:
        """Append raw slots (an ``lddw`` is two)."""
        for insn in insns:
            if not isinstance(insn, Insn):
                raise TypeError(f"expected an Insn, got {insn!r}")
        self._insns.extend(insns)
        return self

    def label(self, name: str) -> Assembler:
        """Name the next slot; AsmError if `name` is empty or already defined."""
        return self._define(name, len(self._insns))

    def _define(self, name: str, index: int) -> Assembler:
        if not isinstance(name, str) or not name:
            raise AsmError(f"a label must be a non-empty string, got {name!r}")
        if name in self._labels:
            raise AsmError(f"duplicate label {name!r} (already at slot {self._labels[name]})")
        self._labels[name] = index
        return self

    def _branch(
        self, make: Callable[[int], _Made], target: Target, field: Literal["off", "imm"]
    ) -> Assembler:
        made = _slots(make(0 if isinstance(target, str) else target))
        if isinstance(target, str):
            self._fixups.append(_Fixup(len(self._insns), target, field, self._location))
        return self.emit(*made)

    alu64 = _emitter(alu64)
    alu32 = _emitter(alu32)
    mov64 = _emitter(mov64)
    mov32 = _emitter(mov32)
    neg64 = _emitter(neg64)
    neg32 = _emitter(neg32)
    movsx64 = _emitter(movsx64)
    movsx32 = _emitter(movsx32)
    endian = _emitter(endian)
    bswap = _emitter(bswap)
    ldx = _emitter(ldx)
    ldxs = _emitter(ldxs)
    st = _emitter(st)
    stx = _emitter(stx)
    atomic = _emitter(atomic)
    ld_abs = _emitter(ld_abs)
    ld_ind = _emitter(ld_ind)
    ld_imm64 = _emitter(ld_imm64)
    ld_pseudo = _emitter(ld_pseudo)
    ld_map_fd = _emitter(ld_map_fd)
    ld_map_value = _emitter(ld_map_value)
    call = _emitter(call)
    call_kfunc = _emitter(call_kfunc)
    callx = _emitter(callx)
    exit = _emitter(exit_insn, "exit")

    def jmp(self, op: JmpOp, dst: RegLike, src: Operand, target: Target) -> Assembler:
        """Append ``if (dst op src) goto target`` comparing 64 bits."""
        return self._branch(lambda off: _jmp(BPF_JMP, op, dst, src, off), target, "off")

    def jmp32(self, op: JmpOp, dst: RegLike, src: Operand, target: Target) -> Assembler:
        """Append ``if ((u32)dst op (u32)src) goto target``."""
        return self._branch(lambda off: _jmp(BPF_JMP32, op, dst, src, off), target, "off")

    def ja(self, target: Target) -> Assembler:
        """Append ``goto target`` (16-bit offset)."""
        return self._branch(ja, target, "off")

    def ja32(self, target: Target) -> Assembler:
        """Append ``gotol target`` (32-bit offset in imm)."""
        return self._branch(ja32, target, "imm")

    def call_local(self, target: Target) -> Assembler:
        """Append a call of the subprogram at `target`."""
        return self._branch(call_local, target, "imm")

    def ld_func(self, dst: RegLike, target: Target) -> Assembler:
        """Append ``dst = &subprogram at target`` (two slots)."""
        return self._branch(lambda off: ld_func(dst, off), target, "imm")

    def assemble(self) -> list[Insn]:
        """The slots with every label reference resolved to ``label index - (slot + 1)``.

        AsmError names the label when it is undefined or its offset does not fit the field
        (int16 for ``off``, int32 for ``imm``). The builder is left unchanged.
        """
        out = list(self._insns)
        for fixup in self._fixups:
            where = f" (slot {fixup.index})" if fixup.location is None else ""
            if fixup.label not in self._labels:
                error = AsmError(f"unknown label {fixup.label!r}{where}")
            else:
                delta = self._labels[fixup.label] - fixup.index - 1
                bounds = _INT16 if fixup.field == "off" else _INT32
                if bounds[0] <= delta <= bounds[1]:
                    out[fixup.index] = attrs.evolve(out[fixup.index], **{fixup.field: delta})
                    continue
                error = AsmError(
                    f"label {fixup.label!r} is {delta:+d} slots away{where}, "
                    f"beyond the {fixup.field} field's range {bounds[0]}..{bounds[1]}"
                )
            raise error if fixup.location is None else error.located(*fixup.location)
        return out


# ---------------------------------------------------------------------------------------------
# The text assembler
# ---------------------------------------------------------------------------------------------
_LABEL_RE: Final = re.compile(r"([A-Za-z_][\w.]*)\s*:(.*)")
_IDENT_RE: Final = re.compile(r"[A-Za-z_][\w.]*")
_REG_RE: Final = re.compile(r"%r(\d+)")
_INT_RE: Final = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]+|[0-9]+)")
_MEM_RE: Final = re.compile(r"\[\s*(%r\d+)\s*(?:([+-])\s*(0[xX][0-9a-fA-F]+|[0-9]+)\s*)?\]")
_PSEUDO_RE: Final = re.compile(r"([a-z_]+)\((.*)\)")
_LOCK_RE: Final = re.compile(r"(?:(fetch)\s+)?([a-z]+?)(32)?\s+(.*)")
_TOP_LEVEL_COMMA: Final = re.compile(r",(?![^(]*\))")

_Handler: TypeAlias = "Callable[[_Line, str], None]"


class _Line:
    """One source statement being assembled: operand parsers raising AsmError for it."""

    def __init__(self, asm: Assembler, mnemonic: str) -> None:
        self.asm = asm
        self.mnemonic = mnemonic

    def fail(self, reason: str) -> NoReturn:
        raise AsmError(reason)

    def operands(self, rest: str, count: int) -> list[str]:
        found = [part.strip() for part in _TOP_LEVEL_COMMA.split(rest)] if rest else []
        if len(found) != count or not all(found):
            self.fail(f"{self.mnemonic!r} takes {count} operand(s), got {rest!r}")
        return found

    def reg(self, token: str) -> Reg:
        match = _REG_RE.fullmatch(token)
        if match is None:
            self.fail(f"expected a register like %r1, got {token!r}")
        number = int(match[1])
        if number >= MAX_BPF_REG:
            self.fail(f"invalid register {token!r} (r0..r10)")
        return Reg(number)

    def number(self, token: str, what: str, bounds: tuple[int, int], hex_width: int = 0) -> int:
        """A decimal or 0x number within `bounds`; an unsigned hex number below
        ``1 << hex_width`` is taken as a `hex_width`-bit two's complement pattern."""
        match = _INT_RE.fullmatch(token)
        if match is None:
            self.fail(f"expected a number for the {what}, got {token!r}")
        is_hex = match[2][:2].lower() == "0x"
        value = int(match[2], 16 if is_hex else 10) * (-1 if match[1] == "-" else 1)
        unsigned_hex = is_hex and match[1] != "-"
        if hex_width and unsigned_hex and bounds[1] < value < 1 << hex_width:
            value -= 1 << hex_width
        if not bounds[0] <= value <= bounds[1]:
            self.fail(f"{what} {token} does not fit in {bounds[0]}..{bounds[1]}")
        return value

    def imm(self, token: str, what: str = "immediate") -> int:
        return self.number(token, what, _INT32, hex_width=32)

    def operand(self, token: str) -> Operand:
        return self.reg(token) if token.startswith("%") else self.imm(token)

    def mem(self, token: str) -> tuple[Reg, int]:
        match = _MEM_RE.fullmatch(token)
        if match is None:
            self.fail(f"expected a memory operand like [%r1+8], got {token!r}")
        off = 0 if match[3] is None else self.number(match[2] + match[3], "offset", _INT16)
        return self.reg(match[1]), off

    def target(self, token: str, bounds: tuple[int, int] = _INT16) -> Target:
        if token[:1] in ("+", "-"):
            return self.number(token, "offset", bounds)
        if _IDENT_RE.fullmatch(token) is None:
            self.fail(f"invalid target {token!r} (a label, or a signed offset like +2)")
        return token


def _alu_handler(op: AluOp, cls: int) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        dst, src = line.operands(rest, 2)
        line.asm.emit(_alu(cls, op, line.reg(dst), line.operand(src)))

    return handle


def _one_reg_handler(make: Callable[[Reg], Insn]) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        line.asm.emit(make(line.reg(line.operands(rest, 1)[0])))

    return handle


def _movsx_handler(cls: int, bits: int) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        dst, src = line.operands(rest, 2)
        line.asm.emit(_movsx(cls, line.reg(dst), line.reg(src), bits))

    return handle


def _jmp_handler(op: JmpOp, cls: int) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        dst, src, target = line.operands(rest, 3)
        args = line.reg(dst), line.operand(src)
        line.asm._branch(lambda off: _jmp(cls, op, *args, off), line.target(target), "off")

    return handle


def _ja_handler(wide: bool) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        (token,) = line.operands(rest, 1)
        if wide:
            line.asm.ja32(line.target(token, _INT32))
        else:
            line.asm.ja(line.target(token))

    return handle


def _ldx_handler(size: Size, mode: int) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        dst, source = line.operands(rest, 2)
        src, off = line.mem(source)
        line.asm.emit(_ldx(mode, size, line.reg(dst), src, off))

    return handle


def _st_handler(size: Size, register: bool) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        target, value = line.operands(rest, 2)
        dst, off = line.mem(target)
        if register:
            line.asm.stx(size, dst, off, line.reg(value))
        else:
            line.asm.st(size, dst, off, line.imm(value))

    return handle


def _ld_packet_handler(size: Literal["b", "h", "w"], indirect: bool) -> _Handler:
    def handle(line: _Line, rest: str) -> None:
        if indirect:
            src, imm = line.operands(rest, 2)
            line.asm.ld_ind(size, line.reg(src), line.imm(imm))
        else:
            line.asm.ld_abs(size, line.imm(line.operands(rest, 1)[0]))

    return handle


def _lddw(line: _Line, rest: str) -> None:
    dst_token, value = line.operands(rest, 2)
    dst = line.reg(dst_token)
    pseudo = _PSEUDO_RE.fullmatch(value)
    if pseudo is None:
        line.asm.ld_imm64(dst, line.number(value, "64-bit immediate", (-(1 << 63), (1 << 64) - 1)))
        return
    kind, args = pseudo[1], [arg.strip() for arg in pseudo[2].split(",")]
    if kind not in _PSEUDO:
        line.fail(f"unknown pseudo load {kind!r} (one of {', '.join(_PSEUDO)})")
    if kind == "func" and len(args) == 1:
        line.asm.ld_func(dst, line.target(args[0], _INT32))
    elif kind != "func" and len(args) in (1, 2):
        line.asm.ld_pseudo(dst, kind, *(line.imm(arg) for arg in args))
    else:
        line.fail(f"wrong arguments for {kind}: {pseudo[2]!r}")


def _call(line: _Line, rest: str) -> None:
    words = rest.split()
    if len(words) == 1 and words[0].startswith("%"):
        line.asm.callx(line.reg(words[0]))
    elif len(words) == 1 or (len(words) == 2 and words[0] == "helper"):
        line.asm.call(line.imm(words[-1], "helper id"))
    elif len(words) == 2 and words[0] == "local":
        line.asm.call_local(line.target(words[1], _INT32))
    elif len(words) == 2 and words[0] in ("kfunc", "runtime"):
        line.asm.call_kfunc(line.imm(words[1], "kfunc id"))
    else:
        line.fail(f"expected call ID, call local TARGET, call kfunc ID or call %rN: {rest!r}")


def _lock(line: _Line, rest: str) -> None:
    match = _LOCK_RE.fullmatch(rest)
    if match is None or match[2] not in _ATOMIC_OPS:
        line.fail(f"expected 'lock [fetch] OP[32] [%rN+off], %rM', got {rest!r}")
    line.mnemonic = f"lock {match[2]}"
    target, value = line.operands(match[4], 2)
    dst, off = line.mem(target)
    size: Literal["w", "dw"] = "w" if match[3] else "dw"
    fetch = match[1] is not None
    line.asm.atomic(match[2], size, dst, off, line.reg(value), fetch=fetch)


def _exit(line: _Line, rest: str) -> None:
    line.operands(rest, 0)
    line.asm.exit()


def _mnemonics() -> dict[str, _Handler]:
    """Every text mnemonic and its handler, generated from the opcode tables."""
    table: dict[str, _Handler] = {"lddw": _lddw, "call": _call, "lock": _lock, "exit": _exit}
    for cls, suffixes in ((BPF_ALU64, ("", "64")), (BPF_ALU, ("32",))):
        for suffix in suffixes:
            table |= {f"{op}{suffix}": _alu_handler(op, cls) for op in _ALU_OPS}
            table[f"neg{suffix}"] = _one_reg_handler(neg64 if cls == BPF_ALU64 else neg32)
        width = "64" if cls == BPF_ALU64 else "32"
        table |= {f"movsx{n}{width}": _movsx_handler(cls, n) for n in _MOVSX_BITS[cls]}
    for bits in _SWAP_BITS:
        for name, code in (
            ("le", BPF_ALU | BPF_END | BPF_TO_LE),
            ("be", BPF_ALU | BPF_END | BPF_TO_BE),
            ("bswap", BPF_ALU64 | BPF_END | BPF_TO_LE),
            ("swap", BPF_ALU64 | BPF_END | BPF_TO_LE),
        ):
            table[f"{name}{bits}"] = _one_reg_handler(partial(_end, code, bits=bits))
    for jop in _JMP_OPS:
        table |= {jop: _jmp_handler(jop, BPF_JMP), f"{jop}32": _jmp_handler(jop, BPF_JMP32)}
    table |= {"ja": _ja_handler(False), "ja32": _ja_handler(True)}
    for size in _SIZES:
        table |= {f"ldx{size}": _ldx_handler(size, BPF_MEM)}
        table |= {f"st{size}": _st_handler(size, False), f"stx{size}": _st_handler(size, True)}
        if size != "dw":
            table[f"ldxs{size}"] = _ldx_handler(size, BPF_MEMSX)
            table[f"ldabs{size}"] = _ld_packet_handler(size, False)
            table[f"ldind{size}"] = _ld_packet_handler(size, True)
    return table


_MNEMONICS: Final = _mnemonics()


def assemble_text(source: str) -> list[Insn]:
    """The program written in `source` (syntax: see the module docstring).

    Raises AsmError naming the 1-based line and its text for an unknown mnemonic, a wrong
    operand count, a bad register/number/memory operand, a value out of range, a duplicate or
    unknown label, or a label too far for its field.
    """
    asm = Assembler()
    first_exit: int | None = None
    for number, raw in enumerate(source.splitlines(), 1):
        statement = raw.split("#", 1)[0].strip()
        asm._location = (number, raw.strip())
        try:
            label = _LABEL_RE.fullmatch(statement)
            if label is not None:
                asm.label(label[1])
                statement = label[2].strip()
            if not statement:
                continue
            mnemonic, _, rest = statement.replace("\t", " ").partition(" ")
            handler = _MNEMONICS.get(mnemonic)
            if handler is None:
                raise AsmError(f"unknown mnemonic {mnemonic!r}")
            if mnemonic == "exit" and first_exit is None:
                first_exit = len(asm)
            handler(_Line(asm, mnemonic), rest.strip())
        except AsmError as error:
            raise error.located(number, raw.strip()) from None
    if first_exit is not None and "exit" not in asm._labels:
        asm._define("exit", first_exit)
    return asm.assemble()


# ---------------------------------------------------------------------------------------------
# The disassembler
# ---------------------------------------------------------------------------------------------
_ALU_NAMES: Final = {code: name for name, code in _ALU_OPS.items()}
_JMP_NAMES: Final = {code: name for name, code in _JMP_OPS.items()}
_SIZE_NAMES: Final = {code: name for name, code in _SIZES.items()}
_PSEUDO_NAMES: Final = {code: name for name, code in _PSEUDO.items()}
_ATOMIC_NAMES: Final = {code: name for name, code in _ATOMIC_OPS.items()}
_BITWISE: Final = frozenset({"and", "or", "xor", "jset"})


def _imm_text(name: str, imm: int) -> str:
    """Bitwise operands in hex (the 32-bit pattern), the rest in signed decimal."""
    return f"{imm & 0xFFFFFFFF:#x}" if name in _BITWISE else str(imm)


def _mem_text(reg: int, off: int) -> str:
    return f"[%r{reg}{off:+d}]" if off else f"[%r{reg}]"


def _alu_text(insn: Insn) -> str:
    wide, op, x = insn.code & 0x07 == BPF_ALU64, insn.code & 0xF0, insn.code & BPF_X
    dst, suffix = f"%r{insn.dst}", "" if wide else "32"
    if op == BPF_END:
        name = "bswap" if wide else ("be" if x else "le")
        return f"{name}{insn.imm} {dst}"
    if op == BPF_NEG:
        return f"neg{suffix} {dst}"
    if op == BPF_MOV and x and insn.off:
        if insn.off not in _MOVSX_BITS[insn.code & 0x07]:
            raise AsmError(f"movsx cannot sign-extend {insn.off} bits")
        return f"movsx{insn.off}{'64' if wide else '32'} {dst}, %r{insn.src}"
    alu_op = _ALU_NAMES.get((op, insn.off))
    if alu_op is None:
        raise AsmError(f"no ALU operation {op:#x} with off {insn.off}")
    return f"{alu_op}{suffix} {dst}, {f'%r{insn.src}' if x else _imm_text(alu_op, insn.imm)}"


def _jmp_text(insn: Insn) -> str:
    wide, op, x = insn.code & 0x07 == BPF_JMP, insn.code & 0xF0, insn.code & BPF_X
    if op == BPF_JA:
        return f"ja {insn.off:+d}" if wide else f"ja32 {insn.imm:+d}"
    if wide and op == BPF_EXIT:
        return "exit"
    if wide and op == BPF_CALL:
        if x:
            return f"call %r{insn.dst}"
        kinds = {0: f"{insn.imm}", BPF_PSEUDO_CALL: f"local {insn.imm:+d}"}
        kinds[BPF_PSEUDO_KFUNC_CALL] = f"kfunc {insn.imm}"
        if insn.src not in kinds:
            raise AsmError(f"no call kind src={insn.src}")
        return f"call {kinds[insn.src]}"
    name = _JMP_NAMES.get(op)
    if name is None:
        raise AsmError(f"no jump operation {op:#x}")
    source = f"%r{insn.src}" if x else _imm_text(name, insn.imm)
    return f"{name}{'' if wide else '32'} %r{insn.dst}, {source}, {insn.off:+d}"


def _ld_text(insn: Insn, following: Insn | None) -> tuple[str, int]:
    mode, size = insn.code & 0xE0, _SIZE_NAMES[insn.code & 0x18]
    if mode == BPF_ABS:
        return f"ldabs{size} {insn.imm}", 1
    if mode == BPF_IND:
        return f"ldind{size} %r{insn.src}, {insn.imm}", 1
    if insn.code != _LD_IMM64:
        raise AsmError(f"no load with mode {mode:#x} and size {size}")
    if following is None:
        raise AsmError("lddw is truncated (it needs two slots)")
    dst = f"%r{insn.dst}"
    if insn.src == 0:
        value = (following.imm & 0xFFFFFFFF) << 32 | insn.imm & 0xFFFFFFFF
        return f"lddw {dst}, {value:#x}", 2
    kind = _PSEUDO_NAMES.get(insn.src)
    if kind is None:
        raise AsmError(f"no pseudo load src={insn.src}")
    args = f"{insn.imm:+d}" if kind == "func" else f"{insn.imm}"
    args += f", {following.imm}" if following.imm else ""
    return f"lddw {dst}, {kind}({args})", 2


def _mem_insn_text(insn: Insn) -> str:
    cls, mode, size = insn.code & 0x07, insn.code & 0xE0, _SIZE_NAMES[insn.code & 0x18]
    if cls == BPF_LDX and mode in (BPF_MEM, BPF_MEMSX):
        name = "ldxs" if mode == BPF_MEMSX else "ldx"
        return f"{name}{size} %r{insn.dst}, {_mem_text(insn.src, insn.off)}"
    if cls == BPF_ST and mode == BPF_MEM:
        return f"st{size} {_mem_text(insn.dst, insn.off)}, {insn.imm}"
    if cls == BPF_STX and mode == BPF_MEM:
        return f"stx{size} {_mem_text(insn.dst, insn.off)}, %r{insn.src}"
    if cls == BPF_STX and mode == BPF_ATOMIC:
        always_fetches = insn.imm in (BPF_XCHG, BPF_CMPXCHG)
        op = _ATOMIC_NAMES.get(insn.imm if always_fetches else insn.imm & ~BPF_FETCH)
        if op is None:
            raise AsmError(f"no atomic operation {insn.imm:#x}")
        fetch = "fetch " if insn.imm & BPF_FETCH and not always_fetches else ""
        width = "32" if size == "w" else ""
        return f"lock {fetch}{op}{width} {_mem_text(insn.dst, insn.off)}, %r{insn.src}"
    raise AsmError(f"no memory instruction with mode {mode:#x} in class {cls}")


def _insn_text(insns: Sequence[Insn], index: int) -> tuple[str, int]:
    """The text of the instruction at `index` and the number of slots it spans."""
    insn = insns[index]
    cls = insn.code & 0x07
    if cls in (BPF_ALU, BPF_ALU64):
        return _alu_text(insn), 1
    if cls in (BPF_JMP, BPF_JMP32):
        return _jmp_text(insn), 1
    if cls == BPF_LD:
        return _ld_text(insn, insns[index + 1] if index + 1 < len(insns) else None)
    return _mem_insn_text(insn), 1


def disassemble(insns: Sequence[Insn]) -> str:
    """The program as assembler text, one instruction per line (``\\n``-terminated).

    Jumps and pc-relative targets are printed as signed offsets, so `assemble_text` of the
    result gives back `insns` exactly. AsmError (naming the slot) for a slot that has no text
    form: an unknown opcode, a truncated ``lddw``, or a reserved field that is not zero.
    """
    lines: list[str] = []
    index = 0
    while index < len(insns):
        try:
            text, width = _insn_text(insns, index)
            if assemble_text(text) != list(insns[index : index + width]):
                raise AsmError(f"it has reserved fields set (the text form {text!r} differs)")
        except AsmError as error:
            reason = f"slot {index} {insns[index]!r} has no text form: {error.reason}"
            raise AsmError(reason) from None
        lines.append(text)
        index += width
    return "".join(f"{line}\n" for line in lines)
