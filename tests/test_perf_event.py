"""perf_event_open and the perf ioctls, against every backend.

The errnos asserted here were measured on the live kernel (Linux 6.18, x86_64) and are what the
simulated kernel must reproduce. Every test counts fds (`no_fd_leak`), error paths included.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bpfsys.abi import (
    PERF_ATTR_SIZE_VER8,
    PERF_FLAG_FD_CLOEXEC,
    BpfCmd,
    BpfInsn,
    BpfProgInfo,
    InfoByFdAttr,
    MapCreateAttr,
    MapType,
    PerfEventAttr,
    PerfEventMmapPage,
    PerfIoctl,
    PerfSwId,
    PerfType,
    ProgLoadAttr,
    ProgType,
    SampleType,
    u8,
)
from bpfsys.backend import Backend, DelegatingBackend, LiveBackend, Mapping, WritableBuffer
from bpfsys.fd import OwnedFd
from bpfsys.perf_event import (
    PMU_ROOT,
    QUERY_BPF_MAX_IDS,
    TRACEFS_MARKER,
    TRACEFS_ROOTS,
    Disable,
    Enable,
    Id,
    PauseOutput,
    ProbeKind,
    QueryBpf,
    Refresh,
    Reset,
    SetBpf,
    SetFilter,
    SetOutput,
    find_tracefs,
    perf_event_ioctl,
    perf_event_open,
    perf_event_open_bpf,
    perf_event_open_probe,
    perf_event_open_trace_point,
)
from bpfsys.syscall import PerfEventIoctl, SyscallError, munmap, syscall
from bpfsys.syscall import mmap as sys_mmap

PAGE = mmap.PAGESIZE
RW = mmap.PROT_READ | mmap.PROT_WRITE
TRACEPOINT = ("syscalls", "sys_enter_getpid")
QUERY_TRACEPOINT = ("syscalls", "sys_enter_getpgid")
"""A tracepoint few others attach programs to: QueryBpf asserts its exact program list."""


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def online_cpus(backend: Backend) -> list[int]:
    """The CPUs in /sys/devices/system/cpu/online ("0-3,5")."""
    cpus: list[int] = []
    for part in backend.read_file("/sys/devices/system/cpu/online").decode().strip().split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def read_mmap_page(mapping: Mapping) -> PerfEventMmapPage:
    with memoryview(mapping) as view, view[: ctypes.sizeof(PerfEventMmapPage)] as head:
        return PerfEventMmapPage.from_buffer_copy(head)


def closed_fd_number() -> int:
    """An fd number that is not open (just closed)."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


def create_array_map(backend: Backend) -> OwnedFd:
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    return OwnedFd(backend.bpf(BpfCmd.MAP_CREATE, attr, ctypes.sizeof(attr)), backend)


def load_trivial_prog(backend: Backend, prog_type: ProgType) -> OwnedFd:
    """`r0 = 0; exit` as a program of `prog_type`."""
    insns = (BpfInsn * 2)(BpfInsn(code=0xB7), BpfInsn(code=0x95))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=2,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_),
    )
    return OwnedFd(backend.bpf(BpfCmd.PROG_LOAD, attr, ctypes.sizeof(attr)), backend)


def prog_id(backend: Backend, prog: OwnedFd) -> int:
    info = BpfProgInfo()
    attr = InfoByFdAttr(
        bpf_fd=prog.fileno(), info_len=ctypes.sizeof(info), info=ctypes.addressof(info)
    )
    backend.bpf(BpfCmd.OBJ_GET_INFO_BY_FD, attr, ctypes.sizeof(attr))
    return int(info.id)


def bpf_output_attr() -> PerfEventAttr:
    return PerfEventAttr(
        type=PerfType.SOFTWARE,
        size=ctypes.sizeof(PerfEventAttr),
        config=PerfSwId.BPF_OUTPUT,
        sample_type=SampleType.RAW,
        sample_period=1,
        wakeup_events=1,
    )


def libc_path() -> str:
    """The libc this process runs (from /proc/self/maps)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if "/libc.so" in path or "/libc-" in path:
            return path
    pytest.skip("no libc mapped in this process")


def symbol_file_offset(path: str, symbol: str) -> int:
    """The file offset of `symbol` in ELF `path`: st_value - p_vaddr + p_offset of its PT_LOAD."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as f:
        elf = ELFFile(f)
        value = None
        for name in (".dynsym", ".symtab"):
            section: Any = elf.get_section_by_name(name)
            found = section.get_symbol_by_name(symbol) if section is not None else None
            if found and value is None:
                value = int(found[0]["st_value"])
        if value is None:
            pytest.skip(f"{symbol} not found in {path}")
        for segment in elf.iter_segments():
            header = segment.header
            start, size = int(header["p_vaddr"]), int(header["p_memsz"])
            if header["p_type"] == "PT_LOAD" and start <= value < start + size:
                return value - start + int(header["p_offset"])
    raise AssertionError(f"{symbol} at {value:#x} is in no PT_LOAD segment of {path}")


def untyped(value: object) -> Any:
    """`value` hidden from the type checker: for tests that pass wrong types on purpose."""
    return value


def read_count(fd: OwnedFd) -> int:
    """The event's counter, by read(2) on the live fd."""
    return int.from_bytes(os.read(fd.fileno(), 8), "little")


