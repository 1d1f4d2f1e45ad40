"""The perf event ioctls on every backend: return values, errnos and what they write back.

Expected values were measured on the live kernel (Linux 6.18, x86_64, root); the simulator
must give the same. A fuzz test sends random requests and arguments to simulated fds.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap
import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from perf_sim_support import (
    PAGE,
    array_map,
    bpf_output_attr,
    closed_fd,
    ensure_tracefs,
    errno_of,
    load_prog,
    tracepoint_id,
)

from bpfsys.abi import (
    PerfAttrFlag,
    PerfEventAttr,
    PerfIoctl,
    PerfType,
    ProgType,
)
from bpfsys.backend import Backend
from kernelsim.backend import SimBackend
from kernelsim.perf.event import TRANSITIONS, EventState, PerfEvent, Trigger

F = PerfAttrFlag
RW = mmap.PROT_READ | mmap.PROT_WRITE
ALL_ONES = (1 << 64) - 1


@pytest.fixture
def tracefs(backend: Backend) -> None:
    ensure_tracefs(backend)


def open_event(backend: Backend, kind: str) -> int:
    """An event of `kind`: bpf_output, counting (cpu clock), freq, inherit (task) or tracepoint."""
    attrs = {
        "bpf_output": (bpf_output_attr(), -1, 0),
        "counting": (bpf_output_attr(config=0, sample_period=0, sample_type=0), -1, 0),
        "freq": (bpf_output_attr(config=0, flags=int(F.FREQ), sample_period=1000), -1, 0),
        "inherit": (bpf_output_attr(flags=int(F.INHERIT)), 0, -1),
    }
    if kind == "tracepoint":
        ensure_tracefs(backend)
        attr = bpf_output_attr(type=PerfType.TRACEPOINT)
        attr.config = tracepoint_id(backend, "syscalls", "sys_enter_getpid")
        return backend.perf_event_open(attr, -1, 0, -1, 0)
    attr, pid, cpu = attrs[kind]
    return backend.perf_event_open(attr, pid, cpu, -1, 0)


KINDS = ["bpf_output", "counting", "freq", "inherit", "tracepoint"]


@pytest.fixture(params=KINDS)
def event(request: pytest.FixtureRequest, backend: Backend) -> Iterator[tuple[str, int]]:
    fd = open_event(backend, request.param)
    yield request.param, fd
    backend.close(fd)


# ---------------------------------------------------------------------------------------------
# The state machine
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("request_", [PerfIoctl.ENABLE, PerfIoctl.DISABLE, PerfIoctl.RESET])
@pytest.mark.parametrize("arg", [0, 1, ALL_ONES])
def test_enable_disable_reset_always_succeed(
    backend: Backend, event: tuple[str, int], request_: PerfIoctl, arg: int
) -> None:
    assert backend.ioctl(event[1], request_, arg) == 0


REFRESH = {
    "bpf_output": 0,
    "counting": errno.EINVAL,
    "freq": 0,
    "inherit": errno.EINVAL,
    "tracepoint": 0,
}


@pytest.mark.parametrize("arg", [0, 1, 2, ALL_ONES, 1 << 32])
def test_refresh(backend: Backend, event: tuple[str, int], arg: int) -> None:
    kind, fd = event
    assert errno_of(lambda: backend.ioctl(fd, PerfIoctl.REFRESH, arg)) == REFRESH[kind]


PERIODS = [(0, errno.EINVAL), (1, 0), (100_001, 0), (1 << 63, errno.EINVAL), ((1 << 63) - 1, 0)]


@pytest.mark.parametrize(("value", "expected"), PERIODS)
def test_period(backend: Backend, event: tuple[str, int], value: int, expected: int) -> None:
    kind, fd = event
    period = ctypes.c_uint64(value)
    result = errno_of(lambda: backend.ioctl(fd, PerfIoctl.PERIOD, ctypes.addressof(period)))
    assert result == (errno.EINVAL if kind == "counting" else expected)


@pytest.mark.parametrize("pointer", [0, 8])
def test_period_and_id_through_bad_pointers_are_efault(
    backend: Backend, event: tuple[str, int], pointer: int
) -> None:
    for request in (PerfIoctl.PERIOD, PerfIoctl.ID):
        assert (
            errno_of(functools.partial(backend.ioctl, event[1], request, pointer)) == errno.EFAULT
        )


def test_ids_are_distinct_and_increasing(backend: Backend) -> None:
    fds = [open_event(backend, "bpf_output") for _ in range(3)]
    try:
        ids = []
        for fd in fds:
            value = ctypes.c_uint64(0)
            assert backend.ioctl(fd, PerfIoctl.ID, ctypes.addressof(value)) == 0
            ids.append(value.value)
        assert ids[0] > 0 and ids == sorted(ids) and len(set(ids)) == 3
    finally:
        for fd in fds:
            backend.close(fd)


def test_pause_output_without_a_ring_is_einval(backend: Backend, event: tuple[str, int]) -> None:
    assert errno_of(lambda: backend.ioctl(event[1], PerfIoctl.PAUSE_OUTPUT, 1)) == errno.EINVAL


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (0, errno.ENOTTY),
        ((ord("$") << 8) | 12, errno.ENOTTY),  # past MODIFY_ATTRIBUTES
        ((ord("$") << 8) | 7, errno.ENOTTY),  # ID without its size
        ((2 << 30) | (4 << 16) | (ord("$") << 8) | 7, errno.ENOTTY),  # ID with a 4-byte size
        (0xFFFFFFFF, errno.ENOTTY),
        ((1 << 32) | PerfIoctl.ENABLE, 0),  # the cmd is 32 bits
        (0x541B, errno.ENOTTY),  # FIONREAD
        ((ord("X") << 8) | 1, errno.ENOTTY),
    ],
)
def test_unknown_requests(backend: Backend, request_: int, expected: int) -> None:
    fd = open_event(backend, "bpf_output")
    try:
        assert errno_of(lambda: backend.ioctl(fd, request_, 0)) == expected
    finally:
        backend.close(fd)


def test_transitions_table_is_complete() -> None:
    for state in EventState:
        assert set(TRANSITIONS[state]) == set(Trigger)
    assert TRANSITIONS[EventState.OFF][Trigger.ENABLE] is EventState.ACTIVE
    assert TRANSITIONS[EventState.ACTIVE][Trigger.LIMIT_REACHED] is EventState.OFF


def test_state_follows_enable_disable_and_group_flag() -> None:
    sim = SimBackend()
    leader = sim.perf_event_open(bpf_output_attr(flags=int(F.DISABLED)), -1, 0, -1, 0)
    member = sim.perf_event_open(bpf_output_attr(flags=int(F.DISABLED)), -1, 0, leader, 0)
    events = [sim.kernel.fds.get(fd, PerfEvent) for fd in (leader, member)]
    assert [e.state for e in events] == [EventState.OFF, EventState.OFF]
    sim.ioctl(member, PerfIoctl.ENABLE, 1)  # PERF_IOC_FLAG_GROUP: the whole group
    assert [e.state for e in events] == [EventState.ACTIVE, EventState.ACTIVE]
    sim.ioctl(leader, PerfIoctl.DISABLE, 0)
    assert [e.state for e in events] == [EventState.OFF, EventState.ACTIVE]
    sim.kernel.advance(500)
    sim.ioctl(leader, PerfIoctl.REFRESH, 3)
    assert events[0].active and events[0].event_limit == 3
    sim.kernel.advance(700)
    assert events[0].enabled_time() == 700 and events[1].enabled_time() == 1200
    sim.kernel.close_all()
    assert sim.kernel.live_objects() == {}


# ---------------------------------------------------------------------------------------------
# SET_OUTPUT
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def outputs(backend: Backend) -> Iterator[dict[str, int]]:
    fds = {
        "a": backend.perf_event_open(bpf_output_attr(), -1, 0, -1, 0),
        "c": backend.perf_event_open(bpf_output_attr(), -1, 0, -1, 0),
        "cpu1": backend.perf_event_open(bpf_output_attr(), -1, 1, -1, 0),
        "task": backend.perf_event_open(bpf_output_attr(), 0, -1, -1, 0),
        "task2": backend.perf_event_open(bpf_output_attr(), 0, -1, -1, 0),
        "backward": backend.perf_event_open(
            bpf_output_attr(flags=int(F.WRITE_BACKWARD)), -1, 0, -1, 0
        ),
        "clock": backend.perf_event_open(
            bpf_output_attr(flags=int(F.USE_CLOCKID), clockid=1), -1, 0, -1, 0
        ),
    }
    yield fds
    for fd in fds.values():
        backend.close(fd)


def test_set_output_rules(backend: Backend, outputs: dict[str, int]) -> None:
    a, c = outputs["a"], outputs["c"]

    def set_output(fd: int, target: int) -> int:
        return errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_OUTPUT, target))

    assert set_output(c, a) == errno.EINVAL  # a has no ring yet
    assert set_output(c, ALL_ONES) == 0
    assert set_output(c, 0xFFFFFFFF) == errno.EBADF  # not (unsigned long)-1: fd -1
    ring = backend.mmap(a, 3 * PAGE, RW, mmap.MAP_SHARED, 0)
    try:
        assert set_output(c, a) == 0
        assert set_output(c, a) == 0
        assert set_output(c, (1 << 32) | a) == 0  # the fd is an int
        assert set_output(a, a) == errno.EINVAL
        assert set_output(outputs["cpu1"], a) == errno.EINVAL
        assert set_output(outputs["task"], a) == errno.EINVAL
        assert set_output(outputs["backward"], a) == errno.EINVAL
        assert set_output(outputs["clock"], a) == errno.EINVAL
        assert set_output(a, c) == errno.EINVAL  # a's own ring is mapped
        assert set_output(c, closed_fd()) == errno.EBADF
        r, w = os.pipe()
        assert set_output(c, r) == errno.EBADF
        os.close(r)
        os.close(w)
        # A redirected event cannot map the ring it writes into.
        assert errno_of(lambda: backend.mmap(c, 3 * PAGE, RW, mmap.MAP_SHARED, 0)) == errno.EBUSY
        assert errno_of(lambda: backend.mmap(c, 5 * PAGE, RW, mmap.MAP_SHARED, 0)) == errno.EINVAL
        assert set_output(c, ALL_ONES) == 0
    finally:
        backend.munmap(ring)
    task_ring = backend.mmap(outputs["task"], 2 * PAGE, RW, mmap.MAP_SHARED, 0)
    try:
        assert set_output(outputs["task2"], outputs["task"]) == 0
    finally:
        backend.munmap(task_ring)


def test_unmapping_the_target_ends_the_redirection(
    backend: Backend, outputs: dict[str, int]
) -> None:
    a, c = outputs["a"], outputs["c"]
    ring = backend.mmap(a, 3 * PAGE, RW, mmap.MAP_SHARED, 0)
    assert backend.ioctl(c, PerfIoctl.SET_OUTPUT, a) == 0
    backend.munmap(ring)
    assert backend.ioctl(c, PerfIoctl.SET_OUTPUT, ALL_ONES) == 0
    own = backend.mmap(c, 5 * PAGE, RW, mmap.MAP_SHARED, 0)  # c writes into no ring now
    backend.munmap(own)


def test_pause_output(backend: Backend) -> None:
    fd = open_event(backend, "bpf_output")
    try:
        ring = backend.mmap(fd, 2 * PAGE, RW, mmap.MAP_SHARED, 0)
        try:
            for arg in (1, 0, 2, 1 << 32):
                assert backend.ioctl(fd, PerfIoctl.PAUSE_OUTPUT, arg) == 0
        finally:
            backend.munmap(ring)
        one_page = backend.mmap(fd, PAGE, RW, mmap.MAP_SHARED, 0)
        try:
            assert errno_of(lambda: backend.ioctl(fd, PerfIoctl.PAUSE_OUTPUT, 1)) == errno.EINVAL
        finally:
            backend.munmap(one_page)
    finally:
        backend.close(fd)


# ---------------------------------------------------------------------------------------------
# SET_BPF and QUERY_BPF
# ---------------------------------------------------------------------------------------------
PROG_TYPES = [ProgType.TRACEPOINT, ProgType.KPROBE, ProgType.PERF_EVENT, ProgType.SOCKET_FILTER]
EVENT_ATTRS = {
    "bpf_output": lambda b: bpf_output_attr(),
    "clock_sampling": lambda b: bpf_output_attr(config=0),
    "clock_counting": lambda b: bpf_output_attr(config=0, sample_period=0),
    "dummy": lambda b: bpf_output_attr(config=9),
    "syscall_tp": lambda b: bpf_output_attr(
        type=PerfType.TRACEPOINT, config=tracepoint_id(b, "syscalls", "sys_enter_getppid")
    ),
    "sched_tp": lambda b: bpf_output_attr(
        type=PerfType.TRACEPOINT, config=tracepoint_id(b, "sched", "sched_process_exec")
    ),
    "breakpoint": None,
}
SET_BPF = {
    "bpf_output": ProgType.PERF_EVENT,
    "clock_sampling": ProgType.PERF_EVENT,
    "clock_counting": ProgType.PERF_EVENT,
    "dummy": ProgType.PERF_EVENT,
    "syscall_tp": ProgType.TRACEPOINT,
    "sched_tp": ProgType.TRACEPOINT,
}


@pytest.mark.parametrize("event_kind", list(SET_BPF))
@pytest.mark.parametrize("prog_type", PROG_TYPES, ids=lambda p: p.name)
def test_set_bpf_program_types(
    backend: Backend, tracefs: None, event_kind: str, prog_type: ProgType
) -> None:
    make = EVENT_ATTRS[event_kind]
    assert make is not None
    fd = backend.perf_event_open(make(backend), -1, 0, -1, 0)
    prog = load_prog(backend, prog_type)
    other = load_prog(backend, ProgType.TRACEPOINT)
    try:
        result = errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_BPF, prog))
        if prog_type is SET_BPF[event_kind]:
            assert result == 0
            # One program per event, checked before the program type.
            assert errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_BPF, prog)) == errno.EEXIST
            assert errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_BPF, other)) == errno.EEXIST
        else:
            assert result == errno.EINVAL
    finally:
        for closing in (fd, prog, other):
            backend.close(closing)


def test_set_bpf_bad_fds(backend: Backend) -> None:
    fd = open_event(backend, "bpf_output")
    map_fd = array_map(backend)
    r, w = os.pipe()
    try:
        for arg, expected in (
            (ALL_ONES, errno.EBADF),
            (closed_fd(), errno.EBADF),
            (r, errno.EINVAL),
            (map_fd, errno.EINVAL),
            (fd, errno.EINVAL),
        ):
            assert (
                errno_of(functools.partial(backend.ioctl, fd, PerfIoctl.SET_BPF, arg)) == expected
            )
    finally:
        os.close(r)
        os.close(w)
        backend.close(map_fd)
        backend.close(fd)


def query(backend: Backend, fd: int, ids_len: int) -> tuple[int, int, list[int]]:
    """(errno, prog_cnt, ids) of QUERY_BPF with room for `ids_len` ids (pre-filled with 77)."""
    buf = (ctypes.c_uint32 * (2 + max(ids_len, 1)))(*([ids_len, 99] + [77] * max(ids_len, 1)))
    result = errno_of(lambda: backend.ioctl(fd, PerfIoctl.QUERY_BPF, ctypes.addressof(buf)))
    return result, buf[1], list(buf[2 : 2 + ids_len])


def test_query_bpf(backend: Backend, tracefs: None) -> None:
    tp = tracepoint_id(backend, "syscalls", "sys_enter_getpgid")
    first = backend.perf_event_open(
        bpf_output_attr(type=PerfType.TRACEPOINT, config=tp), -1, 0, -1, 0
    )
    second = backend.perf_event_open(
        bpf_output_attr(type=PerfType.TRACEPOINT, config=tp), -1, 1, -1, 0
    )
    progs = [load_prog(backend, ProgType.TRACEPOINT) for _ in range(2)]
    try:
        assert query(backend, first, 4) == (0, 0, [0, 0, 0, 0])
        assert backend.ioctl(first, PerfIoctl.SET_BPF, progs[0]) == 0
        # A program is in the tracepoint's array once, whichever event brings it.
        assert errno_of(lambda: backend.ioctl(second, PerfIoctl.SET_BPF, progs[0])) == errno.EEXIST
        assert backend.ioctl(second, PerfIoctl.SET_BPF, progs[1]) == 0
        result, count, ids = query(backend, second, 3)
        assert (result, count) == (0, 2) and ids[2] == 0 and 0 not in ids[:2]
        assert query(backend, first, 0)[:2] == (0, 2)
        result, count, ids = query(backend, first, 1)
        assert (result, count) == (errno.ENOSPC, 2) and ids[0] != 0
        assert query(backend, first, 65)[0] == errno.E2BIG
        assert errno_of(lambda: backend.ioctl(first, PerfIoctl.QUERY_BPF, 8)) == errno.EFAULT
        backend.close(second)
        second = -1
        assert query(backend, first, 2)[:2] == (0, 1)
    finally:
        for fd in (first, second, *progs):
            if fd >= 0:
                backend.close(fd)


def test_query_bpf_on_other_events_is_einval(backend: Backend) -> None:
    fd = open_event(backend, "bpf_output")
    try:
        assert query(backend, fd, 4)[0] == errno.EINVAL
    finally:
        backend.close(fd)


# ---------------------------------------------------------------------------------------------
# SET_FILTER (the ftrace filter parser, errnos included)
# ---------------------------------------------------------------------------------------------
FILTERS_OPENAT = [
    ("common_pid != 0", 0),
    ("dfd == 3", 0),
    ("dfd == -100", errno.EINVAL),  # dfd is unsigned in the syscall record
    ("flags & 0x40", 0),
    ("flags & 64 && mode == 0", 0),
    ("(dfd == 1 || dfd == 2)", 0),
    ("!(dfd == 1)", 0),
    ("!common_pid == 1", 0),
    ("((common_pid == 1))", 0),
    ("filename == 0", errno.EINVAL),  # a string field
    ('filename ~ "/etc*"', 0),
    ('filename ~ "a[bc]"', 0),
    ("filename == 'abc'", 0),
    ('filename > "a"', errno.EINVAL),
    ('filename !~ "x"', errno.EINVAL),
    ('dfd ~ "x"', errno.EINVAL),
    ("dfd ~ 1", errno.EINVAL),
    ("dfd == x", errno.EINVAL),
    ('dfd == "1"', errno.EINVAL),
    ("dfd", errno.EINVAL),
    ("dfd ==", errno.EINVAL),
    ("dfd = 1", errno.EINVAL),
    ("dfd >= 1 && dfd <= 9", 0),
    ("dfd < 0x10", 0),
    ("dfd == 0777", 0),
    ("dfd == 1a", errno.EINVAL),
    ("dfd == 99999999999999999999", errno.EINVAL),
    ("dfd == 0xffffffffffffffff", 0),
    ("dfd == 18446744073709551616", errno.EINVAL),
    ("dfd != 0 ||", 0),  # the kernel's parser accepts a trailing operator
    ("dfd & 1 == 1", errno.EPERM),
    ("common_pid == 1 (dfd == 1)", errno.EPERM),
    ("common_pid == 1)", errno.EPERM),
    ("&& common_pid == 1", errno.EPERM),
    ('"x"', errno.EPERM),
    ("common_pid == 1 &&& dfd == 1", errno.EPERM),
    ("(common_pid == 1", errno.ENOENT),
    ("common_pid == 1 && (", errno.ENOENT),
    ('common_pid == "1', errno.ESRCH),
    ("", errno.EINVAL),
    ("  ", errno.EINVAL),
    ("()", errno.EINVAL),
    ("common_pid == -1", 0),
    ("common_pid == - 1", errno.EINVAL),
    ("common_pid == +1", errno.EINVAL),
    ("common_pid == 0x", errno.EINVAL),
    ("common_pid == 2147483648", 0),
    ("common_pid == 012345678901234567890123", errno.EINVAL),
    ("common_preempt_count < 300", 0),
    ("__syscall_nr == 257", 0),
    ('CPU == 0 && COMM ~ "py*"', 0),
    ("cpu & 1", 0),
    ("common_cpu == 0", 0),
    ('common_comm == "x"', errno.EINVAL),
    ("comm == 1", errno.EINVAL),
    ("STACKTRACE == 1", 0),
    ("common_timestamp > 0", errno.EINVAL),
    ("dfd.hex == 1", errno.EINVAL),
]
FILTERS_SCHED_SWITCH = [
    ('prev_comm == "swapper/0"', 0),
    ('prev_comm ~ "sw*"', 0),
    ('next_comm ~ "*ab*"', 0),
    ('next_comm ~ "a*b"', 0),
    ("prev_comm == 1", errno.EINVAL),
    ("prev_comm == swapper", errno.EINVAL),
    ('prev_comm < "a"', errno.EINVAL),
    ("prev_state & 1", 0),
    ('prev_comm != "a" && next_pid == 0', 0),
]


def filter_errno(backend: Backend, category: str, name: str, text: str) -> int:
    attr = bpf_output_attr(type=PerfType.TRACEPOINT, config=tracepoint_id(backend, category, name))
    fd = backend.perf_event_open(attr, -1, 0, -1, 0)
    buf = ctypes.create_string_buffer(text.encode())
    try:
        return errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_FILTER, ctypes.addressof(buf)))
    finally:
        backend.close(fd)


@pytest.mark.parametrize(("text", "expected"), FILTERS_OPENAT)
def test_filters_on_sys_enter_openat(
    backend: Backend, tracefs: None, text: str, expected: int
) -> None:
    assert filter_errno(backend, "syscalls", "sys_enter_openat", text) == expected


@pytest.mark.parametrize(("text", "expected"), FILTERS_SCHED_SWITCH)
def test_filters_on_sched_switch(backend: Backend, tracefs: None, text: str, expected: int) -> None:
    assert filter_errno(backend, "sched", "sched_switch", text) == expected


def test_filter_is_set_once_and_only_on_trace_events(backend: Backend, tracefs: None) -> None:
    attr = bpf_output_attr(
        type=PerfType.TRACEPOINT, config=tracepoint_id(backend, "sched", "sched_switch")
    )
    fd = backend.perf_event_open(attr, -1, 0, -1, 0)
    sw = open_event(backend, "bpf_output")
    text = ctypes.create_string_buffer(b"prev_pid > 0")
    try:
        assert backend.ioctl(fd, PerfIoctl.SET_FILTER, ctypes.addressof(text)) == 0
        assert (
            errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_FILTER, ctypes.addressof(text)))
            == errno.EEXIST
        )
        assert (
            errno_of(lambda: backend.ioctl(sw, PerfIoctl.SET_FILTER, ctypes.addressof(text)))
            == errno.EINVAL
        )
        assert errno_of(lambda: backend.ioctl(sw, PerfIoctl.SET_FILTER, 8)) == errno.EFAULT
        long_text = ctypes.create_string_buffer(b"a" * PAGE)
        assert (
            errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_FILTER, ctypes.addressof(long_text)))
            == errno.EINVAL
        )
    finally:
        backend.close(fd)
        backend.close(sw)


# ---------------------------------------------------------------------------------------------
# MODIFY_ATTRIBUTES
# ---------------------------------------------------------------------------------------------
def test_modify_attributes(backend: Backend) -> None:
    fd = open_event(backend, "bpf_output")
    try:

        def modify(attr: object) -> int:
            assert isinstance(attr, ctypes.Structure | ctypes.Array)
            return errno_of(
                lambda: backend.ioctl(fd, PerfIoctl.MODIFY_ATTRIBUTES, ctypes.addressof(attr))
            )

        assert modify(bpf_output_attr()) == errno.EOPNOTSUPP
        assert modify(bpf_output_attr(type=PerfType.TRACEPOINT)) == errno.EINVAL
        assert modify(bpf_output_attr(flags=1 << 63)) == errno.EINVAL
        big = (ctypes.c_uint8 * 200)()
        struct.pack_into("<II", big, 0, PerfType.SOFTWARE, 200)
        big[190] = 1
        assert modify(big) == errno.E2BIG
        assert struct.unpack_from("<I", big, 4)[0] == ctypes.sizeof(PerfEventAttr)
        assert errno_of(lambda: backend.ioctl(fd, PerfIoctl.MODIFY_ATTRIBUTES, 8)) == errno.EFAULT
    finally:
        backend.close(fd)


def test_modify_a_breakpoint(backend: Backend) -> None:
    target = ctypes.c_uint64(0)
    attr = bpf_output_attr(type=PerfType.BREAKPOINT, config=0, bp_type=2, config2=8)
    attr.config1 = ctypes.addressof(target)
    fd = backend.perf_event_open(attr, 0, -1, -1, 0)
    try:
        new = bpf_output_attr(type=PerfType.BREAKPOINT, config=0, bp_type=3, config2=4)
        new.config1 = ctypes.addressof(target)
        assert backend.ioctl(fd, PerfIoctl.MODIFY_ATTRIBUTES, ctypes.addressof(new)) == 0
        new.config2 = 3
        result = errno_of(
            lambda: backend.ioctl(fd, PerfIoctl.MODIFY_ATTRIBUTES, ctypes.addressof(new))
        )
        assert result == errno.EINVAL
    finally:
        backend.close(fd)


# ---------------------------------------------------------------------------------------------
# Profiles and fuzz (simulator)
# ---------------------------------------------------------------------------------------------
def test_requests_newer_than_the_kernel_are_enotty(sim_factory: object) -> None:
    assert callable(sim_factory)
    sim = sim_factory(version="4.14")
    fd = sim.perf_event_open(bpf_output_attr(size=112), -1, 0, -1, 0)
    for request in (PerfIoctl.QUERY_BPF, PerfIoctl.MODIFY_ATTRIBUTES):
        assert errno_of(functools.partial(sim.ioctl, fd, request, 8)) == errno.ENOTTY
    assert sim.ioctl(fd, PerfIoctl.ENABLE, 0) == 0


def test_query_bpf_needs_perfmon(sim_factory: object) -> None:
    assert callable(sim_factory)
    sim = sim_factory(privileges="unprivileged", perf_event_paranoid=-1)
    fd = sim.perf_event_open(bpf_output_attr(), 0, -1, -1, 0)
    assert query(sim, fd, 1)[0] == errno.EPERM


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request_=st.sampled_from([int(r) for r in PerfIoctl]) | st.integers(0, (1 << 64) - 1),
    arg=st.sampled_from([0, 1, 8, ALL_ONES, 0xFFFFFFFF]) | st.integers(0, (1 << 64) - 1),
    which=st.sampled_from(["event", "closed", "tracepoint"]),
)
def test_random_ioctls_only_raise_oserror(request_: int, arg: int, which: str) -> None:
    sim = SimBackend()
    event = sim.perf_event_open(bpf_output_attr(), -1, 0, -1, 0)
    attr = bpf_output_attr(
        type=PerfType.TRACEPOINT, config=tracepoint_id(sim, "sched", "sched_switch")
    )
    tracepoint = sim.perf_event_open(attr, -1, 0, -1, 0)
    fd = {"event": event, "tracepoint": tracepoint, "closed": closed_fd()}[which]
    with contextlib.suppress(OSError):
        sim.ioctl(fd, request_, arg)
    sim.kernel.close_all()
    assert sim.kernel.live_objects() == {}
