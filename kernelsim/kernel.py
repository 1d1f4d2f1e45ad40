"""`Kernel` and `KernelConfig`: the simulated kernel's state and its configuration.

Theory of operation
-------------------
A `Kernel` owns everything a process sees of bpf and perf: the fd table (real eventfds), the
objects with their reference counts and ids, the virtual files, the CPUs, a virtual clock and
a seeded random source. It is configured once by a frozen `KernelConfig`: the version profile
(what that kernel had and which errno it gave for what it lacked), the CPU counts, the page size
and the caller's privileges. Subsystems (maps, programs, links, perf events, bpffs, tracefs)
keep their state on the kernel and register their bpf() commands and files with it. Nothing here
does I/O beyond the eventfds that make simulated fds real.
"""

from __future__ import annotations

import enum
import errno
import functools
import mmap
import os
import random
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from bpfsys.kversion import KernelVersion, to_version
from kernelsim.errors import fail
from kernelsim.fdtable import FdTable, FileTable
from kernelsim.objects import ObjectRegistry
from kernelsim.profile import Profile
from kernelsim.usermem import ProcessMemory, UserMemory
from kernelsim.vfs import Vfs

_State = TypeVar("_State")


class Privileges(enum.Enum):
    """What the calling process may do."""

    ROOT = "root"  # CAP_SYS_ADMIN and every other capability
    CAP_BPF = "cap_bpf"  # CAP_BPF + CAP_PERFMON only (since 5.8; before, as unprivileged)
    UNPRIVILEGED = "unprivileged"


def _privileges(value: str | Privileges) -> Privileges:
    return value if isinstance(value, Privileges) else Privileges(value)


@attrs.frozen
class KernelConfig:
    """How the simulated kernel is built. Every field has the live machine's usual default."""

    version: KernelVersion = attrs.field(default=KernelVersion(6, 18), converter=to_version)
    cpus: int = attrs.field(default=2, validator=[attrs.validators.ge(1), attrs.validators.le(64)])
    """Possible CPUs."""
    online_cpus: int | None = attrs.field(default=None)
    """Online CPUs (the first ones); None: all possible CPUs."""
    page_size: int = attrs.field(default=mmap.PAGESIZE)
    privileges: Privileges = attrs.field(default=Privileges.ROOT, converter=_privileges)
    unprivileged_bpf_disabled: int = attrs.field(
        default=2, validator=attrs.validators.in_((0, 1, 2))
    )
    perf_event_paranoid: int = attrs.field(
        default=2, validator=attrs.validators.in_((-1, 0, 1, 2, 3))
    )
    seed: int = 0
    start_ns: int = attrs.field(default=1_000_000_000, validator=attrs.validators.ge(0))
    """The virtual clock at boot (CLOCK_MONOTONIC ns)."""
    pid: int = attrs.field(factory=os.getpid)
    """The pid (and tgid) of the simulated current task: by default this process's, so that
    tools passing their own pid (perf_event_open, uprobes) find themselves."""
    comm: str = "python3"

    @online_cpus.validator
    def _check_online(self, _: Any, value: int | None) -> None:
        if value is not None and not 1 <= value <= self.cpus:
            raise ValueError(f"online_cpus must be in 1..{self.cpus}, got {value}")

    @page_size.validator
    def _check_page(self, _: Any, value: int) -> None:
        if value < 4096 or value & (value - 1):
            raise ValueError(f"page_size must be a power of two >= 4096, got {value}")

    @property
    def online(self) -> int:
        return self.cpus if self.online_cpus is None else self.online_cpus


def cpu_list(count: int) -> bytes:
    """The kernel's cpulist text for CPUs 0..count-1 ("0\\n", "0-3\\n")."""
    return b"0\n" if count == 1 else f"0-{count - 1}\n".encode()


