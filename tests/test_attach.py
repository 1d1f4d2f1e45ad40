"""Program attachment (`bpfsys.attach`): tracepoints, uprobes and kprobes on the live kernel,
the exact system call sequence of each path, and every error path without leaks.

Programs prove they ran by counting into an ARRAY map. Errnos asserted here were measured on
the live kernel (Linux 6.18, x86_64): no kprobe PMU and no kprobe_events there, uprobes and
syscall tracepoints available. Tests written against `backend` run on the simulated kernel too
(KERNELSIM_TEST_BACKENDS=sim,live) with the same assertions.
"""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import pickle
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpfsys import bpf, features
from bpfsys.abi import BpfCmd, BpfFunc, MapType, PerfEventAttr, ProgType, perf_ioctl_name
from bpfsys.asm import assemble_text
from bpfsys.attach import (
    EVENT_NAME_MAX,
    Attachment,
    AttachNotSupported,
    PerfAttachMethod,
    ProbeEvent,
    ProbeSource,
    attach_kprobe,
    attach_tracepoint,
    attach_uprobe,
    perf_attach,
    probe_event_name,
)
from bpfsys.backend import Backend, DelegatingBackend, LiveBackend, WritableBuffer, use_backend
from bpfsys.elf_symbols import symbol_file_offset
from bpfsys.fd import OwnedFd
from bpfsys.perf_event import (
    PMU_ROOT,
    TRACEFS_MARKER,
    ProbeKind,
    QueryBpf,
    find_tracefs,
    perf_event_ioctl,
    perf_event_open_trace_point,
)
from bpfsys.syscall import SyscallError

LINK, IOCTL = PerfAttachMethod.LINK, PerfAttachMethod.IOCTL
TRACEPOINT = ("syscalls", "sys_enter_getpid")
CALLS = 5
"""Triggers per measurement: counts are exact (programs filter on our process)."""


def untyped(value: object) -> Any:
    """`value` hidden from the type checker: for tests that pass wrong types on purpose."""
    return value


# ---------------------------------------------------------------------------------------------
# Counting programs
# ---------------------------------------------------------------------------------------------
class Counter:
    """A one-slot u64 ARRAY map that programs increment."""

    def __init__(self, backend: Backend) -> None:
        self.fd = bpf.map_create(MapType.ARRAY, 4, 8, 1, backend=backend)

    def read(self) -> int:
        value = bpf.map_lookup_elem(self.fd, b"\0" * 4, 8)
        assert value is not None
        return int(struct.unpack("<Q", value)[0])

    def program(self, prog_type: ProgType, *, tgid: int | None = None) -> OwnedFd:
        """A program that adds 1 to the slot (only in process `tgid` when given)."""
        guard = (
            ""
            if tgid is None
            else f"call {BpfFunc.GET_CURRENT_PID_TGID:d}\nrsh %r0, 32\njne %r0, {tgid}, out\n"
        )
        text = f"""{guard}stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_fd({self.fd.fileno()})
            call {BpfFunc.MAP_LOOKUP_ELEM:d}
            jeq %r0, 0, out
            mov %r1, 1
            lock add [%r0], %r1
            out: mov %r0, 0
            exit"""
        return bpf.prog_load(prog_type, assemble_text(text), backend=self.fd.backend)

    def cookie_program(self, prog_type: ProgType, tgid: int) -> OwnedFd:
        """A program that stores bpf_get_attach_cookie(ctx) in the slot (process `tgid`)."""
        text = f"""mov %r6, %r1
            call {BpfFunc.GET_CURRENT_PID_TGID:d}
            rsh %r0, 32
            jne %r0, {tgid}, out
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_fd({self.fd.fileno()})
            call {BpfFunc.MAP_LOOKUP_ELEM:d}
            jeq %r0, 0, out
            mov %r7, %r0
            mov %r1, %r6
            call {BpfFunc.GET_ATTACH_COOKIE:d}
            stxdw [%r7], %r0
            out: mov %r0, 0
            exit"""
        return bpf.prog_load(prog_type, assemble_text(text), backend=self.fd.backend)

    def delta(self, trigger: Callable[[], object], times: int = CALLS) -> int:
        """How much the slot grows while `trigger` runs `times` times, on the last CPU this
        process may use: events opened system-wide are opened on CPU 0 (pid -1, cpu 0, as
        Aya does), and their programs must run on every CPU."""
        before = self.read()
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(allowed)})
        try:
            for _ in range(times):
                trigger()
        finally:
            os.sched_setaffinity(0, allowed)
        return self.read() - before


@pytest.fixture
def live_counter(live: Backend) -> Iterator[Counter]:
    c = Counter(live)
    with c.fd:
        yield c


