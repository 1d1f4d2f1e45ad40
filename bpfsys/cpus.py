"""The CPUs a kernel reports: /sys/devices/system/cpu/{online,possible} read through a backend.

Both files hold a CPU list ("0-3,5"); `bpfsys.bpf.parse_cpu_list` parses it. A file that cannot
be read raises `SyscallError("read_file")` with the file's errno and its path as `filename`; text
that is not a CPU list raises ValueError naming the file.
"""

from __future__ import annotations

from typing import Final

from bpfsys.backend import Backend, current_backend
from bpfsys.bpf import parse_cpu_list
from bpfsys.perf_event import read_sysfs_text

ONLINE_CPUS_PATH: Final = "/sys/devices/system/cpu/online"
POSSIBLE_CPUS_PATH: Final = "/sys/devices/system/cpu/possible"


def _cpu_list(path: str, backend: Backend | None) -> list[int]:
    text = read_sysfs_text(path, backend=current_backend() if backend is None else backend)
    try:
        cpus = parse_cpu_list(text)
    except ValueError:
        raise ValueError(f"{path}: expected a CPU list such as '0-3,5', got {text!r}") from None
    if not cpus or any(cpu < 0 for cpu in cpus):
        raise ValueError(f"{path}: expected a CPU list such as '0-3,5', got {text!r}")
    return cpus


def online_cpus(backend: Backend | None = None) -> list[int]:
    """The online CPUs, in the order the kernel lists them (e.g. [0, 1, 2, 3])."""
    return _cpu_list(ONLINE_CPUS_PATH, backend)


def possible_cpus(backend: Backend | None = None) -> list[int]:
    """The possible CPUs (online or not): the indices per-CPU maps have slots for."""
    return _cpu_list(POSSIBLE_CPUS_PATH, backend)
