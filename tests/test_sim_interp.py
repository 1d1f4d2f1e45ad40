"""The interpreter's engines, instruction family by instruction family, with exact results.

Every test runs on both engines (the compiled one and the naive reference) and expects the same
answer from each; errors must name the instruction index on both.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpfsys.abi import MapType
from bpfsys.asm import assemble_text, encode
from kernelsim.prog.interpreter import BpfRuntimeError, BudgetExceeded, Engine, Executable, RunEnv
from kernelsim.prog.interpreter.conformance import UBPF_HELPERS
from kernelsim.prog.interpreter.helpers import KERNEL_HELPERS, HelperTable
from kernelsim.prog.interpreter.memory import Region, RegionKind

M64 = (1 << 64) - 1
ENGINES = [Engine.COMPILED, Engine.NAIVE]


@pytest.fixture(params=ENGINES, ids=[e.value for e in ENGINES])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.param  # type: ignore[no-any-return]


def run(
    text: str,
    engine: Engine,
    mem: bytes = b"",
    *,
    helpers: HelperTable = UBPF_HELPERS,
    budget: int = 1_000_000,
    maps: dict[int, Any] | None = None,
) -> int:
    exe = Executable(encode(assemble_text(text)), maps)
    env = RunEnv(helpers, engine=engine, budget=budget)
    r1 = env.space.map(Region(RegionKind.MEMORY, "input memory", bytearray(mem))) if mem else 0
    return exe.run(env, r1, len(mem))


def run_with_memory(text: str, engine: Engine, mem: bytes) -> tuple[int, bytes]:
    """r0 and the memory after the run."""
    exe = Executable(encode(assemble_text(text)))
    env = RunEnv(UBPF_HELPERS, engine=engine)
    buf = bytearray(mem)
    r1 = env.space.map(Region(RegionKind.MEMORY, "input memory", buf))
    return exe.run(env, r1, len(mem)), bytes(buf)


def fault(text: str, engine: Engine, mem: bytes = b"", **kw: Any) -> BpfRuntimeError:
    with pytest.raises(BpfRuntimeError) as info:
        run(text, engine, mem, **kw)
    return info.value


def ret(*lines: str) -> str:
    return "\n".join(lines) + "\nexit\n"


# -- ALU -------------------------------------------------------------------------------------
ALU_CASES = [
    ("add64 wraps", ret("lddw %r0, 0xffffffffffffffff", "add %r0, 2"), 1),
    ("sub64 wraps", ret("mov %r0, 1", "sub %r0, 3"), M64 - 1),
    ("mul64 wraps", ret("lddw %r0, 0x8000000000000001", "mul %r0, 4"), 4),
    ("add32 zero-extends", ret("lddw %r0, 0x1ffffffff", "add32 %r0, 1"), 0),
    ("mov32 clears the upper half", ret("lddw %r0, 0x123456789", "mov32 %r0, %r0"), 0x23456789),
    ("mov imm sign-extends", ret("mov %r0, -1"), M64),
    ("mov32 imm does not", ret("mov32 %r0, -1"), 0xFFFFFFFF),
    ("div by zero is 0", ret("mov %r0, 7", "mov %r1, 0", "div %r0, %r1"), 0),
    ("mod by zero keeps dst", ret("lddw %r0, 0x100000007", "mov %r1, 0", "mod %r0, %r1"),
     0x100000007),
    ("div32 by zero is 0", ret("lddw %r0, 0x100000007", "mov %r1, 0", "div32 %r0, %r1"), 0),
    ("mod32 by zero keeps the low half", ret("lddw %r0, 0x100000007", "mov %r1, 0",
                                             "mod32 %r0, %r1"), 7),
    ("div is unsigned", ret("mov %r0, -8", "div %r0, 2"), (M64 - 7) // 2),
    ("sdiv rounds toward zero", ret("mov %r0, -7", "sdiv %r0, 2"), M64 - 2),
    ("smod takes the dividend's sign", ret("mov %r0, -7", "smod %r0, 2"), M64),
    ("sdiv INT_MIN by -1", ret("lddw %r0, 0x8000000000000000", "mov %r1, -1", "sdiv %r0, %r1"),
     1 << 63),
    ("smod INT_MIN by -1", ret("lddw %r0, 0x8000000000000000", "mov %r1, -1", "smod %r0, %r1"), 0),
    ("sdiv by zero is 0", ret("mov %r0, -7", "mov %r1, 0", "sdiv %r0, %r1"), 0),
    ("smod by zero keeps dst", ret("mov %r0, -7", "mov %r1, 0", "smod %r0, %r1"), M64 - 6),
    ("sdiv32 INT_MIN by -1", ret("mov32 %r0, 0x80000000", "sdiv32 %r0, -1"), 0x80000000),
    ("smod32 by zero keeps the low half", ret("lddw %r0, 0xfffffffffffffff9", "mov %r1, 0",
                                              "smod32 %r0, %r1"), 0xFFFFFFF9),
    ("sdiv32 of negatives", ret("mov32 %r0, -9", "sdiv32 %r0, 2"), 0xFFFFFFFC),
    ("lsh masks to 63", ret("mov %r0, 1", "mov %r1, 65", "lsh %r0, %r1"), 2),
    ("lsh32 masks to 31", ret("mov %r0, 1", "mov %r1, 33", "lsh32 %r0, %r1"), 2),
    ("rsh masks to 63", ret("mov %r0, 8", "mov %r1, 66", "rsh %r0, %r1"), 2),
    ("arsh keeps the sign", ret("mov %r0, -16", "arsh %r0, 2"), M64 - 3),
    ("arsh32 works on the low half", ret("mov32 %r0, 0x80000000", "arsh32 %r0, 4"), 0xF8000000),
    ("arsh32 masks to 31", ret("mov32 %r0, -64", "mov %r1, 36", "arsh32 %r0, %r1"), 0xFFFFFFFC),
    ("neg64", ret("mov %r0, 5", "neg %r0"), M64 - 4),
    ("neg32", ret("mov %r0, 5", "neg32 %r0"), 0xFFFFFFFB),
    ("xor/or/and", ret("mov %r0, 0xf0", "or %r0, 0x0f", "xor %r0, 0x3c", "and %r0, 0x33"), 0x03),
    ("movsx8 to 64", ret("mov %r1, 0x80", "movsx864 %r0, %r1"), M64 - 0x7F),
    ("movsx16 to 64", ret("mov %r1, 0x8000", "movsx1664 %r0, %r1"), M64 - 0x7FFF),
    ("movsx32 to 64", ret("mov32 %r1, 0x80000000", "movsx3264 %r0, %r1"), M64 - 0x7FFFFFFF),
    ("movsx8 to 32", ret("mov %r1, 0xff", "movsx832 %r0, %r1"), 0xFFFFFFFF),
    ("movsx16 to 32", ret("mov %r1, 0x17fff", "movsx1632 %r0, %r1"), 0x7FFF),
    ("bswap16", ret("lddw %r0, 0x1122334455667788", "bswap16 %r0"), 0x8877),
    ("bswap32", ret("lddw %r0, 0x1122334455667788", "bswap32 %r0"), 0x88776655),
    ("bswap64", ret("lddw %r0, 0x1122334455667788", "bswap64 %r0"), 0x8877665544332211),
    ("le16 truncates", ret("lddw %r0, 0x1122334455667788", "le16 %r0"), 0x7788),
    ("be32 swaps the low half", ret("lddw %r0, 0x1122334455667788", "be32 %r0"), 0x88776655),
    ("lddw", ret("lddw %r0, 0xdeadbeefcafef00d"), 0xDEADBEEFCAFEF00D),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ALU_CASES],
                         ids=[c[0] for c in ALU_CASES])  # fmt: skip
def test_alu(text: str, expected: int, engine: Engine) -> None:
    assert run(text, engine) == expected


# -- jumps -----------------------------------------------------------------------------------
def branch(cond: str, setup: str = "") -> str:
    return f"{setup}\nmov %r0, 0\n{cond}, +1\nexit\nmov %r0, 1\nexit\n"


JUMP_CASES = [
    ("jgt is unsigned", branch("jgt %r1, 1", "mov %r1, -1"), 1),
    ("jsgt is signed", branch("jsgt %r1, 1", "mov %r1, -1"), 0),
    ("jslt imm sign-extends", branch("jslt %r1, -1", "mov %r1, -2"), 1),
    ("jeq imm sign-extends to 64", branch("jeq %r1, -1", "mov32 %r1, -1"), 0),
    ("jeq32 compares the low half", branch("jeq32 %r1, -1", "lddw %r1, 0x12ffffffff"), 1),
    ("jsgt32 is signed on 32 bits", branch("jsgt32 %r1, 0", "lddw %r1, 0x80000000"), 0),
    ("jgt32 is unsigned on 32 bits", branch("jgt32 %r1, 0", "lddw %r1, 0x80000000"), 1),
    ("jset", branch("jset %r1, 0x4", "mov %r1, 6"), 1),
    ("jset32 ignores the high half", branch("jset32 %r1, %r2", "lddw %r1, 0x100000000\n"
                                            "lddw %r2, 0x100000000"), 0),
    ("jle reg", branch("jle %r1, %r2", "mov %r1, 3\nmov %r2, 3"), 1),
    ("jsge reg", branch("jsge %r1, %r2", "mov %r1, -3\nmov %r2, -2"), 0),
    ("jne", branch("jne %r1, 3", "mov %r1, 3"), 0),
    ("ja32 takes imm", "mov %r0, 1\nja32 +1\nexit\nmov %r0, 2\nexit\n", 2),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in JUMP_CASES],
                         ids=[c[0] for c in JUMP_CASES])  # fmt: skip
def test_jumps(text: str, expected: int, engine: Engine) -> None:
    assert run(text, engine) == expected


def test_bounded_loop_sums(engine: Engine) -> None:
    text = "mov %r0, 0\nmov %r1, 0\nloop:\nadd %r0, %r1\nadd %r1, 1\njlt %r1, 101, loop\nexit\n"
    assert run(text, engine) == 5050


def test_loop_with_side_exit_and_stack(engine: Engine) -> None:
    text = """
        mov %r0, 0
        stdw [%r10-8], 0
    loop:
        ldxdw %r1, [%r10-8]
        add %r1, 3
        stxdw [%r10-8], %r1
        jgt %r1, 50, out
        add %r0, 1
        ja loop
    out:
        exit
    """
    assert run(text, engine) == 16


# -- memory ----------------------------------------------------------------------------------
MEM = bytes.fromhex("aa bb cc dd 11 22 33 f4 80 00 00 00 00 00 00 00")


@pytest.mark.parametrize(("load", "expected"), [
    ("ldxb %r0, [%r1+0]", 0xAA), ("ldxh %r0, [%r1+0]", 0xBBAA), ("ldxw %r0, [%r1+0]", 0xDDCCBBAA),
    ("ldxdw %r0, [%r1+0]", 0xF4332211DDCCBBAA), ("ldxsb %r0, [%r1+8]", M64 - 0x7F),
    ("ldxsh %r0, [%r1+6]", 0xFFFFFFFFFFFFF433), ("ldxsw %r0, [%r1+4]", 0xFFFFFFFFF4332211),
    ("ldxb %r0, [%r1+15]", 0),
])  # fmt: skip
def test_loads(load: str, expected: int, engine: Engine) -> None:
    assert run(ret(load), engine, MEM) == expected


def test_stores_write_little_endian(engine: Engine) -> None:
    text = ret("stw [%r1+0], -2", "mov %r2, 0x1234", "stxh [%r1+4], %r2", "stb [%r1+6], 0x1ff",
               "mov %r0, 0")  # fmt: skip
    _, mem = run_with_memory(text, engine, bytes(8))
    assert mem == bytes.fromhex("feffffff 3412 ff 00")


def test_stack_narrow_and_wide_accesses_alias(engine: Engine) -> None:
    text = ret("lddw %r1, 0x1122334455667788", "stxdw [%r10-8], %r1", "ldxw %r0, [%r10-4]",
               "ldxb %r2, [%r10-8]", "lsh %r0, 8", "or %r0, %r2")  # fmt: skip
    assert run(text, engine) == 0x1122334488


def test_stack_pointer_passed_to_memory_ops(engine: Engine) -> None:
    text = ret("mov %r2, %r10", "add %r2, -16", "stdw [%r2+0], 41", "ldxdw %r0, [%r10-16]",
               "add %r0, 1")  # fmt: skip
    assert run(text, engine) == 42


# -- atomics ---------------------------------------------------------------------------------
ATOMIC_CASES = [
    ("add dw", "lock add [%r1+0], %r2", 0, 0x1000000035),
    ("or w", "lock or32 [%r1+0], %r2", 0, 5 | 0x30),
    ("and dw", "lock and [%r1+0], %r2", 0, 0),
    ("xor w", "lock xor32 [%r1+0], %r2", 0, 0x35),
    ("fetch add dw", "lock fetch add [%r1+0], %r2\nmov %r0, %r2", 0x30, 0x1000000035),
    ("fetch or w zero-extends", "lock fetch or32 [%r1+0], %r2\nmov %r0, %r2", 0x30, 0x35),
    ("xchg dw", "lock xchg [%r1+0], %r2\nmov %r0, %r2", 0x30, 0x1000000005),
    ("xchg w", "lock xchg32 [%r1+0], %r2\nmov %r0, %r2", 0x30, 5),
]


@pytest.mark.parametrize(("op", "expected_r0", "expected_mem"), [c[1:] for c in ATOMIC_CASES],
                         ids=[c[0] for c in ATOMIC_CASES])  # fmt: skip
def test_atomics(op: str, expected_r0: int, expected_mem: int, engine: Engine) -> None:
    text = ret("mov %r0, 0", "lddw %r2, 0x1000000005", op)
    r0, mem = run_with_memory(text, engine, (0x30).to_bytes(8, "little"))
    assert (r0, int.from_bytes(mem, "little")) == (expected_r0, expected_mem)


@pytest.mark.parametrize(("width", "old", "r0", "expected_mem", "expected_r0"), [
    ("", 7, 7, 99, 7), ("", 7, 8, 7, 7), ("32", 7, 0x100000007, 99, 7), ("32", 7, 8, 7, 7),
])  # fmt: skip
def test_cmpxchg(
    width: str, old: int, r0: int, expected_mem: int, expected_r0: int, engine: Engine
) -> None:
    text = ret(f"lddw %r0, {r0:#x}", "mov %r2, 99", f"lock cmpxchg{width} [%r1+0], %r2")
    got, mem = run_with_memory(text, engine, old.to_bytes(8, "little"))
    assert (got, int.from_bytes(mem, "little")) == (expected_r0, expected_mem)


def test_atomic_on_readonly_memory_is_refused(engine: Engine) -> None:
    exe = Executable(encode(assemble_text(ret("mov %r2, 1", "lock add [%r1+0], %r2"))))
    env = RunEnv(UBPF_HELPERS, engine=engine)
    region = Region(RegionKind.CONTEXT, "context (test)", bytearray(8), writable=False)
    with pytest.raises(BpfRuntimeError) as info:
        exe.run(env, env.space.map(region))
    assert info.value.index == 1
    assert "does not take them" in info.value.reason


# -- calls -----------------------------------------------------------------------------------
def test_bpf_to_bpf_call_has_its_own_frame(engine: Engine) -> None:
    text = """
        stdw [%r10-8], 7
        mov %r6, 100
        mov %r1, 5
        call local f
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        add %r0, %r6
        exit
    f:
        stdw [%r10-8], 1000
        mov %r6, 0
        mov %r0, %r1
        mul %r0, 2
        exit
    """
    # the callee's stack write and r6 do not reach the caller (r6 is callee-saved by the
    # verifier's rules; here the callee's r6 is its own local)
    assert run(text, engine) == 10 + 7 + 100


def test_callee_reads_the_callers_stack_through_a_pointer(engine: Engine) -> None:
    text = """
        stdw [%r10-8], 41
        mov %r1, %r10
        add %r1, -8
        call local f
        exit
    f:
        ldxdw %r0, [%r1+0]
        add %r0, 1
        exit
    """
    assert run(text, engine) == 42


def nested_calls(depth: int) -> str:
    lines = ["mov %r0, 0", "call local f1", "exit"]
    for level in range(1, depth):
        call = f"call local f{level + 1}" if level + 1 < depth else "add %r0, 1"
        lines += [f"f{level}:", call, "add %r0, 1", "exit"]
    return "\n".join(lines) + "\n"


def test_eight_frames_are_allowed(engine: Engine) -> None:
    assert run(nested_calls(8), engine) == 8


def test_nine_frames_are_refused(engine: Engine) -> None:
    error = fault(nested_calls(9), engine)
    assert "too deep" in error.reason


def test_unknown_helper_is_named(engine: Engine) -> None:
    error = fault(ret("call 77"), engine)
    assert error.index == 0 and "helper 77" in error.reason


def test_unwind_helper_ends_the_run(engine: Engine) -> None:
    assert run(ret("mov %r0, 9", "mov %r1, 0", "call 5", "mov %r0, 3"), engine) == 0


def test_callx_calls_the_helper_in_the_register(engine: Engine) -> None:
    text = ret("mov %r1, 1", "mov %r2, 2", "mov %r3, 3", "mov %r4, 4", "mov %r5, 5", "mov %r6, 0",
               "call %r6")  # fmt: skip
    assert run(text, engine) == 0x0102030405


# -- tail calls ------------------------------------------------------------------------------
class FakeProg:
    def __init__(self, exe: Executable) -> None:
        self._exe = exe

    def executable(self) -> Executable:
        return self._exe


class FakeProgArray:
    """The PROG_ARRAY side the interpreter uses: program_at(index)."""

    map_type = MapType.PROG_ARRAY
    name = b"jmp"
    key_size = 4

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.slots: dict[int, FakeProg] = {}

    def program_at(self, index: int) -> FakeProg | None:
        return self.slots.get(index)


TAIL_CALLER = """
    ldxdw %r2, [%r1+0]
    add %r2, 1
    stxdw [%r1+0], %r2
    mov %r6, %r1
    lddw %r2, map_fd(1)
    mov %r3, {index}
    call 12
    ldxdw %r0, [%r6+0]
    exit
