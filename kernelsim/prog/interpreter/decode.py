"""Decoding a program once: instructions, functions, and what the verifier would refuse.

Theory of operation
-------------------
`decode_program(raw)` turns the instruction bytes into `Instruction`s (one per slot; an
ld_imm64 carries its full 64-bit value and its second slot's imm) and splits them into
functions: slot 0 and every target of a bpf-to-bpf call (or of an ld_imm64 of a function)
starts one, which runs to the next start. Every instruction that the verifier would reject on
its own (an unknown opcode, a register out of range, a write to the frame pointer, a jump out
of its function or into the middle of an ld_imm64, a truncated ld_imm64, a kfunc call) gets a
`problem` text. Both engines raise that problem when, and only when, the instruction runs, so
a program that never reaches a bad instruction behaves as it would after the kernel removed
the dead code.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import attrs

from bpfsys.abi import (
    BPF_ABS,
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_JSLE,
    BPF_K,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ST,
    BPF_STX,
    BPF_X,
    BPF_XCHG,
)
from bpfsys.asm import AsmError, Insn, disassemble

SLOT: Final = struct.Struct("<BBhi")
ATOMIC_OPS: Final = frozenset({0x00, 0x40, 0x50, 0xA0})
"""add, or, and, xor: with or without BPF_FETCH."""
SIZE_BYTES: Final = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
"""BPF_W, BPF_H, BPF_B, BPF_DW."""
FP: Final = 10


@attrs.frozen
class Instruction:
    """One slot. For an ld_imm64, `imm64` is the 64-bit value and `imm2` the second slot's
    imm (a map value's offset for the pseudo loads)."""

    index: int
    code: int
    dst: int
    src: int
    off: int
    imm: int
    imm64: int = 0
    imm2: int = 0
    problem: str | None = None

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def op(self) -> int:
        return self.code & 0xF0

    @property
    def is_ld_imm64(self) -> bool:
        return self.code == BPF_LD | BPF_IMM | BPF_DW

    @property
    def jump_offset(self) -> int:
        """The relative target of a jump (ja32 takes it from imm)."""
        return self.imm if self.cls == BPF_JMP32 and self.op == BPF_JA else self.off

    def ends_block(self) -> bool:
        return self.cls in (BPF_JMP, BPF_JMP32) and self.op != BPF_CALL

    def falls_through(self) -> bool:
        """Whether control can continue with the next instruction."""
        return not (self.cls in (BPF_JMP, BPF_JMP32) and self.op in (BPF_JA, BPF_EXIT))

    def width(self) -> int:
        return 2 if self.is_ld_imm64 else 1


@attrs.frozen
class Function:
    """A bpf-to-bpf function: slots start..end-1."""

    start: int
    end: int


@attrs.frozen
class DecodedProgram:
    insns: tuple[Instruction, ...]
    functions: tuple[Function, ...]

    def function_at(self, start: int) -> Function:
        for function in self.functions:
            if function.start == start:
                return function
        raise KeyError(start)

    def text(self, index: int) -> str:
        """The assembler text of slot `index` (its raw fields when it has none)."""
        if not 0 <= index < len(self.insns):
            return f"slot {index}"
        insn = self.insns[index]
        width = 2 if insn.is_ld_imm64 and index + 1 < len(self.insns) else 1
        slots = [
            Insn.from_bytes(SLOT.pack(i.code, i.dst | i.src << 4, i.off, i.imm))
            for i in self.insns[index : index + width]
        ]
        try:
            return disassemble(slots).splitlines()[0]
        except AsmError:
            return (
                f"code={insn.code:#04x} dst=r{insn.dst} src=r{insn.src} off={insn.off} "
                f"imm={insn.imm}"
            )


def _alu_problem(insn: Instruction) -> str | None:
    wide = insn.cls == BPF_ALU64
    op, x = insn.op, insn.code & BPF_X
    if op > BPF_END:
        return f"unknown ALU operation {op:#x}"
    if op == BPF_END:
        if wide and x:
            return "bswap takes no source bit"
        return None if insn.imm in (16, 32, 64) else f"invalid byte swap size {insn.imm}"
    if op in (BPF_DIV, BPF_MOD):
        return None if insn.off in (0, 1) else f"invalid offset {insn.off} for div/mod"
    if op == BPF_MOV and not x and insn.off:
        return "BPF_MOV uses reserved fields"
    if op == BPF_MOV and x and insn.off:
        allowed = (8, 16, 32) if wide else (8, 16)
        return None if insn.off in allowed else f"invalid movsx width {insn.off}"
    return None


def _mem_problem(insn: Instruction) -> str | None:
    mode = insn.code & 0xE0
    size = insn.code & 0x18
    if insn.cls == BPF_LDX:
        if mode == BPF_MEMSX and size == BPF_DW:
            return "ldsx has no 8-byte form"
        return None if mode in (BPF_MEM, BPF_MEMSX) else f"unknown load mode {mode:#x}"
    if insn.cls == BPF_ST:
        return None if mode == BPF_MEM else f"unknown store mode {mode:#x}"
    if mode == BPF_MEM:
        return None
    if mode != BPF_ATOMIC:
        return f"unknown store mode {mode:#x}"
    if size not in (0x00, BPF_DW):
        return "atomic operations are 4 or 8 bytes"
    if insn.imm & ~BPF_FETCH in ATOMIC_OPS or insn.imm in (BPF_XCHG, BPF_CMPXCHG):
        return None
    return f"unknown atomic operation {insn.imm:#x}"


def _jmp_problem(insn: Instruction) -> str | None:
    op = insn.op
    if op > BPF_JSLE:
        return f"unknown jump operation {op:#x}"
    if insn.cls == BPF_JMP32 and op in (BPF_CALL, BPF_EXIT):
        return "call and exit have no 32-bit form"
    if op == BPF_CALL and not insn.code & BPF_X and insn.src == BPF_PSEUDO_KFUNC_CALL:
        return "kfunc calls are not modelled by the simulator"
    if op == BPF_CALL and not insn.code & BPF_X and insn.src not in (0, BPF_PSEUDO_CALL):
        return f"unknown call kind src={insn.src}"
    return None


def _ld_problem(insn: Instruction) -> str | None:
    mode = insn.code & 0xE0
    if mode in (BPF_ABS, BPF_IND):
        return None if insn.code & 0x18 != BPF_DW else "ld_abs/ld_ind have no 8-byte form"
    return None if insn.is_ld_imm64 else f"unknown load {insn.code:#04x}"


def _writes_fp(insn: Instruction) -> bool:
    if insn.cls in (BPF_ALU, BPF_ALU64, BPF_LDX) or insn.is_ld_imm64:
        return insn.dst == FP
    fetch = insn.cls == BPF_STX and insn.code & 0xE0 == BPF_ATOMIC and insn.imm & BPF_FETCH
    return bool(fetch) and insn.imm != BPF_CMPXCHG and insn.src == FP


def _own_problem(insn: Instruction) -> str | None:
    """What is wrong with the instruction in itself (not its place in the program)."""
    if insn.dst > FP or insn.src > FP:
        return f"invalid register r{max(insn.dst, insn.src)}"
    checks = {
        BPF_ALU: _alu_problem,
        BPF_ALU64: _alu_problem,
        BPF_LDX: _mem_problem,
        BPF_ST: _mem_problem,
        BPF_STX: _mem_problem,
        BPF_JMP: _jmp_problem,
        BPF_JMP32: _jmp_problem,
        BPF_LD: _ld_problem,
    }
    problem = checks[insn.cls](insn)
    if problem is None and _writes_fp(insn):
        return "frame pointer is read only"
    return problem


def _slots(raw: bytes) -> list[Instruction]:
    out: list[Instruction] = []
    for index, (code, regs, off, imm) in enumerate(SLOT.iter_unpack(raw)):
        out.append(Instruction(index, code, regs & 0x0F, regs >> 4, off, imm))
    return out


def _function_starts(slots: Sequence[Instruction]) -> list[int]:
    starts = {0}
    for insn in slots:
        pseudo_call = insn.code == BPF_JMP | BPF_CALL | BPF_K and insn.src == BPF_PSEUDO_CALL
        pseudo_func = insn.is_ld_imm64 and insn.src == BPF_PSEUDO_FUNC
        target = insn.index + 1 + insn.imm
        if (pseudo_call or pseudo_func) and 0 <= target < len(slots):
            starts.add(target)
    return sorted(starts)


def decode_program(raw: bytes) -> DecodedProgram:
    """Decode `raw` (a whole number of 8-byte slots, at least one)."""
    if not raw or len(raw) % SLOT.size:
        raise ValueError(f"a program is a non-empty multiple of 8 bytes, got {len(raw)}")
    slots = _slots(raw)
    starts = _function_starts(slots)
    functions = tuple(
        Function(start, end) for start, end in zip(starts, [*starts[1:], len(slots)], strict=True)
    )
    owner = {index: f for f in functions for index in range(f.start, f.end)}
    second_slots: set[int] = set()
    decoded: list[Instruction] = []
    for insn in slots:
        if insn.index in second_slots:
            decoded.append(insn)
            continue
        problem = _own_problem(insn)
        imm64 = imm2 = 0
        function = owner[insn.index]
        if insn.is_ld_imm64:
            nxt = slots[insn.index + 1] if insn.index + 1 < function.end else None
            if nxt is None or nxt.code != 0 or nxt.dst or nxt.src or nxt.off:
                problem = problem or "ld_imm64 is missing its second slot"
            else:
                second_slots.add(nxt.index)
                imm2 = nxt.imm
                imm64 = (nxt.imm & 0xFFFFFFFF) << 32 | insn.imm & 0xFFFFFFFF
        elif problem is None:
            problem = _place_problem(insn, function, len(slots))
        decoded.append(attrs.evolve(insn, imm64=imm64, imm2=imm2, problem=problem))
    checked = [_target_problem(insn, second_slots) for insn in decoded]
    return DecodedProgram(tuple(checked), functions)


def _place_problem(insn: Instruction, function: Function, count: int) -> str | None:
    if insn.cls not in (BPF_JMP, BPF_JMP32) or insn.op == BPF_EXIT:
        return None
    if insn.op == BPF_CALL:
        if insn.code & BPF_X or insn.src != BPF_PSEUDO_CALL:
            return None
        target = insn.index + 1 + insn.imm
        return None if 0 <= target < count else f"call to slot {target}, outside the program"
    target = insn.index + 1 + insn.jump_offset
    if not function.start <= target < function.end:
        return f"jump out of range from insn {insn.index} to {target}"
    return None


def _target_problem(insn: Instruction, second_slots: set[int]) -> Instruction:
    """Flag jumps into the second slot of an ld_imm64."""
    if insn.problem or insn.cls not in (BPF_JMP, BPF_JMP32) or insn.op in (BPF_CALL, BPF_EXIT):
        return insn
    if insn.index in second_slots:
        return insn
    target = insn.index + 1 + insn.jump_offset
    if target in second_slots:
        return attrs.evolve(insn, problem=f"jump into the middle of ld_imm64 at {target - 1}")
    return insn
