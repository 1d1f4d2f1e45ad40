"""bpf_snprintf through the loader on both backends: the constant format string argument.

The format must be a NUL-terminated string in a frozen BPF_F_RDONLY_PROG array map, at a
constant offset, and must pass the format check with data_len / 8 arguments
(kernelsim/prog/verifier/const_str.py). Each case was measured on the live 6.18 kernel: the
errno and the log's last line before the statistics line. The end-to-end test formats through
PROG_TEST_RUN of a socket filter and compares the bytes written into a map.
"""

from __future__ import annotations

import contextlib
import errno
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpfsys.abi import BpfFunc, MapFlag, MapType, ProgType
from bpfsys.asm import assemble_text
from bpfsys.backend import Backend
from bpfsys.bpf import (
    VerifierError,
    map_create,
    map_freeze,
    map_lookup_elem,
    map_update_elem,
    prog_load,
    prog_test_run,
)
from bpfsys.fd import OwnedFd
from kernelsim.backend import SimBackend
from kernelsim.errors import ENOTSUPP
from kernelsim.kernel import Kernel, KernelConfig

SNPRINTF = int(BpfFunc.SNPRINTF)
RDONLY_PROG = int(MapFlag.RDONLY_PROG)
VALUE_SIZE = 32


def fmt_map(
    backend: Backend,
    fmt: bytes,
    *,
    flags: int = RDONLY_PROG,
    freeze: bool = True,
    map_type: MapType = MapType.ARRAY,
    entries: int = 1,
) -> OwnedFd:
    """A map whose element 0 holds `fmt` (NUL-padded to the value size)."""
    fd = map_create(map_type, 4, VALUE_SIZE, entries, flags=flags, backend=backend)
    map_update_elem(fd, bytes(4), fmt.ljust(VALUE_SIZE, b"\0")[:VALUE_SIZE], backend=backend)
    if freeze:
        map_freeze(fd, backend=backend)
    return fd


def call(r3: str, *, data_len: int = 8, data: str = "mov %r4, %r10\nadd %r4, -8") -> str:
    """bpf_snprintf(fp-24, 16, <r3>, <data>, data_len) after storing 42 at fp-8; returns r0.
    `r3` (set first) may call helpers."""
    return f"""
    stdw [%r10-8], 42
    {r3}
    mov %r1, %r10
    add %r1, -24
    mov %r2, 16
    {data}
    mov %r5, {data_len}
    call {SNPRINTF}
    exit"""


def lookup_then(map_fd: OwnedFd, key: int, then: str) -> str:
    """Look up `key` in `map_fd` (exit 0 when absent); r6 = the value pointer, `then` (which
    may change r6), r3 = r6."""
    return f"""
    stw [%r10-28], {key}
    mov %r2, %r10
    add %r2, -28
    lddw %r1, map_fd({int(map_fd)})
    call {int(BpfFunc.MAP_LOOKUP_ELEM)}
    jne %r0, 0, +2
    mov %r0, 0
    exit
    mov %r6, %r0
    {then}
    mov %r3, %r6"""


def final_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line and not line.startswith("processed ")]
    return lines[-1] if lines else ""


def load(backend: Backend, text: str, license: str = "GPL") -> tuple[str, str]:
    """(errno name or "OK", the log's final line on failure)."""
    try:
        loaded = prog_load(
            ProgType.SOCKET_FILTER, assemble_text(text), license=license, log_level=1,
            backend=backend,
        )  # fmt: skip
    except VerifierError as exc:
        err = exc.errno or 0
        return errno.errorcode.get(err, "ENOTSUPP" if err == ENOTSUPP else str(err)), final_line(
            exc.log
        )
    loaded.fd.close()
    return "OK", ""


class Case(NamedTuple):
    name: str
    fmt: bytes
    map_kw: dict[str, int]
    text: str
    """The program; {m} is the format map's fd."""
    result: str
    final: str
    license: str = "GPL"


