"""Shared fixtures: the backends every behaviour test runs on, and fd-leak accounting.

`backend` is the kernelsim pytest plugin's `bpf_backend`: parametrized over `--bpf-backend`
(this project runs `sim,live`, see pyproject.toml), made current, leak-checked at teardown.
The live half skips itself, with the reason, where the process may not use bpf(). Tests written
against `backend` run unchanged on every backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfsys.backend import Backend, LiveBackend, use_backend
from kernelsim.backend import SimBackend
from kernelsim.kernel import Kernel, KernelConfig
from kernelsim.pytest_plugin import live_unavailable_reason

CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance"


@pytest.fixture
def backend(bpf_backend: Backend) -> Backend:
    """Each backend of --bpf-backend in turn, current for the test, leak-checked."""
    return bpf_backend


@pytest.fixture
def live() -> Iterator[Backend]:
    """The live kernel only (skipped with the reason where it cannot be used)."""
    reason = live_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with use_backend(LiveBackend()) as b:
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