def libc_with_getpid() -> str:
    """The file of the getpid this process calls (found through /proc/self/maps)."""
    address = ctypes.cast(ctypes.CDLL(None).getpid, ctypes.c_void_p).value
    assert address is not None
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start <= address < end and len(fields) > 5:
            return fields[5]
    pytest.skip("getpid is in no file mapping of this process")


def libc_getpid() -> Callable[[], int]:
    getpid: Callable[[], int] = ctypes.CDLL(libc_with_getpid()).getpid
    return getpid


def event_lines(backend: Backend, event: ProbeEvent) -> list[str]:
    """The lines of the event's control file that define `event`."""
    text = backend.read_file(event.events_file).decode()
    return [line for line in text.splitlines() if f"/{event.name} " in line]


def has_file(backend: Backend, path: str) -> bool:
    try:
        backend.read_file(path)
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# A recording, fault-injecting backend
# ---------------------------------------------------------------------------------------------
Entry = tuple[str, ...]


class SyscallLog(DelegatingBackend):
    """Forwards to `inner` and logs every call as a tuple: ("bpf", command), ("perf_event_open",),
    ("ioctl", request, fd role), ("close", fd role), ("read_file", path), ("write_file", path,
    text). Fds opened through it are named by role ("perf", "link"); others by number.

    `fail` maps a log entry's first two items to an errno: such a call is logged, then fails
    without reaching `inner`. `hide` lists paths that read as missing (ENOENT)."""

    def __init__(
        self, inner: Backend, fail: dict[Entry, int] | None = None, hide: tuple[str, ...] = ()
    ) -> None:
        super().__init__(inner)
        self.fail = dict(fail or {})
        self.hide = hide
        self.log: list[Entry] = []
        self.opened: list[tuple[PerfEventAttr, bytes]] = []
        """Each perf_event_open's attr (a copy) and the C string its config1 pointed at."""
        self.roles: dict[int, str] = {}

    def _enter(self, *entry: str) -> None:
        self.log.append(entry)
        err = self.fail.get(entry[:2])
        if err is not None:
            raise OSError(err, os.strerror(err))

    def _role(self, fd: int) -> str:
        return self.roles.get(fd, str(fd))

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        name = BpfCmd(cmd).name
        self._enter("bpf", name)
        result = self.inner.bpf(cmd, attr, size)
        self.roles[result] = "link" if name == "LINK_CREATE" else name.lower()
        return result

    def perf_event_open(
        self, attr: WritableBuffer, pid: int, cpu: int, group_fd: int, flags: int
    ) -> int:
        image = bytes(memoryview(attr).cast("B")[: ctypes.sizeof(PerfEventAttr)])
        copy = PerfEventAttr.from_buffer_copy(image)
        self.opened.append((copy, ctypes.string_at(copy.config1) if copy.config1 else b""))
        self._enter("perf_event_open")
        fd = self.inner.perf_event_open(attr, pid, cpu, group_fd, flags)
        self.roles[fd] = "perf"
        return fd

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        self._enter("ioctl", perf_ioctl_name(request), self._role(fd))
        return self.inner.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        self._enter("close", self._role(fd))
        self.roles.pop(fd, None)
        self.inner.close(fd)

    def read_file(self, path: str) -> bytes:
        self._enter("read_file", path)
        if path in self.hide:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return self.inner.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self._enter("write_file", path, data.decode())
        self.inner.write_file(path, data)

    def after(self, mark: int) -> list[Entry]:
        """The entries logged since `mark` (a length of `log`)."""
        return self.log[mark:]


RETURN_0 = "mov %r0, 0\nexit"


def recorder(
    backend: Backend,
    *,
    perf_link: bool | None = None,
    fail: dict[Entry, int] | None = None,
    hide: tuple[str, ...] = (),
) -> SyscallLog:
    """A SyscallLog over `backend` whose perf_link answer is already cached (the kernel's, or
    `perf_link` when given: False is what a kernel before 5.15 answers) and whose log is empty.
    """
    log = SyscallLog(backend, hide=hide)
    if perf_link is False:
        log.fail[("bpf", "LINK_CREATE")] = errno.EINVAL
    features.probe(features.Feature.PERF_LINK, backend=log)
    if perf_link is False:
        del log.fail[("bpf", "LINK_CREATE")]
    log.fail.update(fail or {})
    log.log.clear()
    return log


def trivial(backend: Backend, prog_type: ProgType) -> OwnedFd:
    """A `return 0` program of `prog_type`."""
    return bpf.prog_load(prog_type, assemble_text(RETURN_0), backend=backend)


def load(log: SyscallLog, prog_type: ProgType) -> OwnedFd:
    """A `return 0` program of `prog_type` loaded through `log` (left out of the log)."""
    prog = trivial(log, prog_type)
    log.log.clear()
    return prog


