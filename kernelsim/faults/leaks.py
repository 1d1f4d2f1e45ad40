"""Leak accounting: what a test or a fault run left behind, named.

Theory of operation
-------------------
A `LeakCheck` is made when a run starts (it notes the process's kernel files) and is told of
every simulated kernel the run uses (`watch`, which notes the kernel's live objects). Its
`finish()`, when the run is over, tears the simulated kernels down and names every leak:

1. per simulated kernel, every simulated fd still open, with its object;
2. per simulated kernel, after every fd was closed and every bpffs pin removed, every kernel
   object alive beyond those alive when it was watched (held by neither an fd nor a pin: a
   mapping, a reference never dropped);
3. for the process, once the simulated kernels are torn down, every fd and every mapping of a
   kernel file it gained since the start (the live kernel's bpf objects and perf events, and
   the simulator's shared memory that someone still maps).

"Kernel files" are those whose /proc/self/fd link or /proc/self/maps name starts with
``anon_inode:`` (the live kernel's bpf objects and perf events, eventfds) or ``/memfd:`` (the
simulator's shared memory; a Python mmap keeps a duplicate fd of what it maps). Rule 3 looks
at the whole process, so anything else making such files during the run counts too.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

__all__ = ["LeakCheck", "ProcessSnapshot"]

KERNEL_FILE_PREFIXES: Final = ("anon_inode:", "/memfd:")


def _kernel_file(name: str) -> bool:
    return name.startswith(KERNEL_FILE_PREFIXES)


def _process_fds() -> frozenset[tuple[int, str]]:
    fds: set[tuple[int, str]] = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # the fd of the listing itself, closed by now
            continue
        if _kernel_file(target):
            fds.add((int(entry), target))
    return frozenset(fds)


def _process_mappings() -> Counter[str]:
    names: Counter[str] = Counter()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.rstrip("\n").split(maxsplit=5)
            if len(fields) == 6 and _kernel_file(fields[5]):
                names[fields[5]] += 1
    return names


@attrs.frozen
class ProcessSnapshot:
    """The process's fds and mappings of kernel files at one moment."""

    fds: frozenset[tuple[int, str]]
    mappings: tuple[tuple[str, int], ...]

    @classmethod
    def take(cls) -> ProcessSnapshot:
        return cls(_process_fds(), tuple(sorted(_process_mappings().items())))

    def new_fds(self, before: ProcessSnapshot) -> list[str]:
        """The fds open now that were not open `before`: "fd 7 (anon_inode:bpf-map)"."""
        return [f"fd {fd} ({target})" for fd, target in sorted(self.fds - before.fds)]

    def new_mappings(self, before: ProcessSnapshot) -> list[str]:
        """Mappings gained since `before`: "anon_inode:[perf_event] x1"."""
        gained = Counter(dict(self.mappings))
        gained.subtract(dict(before.mappings))
        return [f"{name} x{count}" for name, count in sorted(gained.items()) if count > 0]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in sorted(counts.items()))


def _kernel_leaks(kernel: Kernel, baseline: dict[str, int]) -> list[str]:
    """Rules 1 and 2 for one simulated kernel, tearing it down."""
    from kernelsim.bpffs import Bpffs

    leaks: list[str] = []
    fds = [f"fd {fd} {kernel.fds.lookup(fd)!r}" for fd in kernel.open_fds()]
    if fds:
        leaks.append(f"simulated fds left open: {', '.join(fds)}")
    kernel.close_all()
    bpffs = kernel.subsystem(Bpffs)
    for mount in list(bpffs.mounts):
        bpffs.unmount(mount)
    alive = Counter(kernel.live_objects())
    alive.subtract(baseline)
    extra = {name: count for name, count in alive.items() if count > 0}
    if extra:
        leaks.append(
            f"kernel objects alive after every fd was closed and every pin removed: "
            f"{_counts(extra)}"
        )
    return leaks


class LeakCheck:
    """The leaks of one run (module docstring)."""

    def __init__(self) -> None:
        self._process = ProcessSnapshot.take()
        self._kernels: list[tuple[Kernel, dict[str, int]]] = []

    def watch(self, kernel: Kernel) -> Kernel:
        """Account for `kernel` too (rules 1 and 2); returns it."""
        self._kernels.append((kernel, kernel.live_objects()))
        return kernel

    def finish(self) -> list[str]:
        """Tear the watched kernels down and name every leak (empty: none)."""
        leaks: list[str] = []
        many = len(self._kernels) > 1
        for number, (kernel, baseline) in enumerate(self._kernels, 1):
            prefix = f"kernel {number} ({kernel.config.version}): " if many else ""
            leaks += [prefix + leak for leak in _kernel_leaks(kernel, baseline)]
        self._kernels.clear()
        now = ProcessSnapshot.take()
        fds = now.new_fds(self._process)
        if fds:
            leaks.append(f"fds left open: {', '.join(fds)}")
        mappings = now.new_mappings(self._process)
        if mappings:
            leaks.append(f"mappings left: {', '.join(mappings)}")
        return leaks