"""


def tail_run(engine: Engine, index: int, fill: bool) -> tuple[int, int]:
    prog_array = FakeProgArray(4)
    exe = Executable(encode(assemble_text(TAIL_CALLER.format(index=index))), {4: prog_array})
    if fill:
        prog_array.slots[0] = FakeProg(exe)
    env = RunEnv(KERNEL_HELPERS, engine=engine)
    counter = bytearray(8)
    r0 = exe.run(env, env.space.map(Region(RegionKind.MEMORY, "counter", counter)))
    return r0, env.tail_calls


def test_tail_calls_stop_at_33(engine: Engine) -> None:
    assert tail_run(engine, 0, fill=True) == (34, 33)


def test_tail_call_to_an_empty_slot_counts_and_falls_through(engine: Engine) -> None:
    assert tail_run(engine, 1, fill=True) == (1, 1)


def test_tail_call_out_of_range_does_not_count(engine: Engine) -> None:
    assert tail_run(engine, 9, fill=True) == (1, 0)


# -- budget and refused operations -----------------------------------------------------------
def test_budget_names_the_instruction(engine: Engine) -> None:
    text = "mov %r0, 0\nloop:\nadd %r0, 1\nja loop\n"
    with pytest.raises(BudgetExceeded) as info:
        run(text, engine, budget=100)
    # insn 0, then insns 1, 2 alternate: the 101st executed instruction is insn 2
    assert info.value.index == 2
    assert "budget" in str(info.value) and "insn 2 (ja -2)" in str(info.value)


def test_budget_inside_an_unrolled_loop(engine: Engine) -> None:
    text = "mov %r0, 0\nloop:\nadd %r0, 1\nmov %r1, 0\njge %r0, 0, loop\nexit\n"
    with pytest.raises(BudgetExceeded) as info:
        run(text, engine, budget=1000)
    assert info.value.index == (1000 - 1) % 3 + 1


REFUSED = [
    ("null dereference", ret("mov %r1, 0", "ldxdw %r0, [%r1+0]"), 1, "not a pointer"),
    ("stack overflow read", ret("ldxdw %r0, [%r10+0]"), 0, "out of bounds"),
    ("stack underflow write", ret("stdw [%r10-520], 1", "mov %r0, 0"), 0, "out of bounds"),
    ("memory out of bounds", ret("ldxw %r0, [%r1+14]"), 0, "out of bounds"),
    ("frame pointer write", ret("mov %r10, 0", "mov %r0, 0"), 0, "frame pointer is read only"),
    ("unknown opcode", "mov %r0, 0\n.raw\n", 1, "unknown"),
    ("falls off the end", "mov %r0, 0\n", 0, "falls through"),
    ("kfunc", ret("call kfunc 5"), 0, "kfunc"),
    ("map ld_imm64 without a map", ret("lddw %r1, map_fd(3)", "mov %r0, 0"), 0, "no map"),
]


@pytest.mark.parametrize(("text", "index", "reason"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_refused_operations_name_the_instruction(
    text: str, index: int, reason: str, engine: Engine
) -> None:
    if ".raw" in text:
        raw = encode(assemble_text("mov %r0, 0\nexit\n"))
        insns = raw[:8] + bytes([0xF7, 0, 0, 0, 0, 0, 0, 0]) + raw[8:]
        exe = Executable(insns)
        with pytest.raises(BpfRuntimeError) as info:
            exe.run(RunEnv(UBPF_HELPERS, engine=engine), 0)
        error = info.value
    else:
        error = fault(text, engine, bytes(16))
    assert error.index == index
    assert reason in error.reason
    assert f"insn {index} (" in str(error)


def test_jump_out_of_the_function_is_refused(engine: Engine) -> None:
    text = "mov %r0, 0\ncall local f\nexit\nf:\nja +5\nexit\n"
    error = fault(text, engine)
    assert (error.index, "jump out of range" in error.reason) == (3, True)


def test_dead_bad_instructions_are_never_reached(engine: Engine) -> None:
    raw = encode(assemble_text("mov %r0, 3\nexit\n")) + bytes([0xF7, 0, 0, 0, 0, 0, 0, 0])
    assert Executable(raw).run(RunEnv(UBPF_HELPERS, engine=engine), 0) == 3


def test_compiled_program_is_cached() -> None:
    exe = Executable(encode(assemble_text(ret("mov %r0, 1"))))
    assert exe.compiled() is exe.compiled()


def test_helper_sees_typed_memory(engine: Engine) -> None:
    helpers = HelperTable("test")
    seen: list[bytes] = []

    def grab(env: RunEnv, a: int, b: int, c: int, d: int, e: int) -> int:
        seen.append(env.space.read_bytes(a, b))
        return -1

    helpers[1] = grab
    text = ret("stdw [%r10-8], 0x41", "mov %r1, %r10", "add %r1, -8", "mov %r2, 8", "call 1")
    assert run(text, engine, helpers=helpers) == M64
    assert seen == [b"A" + bytes(7)]
    error = fault(ret("mov %r1, %r10", "mov %r2, 8", "call 1"), engine, helpers=helpers)
    assert error.index == 2 and "out of bounds" in error.reason


# -- the engines agree on random straight-line ALU programs ----------------------------------
ALU_NAMES = ["add", "sub", "mul", "div", "sdiv", "or", "and", "lsh", "rsh", "neg", "mod", "smod",
             "xor", "mov", "arsh"]  # fmt: skip


@st.composite
def alu_line(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from([*ALU_NAMES, "movsx", "end", "bswap"]))
    suffix = draw(st.sampled_from(["", "32"]))
    dst = draw(st.integers(0, 8))
    if name == "movsx":
        bits = draw(st.sampled_from([8, 16, 32] if not suffix else [8, 16]))
        return f"movsx{bits}{suffix or '64'} %r{dst}, %r{draw(st.integers(0, 8))}"
    if name in ("end", "bswap"):
        op = "bswap" if name == "bswap" else draw(st.sampled_from(["le", "be"]))
        return f"{op}{draw(st.sampled_from([16, 32, 64]))} %r{dst}"
    if name == "neg":
        return f"neg{suffix} %r{dst}"
    source = draw(st.one_of(st.integers(0, 8).map(lambda r: f"%r{r}"),
                            st.integers(-(2**31), 2**31 - 1).map(str)))  # fmt: skip
    return f"{name}{suffix} %r{dst}, {source}"


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.integers(0, M64), min_size=9, max_size=9),
       body=st.lists(alu_line(), min_size=1, max_size=30))  # fmt: skip
def test_engines_agree_on_random_alu_programs(values: list[int], body: list[str]) -> None:
    setup = [f"lddw %r{i}, {v:#x}" for i, v in enumerate(values)]
    dump = [f"stxdw [%r9+{8 * i}], %r{i}" for i in range(9)]
    text = "\n".join(["mov %r9, %r1", *setup, *body, *dump, "mov %r0, 0", "exit"]) + "\n"
    results = [run_with_memory(text, engine, bytes(72)) for engine in ENGINES]
    assert results[0] == results[1]