class Delegating(DelegatingBackend):
    """A backend that forwards everything and records the names of the calls made."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: list[str] = []
        self.opened: list[tuple[PerfEventAttr, int, int, int, int]] = []
        """(attr as passed, pid, cpu, group_fd, flags) of each perf_event_open."""
        self.config1_strings: list[bytes | None] = []
        """The C string attr.config1 pointed at during each perf_event_open (None: 0)."""

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        self.calls.append("bpf")
        return self.inner.bpf(cmd, attr, size)

    def perf_event_open(
        self,
        attr: WritableBuffer,
        pid: int,
        cpu: int,
        group_fd: int,
        flags: int,
    ) -> int:
        self.calls.append("perf_event_open")
        image = bytes(memoryview(attr).cast("B")[: ctypes.sizeof(PerfEventAttr)])
        copy = PerfEventAttr.from_buffer_copy(image)
        self.opened.append((copy, pid, cpu, group_fd, flags))
        self.config1_strings.append(ctypes.string_at(copy.config1) if copy.config1 else None)
        return self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        self.calls.append("ioctl")
        return self.inner.ioctl(fd, request, arg)

    def mmap(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Mapping:
        self.calls.append("mmap")
        return self.inner.mmap(fd, length, prot, flags, offset)

    def read_file(self, path: str) -> bytes:
        self.calls.append("read_file")
        return self.inner.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.calls.append("write_file")
        self.inner.write_file(path, data)


class MovedTracefs(Delegating):
    """Tracefs only at the debugfs location (or nowhere): the primary root gives ENOENT."""

    def __init__(self, inner: Backend, real_root: str, at_debugfs: bool) -> None:
        super().__init__(inner)
        self.real_root = real_root
        self.at_debugfs = at_debugfs

    def read_file(self, path: str) -> bytes:
        self.calls.append(path)
        for root in TRACEFS_ROOTS:
            if path.startswith(root + "/"):
                if self.at_debugfs and root == TRACEFS_ROOTS[1]:
                    return self.inner.read_file(self.real_root + path[len(root) :])
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return self.inner.read_file(path)


def has_pmu(backend: Backend, pmu: str) -> bool:
    try:
        backend.read_file(f"{PMU_ROOT}/{pmu}/type")
    except OSError:
        return False
    return True


@pytest.fixture
def tracefs(backend: Backend) -> str:
    """The tracefs root of the backend under test."""
    return tracefs_root(backend)


@pytest.fixture
def live_tracefs(live: Backend) -> str:
    """The live kernel's tracefs root (for tests that count real syscalls)."""
    return tracefs_root(live)


def tracefs_root(backend: Backend) -> str:
    """The tracefs root; on the live kernel it is mounted at /sys/kernel/tracing if needed."""
    if isinstance(backend, LiveBackend) and not os.path.exists(
        f"{TRACEFS_ROOTS[0]}/{TRACEFS_MARKER}"
    ):
        result = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", TRACEFS_ROOTS[0]],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"tracefs not mounted and mount failed: {result.stderr.strip()}")
    try:
        return find_tracefs(backend)
    except SyscallError as exc:
        pytest.skip(f"no tracefs: {exc}")


# ---------------------------------------------------------------------------------------------
# BPF output events and their rings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data_pages", [0, 1, 2, 8, 16])
def test_bpf_output_event_ring_on_each_online_cpu(
    backend: Backend, no_fd_leak: None, data_pages: int
) -> None:
    cpus = online_cpus(backend)
    assert cpus and cpus == sorted(set(cpus))
    for cpu in cpus:
        with perf_event_open_bpf(cpu) as fd:
            mapping = sys_mmap(fd.fileno(), (1 + data_pages) * PAGE, RW, mmap.MAP_SHARED)
            try:
                page = read_mmap_page(mapping)
                assert len(mapping) == (1 + data_pages) * PAGE
                assert (page.version, page.compat_version) == (0, 0)
                assert page.data_offset == PAGE
                assert page.data_size == data_pages * PAGE
                assert (page.data_head, page.data_tail) == (0, 0)
                assert (page.aux_offset, page.aux_size) == (0, 0)
                assert page.size == PerfEventMmapPage._reserved.offset == 96
                assert page.capabilities & 0b10  # cap_bit0_is_deprecated
                assert page.lock % 2 == 0
            finally:
                munmap(mapping)