def tracepoint_opening(backend: Backend) -> list[Entry]:
    """What opening TRACEPOINT reads and calls."""
    root = find_tracefs(backend)
    return [
        ("read_file", f"{root}/{TRACEFS_MARKER}"),
        ("read_file", f"{root}/events/{TRACEPOINT[0]}/{TRACEPOINT[1]}/id"),
        ("perf_event_open",),
    ]


ATTACH_CALLS: dict[PerfAttachMethod, list[Entry]] = {
    LINK: [("bpf", "LINK_CREATE")],
    IOCTL: [
        ("ioctl", "PERF_EVENT_IOC_SET_BPF", "perf"),
        ("ioctl", "PERF_EVENT_IOC_ENABLE", "perf"),
    ],
}
DETACH_CALLS: dict[PerfAttachMethod, list[Entry]] = {
    LINK: [("close", "link"), ("close", "perf")],
    IOCTL: [("ioctl", "PERF_EVENT_IOC_DISABLE", "perf"), ("close", "perf")],
}


# ---------------------------------------------------------------------------------------------
# Pure parts
# ---------------------------------------------------------------------------------------------
@given(st.text(max_size=120))
def test_probe_event_names_are_unique_c_identifiers(hint: str) -> None:
    first, second = probe_event_name(hint), probe_event_name(hint)
    assert first != second
    for name in (first, second):
        assert name.startswith(f"bpfsys_{os.getpid()}_")
        assert len(name) <= EVENT_NAME_MAX
        assert name.isascii() and name.replace("_", "a").isalnum()


@pytest.mark.parametrize(
    ("kind", "definition", "group"),
    [
        (ProbeKind.KPROBE, "p:kprobes/ev do_sys_open+8", "kprobes"),
        (ProbeKind.KRETPROBE, "r:kprobes/ev do_sys_open+8", "kprobes"),
        (ProbeKind.UPROBE, "p:uprobes/ev do_sys_open+8", "uprobes"),
        (ProbeKind.URETPROBE, "r:uprobes/ev do_sys_open+8", "uprobes"),
    ],
)
def test_probe_event_lines(kind: ProbeKind, definition: str, group: str) -> None:
    event = ProbeEvent(kind, "ev", "do_sys_open+8", "/t")
    assert event.definition == definition
    assert event.removal == f"-:{group}/ev"
    assert event.events_file == f"/t/{kind.pmu}_events"


def test_attach_not_supported_is_an_oserror_that_pickles() -> None:
    err = AttachNotSupported("no way")
    assert isinstance(err, OSError) and err.errno == errno.EOPNOTSUPP
    again = pickle.loads(pickle.dumps(err))
    assert (type(again), again.errno, str(again)) == (AttachNotSupported, err.errno, str(err))


# ---------------------------------------------------------------------------------------------
# Tracepoints on the live kernel: the program runs, and stops after detach
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(PerfAttachMethod))
def test_tracepoint_program_runs_until_detached(
    live: Backend, live_counter: Counter, no_fd_leak: None, method: PerfAttachMethod
) -> None:
    with live_counter.program(ProgType.TRACEPOINT, tgid=os.getpid()) as prog:
        attachment = attach_tracepoint(prog, *TRACEPOINT, method=method)
        with attachment:
            expected = method
            if method is PerfAttachMethod.AUTO:
                has_link = features.probe(features.Feature.PERF_LINK, backend=live)
                expected = LINK if has_link else IOCTL
            assert attachment.method is expected
            assert (attachment.link_fd is not None) is (expected is LINK)
            assert attachment.probe_event is None
            assert live_counter.delta(os.getpid) == CALLS
        assert attachment.detached
        assert attachment.perf_fd.closed
        assert attachment.link_fd is None or attachment.link_fd.closed
        assert live_counter.delta(os.getpid) == 0


def test_program_keeps_running_after_its_fd_is_closed(
    live: Backend, live_counter: Counter, no_fd_leak: None
) -> None:
    prog = live_counter.program(ProgType.TRACEPOINT, tgid=os.getpid())
    with attach_tracepoint(prog, *TRACEPOINT):
        prog.close()  # the link holds the program
        assert live_counter.delta(os.getpid) == CALLS


def test_cookie_reaches_the_program(live: Backend, live_counter: Counter, no_fd_leak: None) -> None:
    if not features.probe(features.Feature.PERF_LINK, backend=live):
        pytest.skip("the live kernel has no perf_event links")
    cookie = 0xFEED_FACE_CAFE_BEEF
    with (
        live_counter.cookie_program(ProgType.TRACEPOINT, os.getpid()) as prog,
        attach_tracepoint(prog, *TRACEPOINT, cookie=cookie) as attachment,
    ):
        assert attachment.method is LINK
        os.getpid()
        assert live_counter.read() == cookie


