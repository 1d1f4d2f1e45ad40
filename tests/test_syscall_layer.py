"""The syscall entry point, backend selection and OwnedFd, independent of any kernel."""

from __future__ import annotations

import asyncio
import errno
import gc
import pickle

import pytest
from spies import RecordingBackend

from bpfsys import syscall as sc
from bpfsys.abi import BpfCmd, MapCreateAttr, PerfEventAttr, PerfIoctl
from bpfsys.backend import (
    Backend,
    DelegatingBackend,
    LiveBackend,
    WritableBuffer,
    backend_from_spec,
    current_backend,
    use_backend,
)
from bpfsys.fd import OwnedFd
from kernelsim import SimBackend


class Failing(DelegatingBackend):
    """Every call fails with `err` (message as the simulator words it)."""

    def __init__(self, err: int) -> None:
        super().__init__(SimBackend())
        self.err = err
        self.closed: list[int] = []

    def bpf(self, cmd: int, attr: WritableBuffer, size: int) -> int:
        raise OSError(self.err, "Operation not permitted [EPERM: needs CAP_BPF]")

    def ioctl(self, fd: int, request: int, arg: int) -> int:
        raise OSError(self.err, "plain")

    def close(self, fd: int) -> None:
        self.closed.append(fd)


def test_syscall_error_names_the_call_and_keeps_errno() -> None:
    backend = Failing(errno.EPERM)
    with pytest.raises(sc.SyscallError) as info:
        sc.syscall(sc.Ebpf(BpfCmd.MAP_CREATE, MapCreateAttr()), backend)
    exc = info.value
    assert exc.errno == errno.EPERM
    assert exc.call == "bpf(BPF_MAP_CREATE)"
    assert str(exc).startswith("[Errno 1] bpf(BPF_MAP_CREATE): Operation not permitted")
    assert "needs CAP_BPF" in str(exc)
    assert isinstance(exc, OSError)
    again = pickle.loads(pickle.dumps(exc))
    assert (again.errno, again.call) == (errno.EPERM, exc.call)


def test_ioctl_error_names_the_request() -> None:
    with pytest.raises(sc.SyscallError) as info:
        sc.syscall(sc.PerfEventIoctl(5, PerfIoctl.ENABLE), Failing(errno.ENOTTY))
    assert info.value.call == "ioctl(PERF_EVENT_IOC_ENABLE)"
    with pytest.raises(sc.SyscallError) as info:
        sc.syscall(sc.PerfEventIoctl(5, 0x1234), Failing(errno.ENOTTY))
    assert info.value.call == "ioctl(0x1234)"


def test_syscall_values_are_frozen_and_validated() -> None:
    call = sc.PerfEventOpen(PerfEventAttr(), pid=-1, cpu=0)
    assert (call.group, call.flags) == (-1, 0)
    with pytest.raises(AttributeError):
        call.pid = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        sc.Ebpf(9999, MapCreateAttr())


def test_syscall_passes_attr_and_size() -> None:
    spy = RecordingBackend(SimBackend())
    with pytest.raises(sc.SyscallError):
        sc.syscall(sc.Ebpf(BpfCmd.PROG_GET_NEXT_ID, MapCreateAttr(map_type=1)), spy)
    assert spy.calls == [BpfCmd.PROG_GET_NEXT_ID]


def test_use_backend_nests_and_restores() -> None:
    outer, inner = SimBackend(), SimBackend()
    with use_backend(outer):
        assert current_backend() is outer
        with use_backend(inner):
            assert current_backend() is inner
        assert current_backend() is outer


def test_use_backend_is_per_task() -> None:
    first, second = SimBackend(), SimBackend()

    async def observe(backend: Backend) -> Backend:
        with use_backend(backend):
            await asyncio.sleep(0)
            return current_backend()

    async def both() -> list[Backend]:
        return list(await asyncio.gather(observe(first), observe(second)))

    assert asyncio.run(both()) == [first, second]


@pytest.mark.parametrize(
    ("spec", "version", "cpus"), [("sim", "6.18", 2), ("sim:kernel=5.4,cpus=4", "5.4", 4)]
)
def test_backend_from_spec_sim(spec: str, version: str, cpus: int) -> None:
    backend = backend_from_spec(spec)
    assert isinstance(backend, SimBackend)
    assert str(backend.kernel.config.version) == version
    assert backend.kernel.config.cpus == cpus


def test_backend_from_spec_live_and_errors() -> None:
    assert isinstance(backend_from_spec("live"), LiveBackend)
    for bad in ("bogus", "sim:cpus", "sim:colour=blue", "live:x=1"):
        with pytest.raises(ValueError, match="BPFSYS_BACKEND"):
            backend_from_spec(bad)


def test_owned_fd_closes_once_through_its_backend() -> None:
    backend = Failing(errno.EPERM)
    fd = OwnedFd(7, backend)
    assert fd.fileno() == 7 and int(fd) == 7 and not fd.closed
    with fd:
        pass
    fd.close()
    assert backend.closed == [7]
    assert fd.closed
    with pytest.raises(ValueError):
        fd.fileno()


def test_owned_fd_take_gives_up_ownership() -> None:
    backend = Failing(errno.EPERM)
    fd = OwnedFd(9, backend)
    assert fd.take() == 9
    fd.close()
    assert backend.closed == []


def test_owned_fd_leak_warns_and_closes() -> None:
    backend = Failing(errno.EPERM)
    fd = OwnedFd(11, backend)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del fd
        gc.collect()
    assert backend.closed == [11]


@pytest.mark.parametrize("bad", [-1, True, "3", 2.0])
def test_owned_fd_rejects_non_fds(bad: object) -> None:
    with pytest.raises(ValueError):
        OwnedFd(bad, Failing(errno.EPERM))  # type: ignore[arg-type]
