"""The reference interpreter: decode-dispatch, one instruction at a time, kept plain.

It exists to cross-check the compiler: every instruction is executed by reading its fields and
calling the pure semantics (`semantics.alu`, `semantics.jump_taken`), with memory through the
run's typed address space. A bpf-to-bpf call recurses into `call_function` with a new frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpfsys.abi import (
    BPF_ABS,
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_END,
    BPF_EXIT,
    BPF_JA,
    BPF_JMP,
    BPF_LD,
    BPF_LDX,
    BPF_MEMSX,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_IDX,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_PSEUDO_MAP_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_TO_BE,
    BPF_X,
)
from kernelsim.prog.interpreter.decode import SIZE_BYTES, Instruction
from kernelsim.prog.interpreter.errors import (
    BpfRuntimeError,
    BudgetExceeded,
    ProgramFault,
    TailCall,
)
from kernelsim.prog.interpreter.semantics import (
    MASK64,
    alu,
    byte_swap,
    jump_taken,
    sign_extend,
)

if TYPE_CHECKING:
    from kernelsim.prog.interpreter.runtime import Executable, RunEnv

Registers = list[int]


def call_function(exe: Executable, env: RunEnv, start: int, args: tuple[int, ...]) -> int:
    """Run the function at slot `start` with r1..r5 = `args`; its r0."""
    decoded = exe.decoded
    end = decoded.function_at(start).end
    frame = env.enter_frame()
    regs: Registers = [0, *args, 0, 0, 0, 0, frame.address + frame.size]
    pc = start
    try:
        while True:
            insn = decoded.insns[pc]
            env.budget -= 1
            if env.budget < 0:
                raise BudgetExceeded(pc, decoded.text(pc), "the instruction budget is exhausted")
            try:
                next_pc = _execute(exe, env, insn, regs)
            except ProgramFault as fault:
                raise BpfRuntimeError(pc, decoded.text(pc), fault.reason) from None
            if next_pc is None:
                return regs[0]
            if next_pc >= end:
                raise BpfRuntimeError(
                    pc, decoded.text(pc), "execution falls through the end of the function"
                )
            pc = next_pc
    except TailCall as tail:
        env.leave_frame(frame)
        frame = None  # type: ignore[assignment]
        return tail.target(env, tail.ctx)
    finally:
        if frame is not None:
            env.leave_frame(frame)


def _execute(exe: Executable, env: RunEnv, insn: Instruction, regs: Registers) -> int | None:
    """Execute `insn`; the next slot, or None for an exit of this function."""
    if insn.problem:
        raise ProgramFault(insn.problem)
    cls = insn.cls
    nxt = insn.index + 1
    if cls in (BPF_ALU, BPF_ALU64):
        _alu(insn, regs)
    elif cls == BPF_LDX:
        size = SIZE_BYTES[insn.code & 0x18]
        value = env.space.load(regs[insn.src] + insn.off, size)
        if insn.code & 0xE0 == BPF_MEMSX:
            value = sign_extend(value, size * 8)
        regs[insn.dst] = value
    elif cls == BPF_ST:
        env.space.store(regs[insn.dst] + insn.off, SIZE_BYTES[insn.code & 0x18], insn.imm)
    elif cls == BPF_STX:
        _stx(env, insn, regs)
    elif cls == BPF_LD:
        if insn.is_ld_imm64:
            regs[insn.dst] = _ld_imm64(exe, env, insn)
            return nxt + 1
        from kernelsim.prog.interpreter.runtime import ld_abs

        offset = insn.imm + (0 if insn.code & 0xE0 == BPF_ABS else regs[insn.src])
        regs[0] = ld_abs(env, regs[6], offset, SIZE_BYTES[insn.code & 0x18])
    else:
        return _jump(exe, env, insn, regs)
    return nxt


def _alu(insn: Instruction, regs: Registers) -> None:
    bits = 64 if insn.cls == BPF_ALU64 else 32
    dst = regs[insn.dst]
    if insn.op == BPF_END:
        if bits == 64 or insn.code & BPF_TO_BE:
            regs[insn.dst] = byte_swap(dst, insn.imm)
        else:
            regs[insn.dst] = dst & ((1 << insn.imm) - 1)
        return
    src = regs[insn.src] if insn.code & BPF_X else insn.imm & MASK64
    regs[insn.dst] = alu(insn.op, insn.off, dst, src, bits)


def _stx(env: RunEnv, insn: Instruction, regs: Registers) -> None:
    from kernelsim.prog.interpreter.runtime import atomic, atomic_writes_src

    size = SIZE_BYTES[insn.code & 0x18]
    addr = regs[insn.dst] + insn.off
    if insn.code & 0xE0 != BPF_ATOMIC:
        env.space.store(addr, size, regs[insn.src])
        return
    old = atomic(env.space, addr, size, insn.imm, regs[insn.src], regs[0])
    if insn.imm == BPF_CMPXCHG:
        regs[0] = old
    elif atomic_writes_src(insn.imm):
        regs[insn.src] = old


def _ld_imm64(exe: Executable, env: RunEnv, insn: Instruction) -> int:
    if insn.src == 0:
        return insn.imm64
    if insn.src == BPF_PSEUDO_FUNC:
        return env.function_pointer(exe, insn.index + 1 + insn.imm)
    bpf_map = exe.maps.get(insn.index)
    if bpf_map is None:
        raise ProgramFault(f"no map is bound to this ld_imm64 (src={insn.src}, imm={insn.imm})")
    if insn.src in (BPF_PSEUDO_MAP_VALUE, BPF_PSEUDO_MAP_IDX_VALUE):
        return env.direct_value(bpf_map, insn.imm2)
    if insn.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_IDX):
        return env.map_handle(bpf_map)
    raise ProgramFault(f"ld_imm64 with src={insn.src} is not modelled by the simulator")


def _jump(exe: Executable, env: RunEnv, insn: Instruction, regs: Registers) -> int | None:
    nxt = insn.index + 1
    if insn.op == BPF_EXIT:
        return None
    if insn.op == BPF_CALL:
        if insn.code & BPF_X:
            helper = env.helpers[regs[insn.dst]]
        elif insn.src == BPF_PSEUDO_CALL:
            regs[0] = call_function(exe, env, nxt + insn.imm, tuple(regs[1:6]))
            return nxt
        else:
            helper = env.helpers[insn.imm]
        regs[0] = helper(env, regs[1], regs[2], regs[3], regs[4], regs[5]) & MASK64
        return nxt
    bits = 64 if insn.cls == BPF_JMP else 32
    if insn.op == BPF_JA:
        return nxt + insn.jump_offset
    src = regs[insn.src] if insn.code & BPF_X else insn.imm & MASK64
    return nxt + insn.off if jump_taken(insn.op, regs[insn.dst], src, bits) else nxt