def test_auto_falls_back_to_ioctl_on_a_kernel_without_perf_links(
    live: Backend, live_counter: Counter, no_fd_leak: None
) -> None:
    old = recorder(live, perf_link=False)  # LINK_CREATE(BPF_PERF_EVENT) refused, as on 5.4
    with (
        live_counter.program(ProgType.TRACEPOINT, tgid=os.getpid()) as prog,
        attach_tracepoint(prog.fileno(), *TRACEPOINT, backend=old) as attachment,
    ):
        assert attachment.method is IOCTL
        assert ("bpf", "LINK_CREATE") not in old.log
        assert live_counter.delta(os.getpid) == CALLS


def test_second_attach_to_one_event_is_eexist(
    live: Backend, live_counter: Counter, no_fd_leak: None
) -> None:
    with (
        live_counter.program(ProgType.TRACEPOINT) as prog,
        attach_tracepoint(prog, *TRACEPOINT) as attachment,
    ):
        for method in (LINK, IOCTL):
            duplicate = OwnedFd(os.dup(attachment.perf_fd.fileno()), live)
            with pytest.raises(SyscallError) as info:
                perf_attach(prog, duplicate, method=method)
            assert info.value.errno == errno.EEXIST
            assert duplicate.closed  # perf_attach owned it and closed it


# ---------------------------------------------------------------------------------------------
# Uprobes on the live kernel
# ---------------------------------------------------------------------------------------------
UPROBE_WAYS = [(s, m) for s in (ProbeSource.PMU, ProbeSource.TRACEFS) for m in (LINK, IOCTL)]


@pytest.mark.parametrize("retprobe", [False, True], ids=["uprobe", "uretprobe"])
@pytest.mark.parametrize(
    ("source", "method"), UPROBE_WAYS, ids=[f"{s}-{m}" for s, m in UPROBE_WAYS]
)
def test_uprobe_on_libc_getpid(
    live: Backend,
    live_counter: Counter,
    no_fd_leak: None,
    source: ProbeSource,
    method: PerfAttachMethod,
    retprobe: bool,
) -> None:
    getpid = libc_getpid()
    with live_counter.program(ProgType.KPROBE) as prog:
        attachment = attach_uprobe(
            prog,
            libc_with_getpid(),
            "getpid",
            pid=os.getpid(),
            retprobe=retprobe,
            method=method,
            source=source,
        )
        with attachment:
            assert attachment.method is method
            event = attachment.probe_event
            assert (event is not None) is (source is ProbeSource.TRACEFS)
            if event is not None:
                assert event_lines(live, event) != []
                assert event.definition.startswith("r:" if retprobe else "p:")
            assert live_counter.delta(getpid) == CALLS
        assert live_counter.delta(getpid) == 0
        if event is not None:
            assert event_lines(live, event) == []  # removed on detach


def test_uprobe_pid_limits_the_probe_to_that_process(
    live: Backend, live_counter: Counter, no_fd_leak: None
) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        with (
            live_counter.program(ProgType.KPROBE) as prog,
            attach_uprobe(prog, libc_with_getpid(), "getpid", pid=other.pid),
        ):
            assert live_counter.delta(libc_getpid()) == 0  # our calls are not the other's
    finally:
        other.kill()
        other.wait()


def test_uprobe_auto_source_uses_tracefs_without_the_uprobe_pmu(
    live: Backend, live_counter: Counter, no_fd_leak: None
) -> None:
    no_pmu = recorder(live, hide=(f"{PMU_ROOT}/uprobe/type",))
    with (
        live_counter.program(ProgType.KPROBE) as prog,
        attach_uprobe(
            prog.fileno(), libc_with_getpid(), "getpid", pid=os.getpid(), backend=no_pmu
        ) as a,
    ):
        assert a.probe_event is not None
        assert no_pmu.log[0] == ("read_file", f"{PMU_ROOT}/uprobe/type")
        assert live_counter.delta(libc_getpid()) == CALLS


TARGET_C = r"""
#include <stdlib.h>
__attribute__((noinline)) int bpfsys_target(int x) { __asm__ volatile(""); return x + 1; }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 0, s = 0;
    for (int i = 0; i < n; i++) s = bpfsys_target(s);
    return s == n ? 0 : 1;
}
"""


@pytest.fixture(scope="module")
def non_pie_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A non-PIE executable (text at 0x401000, file offset 0x1000) with `bpfsys_target`."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the uprobe target")
    folder = tmp_path_factory.mktemp("uprobe_target")
    (folder / "target.c").write_text(TARGET_C)
    binary = folder / "target"
    subprocess.run(
        [compiler, "-O1", "-fno-pie", "-no-pie", "-o", str(binary), str(folder / "target.c")],
        check=True,
        capture_output=True,
    )
    return binary


