"""The syscall counter's tests, on whichever backends ``--bpf-backend`` names (the kernelsim
pytest plugin's ``bpf_backend``; its leak check makes sure `close()` frees everything):

    pytest examples/tracepoint_counter --bpf-backend=sim,live

and from the recordings of the live run in recordings/, with no kernel and no privilege:

    pytest examples/tracepoint_counter --bpf-backend=replay \
        --replay-scenarios examples/tracepoint_counter/recordings

(recorded, as root, with ``--bpf-backend=live --record-scenarios
examples/tracepoint_counter/recordings``). The getpid calls the counter counts are no bpf
calls: `call_getpid` makes them the way each backend needs (`kernelsim.pytest_plugin.trigger`),
and on a replay the counts they caused are in the recording. The counts are keyed by the pid
the kernel saw (`process_pid`): this process's, or on a replay the recorded process's.
"""

from __future__ import annotations

import errno
import os

import pytest
from syscall_counter import SyscallCounter

from bpfsys import bpf
from bpfsys.attach import PerfAttachMethod
from bpfsys.backend import Backend
from bpfsys.syscall import SyscallError
from kernelsim.backend import SimBackend
from kernelsim.pytest_plugin import process_pid, trigger

CALLS = 25


def call_getpid(backend: Backend, times: int) -> None:
    """Make this process enter getpid `times` times: really on the live kernel; on the
    simulated one by firing the tracepoint as this process (its default current task); not
    at all on a replay (the recorded counts hold the recorded calls)."""
    trigger(
        backend,
        live=lambda: [os.getpid() for _ in range(times)],
        sim=lambda kernel: [
            kernel.fire_tracepoint("syscalls/sys_enter_getpid") for _ in range(times)
        ],
    )


def test_counts_start_empty_for_this_process(bpf_backend: Backend) -> None:
    pid = process_pid(bpf_backend)  # read before: every getpid would count
    with SyscallCounter.open("getpid") as counter:
        assert counter.syscall == "getpid"
        assert pid not in counter.counts()


def test_counts_this_process(bpf_backend: Backend) -> None:
    pid = process_pid(bpf_backend)
    with SyscallCounter.open("getpid") as counter:
        before = counter.counts().get(pid, 0)
        call_getpid(bpf_backend, CALLS)
        after = counter.counts().get(pid, 0)
    assert after - before == CALLS


def test_the_program_is_attached(bpf_backend: Backend) -> None:
    with SyscallCounter.open("getpid") as counter:
        attachment = counter.attachment
        assert not attachment.detached
        if attachment.method is PerfAttachMethod.LINK:
            assert attachment.link_fd is not None
            assert bpf.link_info(attachment.link_fd).prog_id == bpf.prog_info(counter.prog).id
    assert attachment.detached


def test_unknown_syscall_is_enoent_and_leaves_nothing(bpf_backend: Backend) -> None:
    with pytest.raises(SyscallError) as failure:
        SyscallCounter.open("no_such_syscall")
    assert failure.value.errno == errno.ENOENT


def test_close_is_idempotent(bpf_backend: Backend) -> None:
    counter = SyscallCounter.open("getpid")
    counter.close()
    counter.close()


@pytest.mark.kernel(version="5.4")
def test_kernels_without_perf_links_attach_by_ioctl(sim_backend: SimBackend) -> None:
    with SyscallCounter.open("getpid") as counter:
        assert counter.attachment.method is PerfAttachMethod.IOCTL
        assert counter.counts() == {}


def test_counts_are_kept_per_process(sim_backend: SimBackend) -> None:
    with SyscallCounter.open("getpid") as counter:
        for pid, times in ((100, 2), (200, 3), (100, 1)):
            for _ in range(times):
                sim_backend.kernel.fire_tracepoint("syscalls/sys_enter_getpid", pid=pid)
        assert counter.counts() == {100: 3, 200: 3}
