"""The subsystems of the simulated kernel, started with every new `Kernel`.

Each subsystem keeps its state in one class made as `State(kernel)` through
`kernel.subsystem(State)`; starting it registers its files (sysfs, tracefs, procfs). Modules
that define bpf() commands are imported here so that their handlers are registered.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

COMMAND_MODULES: Final[tuple[str, ...]] = ()
"""Modules whose import registers bpf() command handlers (kernelsim.dispatch.bpf_command)."""

STARTED_AT_BOOT: Final[tuple[str, ...]] = ()
"""'module:Class' of the subsystem states made when a kernel starts."""


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def start(kernel: Kernel) -> None:
    """Register every command handler and start every boot-time subsystem on `kernel`."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    for spec in STARTED_AT_BOOT:
        kernel.subsystem(_load(spec))