@pytest.mark.parametrize("retprobe", [False, True], ids=["uprobe", "uretprobe"])
def test_uprobe_on_a_function_of_a_non_pie_executable(
    live: Backend,
    live_counter: Counter,
    no_fd_leak: None,
    non_pie_binary: Path,
    retprobe: bool,
) -> None:
    with (
        live_counter.program(ProgType.KPROBE) as prog,
        attach_uprobe(prog, non_pie_binary, "bpfsys_target", retprobe=retprobe),
    ):
        last_cpu = max(os.sched_getaffinity(0))  # the probe's event is on CPU 0 (pid -1)
        subprocess.run(
            [str(non_pie_binary), "3"],
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {last_cpu}),
        )
        assert live_counter.read() == 3


@pytest.mark.parametrize("source", [ProbeSource.PMU, ProbeSource.TRACEFS])
def test_uprobe_offset_is_added_to_the_symbol(
    backend: Backend, non_pie_binary: Path, no_fd_leak: None, source: ProbeSource
) -> None:
    """The probe goes at the symbol's file offset plus `offset` (seen in the tracefs line; the
    PMU's attr.config2 gets the same number): perf_event_open is failed on purpose, since
    offset 3 need not start an instruction."""
    log = recorder(backend, fail={("perf_event_open",): errno.EPERM})
    start = symbol_file_offset(non_pie_binary, "bpfsys_target")
    with load(log, ProgType.KPROBE) as prog:
        with pytest.raises(SyscallError):
            attach_uprobe(prog, non_pie_binary, "bpfsys_target", offset=3, source=source)
        definitions = [e[2] for e in log.log if e[0] == "write_file" and e[2][0] == "p"]
        if source is ProbeSource.TRACEFS:
            assert definitions[0].endswith(f" {non_pie_binary}:{start + 3:#x}")
        else:
            assert definitions == []
            ((attr, name),) = log.opened
            assert (name, attr.config2) == (os.fsencode(non_pie_binary), start + 3)


# ---------------------------------------------------------------------------------------------
# Kprobes on the live kernel
# ---------------------------------------------------------------------------------------------
def test_kprobe_on_this_kernel(live: Backend, live_counter: Counter, no_fd_leak: None) -> None:
    """Attaches and counts where the kernel has kprobes; here (no kprobe PMU, no kprobe_events)
    the clear AttachNotSupported error, with nothing written and nothing left open."""
    pmu = has_file(live, f"{PMU_ROOT}/kprobe/type")
    events = has_file(live, f"{find_tracefs(live)}/kprobe_events")
    with live_counter.program(ProgType.KPROBE, tgid=os.getpid()) as prog:
        if pmu or events:
            with attach_kprobe(prog, "__x64_sys_getpid"):
                assert live_counter.delta(os.getpid) == CALLS
            return
        log = recorder(live)
        with pytest.raises(AttachNotSupported) as info:
            attach_kprobe(prog.fileno(), "__x64_sys_getpid", backend=log)
        assert info.value.errno == errno.EOPNOTSUPP
        assert f"{PMU_ROOT}/kprobe/type" in str(info.value)
        assert "kprobe_events" in str(info.value)
        assert [e[0] for e in log.log] == ["read_file"] * 3  # PMU type, tracefs, kprobe_events
        with pytest.raises(SyscallError) as forced:
            attach_kprobe(prog, "__x64_sys_getpid", source=ProbeSource.PMU)
        assert forced.value.errno == errno.ENOENT
        assert forced.value.filename == f"{PMU_ROOT}/kprobe/type"


# ---------------------------------------------------------------------------------------------
# The exact system calls of each path (any backend)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [LINK, IOCTL])
def test_tracepoint_syscall_sequence(
    backend: Backend, no_fd_leak: None, method: PerfAttachMethod
) -> None:
    log = recorder(backend)
    with load(log, ProgType.TRACEPOINT) as prog:
        attachment = attach_tracepoint(prog, *TRACEPOINT, method=method, backend=log)
        assert log.log == tracepoint_opening(backend) + ATTACH_CALLS[method]
        mark = len(log.log)
        attachment.detach()
        attachment.detach()  # idempotent: nothing more
        assert log.after(mark) == DETACH_CALLS[method]


@pytest.mark.parametrize("perf_link", [True, False], ids=["6.x", "5.4"])
def test_auto_method_follows_the_perf_link_probe(
    backend: Backend, no_fd_leak: None, perf_link: bool
) -> None:
    log = recorder(backend, perf_link=perf_link)
    expected = LINK if perf_link else IOCTL
    with (
        load(log, ProgType.TRACEPOINT) as prog,
        attach_tracepoint(prog, *TRACEPOINT, backend=log) as attachment,
    ):
        assert attachment.method is expected
        assert log.log == tracepoint_opening(backend) + ATTACH_CALLS[expected]


