"""The objects area on older kernel profiles and with fewer privileges (simulator only), and
random attr bytes for its commands: only OSError escapes, and nothing leaks."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from objects_support import (
    bpf,
    btf_blob,
    btf_int,
    btf_load,
    fdinfo,
    info_call,
    make_map,
    ok,
    pin,
)
from test_sim_objects_links import fake_program, link_create, raw_tp_open

from bpfsys.abi import (
    AttachType,
    BpfBtfInfo,
    BpfCmd,
    BpfLinkInfo,
    BpfMapInfo,
    EnableStatsAttr,
    GetIdAttr,
    ProgType,
)
from kernelsim.backend import SimBackend
from kernelsim.bpffs import Bpffs

SimFactory = Callable[..., SimBackend]


def test_5_4_has_no_links_and_no_stats(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.4")
    assert bpf(sim, BpfCmd.LINK_CREATE, GetIdAttr()) == "EINVAL"
    assert bpf(sim, BpfCmd.LINK_GET_NEXT_ID, GetIdAttr()) == "EINVAL"
    assert bpf(sim, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0)) == "EINVAL"
    assert bpf(sim, BpfCmd.BTF_GET_NEXT_ID, GetIdAttr(start_id=0x7FFFFFFE)) == "ENOENT"


def test_5_10_has_no_perf_links(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.10")
    kernel = sim.kernel
    prog = kernel.fds.install(fake_program(kernel, ProgType.TRACEPOINT))
    m = make_map(sim)
    assert link_create(sim, prog, m, AttachType.PERF_EVENT) == "EINVAL"
    assert link_create(sim, prog, m, AttachType.PERF_EVENT, cookie=1) == "EINVAL"


def test_5_4_raw_tracepoint_fd_is_no_link(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.4")
    kernel = sim.kernel
    prog = kernel.fds.install(fake_program(kernel, ProgType.RAW_TRACEPOINT))
    fd = ok(raw_tp_open(sim, prog, b"sched_switch"))
    assert fdinfo(sim, fd) == {"pos": "0", "flags": "02000000"}
    assert info_call(sim, fd, BpfLinkInfo())[0] == "EINVAL"
    assert pin(sim, fd, "/sys/fs/bpf/tp") == "EINVAL"
    sim.close(fd)
    sim.close(prog)
    assert kernel.live_objects() == {}


def test_6_1_raw_tracepoint_link_has_no_cookie(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="6.1")
    kernel = sim.kernel
    prog = kernel.fds.install(fake_program(kernel, ProgType.RAW_TRACEPOINT))
    assert raw_tp_open(sim, prog, b"sched_switch", cookie=1) == "EINVAL"
    link = ok(raw_tp_open(sim, prog, b"sched_switch"))
    assert "cookie" not in fdinfo(sim, link)
    assert info_call(sim, link, BpfLinkInfo()) == (0, 48)


def test_6_1_map_info_is_88_bytes_and_zeroed(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="6.1")
    fd = make_map(sim)
    buf = ctypes.create_string_buffer(b"\x77" * 88 + b"\0" * 16, 104)
    assert info_call(sim, fd, buf) == (0, 88)
    info = BpfMapInfo.from_buffer_copy(buf.raw)
    assert (info.type, info.ifindex, info.btf_id) == (2, 0, 0)
    buf[90] = b"x"
    assert info_call(sim, fd, buf)[0] == "E2BIG"


def test_5_10_btf_info_has_no_name(sim_factory: SimFactory) -> None:
    sim = sim_factory(version="5.10")
    fd = ok(btf_load(sim, btf_blob(btf_int(1), b"\0int\0"))[0])
    assert info_call(sim, fd, BpfBtfInfo()) == (0, 16)
    assert info_call(sim, fd, BpfBtfInfo(name=8, name_len=4))[0] == "E2BIG"


@pytest.mark.parametrize("privileges", ["cap_bpf", "unprivileged"])
def test_ids_and_stats_need_cap_sys_admin(sim_factory: SimFactory, privileges: str) -> None:
    sim = sim_factory(privileges=privileges)
    for cmd in (BpfCmd.MAP_GET_NEXT_ID, BpfCmd.MAP_GET_FD_BY_ID, BpfCmd.BTF_GET_NEXT_ID):
        assert bpf(sim, cmd, GetIdAttr(start_id=1)) == "EPERM"
    assert bpf(sim, BpfCmd.LINK_GET_FD_BY_ID, GetIdAttr()) == "EPERM"
    assert bpf(sim, BpfCmd.ENABLE_STATS, EnableStatsAttr(type=0)) == "EPERM"
    assert bpf(sim, BpfCmd.MAP_GET_NEXT_ID, GetIdAttr(start_id=0x7FFFFFFF)) == "EINVAL"


def test_btf_load_privileges(sim_factory: SimFactory) -> None:
    blob = btf_blob(btf_int(1), b"\0int\0")
    assert isinstance(btf_load(sim_factory(privileges="cap_bpf"), blob)[0], int)
    assert btf_load(sim_factory(privileges="unprivileged"), blob)[0] == "EPERM"
    assert btf_load(sim_factory(privileges="cap_bpf", version="5.4"), blob)[0] == "EPERM"


# -- random attrs -----------------------------------------------------------------------------
FUZZED = (
    BpfCmd.PROG_GET_NEXT_ID,
    BpfCmd.MAP_GET_NEXT_ID,
    BpfCmd.LINK_GET_NEXT_ID,
    BpfCmd.BTF_GET_NEXT_ID,
    BpfCmd.PROG_GET_FD_BY_ID,
    BpfCmd.MAP_GET_FD_BY_ID,
    BpfCmd.LINK_GET_FD_BY_ID,
    BpfCmd.BTF_GET_FD_BY_ID,
    BpfCmd.OBJ_GET_INFO_BY_FD,
    BpfCmd.OBJ_PIN,
    BpfCmd.OBJ_GET,
    BpfCmd.LINK_CREATE,
    BpfCmd.LINK_UPDATE,
    BpfCmd.LINK_DETACH,
    BpfCmd.RAW_TRACEPOINT_OPEN,
    BpfCmd.PROG_ATTACH,
    BpfCmd.PROG_DETACH,
    BpfCmd.PROG_QUERY,
    BpfCmd.ENABLE_STATS,
    BpfCmd.BTF_LOAD,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cmd=st.sampled_from(FUZZED),
    head=st.lists(st.integers(0, 12), min_size=0, max_size=6),
    tail=st.binary(min_size=0, max_size=96),
    size=st.integers(0, 160),
)
def test_random_attrs(cmd: BpfCmd, head: list[int], tail: bytes, size: int) -> None:
    """u32 words chosen among small numbers (likely fds and ids), then random bytes."""
    sim = SimBackend()
    kernel = sim.kernel
    make_map(sim)
    ok(btf_load(sim, btf_blob(btf_int(1), b"\0int\0"))[0])
    prog = kernel.fds.install(fake_program(kernel, ProgType.RAW_TRACEPOINT))
    ok(raw_tp_open(sim, prog, b"sched_switch"))
    attr = bytearray(b"".join(w.to_bytes(4, "little") for w in head) + tail)
    attr = attr.ljust(160, b"\0")
    with contextlib.suppress(OSError):
        sim.bpf(cmd, attr, size)
    kernel.close_all()
    bpffs = kernel.subsystem(Bpffs)
    for path in bpffs.pins():
        bpffs.unlink(path)
    assert kernel.live_objects() == {}
    assert kernel.open_fds() == []
