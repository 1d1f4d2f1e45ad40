"""The subsystems of the simulated kernel, started with every new `Kernel`.

Each module of SUBSYSTEM_MODULES is imported once (its `@bpf_command` handlers register
themselves) and, when it defines `boot(kernel)`, that runs on every new kernel to set up the
subsystem's state (`kernel.subsystem(State)`) and files (sysfs, tracefs, procfs).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

SUBSYSTEM_MODULES: Final[tuple[str, ...]] = (
    "kernelsim.maps.commands",
    "kernelsim.prog.commands",
    "kernelsim.prog.test_run",
    "kernelsim.ids",
    "kernelsim.bpffs",
    "kernelsim.link",
    "kernelsim.raw_tracepoint",
    "kernelsim.perf_link",
    "kernelsim.prog_attach",
    "kernelsim.btf",
    "kernelsim.stats",
    "kernelsim.tracefs",
    "kernelsim.perf.pmu",
    "kernelsim.helpers",
)


def start(kernel: Kernel) -> None:
    """Register every command handler and boot every subsystem on `kernel`."""
    for name in SUBSYSTEM_MODULES:
        boot: Callable[[Kernel], None] | None = getattr(importlib.import_module(name), "boot", None)
        if boot is not None:
            boot(kernel)