@pytest.mark.parametrize("method", [LINK, IOCTL])
def test_tracefs_uprobe_syscall_sequence(
    backend: Backend, no_fd_leak: None, method: PerfAttachMethod
) -> None:
    log = recorder(backend)
    root = find_tracefs(backend)
    path = libc_with_getpid()
    getpid_at = symbol_file_offset(path, "getpid")
    with load(log, ProgType.KPROBE) as prog:
        attachment = attach_uprobe(
            prog, path, offset=getpid_at, method=method, source="tracefs", backend=log
        )
        event = attachment.probe_event
        assert event is not None
        events_file = f"{root}/uprobe_events"
        assert event.definition == f"p:uprobes/{event.name} {path}:{getpid_at:#x}"
        assert log.log == [
            ("read_file", f"{root}/{TRACEFS_MARKER}"),
            ("read_file", events_file),
            ("write_file", events_file, event.definition),
            ("read_file", f"{root}/{TRACEFS_MARKER}"),
            ("read_file", f"{root}/events/uprobes/{event.name}/id"),
            ("perf_event_open",),
            *ATTACH_CALLS[method],
        ]
        mark = len(log.log)
        attachment.detach()
        assert log.after(mark) == [
            *DETACH_CALLS[method],
            ("write_file", events_file, f"-:uprobes/{event.name}"),
        ]
        assert event_lines(backend, event) == []


def test_pmu_uprobe_syscall_sequence(backend: Backend, no_fd_leak: None) -> None:
    log = recorder(backend)
    with (
        load(log, ProgType.KPROBE) as prog,
        attach_uprobe(prog, libc_with_getpid(), "getpid", method=LINK, backend=log),
    ):
        assert log.log == [
            ("read_file", f"{PMU_ROOT}/uprobe/type"),  # AUTO source: is there a PMU?
            ("read_file", f"{PMU_ROOT}/uprobe/type"),  # perf_event_open_probe's type
            ("perf_event_open",),
            ("bpf", "LINK_CREATE"),
        ]


def test_kprobe_without_pmu_or_kprobe_events(backend: Backend, no_fd_leak: None) -> None:
    root = find_tracefs(backend)
    log = recorder(backend, hide=(f"{PMU_ROOT}/kprobe/type", f"{root}/kprobe_events"))
    with load(log, ProgType.KPROBE) as prog:
        with pytest.raises(AttachNotSupported, match="kprobe_events"):
            attach_kprobe(prog, "do_sys_openat2", backend=log)
        assert log.log == [
            ("read_file", f"{PMU_ROOT}/kprobe/type"),
            ("read_file", f"{root}/{TRACEFS_MARKER}"),
            ("read_file", f"{root}/kprobe_events"),
        ]


# ---------------------------------------------------------------------------------------------
# Error paths: what is undone, in which order, and that nothing leaks
# ---------------------------------------------------------------------------------------------
TRACEPOINT_FAULTS: list[tuple[PerfAttachMethod, Entry, list[Entry]]] = [
    (LINK, ("bpf", "LINK_CREATE"), [("close", "perf")]),
    (IOCTL, ("ioctl", "PERF_EVENT_IOC_SET_BPF"), [("close", "perf")]),
    (
        IOCTL,
        ("ioctl", "PERF_EVENT_IOC_ENABLE"),
        [("close", "perf")],  # no DISABLE: the event never got enabled
    ),
]


@pytest.mark.parametrize(
    ("method", "fault", "undo"), TRACEPOINT_FAULTS, ids=[f[1][-1] for f in TRACEPOINT_FAULTS]
)
def test_failed_attach_closes_the_perf_fd(
    backend: Backend,
    no_fd_leak: None,
    method: PerfAttachMethod,
    fault: Entry,
    undo: list[Entry],
) -> None:
    log = recorder(backend, fail={fault: errno.EPERM})
    with load(log, ProgType.TRACEPOINT) as prog:
        with pytest.raises(SyscallError) as info:
            attach_tracepoint(prog, *TRACEPOINT, method=method, backend=log)
        assert info.value.errno == errno.EPERM
        failed_at = log.log.index(fault if fault[0] == "bpf" else (*fault, "perf"))
        assert log.after(failed_at + 1) == undo


UPROBE_FAULTS: list[tuple[PerfAttachMethod, Entry, list[str]]] = [
    (LINK, ("perf_event_open",), ["remove"]),
    (LINK, ("bpf", "LINK_CREATE"), ["close", "remove"]),
    (IOCTL, ("ioctl", "PERF_EVENT_IOC_SET_BPF"), ["close", "remove"]),
]