def test_bpf_output_events_have_distinct_ids(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as a, perf_event_open_bpf(0) as b:
        id_a, id_b = perf_event_ioctl(a, Id()), perf_event_ioctl(b, Id())
        assert id_a > 0 and id_b > 0 and id_a != id_b
        assert perf_event_ioctl(a.fileno(), Id()) == id_a
        assert a.backend is backend


def test_bpf_output_attr_pid_cpu_and_flags(backend: Backend, no_fd_leak: None) -> None:
    recorder = Delegating(backend)
    cpu = online_cpus(backend)[-1]
    with perf_event_open_bpf(cpu, backend=recorder):
        pass
    [(attr, pid, opened_cpu, group_fd, flags)] = recorder.opened
    assert (pid, opened_cpu, group_fd, flags) == (-1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    assert (attr.type, attr.config) == (PerfType.SOFTWARE, PerfSwId.BPF_OUTPUT)
    assert (attr.size, attr.sample_type) == (PERF_ATTR_SIZE_VER8, SampleType.RAW)
    assert (attr.sample_period, attr.wakeup_events, attr.flags) == (1, 1, 0)


@pytest.mark.parametrize(
    ("pages", "offset", "flags"),
    [
        (4, 0, mmap.MAP_SHARED),  # 1 + 3 data pages: not a power of two
        (7, 0, mmap.MAP_SHARED),
        (3, PAGE, mmap.MAP_SHARED),  # the ring starts at offset 0
        (3, 0, mmap.MAP_PRIVATE),  # perf rings are shared only
    ],
)
def test_mmap_bad_geometry_is_einval(
    backend: Backend, no_fd_leak: None, pages: int, offset: int, flags: int
) -> None:
    with perf_event_open_bpf(0) as fd:
        with pytest.raises(SyscallError) as info:
            sys_mmap(fd.fileno(), pages * PAGE, RW, flags, offset)
        assert info.value.errno == errno.EINVAL
        assert info.value.call == "mmap"


def test_second_mmap_must_match_the_first(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd:
        first = sys_mmap(fd.fileno(), 3 * PAGE, RW, mmap.MAP_SHARED)
        try:
            same = sys_mmap(fd.fileno(), 3 * PAGE, RW, mmap.MAP_SHARED)
            assert read_mmap_page(same).data_size == 2 * PAGE
            munmap(same)
            with pytest.raises(SyscallError) as info:
                sys_mmap(fd.fileno(), 5 * PAGE, RW, mmap.MAP_SHARED)
            assert info.value.errno == errno.EINVAL
        finally:
            munmap(first)


def test_bpf_output_on_a_cpu_that_does_not_exist_is_einval(
    backend: Backend, no_fd_leak: None
) -> None:
    with pytest.raises(SyscallError) as info:
        perf_event_open_bpf(1 << 20)
    assert (info.value.errno, info.value.call) == (errno.EINVAL, "perf_event_open")


# ---------------------------------------------------------------------------------------------
# perf_event_open errors
# ---------------------------------------------------------------------------------------------
class OversizedAttr(PerfEventAttr):
    """A perf_event_attr with 64 bytes the kernel does not know after it."""

    _fields_ = [("tail", u8 * 64)]


def test_oversized_attr_with_nonzero_tail_is_e2big_and_size_written_back(
    backend: Backend, no_fd_leak: None
) -> None:
    attr = OversizedAttr.from_buffer_copy(bytes(bpf_output_attr()) + bytes(64))
    attr.size = ctypes.sizeof(OversizedAttr)
    attr.tail[63] = 1
    with pytest.raises(SyscallError) as info:
        perf_event_open(attr, -1, 0)
    assert info.value.errno == errno.E2BIG
    assert attr.size == PERF_ATTR_SIZE_VER8 == 136  # the kernel's sizeof(perf_event_attr)


def test_oversized_attr_with_zero_tail_opens(backend: Backend, no_fd_leak: None) -> None:
    attr = OversizedAttr.from_buffer_copy(bytes(bpf_output_attr()) + bytes(64))
    attr.size = ctypes.sizeof(OversizedAttr)
    with perf_event_open(attr, -1, 0) as fd:
        assert perf_event_ioctl(fd, Id()) > 0
    assert attr.size == ctypes.sizeof(OversizedAttr)


@pytest.mark.parametrize("size", [32, 63, 4097])
def test_attr_size_out_of_range_is_e2big(backend: Backend, no_fd_leak: None, size: int) -> None:
    attr = bpf_output_attr()
    attr.size = size
    with pytest.raises(SyscallError) as info:
        perf_event_open(attr, -1, 0)
    assert info.value.errno == errno.E2BIG
    assert attr.size == PERF_ATTR_SIZE_VER8


@pytest.mark.parametrize("size", [0, 64])
def test_attr_size_zero_and_ver0_open(backend: Backend, no_fd_leak: None, size: int) -> None:
    attr = bpf_output_attr()
    attr.size = size
    with perf_event_open(attr, -1, 0) as fd:
        assert perf_event_ioctl(fd, Id()) > 0
    assert attr.size == size


@pytest.mark.parametrize(
    ("pid", "cpu", "group_fd", "flags", "expected"),
    [
        (-1, -1, -1, PERF_FLAG_FD_CLOEXEC, errno.EINVAL),  # neither a task nor a CPU
        (-1, -2, -1, PERF_FLAG_FD_CLOEXEC, errno.EINVAL),
        (-1, 1 << 20, -1, PERF_FLAG_FD_CLOEXEC, errno.EINVAL),
        (-2, 0, -1, PERF_FLAG_FD_CLOEXEC, errno.ESRCH),
        ((1 << 31) - 1, -1, -1, PERF_FLAG_FD_CLOEXEC, errno.ESRCH),
        (-1, 0, "closed", PERF_FLAG_FD_CLOEXEC, errno.EBADF),
        (-1, 0, -1, 1 << 10, errno.EINVAL),  # unknown PERF_FLAG_*
    ],
)
def test_bad_pid_cpu_group_flags(
    backend: Backend,
    no_fd_leak: None,
    pid: int,
    cpu: int,
    group_fd: int | str,
    flags: int,
    expected: int,
) -> None:
    group = closed_fd_number() if group_fd == "closed" else group_fd
    assert isinstance(group, int)
    with pytest.raises(SyscallError) as info:
        perf_event_open(bpf_output_attr(), pid, cpu, group, flags)
    assert (info.value.errno, info.value.call) == (expected, "perf_event_open")


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("type", 77, errno.ENOENT),  # no such PMU
        ("config", 999, errno.ENOENT),  # no such software event
        ("flags", 1 << 63, errno.EINVAL),  # a reserved attr bit
    ],
)
def test_bad_attr_fields(
    backend: Backend, no_fd_leak: None, field: str, value: int, expected: int
) -> None:
    attr = bpf_output_attr()
    setattr(attr, field, value)
    with pytest.raises(SyscallError) as info:
        perf_event_open(attr, -1, 0)
    assert info.value.errno == expected


def test_pid_zero_any_cpu_opens(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open(bpf_output_attr(), 0, -1) as fd:
        assert perf_event_ioctl(fd, Id()) > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attr": bytearray(136)}, TypeError, "attr must be a PerfEventAttr"),
        ({"pid": "0"}, TypeError, "pid must be an int"),
        ({"pid": True}, TypeError, "pid must be an int"),
        ({"cpu": 1 << 31}, ValueError, "cpu must be in"),
        ({"group_fd": -(1 << 31) - 1}, ValueError, "group_fd must be in"),
        ({"flags": -1}, ValueError, "flags must be in"),
    ],
)
def test_perf_event_open_validates_before_any_syscall(
    backend: Backend,
    no_fd_leak: None,
    kwargs: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    recorder = Delegating(backend)
    args: dict[str, object] = {"attr": bpf_output_attr(), "pid": -1, "cpu": 0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        perf_event_open(backend=recorder, **args)  # type: ignore[arg-type]
    assert recorder.calls == []


# ---------------------------------------------------------------------------------------------
# The ioctl state machine
# ---------------------------------------------------------------------------------------------
def test_enable_disable_reset_refresh(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd:
        assert perf_event_ioctl(fd, Disable()) == 0
        assert perf_event_ioctl(fd, Enable()) == 0
        assert perf_event_ioctl(fd, Enable()) == 0  # idempotent
        assert perf_event_ioctl(fd, Reset()) == 0
        assert perf_event_ioctl(fd, Refresh(1)) == 0
        assert perf_event_ioctl(fd, Refresh(0)) == 0
        assert perf_event_ioctl(fd, Disable()) == 0


def test_pause_output_needs_a_ring(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd:
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, PauseOutput(True))
        assert (info.value.errno, info.value.call) == (
            errno.EINVAL,
            "ioctl(PERF_EVENT_IOC_PAUSE_OUTPUT)",
        )
        mapping = sys_mmap(fd.fileno(), 2 * PAGE, RW, mmap.MAP_SHARED)
        try:
            assert perf_event_ioctl(fd, PauseOutput(True)) == 0
            assert perf_event_ioctl(fd, PauseOutput(False)) == 0
        finally:
            munmap(mapping)
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, PauseOutput(False))
        assert info.value.errno == errno.EINVAL


def test_set_output_rules(backend: Backend, no_fd_leak: None) -> None:
    cpus = online_cpus(backend)
    with perf_event_open_bpf(0) as ring, perf_event_open_bpf(0) as same_cpu:
        assert perf_event_ioctl(ring, SetOutput(-1)) == 0  # no redirection: nothing to undo
        assert perf_event_ioctl(ring, SetOutput()) == 0
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(ring, SetOutput(ring))  # onto itself
        assert info.value.errno == errno.EINVAL
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(same_cpu, SetOutput(closed_fd_number()))
        assert info.value.errno == errno.EBADF
        mapping = sys_mmap(ring.fileno(), 3 * PAGE, RW, mmap.MAP_SHARED)
        try:
            assert perf_event_ioctl(same_cpu, SetOutput(ring)) == 0
            with pytest.raises(SyscallError) as info:
                perf_event_ioctl(ring, SetOutput(-1))  # its own ring is mapped
            assert info.value.errno == errno.EINVAL
            if len(cpus) > 1:
                with perf_event_open_bpf(cpus[1]) as other_cpu:
                    with pytest.raises(SyscallError) as info:
                        perf_event_ioctl(other_cpu, SetOutput(ring))
                    assert info.value.errno == errno.EINVAL
        finally:
            munmap(mapping)


def test_unknown_perf_ioctl_is_enotty(backend: Backend, no_fd_leak: None) -> None:
    unknown = (ord("$") << 8) | 0x7F
    with perf_event_open_bpf(0) as fd:
        with pytest.raises(SyscallError) as info:
            syscall(PerfEventIoctl(fd.fileno(), unknown, 0))
        assert (info.value.errno, info.value.call) == (errno.ENOTTY, "ioctl(0x247f)")
        with pytest.raises(SyscallError) as info:
            syscall(PerfEventIoctl(fd.fileno(), (ord("X") << 8) | 1, 0))
        assert info.value.errno == errno.ENOTTY


def test_perf_ioctl_on_a_map_fd_is_enotty(backend: Backend, no_fd_leak: None) -> None:
    with create_array_map(backend) as map_fd:
        for request in (Enable(), Id(), QueryBpf(1)):
            with pytest.raises(SyscallError) as info:
                perf_event_ioctl(map_fd, request)
            assert info.value.errno == errno.ENOTTY


def test_perf_ioctl_on_a_closed_fd_is_ebadf(backend: Backend, no_fd_leak: None) -> None:
    with pytest.raises(SyscallError) as info:
        perf_event_ioctl(closed_fd_number(), Enable())
    assert info.value.errno == errno.EBADF


def test_set_bpf_with_a_non_program_fd(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd, create_array_map(backend) as map_fd:
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetBpf(map_fd))  # an fd, not a program
        assert (info.value.errno, info.value.call) == (
            errno.EINVAL,
            "ioctl(PERF_EVENT_IOC_SET_BPF)",
        )
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetBpf(fd))  # a perf fd
        assert info.value.errno == errno.EINVAL
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetBpf(closed_fd_number()))
        assert info.value.errno == errno.EBADF


