"""Shared fixtures: the backends every behaviour test runs on, and fd-leak accounting.

`backend` is parametrized over BACKENDS; the live half skips itself, with the reason, where the
process may not use bpf(). Tests written against `backend` run unchanged on every backend.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from bpfsys.abi import BpfCmd, MapCreateAttr, MapType
from bpfsys.backend import Backend, LiveBackend, use_backend
from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig

BACKENDS = os.environ.get("KERNELSIM_TEST_BACKENDS", "live").split(",")
"""The backends behaviour tests run on: the simulated kernel and the live one."""
CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance"


@cache
def live_unavailable_reason() -> str | None:
    """Why the live kernel cannot be used here, or None when bpf() works."""
    try:
        backend = LiveBackend()
    except OSError as exc:
        return f"no live backend on this machine: {exc}"
    attr = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=4, max_entries=1)
    try:
        fd = backend.bpf(BpfCmd.MAP_CREATE, attr, len(bytes(attr)))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return f"live kernel: bpf() not permitted for this process ({os.strerror(exc.errno)})"
        return f"live kernel: bpf() unavailable ({exc})"
    backend.close(fd)
    return None


def make_backend(name: str) -> Backend:
    if name == "live":
        reason = live_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        return LiveBackend()
    if name == "sim":
        return SimBackend(Kernel(KernelConfig()))
    raise ValueError(f"unknown backend {name!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Each backend in turn, made current for the test."""
    b = make_backend(str(request.param))
    with use_backend(b):
        yield b
    if isinstance(b, SimBackend):
        b.kernel.close_all()


@pytest.fixture
def live() -> Iterator[Backend]:
    """The live kernel only (skipped with the reason where it cannot be used)."""
    b = make_backend("live")
    with use_backend(b):
        yield b


@pytest.fixture
def sim_factory() -> Iterator[Callable[..., SimBackend]]:
    """Make simulated backends with a KernelConfig(**kwargs); closes their fds afterwards."""
    made: list[SimBackend] = []

    def make(**config: object) -> SimBackend:
        backend = SimBackend(Kernel(KernelConfig(**config)))  # type: ignore[arg-type]
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.kernel.close_all()


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test when it ends with more open fds than it began with."""
    before = open_fd_count()
    yield
    after = open_fd_count()
    assert after == before, f"fd leak: {before} open fds before the test, {after} after"


@pytest.fixture
def conformance_dir() -> Path:
    if not CONFORMANCE_DIR.is_dir():
        pytest.skip(f"conformance data not found at {CONFORMANCE_DIR} (../shared/conformance)")
    return CONFORMANCE_DIR
