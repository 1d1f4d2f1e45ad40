"""Helpers shared by the tests/test_sim_perf*.py modules (attrs, probes, tracefs fixture)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from bpfsys.abi import (
    BpfCmd,
    BpfInsn,
    MapCreateAttr,
    MapType,
    PerfEventAttr,
    PerfSwId,
    PerfType,
    ProgLoadAttr,
    ProgType,
    SampleType,
)
from bpfsys.backend import Backend, LiveBackend

PAGE = os.sysconf("SC_PAGE_SIZE")
TRACEFS = "/sys/kernel/tracing"
PMU_ROOT = "/sys/bus/event_source/devices"


def bpf_output_attr(**fields: int) -> PerfEventAttr:
    """A PERF_COUNT_SW_BPF_OUTPUT sampling attr, with `fields` set on top."""
    attr = PerfEventAttr(
        type=PerfType.SOFTWARE,
        size=ctypes.sizeof(PerfEventAttr),
        config=PerfSwId.BPF_OUTPUT,
        sample_type=SampleType.RAW,
        sample_period=1,
        wakeup_events=1,
    )
    for name, value in fields.items():
        setattr(attr, name, value)
    return attr


def errno_of(call: Callable[[], Any]) -> int:
    """0 when `call` succeeds, else the errno of the OSError it raised."""
    try:
        call()
    except OSError as exc:
        return exc.errno or -1
    return 0


def open_errno(
    backend: Backend, attr: Any, pid: int = -1, cpu: int = 0, group: int = -1, flags: int = 0
) -> int:
    """perf_event_open's errno (0: it opened; the fd is closed again)."""
    try:
        fd = backend.perf_event_open(attr, pid, cpu, group, flags)
    except OSError as exc:
        return exc.errno or -1
    backend.close(fd)
    return 0


def ensure_tracefs(backend: Backend) -> None:
    """Mount tracefs on the live kernel when its events are missing; skip when that fails."""
    if not isinstance(backend, LiveBackend) or os.path.isdir(f"{TRACEFS}/events"):
        return
    result = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not os.path.isdir(f"{TRACEFS}/events"):
        pytest.skip(f"tracefs is not mounted and mounting it failed: {result.stderr.strip()}")


def tracepoint_id(backend: Backend, category: str, name: str) -> int:
    return int(backend.read_file(f"{TRACEFS}/events/{category}/{name}/id"))


def pmu_type(backend: Backend, pmu: str) -> int:
    try:
        return int(backend.read_file(f"{PMU_ROOT}/{pmu}/type"))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            pytest.skip(f"no {pmu} PMU on this kernel")
        raise


def load_prog(backend: Backend, prog_type: ProgType) -> int:
    """`r0 = 0; exit` as a program of `prog_type`: its fd."""
    insns = (BpfInsn * 2)(BpfInsn(code=0xB7), BpfInsn(code=0x95))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ProgLoadAttr(
        prog_type=prog_type,
        insn_cnt=2,
        insns=ctypes.addressof(insns),
        license=ctypes.addressof(license_),
    )
    return backend.bpf(BpfCmd.PROG_LOAD, attr, ctypes.sizeof(attr))


def array_map(backend: Backend) -> int:
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    return backend.bpf(BpfCmd.MAP_CREATE, attr, ctypes.sizeof(attr))


def closed_fd() -> int:
    """An fd number that is not open."""
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r