def test_set_bpf_tracepoint_program_on_bpf_output_event_is_einval(
    backend: Backend, no_fd_leak: None
) -> None:
    with perf_event_open_bpf(0) as fd, load_trivial_prog(backend, ProgType.TRACEPOINT) as prog:
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetBpf(prog))
        assert info.value.errno == errno.EINVAL


def test_query_bpf_on_a_non_tracepoint_event_is_einval(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd:
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, QueryBpf(4))
        assert (info.value.errno, info.value.call) == (
            errno.EINVAL,
            "ioctl(PERF_EVENT_IOC_QUERY_BPF)",
        )


def test_set_filter_on_a_bpf_output_event_is_einval(backend: Backend, no_fd_leak: None) -> None:
    with perf_event_open_bpf(0) as fd:
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetFilter("common_pid != 0"))
        assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: Refresh(-1), ValueError, "count must be in"),
        (lambda: Refresh(1 << 31), ValueError, "count must be in"),
        (lambda: SetBpf(untyped("3")), TypeError, "prog_fd must be an fd"),
        (lambda: SetBpf(-1), ValueError, "prog_fd must be in"),
        (lambda: SetOutput(-2), ValueError, "target must be in"),
        (lambda: PauseOutput(untyped(1)), TypeError, "paused must be a bool"),
        (lambda: SetFilter(untyped(b"x")), TypeError, "text must be a str"),
        (lambda: SetFilter("a\0b"), ValueError, "text must not contain NUL"),
        (lambda: QueryBpf(-1), ValueError, "max_ids must be in"),
        (lambda: QueryBpf(QUERY_BPF_MAX_IDS + 1), ValueError, "max_ids must be in"),
    ],
)
def test_ioctl_requests_validate_their_arguments(
    make: object, error: type[Exception], match: str
) -> None:
    assert callable(make)
    with pytest.raises(error, match=match):
        make()