class Kernel:
    """A simulated Linux kernel. `Kernel()` is the newest profile, 2 CPUs, full root."""

    def __init__(self, config: KernelConfig | None = None, memory: UserMemory | None = None):
        self.config = KernelConfig() if config is None else config
        self.profile = Profile(self.config.version)
        self.memory: UserMemory = ProcessMemory() if memory is None else memory
        self.objects = ObjectRegistry()
        self.fds: FileTable = FdTable()
        self.vfs = Vfs()
        self.random = random.Random(self.config.seed)
        self.now_ns = self.config.start_ns
        self.sysctl = {
            "unprivileged_bpf_disabled": self.config.unprivileged_bpf_disabled,
            "perf_event_paranoid": self.config.perf_event_paranoid,
        }
        self.stats_enabled = 0
        """Open ENABLE_STATS fds: run_time_ns and run_cnt are counted while it is positive."""
        self._subsystems: dict[Callable[[Kernel], Any], Any] = {}
        self._add_base_files()
        from kernelsim.subsystems import start

        start(self)

    def subsystem(self, state_type: Callable[[Kernel], _State]) -> _State:
        """The kernel's one instance of a subsystem's state (a class taking the kernel), made
        on first use."""
        found: _State | None = self._subsystems.get(state_type)
        if found is None:
            found = self._subsystems[state_type] = state_type(self)
        return found

    # -- capabilities -------------------------------------------------------------------------
    def capable_sys_admin(self) -> bool:
        return self.config.privileges is Privileges.ROOT

    def bpf_capable(self) -> bool:
        """CAP_BPF or CAP_SYS_ADMIN (CAP_BPF exists since 5.8)."""
        if self.config.privileges is Privileges.ROOT:
            return True
        return self.config.privileges is Privileges.CAP_BPF and self.profile.has_behaviour(
            "cap_bpf"
        )

    def perfmon_capable(self) -> bool:
        """CAP_PERFMON or CAP_SYS_ADMIN."""
        return self.bpf_capable()

    # -- time ---------------------------------------------------------------------------------
    def advance(self, ns: int) -> int:
        """Move the virtual clock forward by `ns` (>= 0); return the new time."""
        if ns < 0:
            raise ValueError("the clock only moves forward")
        self.now_ns += ns
        return self.now_ns

    # -- events for tests (kernelsim.triggers) -------------------------------------------------
    def fire_tracepoint(self, name: str, fields: Any = None, **options: Any) -> Any:
        """kernelsim.triggers.fire_tracepoint on this kernel."""
        from kernelsim.triggers import fire_tracepoint

        return fire_tracepoint(self, name, fields, **options)

    def fire_kprobe(self, symbol: str, regs: Any = None, **options: Any) -> Any:
        """kernelsim.triggers.fire_kprobe on this kernel."""
        from kernelsim.triggers import fire_kprobe

        return fire_kprobe(self, symbol, regs, **options)

    def fire_uprobe(self, path: str, offset: int, regs: Any = None, **options: Any) -> Any:
        """kernelsim.triggers.fire_uprobe on this kernel."""
        from kernelsim.triggers import fire_uprobe

        return fire_uprobe(self, path, offset, regs, **options)

    def tick(self, cpu: int, ns: int, **options: Any) -> Any:
        """kernelsim.triggers.tick on this kernel: `ns` of time on `cpu`, clock events fire."""
        from kernelsim.triggers import tick

        return tick(self, cpu, ns, **options)

    # -- inspection for tests -----------------------------------------------------------------
    def open_fds(self) -> list[int]:
        """The simulated fds open now."""
        return self.fds.open_fds()

    def live_objects(self) -> dict[str, int]:
        """Live kernel objects by type (maps, programs, links, perf events, ...)."""
        return self.objects.live_counts()

    def close_all(self) -> None:
        """Close every simulated fd (objects held elsewhere, e.g. pinned, stay)."""
        for fd in self.fds.open_fds():
            self.fds.close(fd)

    # -- files --------------------------------------------------------------------------------
    def _add_base_files(self) -> None:
        cfg = self.config
        self.vfs.add("/sys/devices/system/cpu/possible", cpu_list(cfg.cpus))
        self.vfs.add("/sys/devices/system/cpu/present", cpu_list(cfg.cpus))
        self.vfs.add("/sys/devices/system/cpu/online", cpu_list(cfg.online))
        self.vfs.add(
            "/proc/sys/kernel/osrelease",
            f"{cfg.version.major}.{cfg.version.minor}.0-kernelsim\n".encode(),
        )
        for name in self.sysctl:
            self.vfs.add(
                f"/proc/sys/kernel/{name}",
                functools.partial(self._read_sysctl, name),
                functools.partial(self._write_sysctl, name),
            )

    def _read_sysctl(self, name: str) -> bytes:
        return f"{self.sysctl[name]}\n".encode()

    def _write_sysctl(self, name: str, data: bytes) -> None:
        if not self.capable_sys_admin():
            fail(errno.EPERM, f"writing /proc/sys/kernel/{name} needs CAP_SYS_ADMIN")
        try:
            value = int(data.strip())
        except ValueError:
            fail(errno.EINVAL, f"not a number: {data!r}")
        allowed = range(0, 3) if name == "unprivileged_bpf_disabled" else range(-1, 4)
        if value not in allowed:
            fail(errno.EINVAL, f"{name} out of range: {value}")
        if name == "unprivileged_bpf_disabled" and self.sysctl[name] == 1 and value != 1:
            fail(errno.EPERM, "unprivileged_bpf_disabled=1 cannot be undone")
        self.sysctl[name] = value
