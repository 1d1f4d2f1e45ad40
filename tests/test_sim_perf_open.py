"""perf_event_open on every backend: the errno (or success) and the attr size written back.

Every expected value here was measured on the live kernel (Linux 6.18, x86_64, root, two CPUs,
no kprobe PMU); the same assertions run on the simulated kernel. Profile cases (older kernels,
unprivileged callers) run on the simulator only, and a fuzz test feeds random attrs to it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from perf_sim_support import (
    PAGE,
    array_map,
    bpf_output_attr,
    closed_fd,
    ensure_tracefs,
    open_errno,
    pmu_type,
    tracepoint_id,
)

from bpfsys.abi import (
    PERF_FLAG_FD_CLOEXEC,
    PERF_FLAG_FD_NO_GROUP,
    PERF_FLAG_FD_OUTPUT,
    PERF_FLAG_PID_CGROUP,
    PerfAttrFlag,
    PerfEventAttr,
    PerfType,
    SampleType,
)
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.perf.pmu import PmuRegistry

ATTR_SIZE = ctypes.sizeof(PerfEventAttr)
F = PerfAttrFlag
S = SampleType


@pytest.fixture
def tracefs(backend: Backend) -> None:
    ensure_tracefs(backend)


# ---------------------------------------------------------------------------------------------
# attr.size
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "nonzero_at", "expected", "written_back"),
    [
        (0, None, 0, 0),  # 0 means PERF_ATTR_SIZE_VER0
        (1, None, errno.E2BIG, 136),
        (63, None, errno.E2BIG, 136),
        (64, None, 0, 64),
        (65, None, 0, 65),
        (100, None, 0, 100),
        (135, None, 0, 135),
        (136, None, 0, 136),
        (200, None, 0, 200),
        (4096, None, 0, 4096),  # up to a page, with a zero tail
        (4097, None, errno.E2BIG, 136),
        (8192, None, errno.E2BIG, 136),
        (137, 136, errno.E2BIG, 136),
        (200, 199, errno.E2BIG, 136),
        (144, 140, errno.E2BIG, 136),
        (4096, 4095, errno.E2BIG, 136),
    ],
)
def test_attr_size(
    backend: Backend, size: int, nonzero_at: int | None, expected: int, written_back: int
) -> None:
    buf = bytearray(bytes(bpf_output_attr()) + bytes(9000))
    struct.pack_into("<I", buf, 4, size)
    if nonzero_at is not None:
        buf[nonzero_at] = 1
    assert open_errno(backend, buf) == expected
    assert struct.unpack_from("<I", buf, 4)[0] == written_back


def test_attr_size_read_from_a_short_buffer_is_efault(sim_factory: Callable[..., Any]) -> None:
    sim = sim_factory()
    assert open_errno(sim, bytearray(6)) == errno.EFAULT
    buf = bytearray(bytes(bpf_output_attr())[:100])
    struct.pack_into("<I", buf, 4, 120)
    assert open_errno(sim, buf) == errno.EFAULT


# ---------------------------------------------------------------------------------------------
# attr fields
# ---------------------------------------------------------------------------------------------
FIELD_CASES: list[tuple[str, dict[str, int], int]] = [
    ("aux_output", {"flags": 1 << 31}, errno.EOPNOTSUPP),
    ("inherit_thread_alone", {"flags": 1 << 35}, errno.EINVAL),
    ("sigtrap_alone", {"flags": 1 << 37}, errno.EINVAL),
    ("flag_bit_38", {"flags": 1 << 38}, errno.EINVAL),
    ("flag_bit_50", {"flags": 1 << 50}, errno.EINVAL),
    ("flag_bit_63", {"flags": 1 << 63}, errno.EINVAL),
    ("remove_on_exec", {"flags": 1 << 36}, 0),
    ("namespaces", {"flags": int(F.NAMESPACES)}, 0),
    ("write_backward", {"flags": int(F.WRITE_BACKWARD)}, 0),
    ("precise_ip_3", {"flags": int(F.PRECISE_IP_0 | F.PRECISE_IP_1)}, 0),
    ("reserved_2", {"_reserved_2": 1}, errno.EINVAL),
    ("aux_start_paused", {"_reserved_3": 1}, errno.EOPNOTSUPP),
    ("aux_pause", {"_reserved_3": 2}, errno.EINVAL),
    ("aux_resume", {"_reserved_3": 4}, errno.EINVAL),
    ("aux_action_bit_3", {"_reserved_3": 8}, errno.EINVAL),
    ("aux_action_bit_31", {"_reserved_3": 1 << 31}, errno.EINVAL),
    ("aux_sample_size", {"aux_sample_size": 1}, errno.EINVAL),
    ("aux_watermark", {"aux_watermark": 1}, 0),
    ("sample_type_bit_24", {"sample_type": 1 << 24}, 0),
    ("sample_type_bit_25", {"sample_type": 1 << 25}, errno.EINVAL),
    ("read_format_lost", {"read_format": 1 << 4}, 0),
    ("read_format_bit_5", {"read_format": 1 << 5}, errno.EINVAL),
    (
        "branch_only_plm",
        {"sample_type": int(S.BRANCH_STACK), "branch_sample_type": 1},
        errno.EINVAL,
    ),
    ("branch_any", {"sample_type": int(S.BRANCH_STACK), "branch_sample_type": 8}, errno.EOPNOTSUPP),
    (
        "branch_bit_19",
        {"sample_type": int(S.BRANCH_STACK), "branch_sample_type": 1 << 19},
        errno.EOPNOTSUPP,
    ),
    (
        "branch_bit_20",
        {"sample_type": int(S.BRANCH_STACK), "branch_sample_type": 1 << 20},
        errno.EINVAL,
    ),
    ("branch_type_unused", {"branch_sample_type": 1 << 63}, 0),
    ("regs_user_ax", {"sample_type": int(S.REGS_USER), "sample_regs_user": 1}, 0),
    ("regs_user_ds", {"sample_type": int(S.REGS_USER), "sample_regs_user": 1 << 12}, errno.EINVAL),
    (
        "regs_user_reserved",
        {"sample_type": int(S.REGS_USER), "sample_regs_user": 1 << 24},
        errno.EINVAL,
    ),
    ("regs_user_none", {"sample_type": int(S.REGS_USER), "sample_regs_user": 0}, errno.EINVAL),
    (
        "regs_user_xmm",
        {"sample_type": int(S.REGS_USER), "sample_regs_user": 1 << 32},
        errno.EOPNOTSUPP,
    ),
    ("regs_user_xmm_unused", {"sample_regs_user": 1 << 63}, errno.EOPNOTSUPP),
    ("regs_intr_gs", {"sample_type": int(S.REGS_INTR), "sample_regs_intr": 1 << 15}, errno.EINVAL),
    ("regs_intr_r8", {"sample_type": int(S.REGS_INTR), "sample_regs_intr": 1 << 16}, 0),
    (
        "stack_user_unaligned",
        {"sample_type": int(S.STACK_USER), "sample_stack_user": 7},
        errno.EINVAL,
    ),
    (
        "stack_user_ushrt_max",
        {"sample_type": int(S.STACK_USER), "sample_stack_user": 65535},
        errno.EINVAL,
    ),
    ("stack_user_65528", {"sample_type": int(S.STACK_USER), "sample_stack_user": 65528}, 0),
    ("weight_and_struct", {"sample_type": int(S.WEIGHT | S.WEIGHT_STRUCT)}, errno.EINVAL),
    ("clockid_realtime_coarse", {"flags": int(F.USE_CLOCKID), "clockid": 5}, errno.EINVAL),
    ("clockid_monotonic_raw", {"flags": int(F.USE_CLOCKID), "clockid": 4}, 0),
    ("clockid_tai", {"flags": int(F.USE_CLOCKID), "clockid": 11}, 0),
    ("clockid_negative", {"flags": int(F.USE_CLOCKID), "clockid": -1}, errno.EINVAL),
    ("clockid_unused", {"clockid": 99}, 0),
    ("callchain_deep", {"sample_type": int(S.CALLCHAIN), "sample_max_stack": 200}, errno.EOVERFLOW),
    ("callchain_127", {"sample_type": int(S.CALLCHAIN), "sample_max_stack": 127}, 0),
    ("freq_max", {"flags": int(F.FREQ), "sample_period": 100_000}, 0),
    ("freq_above_max", {"flags": int(F.FREQ), "sample_period": 100_001}, errno.EINVAL),
    ("period_bit_63", {"sample_period": 1 << 63}, errno.EINVAL),
    ("period_max", {"sample_period": (1 << 63) - 1}, 0),
    (
        "remove_and_enable_on_exec",
        {"flags": int(F.REMOVE_ON_EXEC | F.ENABLE_ON_EXEC)},
        errno.EINVAL,
    ),
    ("sigtrap_without_task", {"flags": int(F.SIGTRAP | F.REMOVE_ON_EXEC)}, errno.EINVAL),
    ("config3_on_software", {"config3": 1, "config1": 1, "config2": 1}, 0),
    (
        "all_sample_bits_but_branch_regs_stack",
        {
            "sample_type": 0x1FFFFFF
            & ~int(S.BRANCH_STACK | S.REGS_USER | S.STACK_USER | S.REGS_INTR | S.WEIGHT_STRUCT)
        },
        0,
    ),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_attr_fields(backend: Backend, fields: dict[str, int], expected: int) -> None:
    assert open_errno(backend, bpf_output_attr(**fields)) == expected


TASK_CASES: list[tuple[str, dict[str, int], int]] = [
    ("sigtrap_with_task", {"flags": int(F.SIGTRAP | F.REMOVE_ON_EXEC), "sig_data": 5}, 0),
    ("inherit_thread_with_inherit", {"flags": int(F.INHERIT | F.INHERIT_THREAD)}, 0),
    ("inherit_sample_read", {"flags": int(F.INHERIT), "sample_type": int(S.READ)}, errno.EINVAL),
    ("inherit_sample_read_tid", {"flags": int(F.INHERIT), "sample_type": int(S.READ | S.TID)}, 0),
]


@pytest.mark.parametrize(
    ("fields", "expected"), [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES]
)
def test_attr_fields_of_a_task_event(
    backend: Backend, fields: dict[str, int], expected: int
) -> None:
    assert open_errno(backend, bpf_output_attr(**fields), pid=0, cpu=-1) == expected


# ---------------------------------------------------------------------------------------------
# pid, cpu, flags
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pid", "cpu", "flags", "expected"),
    [
        (-1, -1, 0, errno.EINVAL),
        (-1, 2, 0, errno.EINVAL),  # two possible CPUs
        (-1, -2, 0, errno.EINVAL),
        (-1, 1 << 20, 0, errno.EINVAL),
        (-1, 1, 0, 0),
        (0, -1, 0, 0),
        (0, 0, 0, 0),
        (0, 2, 0, errno.EINVAL),
        (0, -2, 0, errno.EINVAL),
        ((1 << 31) - 1, -1, 0, errno.ESRCH),
        ((1 << 31) - 1, 99, 0, errno.ESRCH),  # the task is looked up before the CPU
        (-2, -1, 0, errno.ESRCH),
        (-1, 0, PERF_FLAG_FD_NO_GROUP, 0),
        (-1, 0, PERF_FLAG_FD_OUTPUT, 0),
        (-1, 0, PERF_FLAG_FD_CLOEXEC, 0),
        (-1, 0, PERF_FLAG_PID_CGROUP, errno.EINVAL),  # a cgroup needs a cgroup fd in pid
        (0, -1, PERF_FLAG_PID_CGROUP, errno.EINVAL),
        (0, 0, PERF_FLAG_PID_CGROUP, errno.EBADF),  # fd 0 is no cgroup directory
        (-1, 0, 1 << 4, errno.EINVAL),
        (-1, 0, 1 << 40, errno.EINVAL),
        (-1, 0, PERF_FLAG_PID_CGROUP | PERF_FLAG_FD_CLOEXEC, errno.EINVAL),
    ],
)
def test_pid_cpu_flags(backend: Backend, pid: int, cpu: int, flags: int, expected: int) -> None:
    assert open_errno(backend, bpf_output_attr(), pid, cpu, -1, flags) == expected


@pytest.mark.parametrize("cloexec", [True, False])
def test_cloexec_flag_is_honoured(backend: Backend, cloexec: bool) -> None:
    flags = PERF_FLAG_FD_CLOEXEC if cloexec else 0
    fd = backend.perf_event_open(bpf_output_attr(), -1, 0, -1, flags)
    try:
        assert os.get_inheritable(fd) is not cloexec
    finally:
        backend.close(fd)


# ---------------------------------------------------------------------------------------------
# PMUs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("type_", "config", "expected"),
    [
        (PerfType.HARDWARE, 0, errno.ENOENT),  # no hardware PMU on this machine
        (PerfType.HARDWARE, (8 << 32) | 0, errno.ENOENT),  # extended type: the uprobe PMU
        (PerfType.HW_CACHE, 0, errno.ENOENT),
        (PerfType.RAW, 0, errno.ENOENT),
        (PerfType.SOFTWARE, 0, 0),
        (PerfType.SOFTWARE, 1, 0),
        (PerfType.SOFTWARE, 9, 0),
        (PerfType.SOFTWARE, 11, 0),
        (PerfType.SOFTWARE, 12, errno.ENOENT),
        (PerfType.SOFTWARE, 999, errno.ENOENT),
        (PerfType.TRACEPOINT, 0, errno.EINVAL),
        (PerfType.TRACEPOINT, 0xFFFF_FFFF, errno.EINVAL),
        (PerfType.BREAKPOINT, 0, errno.EINVAL),
        (6, 0, 0),  # the cpu_clock PMU
        (6, 1, errno.ENOENT),
        (7, 1, 0),  # the task_clock PMU
        (7, 0, errno.ENOENT),
        (77, 0, errno.ENOENT),
        (0xFFFF_FFFF, 0, errno.ENOENT),
    ],
)
def test_pmu_types(backend: Backend, type_: int, config: int, expected: int) -> None:
    assert open_errno(backend, bpf_output_attr(type=type_, config=config)) == expected


@pytest.mark.parametrize(
    ("sample_period", "config", "expected"), [(0, 0, 0), (1, 0, errno.EINVAL), (0, 1, errno.EINVAL)]
)
def test_msr_pmu(backend: Backend, sample_period: int, config: int, expected: int) -> None:
    attr = bpf_output_attr(type=pmu_type(backend, "msr"), config=config)
    attr.sample_period, attr.sample_type = sample_period, 0
    assert open_errno(backend, attr) == expected


BREAKPOINT_CASES = [
    (1, 8, errno.EINVAL),  # no read-only breakpoints on x86
    (2, 8, 0),
    (3, 8, 0),
    (4, 8, 0),
    (2, 1, 0),
    (2, 2, 0),
    (2, 4, 0),
    (2, 3, errno.EINVAL),
    (2, 16, errno.EOPNOTSUPP),
    (4, 1, errno.EINVAL),  # an execute breakpoint covers a long
    (0, 8, errno.EINVAL),
    (5, 8, errno.EINVAL),
]


@pytest.mark.parametrize(("bp_type", "bp_len", "expected"), BREAKPOINT_CASES)
def test_breakpoints(backend: Backend, bp_type: int, bp_len: int, expected: int) -> None:
    target = ctypes.c_uint64(0)
    attr = bpf_output_attr(
        type=PerfType.BREAKPOINT,
        config=0,
        bp_type=bp_type,
        config1=ctypes.addressof(target),
        config2=bp_len,
    )
    assert open_errno(backend, attr, pid=0, cpu=-1) == expected


@pytest.mark.parametrize(("exclude_kernel", "expected"), [(False, 0), (True, errno.EINVAL)])
def test_kernel_address_breakpoint(backend: Backend, exclude_kernel: bool, expected: int) -> None:
    attr = bpf_output_attr(type=PerfType.BREAKPOINT, config=0, bp_type=2, config2=8)
    attr.config1 = 0xFFFF_FFFF_8100_0000
    attr.flags = int(F.EXCLUDE_KERNEL) if exclude_kernel else 0
    assert open_errno(backend, attr, pid=0, cpu=-1) == expected


# ---------------------------------------------------------------------------------------------
# Tracepoints
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pid", "cpu", "flags", "expected"),
    [
        (-1, 0, 0, 0),
        (0, -1, 0, 0),
        (-1, -1, 0, errno.EINVAL),
        (-1, 0, int(F.EXCLUDE_KERNEL | F.EXCLUDE_USER | F.EXCLUDE_HV | F.EXCLUDE_IDLE), 0),
        (-1, 0, int(F.FREQ), 0),
    ],
)
def test_tracepoint_events(
    backend: Backend, tracefs: None, pid: int, cpu: int, flags: int, expected: int
) -> None:
    attr = bpf_output_attr(type=PerfType.TRACEPOINT, flags=flags)
    attr.config = tracepoint_id(backend, "syscalls", "sys_enter_getpid")
    if flags & F.FREQ:
        attr.sample_period = 100
    assert open_errno(backend, attr, pid, cpu) == expected


def test_tracepoint_id_with_high_config_bits_is_einval(backend: Backend, tracefs: None) -> None:
    attr = bpf_output_attr(type=PerfType.TRACEPOINT)
    attr.config = tracepoint_id(backend, "sched", "sched_switch") | 1 << 32
    assert open_errno(backend, attr) == errno.EINVAL


def test_counting_tracepoint_without_raw(backend: Backend, tracefs: None) -> None:
    attr = bpf_output_attr(type=PerfType.TRACEPOINT, sample_period=0, sample_type=0)
    attr.config = tracepoint_id(backend, "sched", "sched_process_exec")
    assert open_errno(backend, attr) == 0


# ---------------------------------------------------------------------------------------------
# Uprobes (files nothing maps, so the kernel does not decode instructions yet)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def probe_files(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "small").write_bytes(bytes(100))
    (tmp_path / "dir").mkdir()
    yield tmp_path


UPROBE_CASES: list[tuple[str, bytes | None, int, int, int]] = [
    ("empty_offset_0", b"empty", 0, 0, 0),
    ("empty_offset_page", b"empty", PAGE, 0, errno.EINVAL),
    ("small_at_end", b"small", 100, 0, 0),
    ("small_beyond_end", b"small", 101, 0, errno.EINVAL),
    ("small_negative_offset", b"small", 1 << 63, 0, 0),  # a negative loff_t
    ("retprobe", b"small", 8, 1, 0),
    ("ref_ctr_offset", b"small", 8, 8 << 32, 0),
    ("missing_file", b"missing", 0, 0, errno.ENOENT),
    ("directory", b"dir", 0, 0, errno.EINVAL),
    ("empty_path", b"", 0, 0, errno.EINVAL),
    ("no_path", None, 0, 0, errno.EINVAL),
    ("path_too_long", b"a" * 5000, 0, 0, errno.E2BIG),
]


@pytest.mark.parametrize(
    ("name", "offset", "config", "expected"),
    [c[1:] for c in UPROBE_CASES],
    ids=[c[0] for c in UPROBE_CASES],
)
def test_uprobe_pmu(
    backend: Backend,
    probe_files: Path,
    name: bytes | None,
    offset: int,
    config: int,
    expected: int,
) -> None:
    keep: list[ctypes.Array[ctypes.c_char]] = []
    attr = bpf_output_attr(type=pmu_type(backend, "uprobe"), config=config, config2=offset)
    attr.sample_period = attr.sample_type = 0
    if name is not None:
        path = name if not name or name.startswith(b"a") else bytes(probe_files) + b"/" + name
        keep.append(ctypes.create_string_buffer(path))
        attr.config1 = ctypes.addressof(keep[0])
    assert open_errno(backend, attr) == expected


def test_uprobe_path_pointer_fault_and_relative_path(backend: Backend, probe_files: Path) -> None:
    attr = bpf_output_attr(type=pmu_type(backend, "uprobe"), config=0, config1=8)
    assert open_errno(backend, attr) == errno.EFAULT
    relative = ctypes.create_string_buffer(b"no/such/relative/file")
    attr.config1 = ctypes.addressof(relative)
    assert open_errno(backend, attr) == errno.ENOENT


def test_uprobe_without_task_or_cpu_is_einval(backend: Backend, probe_files: Path) -> None:
    path = ctypes.create_string_buffer(bytes(probe_files / "small"))
    attr = bpf_output_attr(type=pmu_type(backend, "uprobe"), config=0)
    attr.config1 = ctypes.addressof(path)
    assert open_errno(backend, attr, -1, -1) == errno.EINVAL


# ---------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def leaders(backend: Backend) -> Iterator[dict[str, int]]:
    fds = {
        "cpu0": backend.perf_event_open(bpf_output_attr(), -1, 0, -1, 0),
        "cpu1": backend.perf_event_open(bpf_output_attr(), -1, 1, -1, 0),
        "task": backend.perf_event_open(bpf_output_attr(), 0, -1, -1, 0),
        "map": array_map(backend),
    }
    fds["member"] = backend.perf_event_open(bpf_output_attr(), -1, 0, fds["cpu0"], 0)
    r, w = os.pipe()
    yield fds | {"pipe": r}
    os.close(r)
    os.close(w)
    for name in ("member", "cpu0", "cpu1", "task", "map"):
        backend.close(fds[name])


GROUP_CASES: list[tuple[str, str | int, int, int, int, dict[str, int], int]] = [
    ("pipe_fd", "pipe", -1, 0, 0, {}, errno.EBADF),
    ("map_fd", "map", -1, 0, 0, {}, errno.EBADF),
    ("closed_fd", "closed", -1, 0, 0, {}, errno.EBADF),
    ("fd_minus_2", -2, -1, 0, 0, {}, errno.EBADF),
    ("same_cpu", "cpu0", -1, 0, 0, {}, 0),
    ("other_cpu", "cpu0", -1, 1, 0, {}, errno.EINVAL),
    ("task_into_cpu_group", "cpu0", 0, -1, 0, {}, errno.EINVAL),
    ("task_into_task_group", "task", 0, -1, 0, {}, 0),
    ("task_cpu0_into_task_group", "task", 0, 0, 0, {}, errno.EINVAL),
    ("pinned_member", "cpu0", -1, 0, 0, {"flags": int(F.PINNED)}, errno.EINVAL),
    ("exclusive_member", "cpu0", -1, 0, 0, {"flags": int(F.EXCLUSIVE)}, errno.EINVAL),
    ("inherit_mismatch", "task", 0, -1, 0, {"flags": int(F.INHERIT)}, errno.EINVAL),
    ("clock_mismatch", "cpu0", -1, 0, 0, {"flags": int(F.USE_CLOCKID), "clockid": 1}, errno.EINVAL),
    ("no_group_other_cpu", "cpu1", -1, 0, PERF_FLAG_FD_NO_GROUP, {}, 0),
    ("member_as_leader", "member", -1, 0, 0, {}, errno.EINVAL),
    ("fd_output_unmapped", "cpu0", -1, 0, PERF_FLAG_FD_OUTPUT, {}, errno.EINVAL),
    ("fd_output_no_group_unmapped", "cpu0", -1, 0, PERF_FLAG_FD_OUTPUT | 1, {}, errno.EINVAL),
]


@pytest.mark.parametrize(
    ("group", "pid", "cpu", "flags", "fields", "expected"),
    [c[1:] for c in GROUP_CASES],
    ids=[c[0] for c in GROUP_CASES],
)
def test_groups(
    backend: Backend,
    leaders: dict[str, int],
    group: str | int,
    pid: int,
    cpu: int,
    flags: int,
    fields: dict[str, int],
    expected: int,
) -> None:
    group_fd = (
        group if isinstance(group, int) else (closed_fd() if group == "closed" else leaders[group])
    )
    assert open_errno(backend, bpf_output_attr(**fields), pid, cpu, group_fd, flags) == expected


def test_fd_output_into_a_mapped_group_fd(backend: Backend, leaders: dict[str, int]) -> None:
    import mmap as mmap_

    mapping = backend.mmap(
        leaders["cpu0"], 3 * PAGE, mmap_.PROT_READ | mmap_.PROT_WRITE, mmap_.MAP_SHARED, 0
    )
    try:
        fd = backend.perf_event_open(bpf_output_attr(), -1, 0, leaders["cpu0"], PERF_FLAG_FD_OUTPUT)
        backend.close(fd)
    finally:
        backend.munmap(mapping)


# ---------------------------------------------------------------------------------------------
# Profiles and privileges (simulator only)
# ---------------------------------------------------------------------------------------------
def test_a_5_4_kernel_writes_back_its_112_byte_size(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(version="5.4")
    buf = bytearray(bytes(bpf_output_attr()) + bytes(64))
    buf[120] = 1  # sig_data: a 5.13 field, beyond what 5.4 knows
    assert open_errno(sim, buf) == errno.E2BIG
    assert struct.unpack_from("<I", buf, 4)[0] == 112
    assert open_errno(sim, bytearray(bytes(bpf_output_attr()))) == 0  # a zero tail is fine


@pytest.mark.parametrize(
    ("version", "fields", "expected"),
    [
        ("5.4", {"flags": int(F.CGROUP)}, errno.EINVAL),  # a 5.7 bit
        ("5.10", {"flags": int(F.CGROUP)}, 0),
        ("5.10", {"flags": int(F.SIGTRAP | F.REMOVE_ON_EXEC)}, errno.EINVAL),  # 5.13 bits
        ("5.4", {"sample_type": int(S.CGROUP)}, errno.EINVAL),
        ("5.15", {"read_format": 1 << 4}, errno.EINVAL),  # PERF_FORMAT_LOST is 6.0
        ("6.1", {"_reserved_3": 1}, errno.EINVAL),  # aux_start_paused is 6.13
        ("5.4", {"config": 11}, errno.ENOENT),  # CGROUP_SWITCHES is 5.13
    ],
)
def test_version_profiles(
    sim_factory: Callable[..., SimBackend], version: str, fields: dict[str, int], expected: int
) -> None:
    assert open_errno(sim_factory(version=version), bpf_output_attr(**fields)) == expected


@pytest.mark.parametrize(
    ("version", "kprobe", "uprobe"), [("5.4", 6, 7), ("6.1", 6, 7), ("6.18", 8, 9)]
)
def test_dynamic_pmu_types_by_version(
    sim_factory: Callable[..., SimBackend], version: str, kprobe: int, uprobe: int
) -> None:
    sim = sim_factory(version=version)
    assert (pmu_type(sim, "kprobe"), pmu_type(sim, "uprobe")) == (kprobe, uprobe)


def test_the_kprobe_pmu_can_be_removed(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory()
    registry = sim.kernel.subsystem(PmuRegistry)
    assert registry.has("kprobe")
    registry.unregister("kprobe")
    assert not registry.has("kprobe")
    with pytest.raises(OSError) as info:
        sim.read_file("/sys/bus/event_source/devices/kprobe/type")
    assert info.value.errno == errno.ENOENT
    assert open_errno(sim, bpf_output_attr(type=8, config=0, sample_period=0)) == errno.ENOENT
    assert pmu_type(sim, "uprobe") == 9  # types are not reused


@pytest.mark.parametrize(
    ("privileges", "paranoid", "pid", "cpu", "fields", "expected"),
    [
        ("unprivileged", 2, 0, -1, {}, errno.EACCES),  # kernel profiling
        ("unprivileged", 2, 0, -1, {"flags": int(F.EXCLUDE_KERNEL)}, 0),
        ("unprivileged", 2, -1, 0, {"flags": int(F.EXCLUDE_KERNEL)}, errno.EACCES),  # CPU-wide
        ("unprivileged", 0, -1, 0, {"flags": int(F.EXCLUDE_KERNEL)}, 0),  # 0 allows CPU events
        ("unprivileged", -1, -1, 0, {}, 0),
        ("unprivileged", 1, 0, -1, {}, 0),
        ("unprivileged", 2, 0, -1, {"flags": int(F.EXCLUDE_KERNEL | F.NAMESPACES)}, errno.EACCES),
        ("cap_bpf", 2, -1, 0, {}, 0),  # CAP_PERFMON
    ],
)
def test_privileges(
    sim_factory: Callable[..., SimBackend],
    privileges: str,
    paranoid: int,
    pid: int,
    cpu: int,
    fields: dict[str, int],
    expected: int,
) -> None:
    sim = sim_factory(privileges=privileges, perf_event_paranoid=paranoid)
    assert open_errno(sim, bpf_output_attr(**fields), pid, cpu) == expected


def test_unprivileged_probes_and_raw_tracepoints(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(privileges="unprivileged", perf_event_paranoid=-1)
    uprobe = bpf_output_attr(type=9, config=0, config1=8)
    assert open_errno(sim, uprobe) == errno.EACCES  # the probe PMUs need CAP_PERFMON
    sim = sim_factory(privileges="unprivileged", perf_event_paranoid=1)
    own_syscalls = bpf_output_attr(type=PerfType.TRACEPOINT, flags=int(F.EXCLUDE_KERNEL))
    own_syscalls.config = 309  # syscalls/sys_enter_getpid: TRACE_EVENT_FL_CAP_ANY
    assert open_errno(sim, own_syscalls, 0, -1) == 0
    own_syscalls.config = 372  # sched/sched_switch: raw data needs CAP_PERFMON
    assert open_errno(sim, own_syscalls, 0, -1) == errno.EPERM


def test_offline_cpu_is_enodev(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(cpus=4, online_cpus=2)
    assert open_errno(sim, bpf_output_attr(), -1, 3) == errno.ENODEV
    assert open_errno(sim, bpf_output_attr(), -1, 4) == errno.EINVAL
    assert open_errno(sim, bpf_output_attr(), 0, 3) == 0  # a task event on an offline CPU


def test_simulated_task_pid_is_current(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory(pid=777)
    assert open_errno(sim, bpf_output_attr(), 777, -1) == 0
    assert open_errno(sim, bpf_output_attr(), os.getpid(), -1) == errno.ESRCH


# ---------------------------------------------------------------------------------------------
# Fuzz
# ---------------------------------------------------------------------------------------------
_ATTR_BYTES = st.binary(min_size=ATTR_SIZE, max_size=ATTR_SIZE)
_INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=_ATTR_BYTES,
    size=st.sampled_from([0, 64, 72, 112, 128, 136, 200, 5000]) | st.integers(0, 300),
    type_=st.sampled_from([0, 1, 2, 5, 6, 7, 8, 9, 10]) | st.integers(0, 1 << 32),
    config=st.integers(0, 12) | st.integers(0, (1 << 64) - 1),
    flags_word=st.integers(0, (1 << 64) - 1) | st.just(0),
    pid=st.sampled_from([-1, 0, 4242]) | _INT32,
    cpu=st.sampled_from([-1, 0, 1]) | _INT32,
    group=st.sampled_from([-1]) | _INT32,
    flags=st.sampled_from([0, 8]) | st.integers(0, (1 << 64) - 1),
)
def test_random_attrs_only_raise_oserror(
    image: bytes,
    size: int,
    type_: int,
    config: int,
    flags_word: int,
    pid: int,
    cpu: int,
    group: int,
    flags: int,
) -> None:
    sim = SimBackend()
    buf = bytearray(image + bytes(5000))
    struct.pack_into("<IIQ", buf, 0, type_ & 0xFFFFFFFF, size, config)
    struct.pack_into("<Q", buf, PerfEventAttr.flags.offset, flags_word)
    try:
        fd = sim.perf_event_open(buf, pid, cpu, group, flags)
    except OSError:
        pass
    else:
        sim.close(fd)
    sim.kernel.close_all()
    assert sim.kernel.live_objects() == {}