def test_perf_event_ioctl_validates_fd_and_request_before_any_syscall(
    backend: Backend, no_fd_leak: None
) -> None:
    recorder = Delegating(backend)
    with pytest.raises(ValueError, match="fd must be in"):
        perf_event_ioctl(-1, Enable(), backend=recorder)
    with pytest.raises(TypeError, match="fd must be an fd"):
        perf_event_ioctl("3", Enable(), backend=recorder)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="request must be a PerfEventIoctlRequest"):
        perf_event_ioctl(0, PerfIoctl.ENABLE, backend=recorder)  # type: ignore[call-overload]
    closed = perf_event_open_bpf(0)
    closed.close()
    with pytest.raises(ValueError, match="closed OwnedFd"):
        perf_event_ioctl(closed, Enable(), backend=recorder)
    assert recorder.calls == []


def test_ioctl_goes_to_the_given_backend_else_the_fds(backend: Backend, no_fd_leak: None) -> None:
    recorder = Delegating(backend)
    with perf_event_open_bpf(0, backend=recorder) as fd:
        assert fd.backend is recorder
        assert perf_event_ioctl(fd, Id()) > 0  # the OwnedFd's backend
        assert perf_event_ioctl(fd.fileno(), Id()) > 0  # a bare number: the current backend
        assert perf_event_ioctl(fd.fileno(), Reset(), backend=recorder) == 0
    assert recorder.calls == ["perf_event_open", "ioctl", "ioctl"]


# ---------------------------------------------------------------------------------------------
# Tracepoints
# ---------------------------------------------------------------------------------------------
def test_tracepoint_all_processes_on_cpu0_and_caller_on_any_cpu(
    backend: Backend, tracefs: str, no_fd_leak: None
) -> None:
    with (
        perf_event_open_trace_point(*TRACEPOINT) as all_on_cpu0,
        perf_event_open_trace_point(*TRACEPOINT, pid=0) as caller,
    ):
        ids = {perf_event_ioctl(all_on_cpu0, Id()), perf_event_ioctl(caller, Id())}
        assert len(ids) == 2 and 0 not in ids
        assert perf_event_ioctl(caller, Disable()) == 0
        assert perf_event_ioctl(caller, Reset()) == 0
        assert perf_event_ioctl(caller, Enable()) == 0


