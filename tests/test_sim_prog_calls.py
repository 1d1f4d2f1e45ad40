"""The loader check's bpf-to-bpf calls, loops and syscall programs, beyond the case table.

Full level-1 traces with call frames and the level-4 statistics (one stack depth per
subprogram) are compared byte for byte with what Linux 6.18 logs; a syscall program's furthest
context access bounds its test run's ctx_size_in on both backends. Simulator-only tests cover
profiles (unprivileged loaders, kernels without syscall programs) and random programs made of
calls and jumps (only OSError escapes, nothing leaks).
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_prog import Load

from bpfsys.abi import BpfCmd, ProgFlag, ProgType, TestRunAttr
from bpfsys.asm import Insn, assemble_text, encode
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend

STATS = (
    "processed {} insns (limit 1000000) max_states_per_insn {} total_states {} peak_states {} "
    "mark_read 0\n"
)

TRACES = {
    "callee_reads_caller_stack_then_fails": (
        "mov %r1, 1\nstdw [%r10-8], 5\nmov %r2, %r10\nadd %r2, -8\ncall local f\nexit\n"
        "f:\nldxdw %r0, [%r2+0]\nstdw [%r10-16], 1\nmov %r0, %r3\nexit",
        "EACCES",
        "0: R1=ctx() R10=fp0\n"
        "0: (b7) r1 = 1                        ; R1=1\n"
        "1: (7a) *(u64 *)(r10 -8) = 5          ; R10=fp0 fp-8=5\n"
        "2: (bf) r2 = r10                      ; R2=fp0 R10=fp0\n"
        "3: (07) r2 += -8                      ; R2=fp-8\n"
        "4: (85) call pc+1\n"
        "caller:\n R10=fp0 fp-8=5\n"
        "callee:\n frame1: R1=1 R2=fp[0]-8 R10=fp0\n"
        "6: frame1: R1=1 R2=fp[0]-8 R10=fp0\n"
        "6: (79) r0 = *(u64 *)(r2 +0)          ; frame1: R0=5 R2=fp[0]-8\n"
        "7: (7a) *(u64 *)(r10 -16) = 1         ; frame1: R10=fp0 fp-16=1\n"
        "8: (bf) r0 = r3\n"
        "R3 !read_ok\n" + STATS.format(8, 0, 0, 0),
    ),
    "caller_reads_clobbered_r1": (
        "mov %r6, 1\ncall local f\nmov %r0, %r1\nexit\nf:\nmov %r0, 1\nexit",
        "EACCES",
        "0: R1=ctx() R10=fp0\n"
        "0: (b7) r6 = 1                        ; R6=1\n"
        "1: (85) call pc+2\n"
        "caller:\n R6=1 R10=fp0\n"
        "callee:\n frame1: R1=ctx() R10=fp0\n"
        "4: frame1: R1=ctx() R10=fp0\n"
        "4: (b7) r0 = 1                        ; frame1: R0=1\n"
        "5: (95) exit\n"
        "returning from callee:\n frame1: R0=1 R1=ctx() R10=fp0\n"
        "to caller at 2:\n R0=1 R6=1 R10=fp0\n"
        "2: (bf) r0 = r1\n"
        "R1 !read_ok\n" + STATS.format(5, 0, 0, 0),
    ),
    "infinite_loop_in_subprog": (
        "call local f\nmov %r0, 0\nexit\nf:\nmov %r0, 1\njeq %r1, 0, +1\nexit\nja -3",
        "EINVAL",
        "0: R1=ctx() R10=fp0\n"
        "0: (85) call pc+2\n"
        "caller:\n R10=fp0\n"
        "callee:\n frame1: R1=ctx() R10=fp0\n"
        "3: frame1: R1=ctx() R10=fp0\n"
        "3: (b7) r0 = 1                        ; frame1: R0=1\n"
        "4: (15) if r1 == 0x0 goto pc+1 6: frame1: R0=1 R1=ctx() R10=fp0\n"
        "6: (05) goto pc-3\n"
        "4: (15) if r1 == 0x0 goto pc+1 6: frame1: R0=1 R1=ctx() R10=fp0\n"
        "6: (05) goto pc-3\n"
        "infinite loop detected at insn 4\n"
        "cur state: frame1: R0=1 R1=ctx() R10=fp0\n"
        "old state: frame1: R0=1 R1=ctx() R10=fp0\n" + STATS.format(13, 0, 1, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_call_traces_are_the_kernels(backend: Backend, name: str) -> None:
    asm, result, text = TRACES[name]
    load = Load(encode(assemble_text(asm)), log_level=1, log_size=8192)
    assert load.errno_of(backend) == result
    assert load.text == text


def test_stack_depth_per_subprogram(backend: Backend) -> None:
    """g writes through a pointer into f's frame: f's depth grows to 40."""
    asm = (
        "stdw [%r10-8], 0\ncall local f\nmov %r0, 0\nexit\n"
        "f:\nstdw [%r10-24], 0\nmov %r1, %r10\nadd %r1, -40\ncall local g\nmov %r0, 0\nexit\n"
        "g:\nstdw [%r1+0], 0\nmov %r0, 0\nexit"
    )
    load = Load(encode(assemble_text(asm)), log_level=4, log_size=4096)
    assert load.errno_of(backend) == "OK"
    assert load.text.splitlines()[1:] == ["stack depth 8+40+0", STATS.format(13, 0, 1, 1).strip()]


def test_syscall_context_reach_bounds_test_run(backend: Backend) -> None:
    """The furthest context byte the checker saw (32004) is the least ctx_size_in."""
    load = Load(
        encode(assemble_text("ldxw %r0, [%r1+32000]\nexit")),
        ProgType.SYSCALL,
        prog_flags=ProgFlag.SLEEPABLE,
    )
    fd = load.run(backend)
    try:
        results = []
        for size in (32003, 32004):
            ctx = ctypes.create_string_buffer(size)
            attr = TestRunAttr(prog_fd=fd, ctx_in=ctypes.addressof(ctx), ctx_size_in=size)
            try:
                backend.bpf(BpfCmd.PROG_TEST_RUN, attr, ctypes.sizeof(attr))
                results.append(0)
            except OSError as exc:
                results.append(exc.errno or 0)
        assert results == [errno.EINVAL, 0]
    finally:
        backend.close(fd)


# -- profiles (simulator only) ----------
@pytest.mark.parametrize(
    "asm",
    [
        "call local f\nmov %r0, 0\nexit\nf:\nmov %r0, 1\nexit",
        "lddw %r1, func(f)\nmov %r0, 0\nexit\nf:\nmov %r0, 0\nexit",
    ],
    ids=["call", "function_load"],
)
def test_unprivileged_loader_may_not_call_functions(
    sim_factory: Callable[..., SimBackend], asm: str
) -> None:
    sim = sim_factory(privileges="unprivileged", unprivileged_bpf_disabled=0)
    load = Load(encode(assemble_text(asm)), log_level=1, log_size=4096)
    assert load.errno_of(sim) == "EPERM"
    assert load.text.startswith(
        "loading/calling other bpf or kernel functions are allowed for CAP_BPF and CAP_SYS_ADMIN\n"
    )


def test_cap_bpf_may_call_and_loop(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(privileges="cap_bpf")
    asm = "mov %r1, 5\ncall local f\nexit\nf:\nmov %r0, 0\nl:\nadd %r0, 1\njlt %r0, %r1, l\nexit"
    assert Load(encode(assemble_text(asm))).errno_of(sim) == "OK"


def test_syscall_programs_are_newer_than_5_10(sim_factory: Callable[..., SimBackend]) -> None:
    code = encode(assemble_text("mov %r0, 0\nexit"))
    old = sim_factory(version="5.10")
    assert Load(code, ProgType.SYSCALL, prog_flags=ProgFlag.SLEEPABLE).errno_of(old) == "EINVAL"
    new = sim_factory(version="5.15")
    assert Load(code, ProgType.SYSCALL, prog_flags=ProgFlag.SLEEPABLE).errno_of(new) == "OK"


def test_private_stacks_are_newer_than_6_13(sim_factory: Callable[..., SimBackend]) -> None:
    asm = "stdw [%r10-200], 0\ncall local f\nmov %r0, 0\nexit\n" + "".join(
        f"{name}:\nstdw [%r10-200], 0\n{call}mov %r0, 0\nexit\n"
        for name, call in (("f", "call local g\n"), ("g", ""))
    )
    code = encode(assemble_text(asm))
    assert Load(code, ProgType.KPROBE).errno_of(sim_factory()) == "OK"
    old = Load(code, ProgType.KPROBE, log_level=1, log_size=4096)
    assert old.errno_of(sim_factory(version="6.1")) == "EACCES"
    assert "combined stack size of 3 calls is 624. Too large\n" in old.text


# -- fuzz: calls, jumps and loops ----------
Part = tuple[int, int, int]


def _insn(part: Part, here: int, end: int, starts: list[int]) -> Insn:
    """One instruction of a function ending at `end` from a small vocabulary: moves,
    arithmetic, stack and context access, forward jumps within the function, backward jumps
    (loops), calls to any function (recursion included), helper calls."""
    kind, a, b = part
    dst, imm = a % 10, b % 17 - 4
    forward = b % max(end - here - 1, 1)
    choices = [
        Insn(0xB7, dst, 0, 0, imm),  # mov dst, imm
        Insn(0xBF, dst, a % 11, 0, 0),  # mov dst, src
        Insn(0x07, dst, 0, 0, imm),  # add dst, imm
        Insn(0x0F, dst, b % 11, 0, 0),  # add dst, src
        Insn(0x7A, 10, 0, -8 * (1 + a % 4), imm),  # stdw [r10-off], imm
        Insn(0x79, dst, 10, -8 * (1 + b % 4), 0),  # ldxdw dst, [r10-off]
        Insn(0x7B, 10 if a % 2 else 1, b % 10, -8, 0),  # stxdw [r10 or r1 -8], src
        Insn(0x61, dst, 1, 4 * (b % 4), 0),  # ldxw dst, [r1+off]
        Insn(0xA5, dst, 0, forward, imm),  # jlt dst, imm, +forward
        Insn(0xA5, dst, 0, -1 - b % 3, b % 9),  # jlt dst, small, back (a loop)
        Insn(0x85, 0, 1, 0, starts[b % len(starts)] - here - 1),  # call local
        Insn(0x85, 0, 0, 0, (1, 5, 7, 14, 181)[b % 5]),  # call helper
    ]
    return choices[kind % len(choices)]


def _program(functions: list[list[Part]]) -> list[Insn]:
    """Each function: mov r0, 0; its parts; exit. The main program (the first) calls every
    other function before its exit, so that they are reachable."""
    calls = len(functions) - 1
    sizes = [len(parts) + 2 + (calls if n == 0 else 0) for n, parts in enumerate(functions)]
    starts = [sum(sizes[:n]) for n in range(len(functions))]
    insns: list[Insn] = []
    for n, parts in enumerate(functions):
        start, end = starts[n], starts[n] + sizes[n]
        insns.append(Insn(0xB7, 0, 0, 0, 0))
        insns += [_insn(part, start + 1 + i, end, starts) for i, part in enumerate(parts)]
        for target in starts[1:] if n == 0 else []:
            insns.append(Insn(0x85, 0, 1, 0, target - len(insns) - 1))
        insns.append(Insn(0x95))
    return insns


_PARTS = st.lists(
    st.tuples(st.integers(0, 11), st.integers(0, 255), st.integers(0, 255)), max_size=8
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    functions=st.lists(_PARTS, min_size=1, max_size=4),
    prog_type=st.sampled_from([ProgType.SOCKET_FILTER, ProgType.KPROBE, ProgType.SYSCALL]),
    level=st.sampled_from([0, 1, 2, 4]),
)
def test_random_programs_with_calls(
    sim_factory: Callable[..., SimBackend],
    functions: list[list[Part]],
    prog_type: ProgType,
    level: int,
) -> None:
    sim = sim_factory()
    load = Load(
        encode(_program(functions)),
        prog_type,
        log_level=level,
        log_size=65536 if level else 0,
        prog_flags=ProgFlag.SLEEPABLE if prog_type is ProgType.SYSCALL else 0,
    )
    try:
        fd = load.run(sim)
    except OSError:
        pass
    else:
        sim.close(fd)
    if level:
        assert load.text.splitlines()[-1].startswith("processed ")
    sim.kernel.close_all()
    assert not sim.kernel.live_objects()
