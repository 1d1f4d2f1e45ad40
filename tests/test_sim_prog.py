"""PROG_LOAD on both backends: attr checks, the loader check's verdicts and log, program info.

Differential cases compare raw results (return value or errno, the log's final line, bytes
written back) between the simulated kernel and the live one; the expected values were measured
on Linux 6.18. Profile cases use `sim_factory`; the fuzz cases feed random attrs and random
instructions to the simulator and check that only OSError escapes and nothing leaks.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_prog_cases import CASES, Case

from bpfsys.abi import (
    BpfCmd,
    BpfProgInfo,
    InfoByFdAttr,
    MapCreateAttr,
    MapType,
    ProgLoadAttr,
    ProgType,
)
from bpfsys.asm import assemble_text, encode
from bpfsys.backend import Backend
from bpfsys.conformance import ConformanceError, load_case
from kernelsim.backend import SimBackend
from kernelsim.prog.program import BpfProgram
from kernelsim.prog.tag import prog_tag

OK_PROG = encode(assemble_text("mov %r0, 0\nexit"))
STATS_LINE = "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0\n"


class Load:
    """One PROG_LOAD attr with its buffers kept alive."""

    def __init__(self, code: bytes, prog_type: int = ProgType.SOCKET_FILTER, license: bytes = b"GPL",
                 log_size: int = 0, log_level: int = 0, **fields: int | bytes) -> None:  # fmt: skip
        self.code = ctypes.create_string_buffer(code, max(len(code), 1))
        self.license = ctypes.create_string_buffer(license)
        self.log = ctypes.create_string_buffer(max(log_size, 1))
        self.attr = ProgLoadAttr(
            prog_type=prog_type,
            insn_cnt=len(code) // 8,
            insns=ctypes.addressof(self.code),
            license=ctypes.addressof(self.license),
            log_level=log_level,
            log_size=log_size,
            log_buf=ctypes.addressof(self.log) if log_size else 0,
        )
        for name, value in fields.items():
            setattr(self.attr, name, value)

    def run(self, backend: Backend) -> int:
        return backend.bpf(BpfCmd.PROG_LOAD, self.attr, ctypes.sizeof(self.attr))

    def errno_of(self, backend: Backend) -> str:
        try:
            fd = self.run(backend)
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc.errno))
        backend.close(fd)
        return "OK"

    @property
    def text(self) -> str:
        return self.log.raw.split(b"\0", 1)[0].decode()


def make_map(backend: Backend, spec: tuple[int, int, int, int]) -> int:
    attr = MapCreateAttr(
        map_type=spec[0], key_size=spec[1], value_size=spec[2], max_entries=spec[3]
    )
    return backend.bpf(BpfCmd.MAP_CREATE, attr, ctypes.sizeof(attr))


@pytest.fixture
def maps(
    backend: Backend,
) -> Iterator[Callable[[tuple[tuple[int, int, int, int], ...]], list[int]]]:
    made: list[int] = []

    def create(specs: tuple[tuple[int, int, int, int], ...]) -> list[int]:
        fds = [make_map(backend, spec) for spec in specs]
        made.extend(fds)
        return fds

    yield create
    for fd in made:
        backend.close(fd)


# -- the loader check: verdicts and final log lines --------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_verdict_and_final_log_line(
    backend: Backend, maps: Callable[..., list[int]], case: Case
) -> None:
    fds = maps(case.maps)
    load = Load(
        encode(assemble_text(case.asm.format(*fds))),
        case.prog_type,
        log_level=case.level,
        log_size=65536,
        prog_flags=case.flags,
    )
    assert load.errno_of(backend) == case.result
    stats = ("verification time ", "stack depth ")
    lines = [line for line in load.text.splitlines() if not line.startswith(stats)]
    assert lines[-1].startswith("processed ")
    assert (lines[-2] if len(lines) > 1 else "") == case.final


TRACE_CASES = {
    "branch2": (
        "0: R1=ctx() R10=fp0\n"
        "0: (61) r2 = *(u32 *)(r1 +0)          ; R1=ctx() "
        "R2=scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff))\n"
        "1: (15) if r2 == 0x0 goto pc+2 4: R1=ctx() R2=0 R10=fp0\n"
        "4: (bf) r0 = r3\nR3 !read_ok\n"
        "processed 5 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 "
        "mark_read 0\n"
    ),
}


def test_failing_path_trace_is_the_kernels(backend: Backend) -> None:
    case = next(c for c in CASES if c.name == "branch2")
    load = Load(encode(assemble_text(case.asm)), case.prog_type, log_level=1, log_size=4096)
    assert load.errno_of(backend) == "EACCES"
    assert load.text == TRACE_CASES["branch2"]
    assert load.attr.log_true_size == 316


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "shared/conformance/negative").glob("*.data")),
    ids=lambda p: p.stem,
)
def test_conformance_negative_raw_programs_are_refused(backend: Backend, path: Path) -> None:
    try:
        case = load_case(path)
    except ConformanceError:
        pytest.skip("a malformed file (an assembler-level negative case)")
    if case.raw is None:
        pytest.skip("no -- raw section (an assembler-level negative case)")
    load = Load(case.raw, log_level=1, log_size=8192)
    assert load.errno_of(backend) in ("EINVAL", "EACCES")


# -- attr checks ----------
ATTR_CASES: list[tuple[str, dict[str, int | bytes], str]] = [
    ("ok", {}, "OK"),
    ("type0", {"prog_type": 0}, "EINVAL"),
    ("type99", {"prog_type": 99}, "EINVAL"),
    ("cnt0", {"insn_cnt": 0}, "E2BIG"),
    ("cnt_over_1M", {"insn_cnt": 1_000_001}, "E2BIG"),
    ("bad_license", {"license": 8}, "EFAULT"),
    ("null_license", {"license": 0}, "EFAULT"),
    ("bad_insns", {"insns": 8}, "EFAULT"),
    ("bad_insns_and_type", {"insns": 8, "prog_type": 99}, "EFAULT"),
    ("bad_license_cnt0", {"license": 8, "insn_cnt": 0}, "E2BIG"),
    ("bad_name", {"prog_name": b"a-b"}, "EINVAL"),
    ("bad_name_bad_license", {"prog_name": b"a-b", "license": 8}, "EFAULT"),
    ("dotted_name", {"prog_name": b"a.b_C9"}, "OK"),
    ("unknown_flag", {"prog_flags": 1 << 20}, "EINVAL"),
    ("unknown_flag_cnt0", {"prog_flags": 1 << 20, "insn_cnt": 0}, "EINVAL"),
    ("strict_alignment", {"prog_flags": 1}, "OK"),
    ("flag_256", {"prog_flags": 256}, "EINVAL"),
    ("log_level_without_buf", {"log_level": 1}, "OK"),
    ("log_level_16", {"log_level": 16, "log_size": 4096}, "EINVAL"),
    ("log_size_huge", {"log_level": 1, "log_size": 1 << 30}, "EINVAL"),
    ("log_size_without_buf", {"log_level": 1, "log_size": 4096, "log_buf": 0}, "EINVAL"),
    ("log_bad_buf", {"log_level": 1, "log_size": 4096, "log_buf": 8}, "EFAULT"),
    ("log_buf_level0", {"log_level": 0, "log_size": 4096}, "EINVAL"),
    (
        "cgroup_skb_bad_attach",
        {"prog_type": ProgType.CGROUP_SKB, "expected_attach_type": 5},
        "EINVAL",
    ),
    ("cgroup_skb_egress", {"prog_type": ProgType.CGROUP_SKB, "expected_attach_type": 1}, "OK"),
    ("xdp", {"prog_type": ProgType.XDP}, "OK"),
    ("kprobe_kern_version", {"prog_type": ProgType.KPROBE, "kern_version": 123}, "OK"),
    ("ifindex", {"prog_ifindex": 1}, "EINVAL"),
    ("attach_btf_id", {"attach_btf_id": 1}, "EINVAL"),
    ("func_info_cnt", {"func_info_cnt": 1}, "EINVAL"),
    ("signature", {"signature": 8}, "EOPNOTSUPP"),
]


@pytest.mark.parametrize(
    "fields,expected", [c[1:] for c in ATTR_CASES], ids=[c[0] for c in ATTR_CASES]
)
def test_attr_checks(backend: Backend, fields: dict[str, int | bytes], expected: str) -> None:
    fields = dict(fields)
    log_size = int(fields.pop("log_size", 0))
    load = Load(OK_PROG, log_size=log_size)
    for name, value in fields.items():
        setattr(load.attr, name, value)
    if log_size and "log_buf" not in fields:
        load.attr.log_buf = ctypes.addressof(load.log)
    result = load.errno_of(backend)
    assert result == ("ENOTSUP" if expected == "EOPNOTSUPP" and result == "ENOTSUP" else expected)


# -- the log buffer ----------
@pytest.mark.parametrize(
    "level,size,expected,text",
    [
        (1, 4096, "OK", STATS_LINE),
        (1, 127, "OK", STATS_LINE),
        (1, 20, "ENOSPC", STATS_LINE[-19:]),
        (9, 20, "ENOSPC", STATS_LINE[:19]),
        (1, 1, "ENOSPC", ""),
        (4, 4096, "OK", None),
    ],
)
def test_log_size_and_rotation(
    backend: Backend, level: int, size: int, expected: str, text: str | None
) -> None:
    load = Load(OK_PROG, log_level=level, log_size=size)
    assert load.errno_of(backend) == expected
    assert load.attr.log_true_size == (98 if level != 4 else load.attr.log_true_size)
    if text is not None:
        assert load.text == text
    else:
        assert load.text.startswith("verification time ")
        assert load.text.endswith("stack depth 0\n" + STATS_LINE)


# -- program info and fdinfo ----------
def prog_info(backend: Backend, fd: int, nr_map_ids: int = 0) -> tuple[BpfProgInfo, list[int]]:
    info = BpfProgInfo()
    ids = (ctypes.c_uint32 * 4)()
    info.nr_map_ids = nr_map_ids
    info.map_ids = ctypes.addressof(ids)
    attr = InfoByFdAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    backend.bpf(BpfCmd.OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr))
    return info, list(ids)


@pytest.mark.parametrize(
    "asm,with_map",
    [
        ("mov %r0, 0\nexit", False),
        ("ldxw %r0, [%r1+0]\nexit", False),
        (
            "stw [%r10-4], 0\nlddw %r1, map_fd({0})\nmov %r2, %r10\nadd %r2, -4\ncall 1\nmov %r0, 0\nexit",
            True,
        ),
    ],
)
def test_tag_and_info(backend: Backend, asm: str, with_map: bool) -> None:
    map_fd = make_map(backend, (MapType.HASH, 4, 8, 4)) if with_map else -1
    try:
        code = encode(assemble_text(asm.format(map_fd)))
        load = Load(code, prog_name=b"myprog", license=b"Dual MIT/GPL")
        fd = load.run(backend)
        try:
            info, ids = prog_info(backend, fd, nr_map_ids=4)
            assert bytes(info.tag) == prog_tag(code, sha256=True)
            assert info.type == ProgType.SOCKET_FILTER
            assert info.name == b"myprog"
            assert info.gpl_compatible
            assert info.nr_map_ids == int(with_map)
            assert info.verified_insns == len(code) // 8 - int(with_map)
            assert info.created_by_uid == 0
            assert info.nr_prog_tags == 1
            if with_map:
                minfo = prog_map_id(backend, map_fd)
                assert ids[0] == minfo
            fdinfo = backend.read_file(f"/proc/self/fdinfo/{fd}").decode()
            keys = [line.split(":")[0] for line in fdinfo.splitlines()]
            wanted = ["prog_type", "prog_jited", "prog_tag", "memlock", "prog_id", "run_time_ns",
                      "run_cnt", "recursion_misses", "verified_insns"]  # fmt: skip
            assert [k for k in keys if k in wanted] == wanted
            assert f"prog_tag:\t{bytes(info.tag).hex()}" in fdinfo
        finally:
            backend.close(fd)
    finally:
        if with_map:
            backend.close(map_fd)


def prog_map_id(backend: Backend, map_fd: int) -> int:
    from bpfsys.abi import BpfMapInfo

    info = BpfMapInfo()
    attr = InfoByFdAttr(bpf_fd=map_fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    backend.bpf(BpfCmd.OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr))
    return int(info.id)


def test_tag_zeroes_map_fds() -> None:
    one = encode(assemble_text("lddw %r1, map_fd(3)\nmov %r0, 0\nexit"))
    two = encode(assemble_text("lddw %r1, map_fd(7)\nmov %r0, 0\nexit"))
    assert prog_tag(one, True) == prog_tag(two, True)
    assert (
        prog_tag(one, False)
        == hashlib.sha1(encode(assemble_text("lddw %r1, map_fd(0)\nmov %r0, 0\nexit"))).digest()[:8]
    )


# -- profiles (simulator only) ----------
def test_unprivileged_disabled_is_eperm(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(privileges="unprivileged")
    assert Load(OK_PROG).errno_of(sim) == "EPERM"


def test_unprivileged_rules(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(privileges="unprivileged", unprivileged_bpf_disabled=0)
    assert Load(OK_PROG).errno_of(sim) == "OK"
    assert Load(OK_PROG, ProgType.XDP).errno_of(sim) == "EPERM"
    loop = Load(
        encode(assemble_text("mov %r0, 0\nadd %r0, 1\njlt %r0, 10, -2\nexit")),
        log_level=1,
        log_size=4096,
    )
    assert loop.errno_of(sim) == "EINVAL"
    assert "back-edge from insn 2 to 1" in loop.text
    leak = Load(encode(assemble_text("mov %r0, %r10\nexit")), log_level=1, log_size=4096)
    assert leak.errno_of(sim) == "EACCES"
    assert "R0 leaks addr as return value" in leak.text
    uninit = Load(encode(assemble_text("ldxdw %r0, [%r10-8]\nexit")), log_level=1, log_size=4096)
    assert uninit.errno_of(sim) == "EACCES"
    assert Load(b"\0" * 8 * 4097).errno_of(sim) == "E2BIG"


def test_cap_bpf_cannot_load_network_types(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(privileges="cap_bpf")
    assert Load(OK_PROG, ProgType.XDP).errno_of(sim) == "EPERM"
    assert Load(OK_PROG, ProgType.KPROBE).errno_of(sim) == "OK"


def test_old_kernel_log_rules_and_sha1_tag(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(version="5.4")
    assert Load(OK_PROG, log_level=1, log_size=127).errno_of(sim) == "EINVAL"
    assert Load(OK_PROG, log_level=1, log_size=0).errno_of(sim) == "EINVAL"
    fixed = Load(OK_PROG, log_level=1, log_size=128)
    assert fixed.errno_of(sim) == "OK"
    assert fixed.attr.log_true_size == 0
    fd = Load(OK_PROG).run(sim)
    info, _ = prog_info(sim, fd)
    assert bytes(info.tag) == hashlib.sha1(OK_PROG).digest()[:8]
    sim.close(fd)


def test_program_holds_its_maps(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory()
    map_fd = make_map(sim, (MapType.ARRAY, 4, 8, 1))
    code = encode(assemble_text(f"lddw %r1, map_fd({map_fd})\nmov %r0, 0\nexit"))
    fd = Load(code).run(sim)
    sim.close(map_fd)
    assert (
        sim.kernel.live_objects().get("ArrayMap", 0)
        + sum(n for k, n in sim.kernel.live_objects().items() if "Map" in k)
        >= 1
    )
    program = sim.kernel.fds.get(fd, BpfProgram)
    assert program.insn_maps[0].map_type == MapType.ARRAY
    sim.close(fd)
    assert not any("Map" in k or "Program" in k for k in sim.kernel.live_objects())


# -- fuzz ----------
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(min_size=0, max_size=ctypes.sizeof(ProgLoadAttr)))
def test_random_attr_bytes(sim_factory: Callable[..., SimBackend], data: bytes) -> None:
    sim = sim_factory()
    buf = bytearray(data.ljust(ctypes.sizeof(ProgLoadAttr), b"\0"))
    try:
        fd = sim.bpf(BpfCmd.PROG_LOAD, buf, len(buf))
    except OSError:
        pass
    else:
        sim.close(fd)
    sim.kernel.close_all()
    assert not sim.kernel.live_objects()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    code=st.binary(min_size=8, max_size=8 * 24).map(lambda b: b[: len(b) // 8 * 8]),
    prog_type=st.sampled_from(
        [ProgType.SOCKET_FILTER, ProgType.XDP, ProgType.KPROBE, ProgType.SCHED_CLS]
    ),
    level=st.sampled_from([0, 1, 2, 4]),
)
def test_random_instruction_bytes(
    sim_factory: Callable[..., SimBackend], code: bytes, prog_type: ProgType, level: int
) -> None:
    sim = sim_factory()
    map_fd = make_map(sim, (MapType.HASH, 4, 8, 4))
    code = code.replace(b"\x18\x11", b"\x18\x11")  # keep as drawn: map loads refer to random fds
    load = Load(code, prog_type, log_level=level, log_size=4096 if level else 0)
    try:
        fd = load.run(sim)
    except OSError:
        pass
    else:
        sim.close(fd)
    sim.close(map_fd)
    sim.kernel.close_all()
    assert not sim.kernel.live_objects()
