"""tracefs and the PMU sysfs files on every backend, the simulator's formats against the live
kernel's, uprobe_events on both, and kprobe_events / trace_pipe on the simulator (the live
machine has no kprobes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from perf_sim_support import (
    PMU_ROOT,
    TRACEFS,
    bpf_output_attr,
    ensure_tracefs,
    errno_of,
    open_errno,
)

from bpfsys.abi import PerfIoctl, PerfType
from bpfsys.backend import Backend, LiveBackend
from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.perf.pmu import PmuRegistry
from kernelsim.tracefs import Tracefs


@pytest.fixture
def tracefs(backend: Backend) -> None:
    ensure_tracefs(backend)


def read_text(backend: Backend, path: str) -> str:
    return backend.read_file(path).decode()


def without_id(text: str) -> str:
    return re.sub(r"^ID: \d+$", "ID: N", text, flags=re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# PMU sysfs files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("software/type", "1\n"),
        ("tracepoint/type", "2\n"),
        ("breakpoint/type", "5\n"),
        ("software/perf_event_mux_interval_ms", "4\n"),
        ("tracepoint/power/runtime_status", "unsupported\n"),
        ("breakpoint/power/control", "auto\n"),
        ("uprobe/format/retprobe", "config:0\n"),
        ("uprobe/format/ref_ctr_offset", "config:32-63\n"),
        ("msr/format/event", "config:0-63\n"),
        ("msr/events/tsc", "event=0x00\n"),
        ("software/uevent", ""),
    ],
)
def test_pmu_sysfs_files(backend: Backend, path: str, content: str) -> None:
    assert read_text(backend, f"{PMU_ROOT}/{path}") == content


def test_dynamic_pmu_types_are_numbers(backend: Backend) -> None:
    for pmu in ("uprobe", "msr"):
        assert int(read_text(backend, f"{PMU_ROOT}/{pmu}/type")) >= 6


def test_simulated_kprobe_pmu_files(sim_factory: Callable[..., SimBackend]) -> None:
    sim = sim_factory()
    assert read_text(sim, f"{PMU_ROOT}/kprobe/type") == "8\n"
    assert read_text(sim, f"{PMU_ROOT}/kprobe/format/retprobe") == "config:0\n"
    assert errno_of(lambda: sim.read_file(f"{PMU_ROOT}/cpu_clock/type")) == errno.ENOENT


# ---------------------------------------------------------------------------------------------
# tracefs files
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("category", "name"),
    [("syscalls", "sys_enter_getpid"), ("syscalls", "sys_exit_openat"), ("sched", "sched_switch")],
)
def test_id_and_format_files(backend: Backend, tracefs: None, category: str, name: str) -> None:
    base = f"{TRACEFS}/events/{category}/{name}"
    event_id = read_text(backend, f"{base}/id")
    assert re.fullmatch(r"\d+\n", event_id)
    text = read_text(backend, f"{base}/format")
    assert text.startswith(f"name: {name}\nID: {event_id}format:\n")
    assert "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n" in text
    assert read_text(backend, f"{base}/enable") == "0\n"
    assert read_text(backend, f"{base}/filter") == "none\n"
    assert read_text(backend, f"{base}/trigger").startswith("# Available triggers:\n")


def test_sys_enter_getpid_format_has_the_live_field_lines(backend: Backend, tracefs: None) -> None:
    text = read_text(backend, f"{TRACEFS}/events/syscalls/sys_enter_getpid/format")
    fields = [line for line in text.splitlines() if line.startswith("\tfield:")]
    assert fields == [
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;",
        "\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;",
        "\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;",
        "\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;",
        "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;",
    ]
    assert text.endswith('\nprint fmt: ""\n')


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("events/syscalls/sys_enter_getpid/id", errno.EINVAL),
        ("events/syscalls/sys_enter_getpid/format", errno.EINVAL),
        ("events/syscalls/sys_enter_getpid/enable", errno.EINVAL),  # only 0 or 1
    ],
)
def test_writes_tracefs_refuses(backend: Backend, tracefs: None, path: str, expected: int) -> None:
    assert errno_of(lambda: backend.write_file(f"{TRACEFS}/{path}", b"5")) == expected


def test_missing_tracepoints_and_the_header_files(backend: Backend, tracefs: None) -> None:
    assert errno_of(lambda: backend.read_file(f"{TRACEFS}/events/syscalls/nope/id")) == errno.ENOENT
    assert errno_of(lambda: backend.read_file(f"{TRACEFS}/events/nocat/x/id")) == errno.ENOENT
    assert b"field: u64 timestamp" in backend.read_file(f"{TRACEFS}/events/header_page")
    assert backend.read_file(f"{TRACEFS}/events/header_event").startswith(b"# compressed entry")
    assert b"syscalls:sys_enter_getpid\n" in backend.read_file(f"{TRACEFS}/available_events")


def test_enable_file_round_trip(backend: Backend, tracefs: None) -> None:
    path = f"{TRACEFS}/events/syscalls/sys_enter_getppid/enable"
    backend.write_file(path, b"1")
    try:
        assert read_text(backend, path) == "1\n"
    finally:
        backend.write_file(path, b"0")
    assert read_text(backend, path) == "0\n"


# ---------------------------------------------------------------------------------------------
# The simulator's formats are the live kernel's
# ---------------------------------------------------------------------------------------------
def _modelled_events() -> list[str]:
    sim = SimBackend()
    calls = sim.kernel.subsystem(Tracefs).events.values()
    return [f"{call.system}/{call.name}" for call in calls]


@pytest.mark.parametrize("event", _modelled_events())
def test_format_matches_the_live_kernel(live: Backend, event: str) -> None:
    ensure_tracefs(live)
    path = f"{TRACEFS}/events/{event}/format"
    try:
        expected = live.read_file(path).decode()
    except FileNotFoundError:
        pytest.skip(f"the live kernel has no {event}")
    assert without_id(read_text(SimBackend(), path)) == without_id(expected)


# ---------------------------------------------------------------------------------------------
# uprobe_events (both backends; the live definitions are removed again)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def probe_file(tmp_path: Path) -> Path:
    path = tmp_path / "target.bin"
    path.write_bytes(bytes(256))
    return path


@pytest.fixture
def uprobes(backend: Backend, tracefs: None) -> Iterator[Callable[[str], int]]:
    """write(uprobe_events) as an errno; every event made is removed at the end."""

    def write(line: str) -> int:
        return errno_of(lambda: backend.write_file(f"{TRACEFS}/uprobe_events", line.encode()))

    yield write
    listing = read_text(backend, f"{TRACEFS}/uprobe_events")
    for line in listing.splitlines():
        event = line.split()[0].partition(":")[2]
        if "ksimtest" in event or "p_target_" in event:
            backend.write_file(f"{TRACEFS}/uprobe_events", f"-:{event}".encode())


def test_uprobe_events(backend: Backend, uprobes: Callable[[str], int], probe_file: Path) -> None:
    tag = f"ksimtest{os.getpid()}"
    assert uprobes(f"p:uprobes/{tag}_a {probe_file}:0x10") == 0
    assert uprobes(f"p:uprobes/{tag}_a {probe_file}:0x10") == errno.EEXIST
    assert uprobes(f"r:uprobes/{tag}_r {probe_file}:0x10") == 0
    assert uprobes(f"p:{tag}grp/{tag}_g {probe_file}:0x18 arg1=%di") == 0
    assert uprobes(f"p {probe_file}:0x20") == 0  # the kernel names it
    assert uprobes(f"p:uprobes/{tag}_m /no/such/file:0x10") == errno.ENOENT
    assert uprobes(f"p:uprobes/{tag}_n {probe_file}") == errno.EINVAL
    assert uprobes(f"p:uprobes/{tag}_o {probe_file}:zz") == errno.EINVAL
    assert uprobes(f"p:uprobes/bad-name {probe_file}:0x10") == errno.EINVAL
    assert uprobes(f"p:uprobes/1{tag} {probe_file}:0x10") == errno.EINVAL
    assert uprobes(f"p:uprobes/{tag}_q {probe_file}:0x10 x=%bogus") == errno.EINVAL
    assert uprobes(f"p:uprobes/{tag}_s {probe_file}:0x10(0x8)") == errno.EINVAL  # ref_ctr differs
    assert uprobes(f"p:uprobes/{tag}_t {probe_file.parent}:0x0") == errno.EINVAL
    assert uprobes(f"x:uprobes/{tag}_u {probe_file}:0x10") == errno.EINVAL
    assert uprobes("garbage") == errno.EINVAL
    assert uprobes("") == 0 and uprobes("  \n") == 0 and uprobes("# a comment\n") == 0
    assert uprobes(f"-:uprobes/{tag}_none") == errno.ENOENT
    listing = read_text(backend, f"{TRACEFS}/uprobe_events").splitlines()
    assert f"p:uprobes/{tag}_a {probe_file}:0x0000000000000010" in listing
    assert f"r:uprobes/{tag}_r {probe_file}:0x0000000000000010" in listing
    assert f"p:{tag}grp/{tag}_g {probe_file}:0x0000000000000018 arg1=%di" in listing
    assert f"p:uprobes/p_target_0x20 {probe_file}:0x0000000000000020" in listing
    fmt = read_text(backend, f"{TRACEFS}/events/{tag}grp/{tag}_g/format")
    assert "\tfield:unsigned long __probe_ip;\toffset:8;\tsize:8;\tsigned:0;" in fmt
    assert "\tfield:u64 arg1;\toffset:16;\tsize:8;\tsigned:0;" in fmt
    assert fmt.endswith('print fmt: "(%lx) arg1=0x%Lx", REC->__probe_ip, REC->arg1\n')
    ret_fmt = read_text(backend, f"{TRACEFS}/events/uprobes/{tag}_r/format")
    assert "__probe_func;\toffset:8" in ret_fmt and "__probe_ret_ip;\toffset:16" in ret_fmt
    # An event in use by perf cannot be removed.
    event_id = int(read_text(backend, f"{TRACEFS}/events/uprobes/{tag}_a/id"))
    fd = backend.perf_event_open(
        bpf_output_attr(type=PerfType.TRACEPOINT, config=event_id), -1, 0, -1, 0
    )
    try:
        assert uprobes(f"-:uprobes/{tag}_a") == errno.EBUSY
    finally:
        backend.close(fd)
    assert uprobes(f"-:{tag}_a") == 0  # the group may be left out
    assert (
        errno_of(lambda: backend.read_file(f"{TRACEFS}/events/uprobes/{tag}_a/id")) == errno.ENOENT
    )


def test_uprobe_event_takes_kprobe_programs(
    backend: Backend, uprobes: Callable[[str], int], probe_file: Path
) -> None:
    from perf_sim_support import load_prog

    from bpfsys.abi import ProgType

    tag = f"ksimtest{os.getpid()}"
    assert uprobes(f"p:uprobes/{tag}_b {probe_file}:0x40") == 0
    event_id = int(read_text(backend, f"{TRACEFS}/events/uprobes/{tag}_b/id"))
    fd = backend.perf_event_open(
        bpf_output_attr(type=PerfType.TRACEPOINT, config=event_id), -1, 0, -1, 0
    )
    tracepoint_prog = load_prog(backend, ProgType.TRACEPOINT)
    kprobe_prog = load_prog(backend, ProgType.KPROBE)
    try:
        assert (
            errno_of(lambda: backend.ioctl(fd, PerfIoctl.SET_BPF, tracepoint_prog)) == errno.EINVAL
        )
        assert backend.ioctl(fd, PerfIoctl.SET_BPF, kprobe_prog) == 0
    finally:
        for closing in (fd, tracepoint_prog, kprobe_prog):
            backend.close(closing)


# ---------------------------------------------------------------------------------------------
# kprobe_events, the kprobe PMU, trace_pipe, kallsyms (simulator)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[SimBackend]:
    """A simulated kernel whose current task has the fixed pid 4242 (and comm python3)."""
    backend = SimBackend(Kernel(KernelConfig(pid=4242)))
    yield backend
    backend.kernel.close_all()


def test_kprobe_events(sim: SimBackend) -> None:
    path = f"{TRACEFS}/kprobe_events"

    def write(line: str) -> int:
        return errno_of(lambda: sim.write_file(path, line.encode()))

    assert write("p:kprobes/open do_sys_openat2") == 0
    assert write("r:kprobes/open_ret do_sys_openat2 ret=$retval") == 0
    assert write("p vfs_read+4") == 0
    assert write("r16 vfs_write") == 0
    assert write("p:kprobes/open do_sys_openat2") == errno.EEXIST
    assert write("p:kprobes/nope no_such_function") == errno.ENOENT
    assert write("p:kprobes/far vfs_open+4096") == errno.EINVAL
    assert write("p:kprobes/bad do_sys_openat2 x=$retval") == errno.EINVAL
    assert write("p16:kprobes/bad do_sys_openat2") == errno.EINVAL
    assert write("p:kprobes/entry entry_SYSCALL_64") == errno.ENOENT  # blacklisted
    assert read_text(sim, path).splitlines() == [
        "p:kprobes/open do_sys_openat2",
        "r:kprobes/open_ret do_sys_openat2 ret=$retval",
        "p:kprobes/p_vfs_read_4 vfs_read+4",
        "r16:kprobes/r_vfs_write_0 vfs_write",
    ]
    event_id = int(read_text(sim, f"{TRACEFS}/events/kprobes/open/id"))
    fd = sim.perf_event_open(
        bpf_output_attr(type=PerfType.TRACEPOINT, config=event_id), -1, 0, -1, 0
    )
    assert write("-:kprobes/open") == errno.EBUSY
    sim.close(fd)
    assert write("-:open") == 0
    assert write("-:open") == errno.ENOENT


def test_kprobe_pmu_and_legacy_ids(sim: SimBackend) -> None:
    registry = sim.kernel.subsystem(PmuRegistry)
    kprobe_type = int(read_text(sim, f"{PMU_ROOT}/kprobe/type"))
    func = ctypes.create_string_buffer(b"do_sys_openat2")
    attr = bpf_output_attr(type=kprobe_type, config=0, sample_period=0)
    attr.config1 = ctypes.addressof(func)
    assert open_errno(sim, attr) == 0
    attr.config = 1  # kretprobe
    assert open_errno(sim, attr) == 0
    missing = ctypes.create_string_buffer(b"no_such_function")
    attr.config1 = ctypes.addressof(missing)
    assert open_errno(sim, attr) == errno.ENOENT
    attr.config1, attr.config2 = 0, 0xDEAD
    assert open_errno(sim, attr) == errno.EINVAL
    registry.unregister("kprobe")  # the legacy path still works
    sim.write_file(f"{TRACEFS}/kprobe_events", b"p:kprobes/legacy vfs_read")
    legacy_id = int(read_text(sim, f"{TRACEFS}/events/kprobes/legacy/id"))
    assert open_errno(sim, bpf_output_attr(type=PerfType.TRACEPOINT, config=legacy_id)) == 0


def test_dynamic_ids_reuse_the_smallest_free_one(sim: SimBackend) -> None:
    path = f"{TRACEFS}/kprobe_events"
    sim.write_file(path, b"p:kprobes/a vfs_read\np:kprobes/b vfs_write\n")
    first = int(read_text(sim, f"{TRACEFS}/events/kprobes/a/id"))
    assert int(read_text(sim, f"{TRACEFS}/events/kprobes/b/id")) == first + 1
    sim.write_file(path, b"-:a")
    sim.write_file(path, b"p:kprobes/c vfs_open")
    assert int(read_text(sim, f"{TRACEFS}/events/kprobes/c/id")) == first


def test_trace_pipe_is_consumed(sim: SimBackend) -> None:
    tracefs = sim.kernel.subsystem(Tracefs)
    assert sim.read_file(f"{TRACEFS}/trace_pipe") == b""
    sim.kernel.advance(1_500_000_000)
    tracefs.trace_printk(b"hello world\n", cpu=1)
    line = sim.read_file(f"{TRACEFS}/trace_pipe").decode()
    assert re.fullmatch(
        r" +python3-4242 +\[001\] \.\.\.\.\. +2\.500000: bpf_trace_printk: hello world\n", line
    )
    assert sim.read_file(f"{TRACEFS}/trace_pipe") == b""
    assert line in read_text(sim, f"{TRACEFS}/trace")


def test_both_tracefs_roots(sim: SimBackend) -> None:
    for root in (TRACEFS, "/sys/kernel/debug/tracing"):
        assert read_text(sim, f"{root}/events/syscalls/sys_enter_getpid/id") == "309\n"
    assert errno_of(lambda: sim.read_file(f"{TRACEFS}/events")) == errno.EISDIR


def test_kallsyms_and_filter_functions(sim_factory: Callable[..., SimBackend]) -> None:
    root = sim_factory()
    lines = read_text(root, "/proc/kallsyms").splitlines()
    assert all(re.fullmatch(r"[0-9a-f]{16} [TtDdBb] \w+", line) for line in lines)
    assert any(
        line.endswith(" T do_sys_openat2") and not line.startswith("0" * 16) for line in lines
    )
    functions = read_text(root, f"{TRACEFS}/available_filter_functions").split()
    assert "vfs_read" in functions and "entry_SYSCALL_64" not in functions
    user = sim_factory(privileges="unprivileged")
    assert all(line.startswith("0" * 16) for line in read_text(user, "/proc/kallsyms").splitlines())
    assert errno_of(lambda: user.read_file(f"{TRACEFS}/available_events")) == errno.EACCES


def test_live_tracefs_fixture_mounts_or_skips(backend: Backend, tracefs: None) -> None:
    if isinstance(backend, LiveBackend):
        assert os.path.isdir(f"{TRACEFS}/events")
    assert read_text(backend, f"{TRACEFS}/events/syscalls/sys_enter_getpid/id").strip().isdigit()