def test_tracepoint_counts_the_callers_syscalls(live: Backend, live_tracefs: str) -> None:
    with perf_event_open_trace_point(*TRACEPOINT, pid=0) as fd:
        perf_event_ioctl(fd, Reset())
        before = read_count(fd)
        for _ in range(5):
            os.getpid()
        assert read_count(fd) - before == 5
        perf_event_ioctl(fd, Disable())
        os.getpid()
        assert read_count(fd) - before == 5
        perf_event_ioctl(fd, Reset())
        assert read_count(fd) == 0


@pytest.mark.parametrize(("pid", "expected"), [(None, (-1, 0)), (0, (0, -1))])
def test_tracepoint_attr_from_tracefs_id(
    backend: Backend,
    tracefs: str,
    no_fd_leak: None,
    pid: int | None,
    expected: tuple[int, int],
) -> None:
    recorder = Delegating(backend)
    with perf_event_open_trace_point(*TRACEPOINT, pid, backend=recorder) as fd:
        assert perf_event_ioctl(fd, Id()) > 0
    id_path = f"{tracefs}/events/{TRACEPOINT[0]}/{TRACEPOINT[1]}/id"
    assert recorder.calls == ["read_file", "read_file", "perf_event_open", "ioctl"]
    [(attr, opened_pid, cpu, group_fd, flags)] = recorder.opened
    assert (opened_pid, cpu) == expected
    assert (group_fd, flags) == (-1, PERF_FLAG_FD_CLOEXEC)
    assert (attr.type, attr.config) == (PerfType.TRACEPOINT, int(backend.read_file(id_path)))
    assert (attr.size, attr.sample_type) == (PERF_ATTR_SIZE_VER8, SampleType.RAW)
    assert (attr.sample_period, attr.wakeup_events) == (1, 1)


@pytest.mark.parametrize(("category", "name"), [("syscalls", "no_such_tp"), ("nocat", "x")])
def test_unknown_tracepoint_is_enoent_naming_the_id_file(
    backend: Backend, tracefs: str, no_fd_leak: None, category: str, name: str
) -> None:
    with pytest.raises(SyscallError) as info:
        perf_event_open_trace_point(category, name)
    path = f"{tracefs}/events/{category}/{name}/id"
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, path)
    assert "no such tracepoint" in str(info.value) and path in str(info.value)


def test_unknown_tracepoint_id_is_einval(backend: Backend, no_fd_leak: None) -> None:
    attr = bpf_output_attr()
    attr.type, attr.config = PerfType.TRACEPOINT, 0xFFFF_FFFF
    with pytest.raises(SyscallError) as info:
        perf_event_open(attr, -1, 0)
    assert info.value.errno == errno.EINVAL


def test_tracepoint_pid_minus_one_any_cpu_is_einval(
    backend: Backend, tracefs: str, no_fd_leak: None
) -> None:
    attr = bpf_output_attr()
    attr.type = PerfType.TRACEPOINT
    attr.config = int(backend.read_file(f"{tracefs}/events/{TRACEPOINT[0]}/{TRACEPOINT[1]}/id"))
    with pytest.raises(SyscallError) as info:
        perf_event_open(attr, -1, -1)
    assert info.value.errno == errno.EINVAL


def test_tracefs_falls_back_to_debugfs(backend: Backend, tracefs: str, no_fd_leak: None) -> None:
    moved = MovedTracefs(backend, tracefs, at_debugfs=True)
    assert find_tracefs(moved) == TRACEFS_ROOTS[1]
    with perf_event_open_trace_point(*TRACEPOINT, backend=moved) as fd:
        assert perf_event_ioctl(fd, Id(), backend=moved) > 0
    debug_id = f"{TRACEFS_ROOTS[1]}/events/{TRACEPOINT[0]}/{TRACEPOINT[1]}/id"
    assert debug_id in moved.calls


def test_no_tracefs_is_enoent_naming_the_paths(
    backend: Backend, tracefs: str, no_fd_leak: None
) -> None:
    absent = MovedTracefs(backend, tracefs, at_debugfs=False)
    with pytest.raises(SyscallError) as info:
        perf_event_open_trace_point(*TRACEPOINT, backend=absent)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == f"{TRACEFS_ROOTS[0]}/{TRACEFS_MARKER}"
    assert all(root in str(info.value) for root in TRACEFS_ROOTS)
    assert "perf_event_open" not in absent.calls


@pytest.mark.parametrize(
    ("category", "name", "pid", "error", "match"),
    [
        ("syscalls", "", None, ValueError, "name must be a tracefs directory name"),
        ("sys/calls", "x", None, ValueError, "category must be a tracefs directory name"),
        ("..", "x", None, ValueError, "category must be"),
        ("syscalls", b"x", None, TypeError, "name must be a str"),
        ("syscalls", "x", -1, ValueError, "pid must be in"),
    ],
)
def test_trace_point_validates_before_any_syscall(
    backend: Backend,
    no_fd_leak: None,
    category: str,
    name: str,
    pid: int | None,
    error: type[Exception],
    match: str,
) -> None:
    recorder = Delegating(backend)
    with pytest.raises(error, match=match):
        perf_event_open_trace_point(category, name, pid, backend=recorder)
    assert recorder.calls == []


