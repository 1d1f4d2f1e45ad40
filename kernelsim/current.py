"""`current` and `current->bpf_ctx`: the task a program runs for and its run context.

Theory of operation
-------------------
Helpers such as bpf_get_current_pid_tgid or bpf_get_attach_cookie read what the kernel keeps
for the running program: the current task (pid, tgid, uid, gid, comm) and the run context the
attach point set up around the run (bpf_set_run_ctx: the bpf cookie, the probed function's
address, whether the event's registers are user-mode registers). `kernel.subsystem(Current)`
holds both as stacks: `Current.running(task, ctx)` pushes them for the duration of a `with`
block (what an event firing does around its programs) and pops them even when the block fails.

Outside any event the current task is the simulated process itself (KernelConfig.pid as pid and
tgid, this process's uid and gid, KernelConfig.comm) and the run context is empty (cookie 0), as
for a BPF_PROG_TEST_RUN issued by that process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

TASK_COMM_LEN: Final = 16
TASK_STRUCT_BASE: Final = 0xFFFF_8880_0400_0000
"""Where the simulator pretends task_structs live (bpf_get_current_task's opaque value)."""
TASK_STRUCT_SIZE: Final = 0x2C00


@attrs.frozen
class Task:
    """The task a program runs in (struct task_struct, the parts helpers read)."""

    pid: int
    tgid: int
    uid: int
    gid: int
    comm: str

    @property
    def address(self) -> int:
        """An opaque, non-zero, per-task kernel-looking address (bpf_get_current_task)."""
        return TASK_STRUCT_BASE + self.pid * TASK_STRUCT_SIZE

    def comm_bytes(self) -> bytes:
        """task->comm: at most 15 bytes, NUL-padded to TASK_COMM_LEN."""
        raw = self.comm.encode("latin-1", "replace")[: TASK_COMM_LEN - 1]
        return raw.ljust(TASK_COMM_LEN, b"\0")


@attrs.frozen
class RunContext:
    """What the attach point set around a run (struct bpf_trace_run_ctx and friends)."""

    cookie: int = 0
    """The bpf cookie of the attachment (link or perf event)."""
    func_ip: int = 0
    """bpf_get_func_ip: the probed address (0 where the kernel reports none)."""
    user_regs: bool = False
    """Whether the event's registers are user-mode (perf samples then say MISC_USER)."""
    ip: int = 0
    """The instruction pointer of the event's registers (PERF_SAMPLE_IP)."""


class Current:
    """The kernel's current task and run context (module docstring)."""

    def __init__(self, kernel: Kernel) -> None:
        config = kernel.config
        self.default_task = Task(config.pid, config.pid, os.getuid(), os.getgid(), config.comm)
        self._tasks: list[Task] = []
        self._contexts: list[RunContext] = []

    @property
    def task(self) -> Task:
        return self._tasks[-1] if self._tasks else self.default_task

    @property
    def context(self) -> RunContext:
        return self._contexts[-1] if self._contexts else RunContext()

    def make_task(self, pid: int | None = None, comm: str | None = None) -> Task:
        """The default task with `pid` (as pid and tgid) and `comm` replaced where given."""
        base = self.task
        pid_value = base.pid if pid is None else pid
        tgid = base.tgid if pid is None else pid
        return attrs.evolve(
            base, pid=pid_value, tgid=tgid, comm=base.comm if comm is None else comm
        )

    @contextlib.contextmanager
    def running(
        self, task: Task | None = None, context: RunContext | None = None
    ) -> Iterator[None]:
        """Make `task` current and `context` the run context inside the block."""
        self._tasks.append(self.task if task is None else task)
        self._contexts.append(RunContext() if context is None else context)
        try:
            yield
        finally:
            self._tasks.pop()
            self._contexts.pop()