AT0 = "lddw %r3, map_value({m}, 0)"
CASES: tuple[Case, ...] = (
    Case("ok", b"n=%d", {}, call(AT0), "OK", ""),
    Case("not_rdonly_prog", b"n=%d", {"flags": 0}, call(AT0), "EACCES",
         "R3 does not point to a readonly map'"),
    Case("not_frozen", b"n=%d", {"freeze": 0}, call(AT0), "EACCES",
         "R3 does not point to a readonly map'"),
    Case("no_nul", b"x" * VALUE_SIZE, {}, call(AT0), "EINVAL", "string is not zero-terminated"),
    Case("nul_after_offset", b"abc\0%d", {}, call("lddw %r3, map_value({m}, 4)"), "OK", ""),
    Case("last_byte", b"n=%d", {}, call("lddw %r3, map_value({m}, 31)"), "OK", ""),
    Case("bad_conversion", b"%q", {}, call(AT0), "EINVAL", "Invalid format string"),
    Case("more_conversions_than_args", b"%d %d", {}, call(AT0), "EINVAL",
         "Invalid format string"),
    Case("conversion_no_data", b"n=%d", {}, call(AT0, data_len=0, data="mov %r4, 0"), "EINVAL",
         "Invalid format string"),
    Case("plain_no_data", b"hi %%", {}, call(AT0, data_len=0, data="mov %r4, 0"), "OK", ""),
    Case("data_null_size_8", b"n=%d", {}, call(AT0, data="mov %r4, 0"), "EACCES",
         "R4 type=scalar expected=fp"),
    Case("data_len_not_8n", b"n=%d", {},
         call(AT0, data_len=12, data="mov %r4, %r10\nadd %r4, -104"), "EINVAL",
         f"9: (85) call bpf_snprintf#{SNPRINTF}"),
    Case("data_len_104_loads", b"n=%d", {},
         call(AT0, data_len=104, data="mov %r4, %r10\nadd %r4, -128"), "OK", ""),
    Case("fmt_on_stack", b"n=%d", {}, call("mov %r3, %r10\nadd %r3, -16"), "EACCES",
         "R3 type=fp expected=map_value"),
    Case("fmt_scalar", b"n=%d", {}, call("mov %r3, 0"), "EACCES",
         "R3 type=scalar expected=map_value"),
    Case("not_gpl", b"n=%d", {}, call(AT0), "EINVAL",
         "cannot call GPL-restricted function from non-GPL compatible program", "MIT"),
)  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_const_str_load(backend: Backend, case: Case) -> None:
    kw = case.map_kw
    with fmt_map(
        backend, case.fmt, flags=kw.get("flags", RDONLY_PROG), freeze=bool(kw.get("freeze", 1))
    ) as fd:
        assert load(backend, case.text.replace("{m}", str(int(fd))), case.license) == (
            case.result,
            case.final,
        )


@pytest.mark.parametrize(
    ("map_type", "entries", "key", "then", "result", "final"),
    [
        (MapType.ARRAY, 1, 0, "call 7\nand %r0, 1\nadd %r6, %r0", "EACCES",
         "R3 is not a constant address'"),
        (MapType.HASH, 1, 0, "", "EACCES",
         "no direct value access support for this map type"),
        (MapType.ARRAY, 2, 1, "", "ENOTSUPP",
         "direct value access on string failed"),
        (MapType.ARRAY, 1, 0, f"add %r6, {VALUE_SIZE}", "EACCES",
         "R3 min value is outside of the allowed memory range"),
    ],
    ids=["variable_offset", "hash_value", "two_element_array", "offset_at_end"],
)  # fmt: skip
def test_const_str_from_lookup(
    backend: Backend, map_type: MapType, entries: int, key: int, then: str, result: str,
    final: str,
) -> None:  # fmt: skip
    with fmt_map(backend, b"n=%d", map_type=map_type, entries=entries) as fd:
        assert load(backend, call(lookup_then(fd, key, then))) == (result, final)


def test_snprintf_end_to_end(backend: Backend) -> None:
    """Load on each backend, run once, compare the bytes snprintf wrote into a map value."""
    fmt = b"n=%d m=%ld x=%x"
    with (
        fmt_map(backend, fmt) as fmt_fd,
        map_create(MapType.ARRAY, 4, VALUE_SIZE, 1, backend=backend) as out_fd,
    ):
        map_update_elem(out_fd, bytes(4), b"\xee" * VALUE_SIZE, backend=backend)
        text = (
            lookup_then(out_fd, 0, "")
            + f"""
        stdw [%r10-24], 42
        lddw %r1, -7
        stxdw [%r10-16], %r1
        stdw [%r10-8], 0xbeef
        mov %r1, %r6
        mov %r2, 10
        lddw %r3, map_value({int(fmt_fd)}, 0)
        mov %r4, %r10
        add %r4, -24
        mov %r5, 24
        call {SNPRINTF}
        exit"""
        )
        with prog_load(ProgType.SOCKET_FILTER, assemble_text(text), license="GPL",
                       backend=backend) as prog:  # fmt: skip
            assert (
                prog_test_run(prog, bytes(64), backend=backend).retval
                == len(b"n=42 m=-7 x=beef") + 1
            )
        written = map_lookup_elem(out_fd, bytes(4), VALUE_SIZE, backend=backend)
    assert written == b"n=42 m=-7\0" + b"\xee" * 22  # cut to size - 1 plus NUL


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.binary(max_size=VALUE_SIZE), data_len=st.integers(0, 104), off=st.integers(0, 40))
def test_const_str_fuzz(fmt: bytes, data_len: int, off: int) -> None:
    """Random formats, data lengths and offsets: the simulated load only raises OSError."""
    sim = SimBackend(Kernel(KernelConfig()))
    try:
        with fmt_map(sim, fmt) as fd:
            text = call(f"lddw %r3, map_value({int(fd)}, {off})", data_len=data_len,
                        data="mov %r4, %r10\nadd %r4, -128")  # fmt: skip
            with contextlib.suppress(OSError):
                prog_load(ProgType.SOCKET_FILTER, assemble_text(text), license="GPL",
                          backend=sim).close()  # fmt: skip
    finally:
        sim.kernel.close_all()
    assert not sim.kernel.live_objects()