@pytest.mark.parametrize(
    ("method", "fault", "undo"), UPROBE_FAULTS, ids=[f[1][-1] for f in UPROBE_FAULTS]
)
def test_failed_tracefs_attach_removes_the_probe_event(
    backend: Backend,
    no_fd_leak: None,
    method: PerfAttachMethod,
    fault: Entry,
    undo: list[str],
) -> None:
    log = recorder(backend, fail={fault[:2]: errno.EPERM})
    with load(log, ProgType.KPROBE) as prog:
        with pytest.raises(SyscallError) as info:
            attach_uprobe(
                prog, libc_with_getpid(), "getpid", method=method, source="tracefs", backend=log
            )
        assert info.value.errno == errno.EPERM
        writes = [e for e in log.log if e[0] == "write_file"]
        assert len(writes) == 2
        name = writes[0][2].split()[0].split("/")[1]
        assert writes[1][2] == f"-:uprobes/{name}"
        failed_at = next(i for i, e in enumerate(log.log) if e[: len(fault)] == fault)
        steps = ["remove" if e[0] == "write_file" else e[0] for e in log.after(failed_at + 1)]
        assert steps == undo
        root = find_tracefs(backend)
        assert f"/{name} " not in backend.read_file(f"{root}/uprobe_events").decode()


def test_failed_probe_definition_leaves_nothing(backend: Backend, no_fd_leak: None) -> None:
    log = recorder(backend)
    with load(log, ProgType.KPROBE) as prog:
        with pytest.raises(SyscallError) as info:
            attach_uprobe(prog, "/nonexistent/binary", offset=0x10, source="tracefs", backend=log)
        assert info.value.errno == errno.ENOENT
        assert info.value.filename is not None and info.value.filename.endswith("/uprobe_events")
        assert [e[0] for e in log.log if e[0] != "read_file"] == ["write_file"]


def test_detach_runs_every_step_when_one_fails(backend: Backend, no_fd_leak: None) -> None:
    log = recorder(backend)
    with load(log, ProgType.KPROBE) as prog:
        attachment = attach_uprobe(
            prog, libc_with_getpid(), "getpid", method=IOCTL, source="tracefs", backend=log
        )
        event = attachment.probe_event
        assert event is not None
        log.fail[("ioctl", "PERF_EVENT_IOC_DISABLE")] = errno.EIO
        mark = len(log.log)
        with pytest.raises(SyscallError) as info:
            attachment.detach()
        assert info.value.errno == errno.EIO
        assert [e[:2] for e in log.after(mark)] == [
            ("ioctl", "PERF_EVENT_IOC_DISABLE"),
            ("close", "perf"),
            ("write_file", event.events_file),
        ]
        assert attachment.detached and attachment.perf_fd.closed
        attachment.detach()  # nothing left to do, nothing raised
        assert event_lines(backend, event) == []


@pytest.mark.parametrize("perf_link", [True, False], ids=["ioctl-forced", "no-perf-link"])
def test_cookie_without_a_link_is_not_supported(
    backend: Backend, no_fd_leak: None, perf_link: bool
) -> None:
    log = recorder(backend, perf_link=perf_link)
    method = IOCTL if perf_link else PerfAttachMethod.AUTO
    with load(log, ProgType.TRACEPOINT) as prog:
        with pytest.raises(AttachNotSupported, match="BPF cookie needs a perf_event bpf_link"):
            attach_tracepoint(prog, *TRACEPOINT, cookie=1, method=method, backend=log)
        assert log.log == [*tracepoint_opening(backend), ("close", "perf")]


@pytest.mark.parametrize(
    ("prog_type", "method"),
    [(ProgType.SOCKET_FILTER, LINK), (ProgType.SOCKET_FILTER, IOCTL), (ProgType.KPROBE, LINK)],
)
def test_program_of_the_wrong_type_is_einval(
    backend: Backend, no_fd_leak: None, prog_type: ProgType, method: PerfAttachMethod
) -> None:
    with trivial(backend, prog_type) as prog:
        with pytest.raises(SyscallError) as info:
            attach_tracepoint(prog, *TRACEPOINT, method=method)
        assert info.value.errno == errno.EINVAL


def test_unknown_tracepoint_is_enoent(backend: Backend, no_fd_leak: None) -> None:
    with trivial(backend, ProgType.TRACEPOINT) as prog:
        with pytest.raises(SyscallError) as info:
            attach_tracepoint(prog, "syscalls", "sys_enter_no_such_call")
        assert info.value.errno == errno.ENOENT


# ---------------------------------------------------------------------------------------------
# Arguments and ownership
# ---------------------------------------------------------------------------------------------
def open_tracepoint(backend: Backend) -> OwnedFd:
    return perf_event_open_trace_point(*TRACEPOINT, backend=backend)


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"cookie": -1}, ValueError),
    ({"cookie": 1 << 64}, ValueError),
    ({"cookie": "1"}, TypeError),
    ({"method": "fast"}, ValueError),
]


