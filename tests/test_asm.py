"""bpfsys.asm (encoder, label assembler, text assembler, disassembler) and bpfsys.conformance.

The expected bytes below are hand-computed from RFC 9669 and linux/bpf.h (code byte, then
dst | src << 4, then off and imm little-endian), not produced by the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfsys import asm
from bpfsys.abi import BpfInsn
from bpfsys.asm import R0, R1, R2, R3, R7, R10, AsmError, Assembler, Insn, Reg
from bpfsys.conformance import ConformanceCase, ConformanceError, load_case, parse_case

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"

Made = Insn | tuple[Insn, ...]


def slots(made: Made) -> list[Insn]:
    return list(made) if isinstance(made, tuple) else [made]


def hexes(insns: list[Insn]) -> str:
    return " | ".join(insn.to_bytes().hex(" ") for insn in insns)


# ---------------------------------------------------------------------------------------------
# One representative of every family: (canonical text, encoder call, kernel bytes).
# ---------------------------------------------------------------------------------------------
FAMILIES: list[tuple[str, Callable[[], Made], str]] = [
    ("add %r1, 2", lambda: asm.alu64("add", R1, 2), "07 01 00 00 02 00 00 00"),
    ("sub %r1, %r2", lambda: asm.alu64("sub", R1, R2), "1f 21 00 00 00 00 00 00"),
    ("mul32 %r3, -1", lambda: asm.alu32("mul", R3, -1), "24 03 00 00 ff ff ff ff"),
    ("div %r1, %r2", lambda: asm.alu64("div", R1, R2), "3f 21 00 00 00 00 00 00"),
    ("sdiv %r1, -4", lambda: asm.alu64("sdiv", R1, -4), "37 01 01 00 fc ff ff ff"),
    ("sdiv32 %r1, %r2", lambda: asm.alu32("sdiv", R1, R2), "3c 21 01 00 00 00 00 00"),
    ("or32 %r0, 0x10", lambda: asm.alu32("or", R0, 0x10), "44 00 00 00 10 00 00 00"),
    ("and %r1, %r2", lambda: asm.alu64("and", R1, R2), "5f 21 00 00 00 00 00 00"),
    ("and %r0, 0xffffffff", lambda: asm.alu64("and", R0, -1), "57 00 00 00 ff ff ff ff"),
    ("lsh %r0, 32", lambda: asm.alu64("lsh", R0, 32), "67 00 00 00 20 00 00 00"),
    ("rsh32 %r0, %r7", lambda: asm.alu32("rsh", R0, R7), "7c 70 00 00 00 00 00 00"),
    ("neg %r1", lambda: asm.neg64(R1), "87 01 00 00 00 00 00 00"),
    ("neg32 %r1", lambda: asm.neg32(R1), "84 01 00 00 00 00 00 00"),
    ("mod %r0, 3", lambda: asm.alu64("mod", R0, 3), "97 00 00 00 03 00 00 00"),
    ("smod %r1, -1", lambda: asm.alu64("smod", R1, -1), "97 01 01 00 ff ff ff ff"),
    ("smod32 %r1, %r2", lambda: asm.alu32("smod", R1, R2), "9c 21 01 00 00 00 00 00"),
    ("xor32 %r1, %r2", lambda: asm.alu32("xor", R1, R2), "ac 21 00 00 00 00 00 00"),
    ("mov %r0, 1", lambda: asm.mov64(R0, 1), "b7 00 00 00 01 00 00 00"),
    ("mov32 %r1, %r2", lambda: asm.mov32(R1, R2), "bc 21 00 00 00 00 00 00"),
    ("arsh %r0, 4", lambda: asm.alu64("arsh", R0, 4), "c7 00 00 00 04 00 00 00"),
    ("arsh32 %r1, %r2", lambda: asm.alu32("arsh", R1, R2), "cc 21 00 00 00 00 00 00"),
    ("movsx864 %r0, %r1", lambda: asm.movsx64(R0, R1, 8), "bf 10 08 00 00 00 00 00"),
    ("movsx1632 %r0, %r1", lambda: asm.movsx32(R0, R1, 16), "bc 10 10 00 00 00 00 00"),
    ("movsx3264 %r0, %r1", lambda: asm.movsx64(R0, R1, 32), "bf 10 20 00 00 00 00 00"),
    ("le16 %r0", lambda: asm.endian("le", R0, 16), "d4 00 00 00 10 00 00 00"),
    ("be32 %r0", lambda: asm.endian("be", R0, 32), "dc 00 00 00 20 00 00 00"),
    ("be64 %r2", lambda: asm.endian("be", R2, 64), "dc 02 00 00 40 00 00 00"),
    ("bswap16 %r0", lambda: asm.bswap(R0, 16), "d7 00 00 00 10 00 00 00"),
    ("bswap64 %r0", lambda: asm.bswap(R0, 64), "d7 00 00 00 40 00 00 00"),
    ("jeq %r1, 16, +2", lambda: asm.jmp("jeq", R1, 16, 2), "15 01 02 00 10 00 00 00"),
    ("jne %r1, %r2, -3", lambda: asm.jmp("jne", R1, R2, -3), "5d 21 fd ff 00 00 00 00"),
    ("jgt %r1, %r2, +1", lambda: asm.jmp("jgt", R1, R2, 1), "2d 21 01 00 00 00 00 00"),
    ("jge %r1, 5, +1", lambda: asm.jmp("jge", R1, 5, 1), "35 01 01 00 05 00 00 00"),
    ("jlt %r1, %r2, +1", lambda: asm.jmp("jlt", R1, R2, 1), "ad 21 01 00 00 00 00 00"),
    ("jle %r1, 5, +1", lambda: asm.jmp("jle", R1, 5, 1), "b5 01 01 00 05 00 00 00"),
    ("jsgt %r1, -2, +1", lambda: asm.jmp("jsgt", R1, -2, 1), "65 01 01 00 fe ff ff ff"),
    ("jsge %r1, %r2, +1", lambda: asm.jmp("jsge", R1, R2, 1), "7d 21 01 00 00 00 00 00"),
    ("jsle %r1, 0, +1", lambda: asm.jmp("jsle", R1, 0, 1), "d5 01 01 00 00 00 00 00"),
    ("jset32 %r1, 0x8, +1", lambda: asm.jmp32("jset", R1, 8, 1), "46 01 01 00 08 00 00 00"),
    ("jslt32 %r1, %r2, +1", lambda: asm.jmp32("jslt", R1, R2, 1), "ce 21 01 00 00 00 00 00"),
    ("ja +1", lambda: asm.ja(1), "05 00 01 00 00 00 00 00"),
    ("ja -1", lambda: asm.ja(-1), "05 00 ff ff 00 00 00 00"),
    ("ja32 +256", lambda: asm.ja32(256), "06 00 00 00 00 01 00 00"),
    ("call 1", lambda: asm.call(1), "85 00 00 00 01 00 00 00"),
    ("call local -3", lambda: asm.call_local(-3), "85 10 00 00 fd ff ff ff"),
    ("call kfunc 1234", lambda: asm.call_kfunc(1234), "85 20 00 00 d2 04 00 00"),
    ("call %r2", lambda: asm.callx(R2), "8d 02 00 00 00 00 00 00"),
    ("exit", asm.exit_insn, "95 00 00 00 00 00 00 00"),
    (
        "lddw %r0, 0x123456789",
        lambda: asm.ld_imm64(R0, 0x123456789),
        "18 00 00 00 89 67 45 23 | 00 00 00 00 01 00 00 00",
    ),
    (
        "lddw %r1, 0xffffffffffffffff",
        lambda: asm.ld_imm64(R1, -1),
        "18 01 00 00 ff ff ff ff | 00 00 00 00 ff ff ff ff",
    ),
    (
        "lddw %r1, map_fd(3)",
        lambda: asm.ld_map_fd(R1, 3),
        "18 11 00 00 03 00 00 00 | 00 00 00 00 00 00 00 00",
    ),
    (
        "lddw %r2, map_value(4, 16)",
        lambda: asm.ld_map_value(R2, 4, 16),
        "18 22 00 00 04 00 00 00 | 00 00 00 00 10 00 00 00",
    ),
    (
        "lddw %r3, func(+7)",
        lambda: asm.ld_func(R3, 7),
        "18 43 00 00 07 00 00 00 | 00 00 00 00 00 00 00 00",
    ),
    (
        "lddw %r1, btf_id(99, 5)",
        lambda: asm.ld_pseudo(R1, "btf_id", 99, 5),
        "18 31 00 00 63 00 00 00 | 00 00 00 00 05 00 00 00",
    ),
    (
        "lddw %r1, map_idx_value(0, 8)",
        lambda: asm.ld_pseudo(R1, "map_idx_value", 0, 8),
        "18 61 00 00 00 00 00 00 | 00 00 00 00 08 00 00 00",
    ),
    ("ldabsb 12", lambda: asm.ld_abs("b", 12), "30 00 00 00 0c 00 00 00"),
    ("ldabsh 12", lambda: asm.ld_abs("h", 12), "28 00 00 00 0c 00 00 00"),
    ("ldabsw 12", lambda: asm.ld_abs("w", 12), "20 00 00 00 0c 00 00 00"),
    ("ldindb %r1, 4", lambda: asm.ld_ind("b", R1, 4), "50 10 00 00 04 00 00 00"),
    ("ldindh %r1, 4", lambda: asm.ld_ind("h", R1, 4), "48 10 00 00 04 00 00 00"),
    ("ldindw %r1, 4", lambda: asm.ld_ind("w", R1, 4), "40 10 00 00 04 00 00 00"),
    ("ldxb %r0, [%r1+2]", lambda: asm.ldx("b", R0, R1, 2), "71 10 02 00 00 00 00 00"),
    ("ldxh %r0, [%r1]", lambda: asm.ldx("h", R0, R1), "69 10 00 00 00 00 00 00"),
    ("ldxw %r0, [%r1+4]", lambda: asm.ldx("w", R0, R1, 4), "61 10 04 00 00 00 00 00"),
    ("ldxdw %r0, [%r1-8]", lambda: asm.ldx("dw", R0, R1, -8), "79 10 f8 ff 00 00 00 00"),
    ("ldxsb %r0, [%r10-1]", lambda: asm.ldxs("b", R0, R10, -1), "91 a0 ff ff 00 00 00 00"),
    ("ldxsh %r0, [%r10-2]", lambda: asm.ldxs("h", R0, R10, -2), "89 a0 fe ff 00 00 00 00"),
    ("ldxsw %r0, [%r10-4]", lambda: asm.ldxs("w", R0, R10, -4), "81 a0 fc ff 00 00 00 00"),
    ("stb [%r10-1], 255", lambda: asm.st("b", R10, -1, 0xFF), "72 0a ff ff ff 00 00 00"),
    ("sth [%r10-2], 7", lambda: asm.st("h", R10, -2, 7), "6a 0a fe ff 07 00 00 00"),
    ("stw [%r10-4], 7", lambda: asm.st("w", R10, -4, 7), "62 0a fc ff 07 00 00 00"),
    ("stdw [%r10-8], -1", lambda: asm.st("dw", R10, -8, -1), "7a 0a f8 ff ff ff ff ff"),
    ("stxb [%r1], %r2", lambda: asm.stx("b", R1, 0, R2), "73 21 00 00 00 00 00 00"),
    ("stxh [%r1+2], %r2", lambda: asm.stx("h", R1, 2, R2), "6b 21 02 00 00 00 00 00"),
    ("stxw [%r10-8], %r1", lambda: asm.stx("w", R10, -8, R1), "63 1a f8 ff 00 00 00 00"),
    ("stxdw [%r10-8], %r1", lambda: asm.stx("dw", R10, -8, R1), "7b 1a f8 ff 00 00 00 00"),
    (
        "lock add [%r10-8], %r1",
        lambda: asm.atomic("add", "dw", R10, -8, R1),
        "db 1a f8 ff 00 00 00 00",
    ),
    (
        "lock fetch add32 [%r10-8], %r1",
        lambda: asm.atomic("add", "w", R10, -8, R1, fetch=True),
        "c3 1a f8 ff 01 00 00 00",
    ),
    ("lock or [%r1], %r2", lambda: asm.atomic("or", "dw", R1, 0, R2), "db 21 00 00 40 00 00 00"),
    (
        "lock fetch or [%r1], %r2",
        lambda: asm.atomic("or", "dw", R1, 0, R2, fetch=True),
        "db 21 00 00 41 00 00 00",
    ),
    ("lock and32 [%r1], %r2", lambda: asm.atomic("and", "w", R1, 0, R2), "c3 21 00 00 50 00 00 00"),
    (
        "lock fetch and [%r1], %r2",
        lambda: asm.atomic("and", "dw", R1, 0, R2, fetch=True),
        "db 21 00 00 51 00 00 00",
    ),
    ("lock xor [%r1], %r2", lambda: asm.atomic("xor", "dw", R1, 0, R2), "db 21 00 00 a0 00 00 00"),
    (
        "lock fetch xor32 [%r1], %r2",
        lambda: asm.atomic("xor", "w", R1, 0, R2, fetch=True),
        "c3 21 00 00 a1 00 00 00",
    ),
    (
        "lock xchg32 [%r10-4], %r1",
        lambda: asm.atomic("xchg", "w", R10, -4, R1),
        "c3 1a fc ff e1 00 00 00",
    ),
    (
        "lock cmpxchg [%r10-8], %r1",
        lambda: asm.atomic("cmpxchg", "dw", R10, -8, R1),
        "db 1a f8 ff f1 00 00 00",
    ),
]
FAMILY_IDS = [text for text, _, _ in FAMILIES]


@pytest.mark.parametrize(("text", "make", "expected"), FAMILIES, ids=FAMILY_IDS)
def test_encoder_gives_kernel_bytes(text: str, make: Callable[[], Made], expected: str) -> None:
    assert hexes(slots(make())) == expected


@pytest.mark.parametrize(("text", "make", "expected"), FAMILIES, ids=FAMILY_IDS)
def test_text_assembles_to_the_same_bytes(
    text: str, make: Callable[[], Made], expected: str
) -> None:
    assert hexes(asm.assemble_text(text)) == expected


@pytest.mark.parametrize(("text", "make", "expected"), FAMILIES, ids=FAMILY_IDS)
def test_disassembly_is_the_canonical_text(
    text: str, make: Callable[[], Made], expected: str
) -> None:
    assert asm.disassemble(slots(make())) == text + "\n"


def test_every_table_entry_is_covered() -> None:
    """Every operation name the Literal types offer is accepted by its encoder."""
    for op in get_args(asm.AluOp):
        assert asm.alu64(op, R0, 1).code & 0x07 == 0x07
    for jop in get_args(asm.JmpOp):
        assert asm.jmp32(jop, R0, R1, 0).code & 0x0F == 0x0E
    for aop in get_args(asm.AtomicOp):
        assert asm.atomic(aop, "w", R1, 0, R2).code == 0xC3
    for kind in get_args(asm.PseudoKind):
        assert asm.ld_pseudo(R1, kind, 1)[0].src in range(1, 7)


# ---------------------------------------------------------------------------------------------
# Insn, encode/decode, ctypes
# ---------------------------------------------------------------------------------------------
def test_insn_layout_and_bytes() -> None:
    insn = Insn(0xBF, R3, R10, -2, -559038737)
    assert insn.to_bytes() == bytes([0xBF, 0xA3, 0xFE, 0xFF, 0xEF, 0xBE, 0xAD, 0xDE])
    assert Insn.from_bytes(insn.to_bytes()) == insn
    assert type(insn.dst) is int and repr(insn) == (
        "Insn(code=191, dst=3, src=10, off=-2, imm=-559038737)"
    )
    assert Insn(0x95) == Insn(0x95, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"code": 256}, AsmError),
        ({"code": -1}, AsmError),
        ({"dst": 11}, AsmError),
        ({"src": 15}, AsmError),
        ({"off": 1 << 15}, AsmError),
        ({"off": -(1 << 15) - 1}, AsmError),
        ({"imm": 1 << 31}, AsmError),
        ({"imm": -(1 << 31) - 1}, AsmError),
        ({"imm": True}, TypeError),
        ({"off": 1.0}, TypeError),
    ],
)
def test_insn_validators(fields: dict[str, Any], error: type[Exception]) -> None:
    values: dict[str, Any] = {"code": 0x07, "dst": 0, "src": 0, "off": 0, "imm": 0} | fields
    with pytest.raises(error):
        Insn(**values)


def test_raw_decode_accepts_registers_up_to_15_only_there() -> None:
    insn = Insn.from_bytes(bytes.fromhex("bf ff 00 00 00 00 00 00"))
    assert (insn.dst, insn.src) == (15, 15)
    assert asm.encode([insn]) == bytes.fromhex("bf ff 00 00 00 00 00 00")
    with pytest.raises(AsmError, match="dst register 15"):
        Insn(0xBF, 15, 0)


def test_encode_decode() -> None:
    program = asm.Assembler().ld_imm64(R0, 1 << 40).exit().assemble()
    data = asm.encode(program)
    assert len(data) == 24 and asm.decode(data) == program
    assert asm.decode(bytearray(data)) == program and asm.decode(b"") == []
    with pytest.raises(AsmError, match="not a multiple of 8"):
        asm.decode(data[:-1])
    with pytest.raises(AsmError, match="8 bytes"):
        Insn.from_bytes(data[:7])


def test_ctypes_array() -> None:
    program = asm.Assembler().mov64(R1, R10).stx("dw", R10, -8, R1).exit().assemble()
    array = asm.to_ctypes(program)
    assert len(array) == 3 and isinstance(array[0], BpfInsn)
    second = array[1]
    assert (second.code, second.dst_reg, second.src_reg, second.off, second.imm) == (
        0x7B,
        10,
        1,
        -8,
        0,
    )
    assert bytes(array) == asm.encode(program)
    assert asm.from_ctypes(array) == program
    assert len(asm.to_ctypes([])) == 0


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        (lambda: asm.alu64("pow", R0, 1), AsmError, "unknown ALU operation 'pow'"),  # type: ignore[arg-type]
        (lambda: asm.jmp("jfoo", R0, 1, 0), AsmError, "unknown jump operation"),  # type: ignore[arg-type]
        (lambda: asm.alu64("add", 11, 1), AsmError, "register 11"),
        (lambda: asm.alu64("add", R0, 1 << 31), AsmError, "imm"),
        (lambda: asm.movsx32(R0, R1, 32), AsmError, "movsx cannot sign-extend 32"),  # type: ignore[arg-type]
        (lambda: asm.endian("le", R0, 8), AsmError, "16, 32 or 64"),  # type: ignore[arg-type]
        (lambda: asm.ldxs("dw", R0, R1), AsmError, "'dw'"),  # type: ignore[arg-type]
        (lambda: asm.atomic("add", "h", R1, 0, R2), AsmError, "'h'"),  # type: ignore[arg-type]
        (lambda: asm.atomic("nand", "w", R1, 0, R2), AsmError, "atomic operation"),  # type: ignore[arg-type]
        (lambda: asm.ld_pseudo(R1, "map_id", 1), AsmError, "pseudo load kind"),  # type: ignore[arg-type]
        (lambda: asm.ld_imm64(R0, 1 << 64), AsmError, "64-bit immediate"),
        (lambda: asm.jmp("jeq", R0, 0, 1 << 15), AsmError, "jump offset"),
        (lambda: asm.ldx("w", R0, R1, -(1 << 15) - 1), AsmError, "off"),
        (lambda: asm.st("w", R10, -4, R1), TypeError, "must be an int"),
        (lambda: asm.mov64(R0, "1"), TypeError, "expected an int"),  # type: ignore[arg-type]
        (lambda: asm.mov64(R0, True), TypeError, "expected an int"),
    ],
)
def test_encoder_argument_errors(
    make: Callable[[], Made], error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment.replace("(", r"\(")):
        make()


# ---------------------------------------------------------------------------------------------
# The label assembler
# ---------------------------------------------------------------------------------------------
def test_labels_resolve_forward_and_backward_counting_lddw_as_two_slots() -> None:
    a = Assembler()
    result = (
        a.label("top")
        .mov64(R0, 0)
        .jmp("jeq", R1, 0, "out")  # slot 1
        .ld_imm64(R2, 1 << 33)  # slots 2-3
        .jmp32("jne", R1, R2, "top")  # slot 4
        .ja("out")  # slot 5
        .label("out")
        .exit()  # slot 6
    )
    assert result is a and len(a) == 7
    program = a.assemble()
    assert program[1] == asm.jmp("jeq", R1, 0, 4)
    assert program[4] == asm.jmp32("jne", R1, R2, -5)
    assert program[5] == asm.ja(0)
    assert a.assemble() == program  # resolution leaves the builder unchanged


def test_pc_relative_imm_targets() -> None:
    program = (
        Assembler()
        .call_local("sub")
        .ja32("end")
        .ld_func(R1, "sub")
        .label("sub")
        .mov64(R0, 1)
        .label("end")
        .exit()
        .assemble()
    )
    assert program[0] == asm.call_local(3)
    assert program[1] == asm.ja32(3)
    assert program[2:4] == list(asm.ld_func(R1, 1))


def test_numeric_targets_pass_through() -> None:
    program = Assembler().ja(-1).jmp("jgt", R1, R2, 7).call_local(-4).ja32(9).assemble()
    assert program == [asm.ja(-1), asm.jmp("jgt", R1, R2, 7), asm.call_local(-4), asm.ja32(9)]


def test_unknown_label_is_named() -> None:
    with pytest.raises(AsmError, match=r"unknown label 'nowhere' \(slot 1\)"):
        Assembler().mov64(R0, 0).ja("nowhere").assemble()


def test_out_of_range_label_is_named() -> None:
    filler = [asm.mov64(R0, 0)] * 40_000
    with pytest.raises(AsmError, match="label 'far' is \\+40000 slots away"):
        Assembler().ja("far").emit(*filler).label("far").exit().assemble()
    # ja32 reaches it: its offset is the 32-bit imm.
    assert Assembler().ja32("far").emit(*filler).label("far").assemble()[0] == asm.ja32(40_000)


def test_label_errors() -> None:
    with pytest.raises(AsmError, match="duplicate label 'x' \\(already at slot 0\\)"):
        Assembler().label("x").exit().label("x")
    with pytest.raises(AsmError, match="non-empty"):
        Assembler().label("")
    with pytest.raises(TypeError):
        Assembler().emit("exit")  # type: ignore[arg-type]
    failed = Assembler()
    with pytest.raises(AsmError, match="register 11"):
        failed.jmp("jeq", 11, 0, "later")
    assert len(failed) == 0 and failed.assemble() == []  # no half-recorded reference


def test_assembler_methods_share_the_encoder_signatures() -> None:
    assert Assembler.alu64.__doc__ is not None and "alu64" in Assembler.alu64.__doc__
    built = Assembler().atomic("add", "dw", R10, -8, R1, fetch=True).assemble()
    assert built == [asm.atomic("add", "dw", R10, -8, R1, fetch=True)]


# ---------------------------------------------------------------------------------------------
# The text assembler
# ---------------------------------------------------------------------------------------------
def test_text_comments_labels_and_whitespace() -> None:
    source = """
    # a comment line
    start:  mov %r0, 0   # trailing comment
    \tjeq\t%r1, 5, done
        ja start
    done:
    exit
    """
    assert asm.assemble_text(source) == [
        asm.mov64(R0, 0),
        asm.jmp("jeq", R1, 5, 1),
        asm.ja(-3),
        asm.exit_insn(),
    ]


def test_exit_is_an_implicit_label_for_the_first_exit() -> None:
    program = asm.assemble_text("jeq %r1, 0, exit\nmov %r0, 1\nexit\nexit\n")
    assert program[0] == asm.jmp("jeq", R1, 0, 1)
    explicit = asm.assemble_text("jeq %r1, 0, exit\nexit\nexit:\nexit\n")
    assert explicit[0] == asm.jmp("jeq", R1, 0, 1)


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        ("add64 %r1, 2", "add %r1, 2"),
        ("neg64 %r1", "neg %r1"),
        ("swap32 %r1", "bswap32 %r1"),
        ("call helper 5", "call 5"),
        ("call runtime 5", "call kfunc 5"),
        ("lock fetch xchg [%r1], %r2", "lock xchg [%r1], %r2"),
        ("mov32 %r0, 0xffffffff", "mov32 %r0, -1"),
        ("mov %r0, 0x80000000", "mov %r0, -2147483648"),
        ("mov %r0, -0x10", "mov %r0, -16"),
        ("mov %r0, 010", "mov %r0, 10"),
        ("lddw %r0, -1", "lddw %r0, 0xffffffffffffffff"),
        ("lddw %r0, 2147483648", "lddw %r0, 0x80000000"),
        ("ldxw %r0, [ %r1 + 0x10 ]", "ldxw %r0, [%r1+16]"),
        ("stxw [%r1+0], %r2", "stxw [%r1], %r2"),
        ("lddw %r1, map_value(3,16)", "lddw %r1, map_value(3, 16)"),
        ("lddw %r1, map_fd(3, 0)", "lddw %r1, map_fd(3)"),
    ],
)
def test_text_aliases_and_number_forms(text: str, same_as: str) -> None:
    assert asm.assemble_text(text) == asm.assemble_text(same_as)


@pytest.mark.parametrize(
    ("source", "line", "fragment"),
    [
        ("exit\nfoo %r0", 2, "unknown mnemonic 'foo'"),
        ("mov %r0", 1, "'mov' takes 2 operand(s)"),
        ("exit %r0", 1, "'exit' takes 0 operand(s)"),
        ("neg %r0, 1", 1, "'neg' takes 1 operand(s)"),
        ("mov %r0, ", 1, "'mov' takes 2 operand(s)"),
        ("mov %r11, 1", 1, "invalid register '%r11'"),
        ("mov r1, 1", 1, "expected a register like %r1, got 'r1'"),
        ("mov %r0, 2147483648", 1, "immediate 2147483648 does not fit"),
        ("mov %r0, 0x100000000", 1, "immediate 0x100000000 does not fit"),
        ("mov %r0, five", 1, "expected a number for the immediate, got 'five'"),
        ("lddw %r0, 0x10000000000000000", 1, "64-bit immediate"),
        ("\n\nldxb %r0, [%r1+32768]", 3, "offset +32768 does not fit"),
        ("stxb %r1, %r2", 1, "expected a memory operand like [%r1+8], got '%r1'"),
        ("ja 2", 1, "invalid target '2'"),
        ("jeq %r1, 1, +32768", 1, "offset +32768 does not fit"),
        ("mov %r0, 0\nja nowhere\nexit", 2, "unknown label 'nowhere'"),
        ("a:\nexit\na: exit", 3, "duplicate label 'a'"),
        ("lock foo [%r1], %r2", 1, "expected 'lock [fetch] OP[32]"),
        ("lock add [%r1]", 1, "'lock add' takes 2 operand(s)"),
        ("lddw %r1, bogus(1)", 1, "unknown pseudo load 'bogus'"),
        ("lddw %r1, map_fd(3, 4, 5)", 1, "wrong arguments for map_fd"),
        ("lddw %r1, func(+1, 2)", 1, "wrong arguments for func"),
        ("call local 5", 1, "invalid target '5'"),
        ("call far away now", 1, "expected call ID"),
        ("movsx3232 %r0, %r1", 1, "unknown mnemonic 'movsx3232'"),
    ],
)
def test_text_errors_name_the_line_and_text(source: str, line: int, fragment: str) -> None:
    with pytest.raises(AsmError) as caught:
        asm.assemble_text(source)
    error = caught.value
    assert error.line == line
    assert error.text == source.splitlines()[line - 1].strip()
    assert fragment in error.reason
    assert str(error).startswith(f"line {line}: ") and repr(error.text) in str(error)


def test_empty_source_is_an_empty_program() -> None:
    assert asm.assemble_text("") == [] and asm.assemble_text("# nothing\n\n") == []


# ---------------------------------------------------------------------------------------------
# The disassembler
# ---------------------------------------------------------------------------------------------
def test_disassembly_prints_numeric_offsets() -> None:
    program = asm.assemble_text("l: jeq %r1, 0, out\ncall local l\nout: exit")
    assert asm.disassemble(program) == "jeq %r1, 0, +1\ncall local -2\nexit\n"
    assert asm.disassemble([]) == ""


@pytest.mark.parametrize(
    ("insns", "fragment"),
    [
        ([Insn(0x95, dst=1)], "reserved fields set (the text form 'exit' differs)"),
        ([Insn(0x07, off=1, imm=1)], "no ALU operation 0x0 with off 1"),
        ([Insn(0xBF, 0, 1, off=7)], "movsx cannot sign-extend 7 bits"),
        ([Insn(0xF7)], "no ALU operation 0xf0"),
        ([Insn(0x86)], "no jump operation 0x80"),
        ([Insn(0x85, src=3)], "no call kind src=3"),
        ([Insn(0x18, imm=1)], "lddw is truncated"),
        ([Insn(0x18, src=7), Insn(0)], "no pseudo load src=7"),
        ([Insn(0x18), Insn(0x07)], "reserved fields set"),
        ([Insn(0x60)], "no load with mode 0x60"),
        ([Insn(0xA3)], "no memory instruction with mode 0xa0"),
        ([Insn(0xDB, imm=0x10)], "no atomic operation 0x10"),
        ([Insn(0xD3, imm=0x00)], "reserved fields set"),  # atomic on a byte
        (asm.decode(bytes.fromhex("bf b0 00 00 00 00 00 00")), "invalid register '%r11'"),
    ],
)
def test_disassembly_rejects_non_canonical_slots(insns: list[Insn], fragment: str) -> None:
    program = [asm.mov64(R0, 0), *insns]
    with pytest.raises(AsmError, match="slot 1 Insn") as caught:
        asm.disassemble(program)
    assert fragment in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
_regs = st.sampled_from(list(Reg))
_imm32 = st.integers(-(1 << 31), (1 << 31) - 1)
_off16 = st.integers(-(1 << 15), (1 << 15) - 1)
_operands = st.one_of(_regs, _imm32)
_small_sizes = st.sampled_from(["b", "h", "w"])
_families: list[st.SearchStrategy[Made]] = [
    st.builds(asm.alu64, st.sampled_from(get_args(asm.AluOp)), _regs, _operands),
    st.builds(asm.alu32, st.sampled_from(get_args(asm.AluOp)), _regs, _operands),
    st.builds(asm.neg64, _regs),
    st.builds(asm.neg32, _regs),
    st.builds(asm.movsx64, _regs, _regs, st.sampled_from([8, 16, 32])),
    st.builds(asm.movsx32, _regs, _regs, st.sampled_from([8, 16])),
    st.builds(asm.endian, st.sampled_from(["le", "be"]), _regs, st.sampled_from([16, 32, 64])),
    st.builds(asm.bswap, _regs, st.sampled_from([16, 32, 64])),
    st.builds(asm.ldx, st.sampled_from(get_args(asm.Size)), _regs, _regs, _off16),
    st.builds(asm.ldxs, _small_sizes, _regs, _regs, _off16),
    st.builds(asm.st, st.sampled_from(get_args(asm.Size)), _regs, _off16, _imm32),
    st.builds(asm.stx, st.sampled_from(get_args(asm.Size)), _regs, _off16, _regs),
    st.builds(
        asm.atomic,
        st.sampled_from(get_args(asm.AtomicOp)),
        st.sampled_from(["w", "dw"]),
        _regs,
        _off16,
        _regs,
        fetch=st.booleans(),
    ),
    st.builds(asm.ld_abs, _small_sizes, _imm32),
    st.builds(asm.ld_ind, _small_sizes, _regs, _imm32),
    st.builds(asm.ld_imm64, _regs, st.integers(-(1 << 63), (1 << 64) - 1)),
    st.builds(
        asm.ld_pseudo,
        _regs,
        st.sampled_from([k for k in get_args(asm.PseudoKind) if k != "func"]),
        _imm32,
        _imm32,
    ),
    st.builds(asm.ld_func, _regs, _imm32),
    st.builds(asm.jmp, st.sampled_from(get_args(asm.JmpOp)), _regs, _operands, _off16),
    st.builds(asm.jmp32, st.sampled_from(get_args(asm.JmpOp)), _regs, _operands, _off16),
    st.builds(asm.ja, _off16),
    st.builds(asm.ja32, _imm32),
    st.builds(asm.call, _imm32),
    st.builds(asm.call_local, _imm32),
    st.builds(asm.call_kfunc, _imm32),
    st.builds(asm.callx, _regs),
    st.builds(asm.exit_insn),
]
programs = st.lists(st.one_of(_families), max_size=24).map(
    lambda made: [insn for item in made for insn in slots(item)]
)


@given(programs)
def test_property_encode_decode_round_trip(program: list[Insn]) -> None:
    assert asm.decode(asm.encode(program)) == program
    assert asm.from_ctypes(asm.to_ctypes(program)) == program


@given(programs)
def test_property_disassemble_assemble_round_trip(program: list[Insn]) -> None:
    assert asm.assemble_text(asm.disassemble(program)) == program


@given(st.integers(1, 3).flatmap(lambda n: st.binary(min_size=8 * n, max_size=8 * n)))
def test_property_any_bytes_decode_and_disassemble_exactly_or_not_at_all(data: bytes) -> None:
    program = asm.decode(data)
    assert asm.encode(program) == data
    try:
        text = asm.disassemble(program)
    except AsmError:
        return
    assert asm.assemble_text(text) == program


# ---------------------------------------------------------------------------------------------
# The conformance suite
# ---------------------------------------------------------------------------------------------
def data_files(folder: str) -> list[Any]:
    """One pytest param per ``folder/*.data``, or a single skipped param if the data is absent."""
    if not CONFORMANCE.is_dir():
        reason = f"conformance data not found at {CONFORMANCE} (clone shared/ beside the repo)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    return [
        pytest.param(path, id=path.stem) for path in sorted((CONFORMANCE / folder).glob("*.data"))
    ]


@pytest.mark.parametrize("path", data_files("tests"))
def test_conformance_program_assembles_and_matches_raw(path: Path) -> None:
    case = load_case(path)
    assert case.asm is not None and case.error is None and case.result is not None
    program = asm.assemble_text(case.asm)
    assert program
    if case.raw is not None:
        assert program == asm.decode(case.raw)
    assert case.program() == program


@pytest.mark.parametrize("path", data_files("tests"))
def test_conformance_program_round_trips(path: Path) -> None:
    program = load_case(path).program()
    assert asm.assemble_text(asm.disassemble(program)) == program
    assert asm.decode(asm.encode(program)) == program


# Every negative file with an -- asm section falls in exactly one of these three groups.
REJECTED_BY_ASSEMBLER: dict[str, tuple[int, str]] = {  # line within the asm text, fragment
    "invalid_imm32_dec_range": (2, "immediate 2147483648 does not fit"),
    "invalid_imm32_hex_range": (2, "immediate 0x100000000 does not fit"),
    "invalid_label": (1, "unknown label 'NOT_A_LABEL'"),
    "invalid_lock": (1, "'lock or' takes 2 operand(s)"),
    "invalid_lock2": (1, "expected 'lock [fetch] OP[32]"),
    "invalid_mnemonic": (2, "unknown mnemonic 'ldxq'"),
    "invalid_offset": (1, "expected a memory operand"),
    "invalid_offset_range": (2, "offset +0x10000 does not fit"),
    "invalid_operand_count": (1, "'lddw' takes 2 operand(s)"),
    "invalid_register": (1, "invalid register '%r50'"),
}
VALID_SYNTAX: dict[str, str] = {
    "error": "'or %r0, %r10' reads r0 before anything wrote it: valid syntax that only a "
    "verifier rejects (Linux: 'R0 !read_ok')",
    "incorrect_return_value_high_bits": "a valid program whose -- result is deliberately wrong; "
    "it tests the runner's comparison of r0, not the assembler",
}
REJECTED_BY_DATA_PARSER: dict[str, str] = {
    "invalid_unknown_directive": "its -- asm section is empty and is followed by the unknown "
    "section '-- Unknown directive' (line 4), which the .data parser rejects",
}


def test_negative_asm_files_are_all_classified() -> None:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"conformance data not found at {CONFORMANCE}")
    with_asm = {
        path.stem
        for path in (CONFORMANCE / "negative").glob("*.data")
        if "-- asm" in path.read_text(encoding="utf-8").splitlines()
    }
    groups = [set(REJECTED_BY_ASSEMBLER), set(VALID_SYNTAX), set(REJECTED_BY_DATA_PARSER)]
    assert with_asm == set().union(*groups)
    assert sum(len(group) for group in groups) == len(with_asm)


@pytest.mark.parametrize("path", data_files("negative"))
def test_negative_file(path: Path) -> None:
    name = path.stem
    if name in REJECTED_BY_DATA_PARSER:
        with pytest.raises(ConformanceError, match=f"{name}:4: unknown section"):
            load_case(path)
        return
    case = load_case(path)
    if name in REJECTED_BY_ASSEMBLER:
        line, fragment = REJECTED_BY_ASSEMBLER[name]
        assert case.asm is not None and case.asm_line is not None
        with pytest.raises(AsmError) as caught:
            asm.assemble_text(case.asm)
        assert caught.value.line == line and fragment in str(caught.value)
        assert caught.value.text == case.asm.splitlines()[line - 1].strip()
        with pytest.raises(AsmError) as in_file:
            case.program()
        assert in_file.value.line == case.asm_line + line - 1  # numbered as in the file
    elif name in VALID_SYNTAX:
        assert case.asm is not None and asm.assemble_text(case.asm)
    elif case.raw is not None:
        # negative/unused-*: a reserved field is set; the slots decode (the loader is the one to
        # reject them) but have no canonical text form.
        program = asm.decode(case.raw)
        assert asm.encode(program) == case.raw and case.error == ""
        with pytest.raises(AsmError, match=r"slot 0 Insn.*has no text form"):
            asm.disassemble(program)
    else:  # empty.data, empty_instructions.data
        assert case.asm is None
        with pytest.raises(ConformanceError, match="no -- asm or -- raw section"):
            case.program()


# ---------------------------------------------------------------------------------------------
# The .data parser
# ---------------------------------------------------------------------------------------------
SAMPLE = """\
# Copyright header
# SPDX-License-Identifier: MIT
-- c
#include <stdint.h>
-- asm
mov %r0, 1   # comment kept verbatim
exit
-- raw
# a comment in raw
0x00000001000000b7
95 00 00 00 00 00 00 00
-- mem
00 01 ff
0a
-- result
0x1
-- no register offset
this text is ignored
"""


def test_parse_sample() -> None:
    case = parse_case(SAMPLE, "sample")
    assert case == ConformanceCase(
        name="sample",
        asm="mov %r0, 1   # comment kept verbatim\nexit\n",
        raw=bytes.fromhex("b7 00 00 00 01 00 00 00 95 00 00 00 00 00 00 00"),
        mem=bytes([0, 1, 0xFF, 0x0A]),
        result=1,
        error=None,
        flags=frozenset({"no register offset"}),
        c_source="#include <stdint.h>\n",
        asm_line=6,
    )
    assert case.program() == asm.assemble_text(case.asm or "")


def test_parse_result_and_error_forms() -> None:
    assert parse_case("-- result\n0\n", "d").result == 0
    assert parse_case("-- result\n0x8000000000000000\n", "h").result == 1 << 63
    assert parse_case("-- asm\nexit\n", "none").result is None
    assert parse_case("-- error\n", "bare").error == ""
    assert parse_case("-- error\nInvalid register\n", "msg").error == "Invalid register"
    raw_wins = parse_case("-- asm\nexit\n-- raw\n0x00000000000000b7\n", "both")
    assert raw_wins.program() == [asm.mov64(R0, 0)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("-- asm\nexit\n-- bogus\n", "x:3: unknown section '-- bogus'"),
        ("-- asm\nexit\n-- asm\n", "x:3: repeated section"),
        ("stray text\n-- asm\n", "x:1: text before the first section"),
        ("-- raw\n95 00 00\n", "x:2: expected 8 hex bytes"),
        ("-- raw\n95 00 00 00 00 00 00 zz\n", "x:2: 'zz' is not a hex byte"),
        ("-- mem\n00 1g\n", "x:2: '1g' is not a hex byte"),
        ("-- result\n1\n2\n", "one hex or decimal number"),
        ("-- result\nabc\n", "one hex or decimal number"),
    ],
)
def test_parse_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConformanceError) as caught:
        parse_case(text, "x")
    assert fragment in str(caught.value)