def test_query_bpf_lists_the_tracepoints_programs(
    backend: Backend, tracefs: str, no_fd_leak: None
) -> None:
    with (
        perf_event_open_trace_point(*QUERY_TRACEPOINT) as first,
        perf_event_open_trace_point(*QUERY_TRACEPOINT) as second,
        perf_event_open_trace_point(*TRACEPOINT) as other_tracepoint,
        load_trivial_prog(backend, ProgType.TRACEPOINT) as prog_a,
        load_trivial_prog(backend, ProgType.TRACEPOINT) as prog_b,
    ):
        id_a, id_b = prog_id(backend, prog_a), prog_id(backend, prog_b)
        assert perf_event_ioctl(first, QueryBpf(4)) == []
        assert perf_event_ioctl(first, SetBpf(prog_a)) == 0
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(first, SetBpf(prog_b))  # one program per event
        assert info.value.errno == errno.EEXIST
        assert perf_event_ioctl(first, QueryBpf(4)) == [id_a]
        # Programs attach to the tracepoint: every event on it lists them all.
        assert perf_event_ioctl(second, SetBpf(prog_b)) == 0
        assert perf_event_ioctl(first, QueryBpf(4)) == [id_a, id_b]
        assert perf_event_ioctl(second, QueryBpf(64)) == [id_a, id_b]
        assert perf_event_ioctl(first, QueryBpf(0)) == []  # the kernel reports only the count
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(first, QueryBpf(1))
        assert info.value.errno == errno.ENOSPC
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(first, QueryBpf(65))  # more than BPF_TRACE_MAX_PROGS
        assert info.value.errno == errno.E2BIG
        assert perf_event_ioctl(other_tracepoint, QueryBpf(4)) == []
        second.close()
        assert perf_event_ioctl(first, QueryBpf(4)) == [id_a]


def test_set_bpf_socket_filter_on_tracepoint_is_einval(
    backend: Backend, tracefs: str, no_fd_leak: None
) -> None:
    with (
        perf_event_open_trace_point(*QUERY_TRACEPOINT) as fd,
        load_trivial_prog(backend, ProgType.SOCKET_FILTER) as prog,
    ):
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetBpf(prog))
        assert info.value.errno == errno.EINVAL
        assert perf_event_ioctl(fd, QueryBpf(4)) == []


def test_set_filter_on_tracepoint(backend: Backend, tracefs: str, no_fd_leak: None) -> None:
    with perf_event_open_trace_point(*TRACEPOINT) as fd:
        assert perf_event_ioctl(fd, SetFilter("common_pid != 0")) == 0
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, SetFilter("common_pid != 1"))  # a filter is set once
        assert info.value.errno == errno.EEXIST
    for bad in ("nonsense ===", "no_such_field == 1", ""):
        with perf_event_open_trace_point(*TRACEPOINT) as fd:
            with pytest.raises(SyscallError) as info:
                perf_event_ioctl(fd, SetFilter(bad))
            assert info.value.errno == errno.EINVAL, bad


def test_pause_output_on_tracepoint_ring(backend: Backend, tracefs: str, no_fd_leak: None) -> None:
    with perf_event_open_trace_point(*TRACEPOINT) as fd:
        mapping = sys_mmap(fd.fileno(), 3 * PAGE, RW, mmap.MAP_SHARED)
        try:
            assert perf_event_ioctl(fd, PauseOutput(True)) == 0
        finally:
            munmap(mapping)


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def kprobe_pmu(backend: Backend) -> None:
    if not has_pmu(backend, "kprobe"):
        pytest.skip(f"no kprobe PMU on this kernel ({PMU_ROOT}/kprobe is absent)")


@pytest.fixture
def uprobe_pmu(backend: Backend) -> None:
    need_uprobe_pmu(backend)


@pytest.fixture
def live_uprobe_pmu(live: Backend) -> None:
    need_uprobe_pmu(live)


def need_uprobe_pmu(backend: Backend) -> None:
    if not has_pmu(backend, "uprobe"):
        pytest.skip(f"no uprobe PMU on this kernel ({PMU_ROOT}/uprobe is absent)")


def test_kprobe_pmu_absence_is_a_clear_enoent(backend: Backend, no_fd_leak: None) -> None:
    if has_pmu(backend, "kprobe"):
        pytest.skip("this kernel has a kprobe PMU")
    for kind in (ProbeKind.KPROBE, ProbeKind.KRETPROBE):
        recorder = Delegating(backend)
        with pytest.raises(SyscallError) as info:
            perf_event_open_probe(kind, "do_sys_openat2", backend=recorder)
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == f"{PMU_ROOT}/kprobe/type"
        assert "no kprobe PMU" in str(info.value)
        assert recorder.calls == ["read_file"]


@pytest.mark.parametrize("kind", [ProbeKind.KPROBE, ProbeKind.KRETPROBE])
def test_kprobe_opens(
    backend: Backend, kprobe_pmu: None, no_fd_leak: None, kind: ProbeKind
) -> None:
    with perf_event_open_probe(kind, "do_sys_openat2") as fd:
        assert perf_event_ioctl(fd, Id()) > 0


def test_kprobe_on_unknown_symbol_fails(
    backend: Backend, kprobe_pmu: None, no_fd_leak: None
) -> None:
    with pytest.raises(SyscallError) as info:
        perf_event_open_probe(ProbeKind.KPROBE, "no_such_kernel_function_xyz")
    assert info.value.errno in (errno.ENOENT, errno.EINVAL)