@pytest.mark.parametrize(("options", "error"), BAD_OPTIONS, ids=[str(o) for o, _ in BAD_OPTIONS])
def test_perf_attach_closes_the_perf_fd_on_bad_arguments(
    backend: Backend, no_fd_leak: None, options: dict[str, Any], error: type[Exception]
) -> None:
    log = recorder(backend)
    perf = open_tracepoint(log)
    with load(log, ProgType.TRACEPOINT) as prog, pytest.raises(error):
        perf_attach(prog, perf, **options)
    assert perf.closed
    assert log.log[-2:] == [("close", "perf"), ("close", "prog_load")]


def test_perf_attach_takes_the_fd_from_the_caller(backend: Backend, no_fd_leak: None) -> None:
    perf = open_tracepoint(backend)
    number = perf.fileno()
    with (
        trivial(backend, ProgType.TRACEPOINT) as prog,
        perf_attach(prog, perf) as attachment,
    ):
        assert perf.closed  # the caller's object gave the fd up ...
        assert attachment.perf_fd.fileno() == number  # ... to the attachment
        perf.close()  # a no-op: no double close
        assert perf_event_ioctl(attachment.perf_fd, QueryBpf(4)) == [bpf.prog_info(prog).id]
    assert attachment.perf_fd.closed


def test_perf_attach_rejects_what_it_cannot_own(backend: Backend, no_fd_leak: None) -> None:
    perf = open_tracepoint(backend)
    with trivial(backend, ProgType.TRACEPOINT) as prog:
        with pytest.raises(TypeError, match="must be an OwnedFd"):
            perf_attach(prog, untyped(perf.fileno()))
        assert not perf.closed  # a bare number stays the caller's
        perf.close()
        with pytest.raises(ValueError, match="closed OwnedFd"):
            perf_attach(prog, perf)


def test_perf_attach_refuses_fds_of_another_backend(backend: Backend, no_fd_leak: None) -> None:
    other = DelegatingBackend(backend)
    perf = open_tracepoint(backend)
    with (
        trivial(backend, ProgType.TRACEPOINT) as prog,
        pytest.raises(ValueError, match="different backend"),
    ):
        perf_attach(prog, perf, backend=other)
    assert perf.closed


BAD_CALLS: dict[str, tuple[Callable[[OwnedFd], Attachment], type[Exception]]] = {
    "kprobe-blank-symbol": (lambda p: attach_kprobe(p, "do sys"), ValueError),
    "kprobe-empty-symbol": (lambda p: attach_kprobe(p, ""), ValueError),
    "kprobe-negative-offset": (lambda p: attach_kprobe(p, "f", offset=-1), ValueError),
    "kprobe-retprobe-int": (lambda p: attach_kprobe(p, "f", retprobe=untyped(1)), TypeError),
    "kprobe-unknown-source": (lambda p: attach_kprobe(p, "f", source="debugfs"), ValueError),
    "uprobe-empty-path": (lambda p: attach_uprobe(p, "", offset=1), ValueError),
    "uprobe-int-path": (lambda p: attach_uprobe(p, untyped(3), offset=1), TypeError),
    "uprobe-bad-pid": (lambda p: attach_uprobe(p, "/bin/true", offset=1, pid=-2), ValueError),
    "uprobe-unknown-symbol": (lambda p: attach_uprobe(p, "/bin/true", "no_such_fn"), ValueError),
    "uprobe-missing-file": (lambda p: attach_uprobe(p, "/no/such/file", "main"), OSError),
    "uprobe-bad-cookie": (lambda p: attach_uprobe(p, "/bin/true", offset=1, cookie=-1), ValueError),
    "tracepoint-bad-name": (lambda p: attach_tracepoint(p, "syscalls", "a/b"), ValueError),
}


@pytest.mark.parametrize(("call", "error"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arguments_fail_before_any_system_call(
    backend: Backend,
    no_fd_leak: None,
    call: Callable[[OwnedFd], Attachment],
    error: type[Exception],
) -> None:
    log = SyscallLog(backend)
    with load(log, ProgType.KPROBE) as prog:
        with use_backend(log), pytest.raises(error):
            call(untyped(prog.fileno()))
        assert log.log == []


def test_a_dropped_attachment_detaches_with_a_warning(backend: Backend, no_fd_leak: None) -> None:
    with trivial(backend, ProgType.KPROBE) as prog:
        attachment = attach_uprobe(prog, libc_with_getpid(), "getpid", source="tracefs")
        event = attachment.probe_event
        assert event is not None
        assert event.name in repr(attachment)
        with pytest.warns(ResourceWarning, match="never detached"):
            del attachment
            gc.collect()
        assert event_lines(backend, event) == []


def test_live_backend_default_is_used_without_backend_argument(
    live: Backend, no_fd_leak: None
) -> None:
    with trivial(live, ProgType.TRACEPOINT) as prog:
        raw = prog.fileno()
        with attach_tracepoint(raw, *TRACEPOINT) as attachment:  # an int prog fd
            assert attachment.backend is live
            assert isinstance(attachment.backend, LiveBackend)
