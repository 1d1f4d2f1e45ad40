"""Exhaustive fault runs over bpfsys on the simulator: every call of each scenario fails in
turn, with each errno of ERRNOS, and nothing may come out but an OSError, nor be left behind.

The errnos are the ones bpfsys reads meaning into (ENOENT: absent, end of a walk, no PMU;
ENOSPC: buffer too small; EAGAIN: retry a load; EINVAL/EBADF: feature probe answers) and EPERM
for a plain refusal.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import pytest
from test_attach import libc_with_getpid

from bpfsys import bpf, features
from bpfsys.abi import MapFlag, MapType, ProgType, UpdateFlag
from bpfsys.asm import assemble_text
from bpfsys.attach import (
    PerfAttachMethod,
    ProbeSource,
    attach_kprobe,
    attach_tracepoint,
    attach_uprobe,
)
from bpfsys.backend import Backend
from bpfsys.elf_symbols import symbol_file_offset
from bpfsys.perf_buffer import PerfBuffer, PerfEventArray
from bpfsys.ringbuf import RingBuf
from kernelsim.backend import SimBackend
from kernelsim.faults import FaultReport, exhaustive_faults
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.perf.output import perf_output

ERRNOS = (errno.EPERM, errno.ENOENT, errno.ENOSPC, errno.EAGAIN, errno.EINVAL, errno.EBADF)
Scenario = Callable[[Backend], None]


def sims(**config: object) -> Callable[[], SimBackend]:
    return lambda: SimBackend(Kernel(KernelConfig(**config)))  # type: ignore[arg-type]


def run(scenario: Scenario, make: Callable[[], SimBackend] = SimBackend) -> FaultReport:
    report = exhaustive_faults(scenario, make, ERRNOS)
    assert report.calls, "the scenario made no call"
    return report


RETURN_0 = "mov %r0, 0\nexit"


# ---------------------------------------------------------------------------------------------
# bpf.py: maps
# ---------------------------------------------------------------------------------------------
def map_elements(backend: Backend) -> None:
    with bpf.map_create(MapType.HASH, 4, 8, 8, name="counts") as fd:
        bpf.map_update_elem(fd, bytes(4), bytes(8), flags=UpdateFlag.NOEXIST)
        assert bpf.map_lookup_elem(fd, bytes(4), 8) in (bytes(8), None)
        bpf.map_get_next_key(fd, None, 4)
        bpf.map_lookup_and_delete_elem(fd, bytes(4), 8)
        bpf.map_delete_elem(fd, bytes(4))
        bpf.map_info(fd)


def map_batches(backend: Backend) -> None:
    keys = [i.to_bytes(4, "little") for i in range(3)]
    with bpf.map_create(MapType.HASH, 4, 4, 8) as fd:
        bpf.map_update_batch(fd, keys, keys)
        page = bpf.map_lookup_batch(fd, 4, 4, 2)
        if page.next_batch is not None:
            bpf.map_lookup_batch(fd, 4, 4, 2, in_batch=page.next_batch)
        bpf.map_delete_batch(fd, keys[:1])
        bpf.map_lookup_and_delete_batch(fd, 4, 4, 8)


def map_ids_and_freeze(backend: Backend) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 4, 2, flags=MapFlag.RDONLY_PROG) as fd:
        bpf.map_freeze(fd)
        for map_id in bpf.map_ids():
            with bpf.map_get_fd_by_id(map_id):
                pass
        assert bpf.percpu_value_size(4) > 0


def pin_and_get(backend: Backend) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 4, 1) as fd:
        bpf.obj_pin(fd, "/sys/fs/bpf/pinned")
    with bpf.obj_get("/sys/fs/bpf/pinned") as again:
        bpf.map_info(again)


# ---------------------------------------------------------------------------------------------
# bpf.py: programs and links
# ---------------------------------------------------------------------------------------------
def program_with_a_map(backend: Backend) -> None:
    with bpf.map_create(MapType.ARRAY, 4, 8, 1) as values:
        text = f"""
            stw [%r10-4], 0
            lddw %r1, map_fd({values.fileno()})
            mov %r2, %r10
            add %r2, -4
            call 1
            mov %r0, 0
            exit
        """
        with bpf.prog_load(ProgType.SOCKET_FILTER, assemble_text(text), name="uses_map") as prog:
            bpf.prog_test_run(prog, bytes(64))
            bpf.prog_map_ids(prog)
            bpf.prog_info(prog)
            for prog_id in bpf.prog_ids():
                with bpf.prog_get_fd_by_id(prog_id):
                    pass


def load_with_a_log(backend: Backend) -> None:
    with bpf.prog_load(ProgType.SOCKET_FILTER, assemble_text(RETURN_0), log_level=1).fd:
        pass


def raw_tracepoint_link(backend: Backend) -> None:
    with (
        bpf.prog_load(ProgType.RAW_TRACEPOINT, assemble_text(RETURN_0)) as prog,
        bpf.raw_tracepoint_open(prog, "sys_enter") as link,
    ):
        bpf.link_info(link)
        assert bpf.link_tp_name(link) == "sys_enter"
        for link_id in bpf.link_ids():
            with bpf.link_get_fd_by_id(link_id):
                pass


def stats(backend: Backend) -> None:
    with bpf.enable_stats():
        pass


# ---------------------------------------------------------------------------------------------
# features.py
# ---------------------------------------------------------------------------------------------
def every_feature_probe(backend: Backend) -> None:
    features.probe_all()


# ---------------------------------------------------------------------------------------------
# perf_buffer.py
# ---------------------------------------------------------------------------------------------
def perf_buffer(backend: Backend) -> None:
    assert isinstance(backend.inner, SimBackend)  # type: ignore[attr-defined]
    kernel = backend.inner.kernel  # type: ignore[attr-defined]
    with PerfBuffer.open(0, 1) as buffer:
        perf_output(kernel, buffer.fileno(), b"sample")
        list(buffer.records())
        perf_output(kernel, buffer.fileno(), b"sample")
        with buffer.read_batch() as batch:
            batch.records()
        perf_output(kernel, buffer.fileno(), b"sample")
        buffer.read_events([bytearray()])


def perf_event_array(backend: Backend) -> None:
    with (
        bpf.map_create(MapType.PERF_EVENT_ARRAY, 4, 4, 2) as events,
        PerfEventArray.open(events, 1) as array,
    ):
        array.poll(timeout=0)
        list(array.records())


# ---------------------------------------------------------------------------------------------
# attach.py
# ---------------------------------------------------------------------------------------------
def tracepoint(method: PerfAttachMethod) -> Scenario:
    def scenario(backend: Backend) -> None:
        with (
            bpf.prog_load(ProgType.TRACEPOINT, assemble_text(RETURN_0)) as prog,
            attach_tracepoint(prog, "syscalls", "sys_enter_getpid", method=method),
        ):
            pass

    return scenario


def kprobe(source: ProbeSource, *, cookie: int | None = None) -> Scenario:
    def scenario(backend: Backend) -> None:
        with (
            bpf.prog_load(ProgType.KPROBE, assemble_text(RETURN_0)) as prog,
            attach_kprobe(prog, "vfs_read", retprobe=True, source=source, cookie=cookie),
        ):
            pass

    return scenario


@functools.cache
def getpid_in_libc() -> tuple[str, int]:
    """The libc file and the file offset of its getpid (read from the ELF file once)."""
    path = libc_with_getpid()
    return path, symbol_file_offset(path, "getpid")


def uprobe(source: ProbeSource) -> Scenario:
    def scenario(backend: Backend) -> None:
        path, offset = getpid_in_libc()
        with (
            bpf.prog_load(ProgType.KPROBE, assemble_text(RETURN_0)) as prog,
            attach_uprobe(prog, path, None, offset, source=source),
        ):
            pass

    return scenario


# ---------------------------------------------------------------------------------------------
# ringbuf.py
# ---------------------------------------------------------------------------------------------
def ring_buffer(backend: Backend) -> None:
    with bpf.map_create(MapType.RINGBUF, 0, 0, 4096) as fd, RingBuf.open(fd) as ring:
        ring.poll(timeout=0)
        list(ring.records())


SCENARIOS: list[tuple[str, Scenario, Callable[[], SimBackend]]] = [
    ("map_elements", map_elements, SimBackend),
    ("map_batches", map_batches, SimBackend),
    ("map_ids_and_freeze", map_ids_and_freeze, SimBackend),
    ("pin_and_get", pin_and_get, SimBackend),
    ("program_with_a_map", program_with_a_map, SimBackend),
    ("load_with_a_log", load_with_a_log, SimBackend),
    ("raw_tracepoint_link", raw_tracepoint_link, SimBackend),
    ("enable_stats", stats, SimBackend),
    ("features_6_18", every_feature_probe, SimBackend),
    ("features_5_4", every_feature_probe, sims(version="5.4")),
    ("perf_buffer", perf_buffer, SimBackend),
    ("tracepoint_link", tracepoint(PerfAttachMethod.LINK), SimBackend),
    ("tracepoint_ioctl_5_4", tracepoint(PerfAttachMethod.AUTO), sims(version="5.4")),
    ("kprobe_pmu_cookie", kprobe(ProbeSource.PMU, cookie=7), SimBackend),
    ("kretprobe_tracefs", kprobe(ProbeSource.TRACEFS), SimBackend),
    ("kprobe_tracefs_5_4", kprobe(ProbeSource.AUTO), sims(version="5.4")),
    ("uprobe_pmu", uprobe(ProbeSource.PMU), SimBackend),
    ("uprobe_tracefs", uprobe(ProbeSource.TRACEFS), SimBackend),
    ("ring_buffer", ring_buffer, SimBackend),
]


@pytest.mark.parametrize(
    ("scenario", "make"),
    [pytest.param(scenario, make, id=name) for name, scenario, make in SCENARIOS],
)
def test_no_fault_escapes_or_leaks(scenario: Scenario, make: Callable[[], SimBackend]) -> None:
    report = run(scenario, make)
    report.assert_ok()


def sites_in(function: str, *, inside: bool) -> list[int]:
    """The call sites of `perf_event_array` made (or not made) inside `function`."""
    counting = exhaustive_faults(perf_event_array, SimBackend, sites=[])
    return [
        record.index
        for record in counting.calls
        if any(frame.function == function for frame in record.stack) == inside
    ]


def test_perf_event_array_opens_and_reads_without_escape_or_leak() -> None:
    sites = sites_in("PerfEventArray.close", inside=False)
    exhaustive_faults(perf_event_array, SimBackend, ERRNOS, sites=sites).assert_ok()


def test_perf_event_array_closes_every_buffer_when_one_fails() -> None:
    sites = sites_in("PerfEventArray.close", inside=True)
    assert sites
    exhaustive_faults(perf_event_array, SimBackend, ERRNOS, sites=sites).assert_ok()