@pytest.mark.parametrize("kind", [ProbeKind.UPROBE, ProbeKind.URETPROBE])
@pytest.mark.parametrize("own_process", [False, True])
def test_uprobe_on_libc_getpid_opens(
    backend: Backend, uprobe_pmu: None, no_fd_leak: None, kind: ProbeKind, own_process: bool
) -> None:
    path = libc_path()
    offset = symbol_file_offset(path, "getpid")
    assert offset > 0
    pid = os.getpid() if own_process else None
    with perf_event_open_probe(kind, path, offset, pid) as fd:
        assert perf_event_ioctl(fd, Id()) > 0
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, QueryBpf(4))  # a probe event is no PERF_TYPE_TRACEPOINT
        assert info.value.errno == errno.EINVAL
        with pytest.raises(SyscallError) as info:
            perf_event_ioctl(fd, Refresh(1))  # not a sampling event
        assert info.value.errno == errno.EINVAL


def test_uprobe_counts_calls(live: Backend, live_uprobe_pmu: None, no_fd_leak: None) -> None:
    path = libc_path()
    with perf_event_open_probe(
        ProbeKind.UPROBE, Path(path), symbol_file_offset(path, "getpid"), os.getpid()
    ) as fd:
        before = read_count(fd)
        for _ in range(7):
            os.getpid()
        assert read_count(fd) - before == 7


@pytest.mark.parametrize(
    ("kind", "pid", "reads", "expected_pid_cpu"),
    [
        (ProbeKind.UPROBE, None, 1, (-1, 0)),
        (ProbeKind.URETPROBE, None, 2, (-1, 0)),
        (ProbeKind.URETPROBE, "self", 2, ("self", -1)),
    ],
)
def test_uprobe_attr_from_sysfs(
    backend: Backend,
    uprobe_pmu: None,
    no_fd_leak: None,
    kind: ProbeKind,
    pid: str | None,
    reads: int,
    expected_pid_cpu: tuple[int | str, int],
) -> None:
    recorder = Delegating(backend)
    path = libc_path()
    offset = symbol_file_offset(path, "getpid")
    target = os.getpid() if pid == "self" else None
    with perf_event_open_probe(kind, path.encode(), offset, target, backend=recorder):
        pass
    assert recorder.calls == ["read_file"] * reads + ["perf_event_open"]
    [(attr, opened_pid, cpu, group_fd, flags)] = recorder.opened
    expected_pid = os.getpid() if expected_pid_cpu[0] == "self" else expected_pid_cpu[0]
    assert (opened_pid, cpu) == (expected_pid, expected_pid_cpu[1])
    assert (group_fd, flags) == (-1, PERF_FLAG_FD_CLOEXEC)
    pmu_type = int(backend.read_file(f"{PMU_ROOT}/uprobe/type"))
    retprobe = backend.read_file(f"{PMU_ROOT}/uprobe/format/retprobe").decode().strip()
    assert retprobe == "config:0"
    assert (attr.type, attr.config) == (pmu_type, 1 if kind.is_return else 0)
    assert (attr.config2, attr.size) == (offset, PERF_ATTR_SIZE_VER8)
    assert (attr.sample_type, attr.sample_period) == (0, 0)
    assert recorder.config1_strings == [path.encode()]


@pytest.mark.parametrize(
    ("path", "offset", "expected"),
    [
        ("/nonexistent/lib.so", 0, errno.ENOENT),
        ("/usr", 0, errno.EINVAL),  # a directory
        ("libc", 1 << 40, errno.EINVAL),  # beyond the end of the file
    ],
)
def test_uprobe_errors(
    backend: Backend, uprobe_pmu: None, no_fd_leak: None, path: str, offset: int, expected: int
) -> None:
    target = libc_path() if path == "libc" else path
    with pytest.raises(SyscallError) as info:
        perf_event_open_probe(ProbeKind.UPROBE, target, offset)
    assert (info.value.errno, info.value.call) == (expected, "perf_event_open")


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("kprobe", "x"), TypeError, "kind must be a ProbeKind"),
        ((ProbeKind.UPROBE, ""), ValueError, "name must be non-empty"),
        ((ProbeKind.UPROBE, "a\0b"), ValueError, "without NUL"),
        ((ProbeKind.UPROBE, 5), TypeError, "name must be a str"),
        ((ProbeKind.UPROBE, "/bin/sh", -1), ValueError, "offset must be in"),
        ((ProbeKind.UPROBE, "/bin/sh", 1 << 64), ValueError, "offset must be in"),
        ((ProbeKind.UPROBE, "/bin/sh", 0, -1), ValueError, "pid must be in"),
        ((ProbeKind.KPROBE, "do_sys_openat2", 0, 1), ValueError, "pid must be None for a kprobe"),
    ],
)
def test_probe_validates_before_any_syscall(
    backend: Backend,
    no_fd_leak: None,
    args: tuple[object, ...],
    error: type[Exception],
    match: str,
) -> None:
    recorder = Delegating(backend)
    with pytest.raises(error, match=match):
        perf_event_open_probe(*args, backend=recorder)  # type: ignore[arg-type]
    assert recorder.calls == []
