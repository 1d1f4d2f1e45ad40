"""bpf(2) as the kernel runs it: size and tail checks, the command's attr, then its handler.

Theory of operation
-------------------
`bpf_syscall(kernel, cmd, uattr, size)` follows `__sys_bpf`:
1. `size` beyond the page size is E2BIG; bytes beyond this kernel's sizeof(union bpf_attr) up to
   `size` must be zero (E2BIG otherwise, `bpf_check_uarg_tail_zero`);
2. the first min(size, sizeof) bytes are copied into a zeroed attr;
3. an unknown command, or one this kernel version lacked, is EINVAL;
4. bytes after the command's last field (as this kernel knew it) must be zero: EINVAL
   (`CHECK_ATTR`);
5. the handler registered for the command runs with a `BpfCall`.
Handlers live with their subsystem (maps, programs, links, ...) and register themselves with
`@bpf_command(...)`. A handler writes results back with `BpfCall.write_back`, into the caller's
attr image, as the kernel's copy_to_user on `uattr` does.

Every call pays for these steps, so what depends only on the kernel's version and the command
(the command's enum member, handler, attr struct and its size, where the fields this version
knew end) is worked out once per kernel and command (`CommandPlans`): a call then costs one dict
lookup before its handler, and the attr is copied straight out of the caller's image when the
image holds the whole struct.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable
from typing import Any, Final, TypeVar

from bpfsys.abi import ATTR_OF_COMMAND, BpfAttr, BpfCmd
from kernelsim.errors import fail
from kernelsim.kernel import Kernel

_Attr = TypeVar("_Attr", bound=BpfAttr)
_ZEROS: Final = bytes(1 << 16)
"""Zero bytes to compare attr tails against (no attr is larger than a page)."""


class BpfCall:
    """One bpf() call as a handler sees it (read-only by convention)."""

    __slots__ = ("attr", "cmd", "kernel", "size", "uattr")

    def __init__(self, kernel: Kernel, cmd: BpfCmd, attr: Any, uattr: memoryview, size: int = 0):
        self.kernel = kernel
        self.cmd = cmd
        self.attr: Any = attr
        """The kernel's copy of the attr: an instance of the command's `bpfsys.abi` attr struct."""
        self.uattr = uattr
        """The caller's attr image (bytes), for write-back."""
        self.size = size
        """The attr size the kernel works with: min(size passed, sizeof(union bpf_attr))
        (handlers that write a field back only when the caller's attr reaches it, as
        log_true_size)."""

    def write_back(self, field: str, value: int) -> None:
        """Store `value` in `field` of the caller's attr, as copy_to_user(&uattr->field)."""
        descriptor = getattr(type(self.attr), field)
        setattr(self.attr, field, value)
        start, end = descriptor.offset, descriptor.offset + descriptor.size
        if end > len(self.uattr):
            fail(errno.EFAULT, f"attr buffer too short to write back {field}")
        self.uattr[start:end] = bytes(self.attr)[start:end]

    def attr_as(self, attr_type: type[_Attr]) -> _Attr:
        """The attr as `attr_type` (handlers that serve several commands)."""
        assert isinstance(self.attr, attr_type)
        return self.attr

    def __repr__(self) -> str:
        return f"BpfCall(cmd={self.cmd!r}, attr={self.attr!r}, size={self.size})"


Handler = Callable[[BpfCall], int]
BPF_COMMANDS: dict[BpfCmd, Handler] = {}


def bpf_command(*cmds: BpfCmd) -> Callable[[Handler], Handler]:
    """Register a handler for `cmds`."""

    def register(handler: Handler) -> Handler:
        for cmd in cmds:
            if cmd in BPF_COMMANDS:
                raise RuntimeError(f"two handlers for {cmd!r}")
            BPF_COMMANDS[cmd] = handler
        return handler

    return register


def bytes_view(buf: Any) -> memoryview:
    """A writable byte view of a caller's buffer (bytearray, memoryview or ctypes object)."""
    view = memoryview(buf)
    if view.readonly:
        fail(errno.EFAULT, "attr buffer is read-only")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class CommandPlan:
    """What running one command on one kernel needs, worked out once."""

    __slots__ = ("attr_type", "command", "handler", "last", "struct_size")

    def __init__(self, command: BpfCmd, handler: Handler, attr_type: type[BpfAttr], last: int):
        self.command = command
        self.handler = handler
        self.attr_type = attr_type
        self.struct_size = ctypes.sizeof(attr_type)
        self.last = last
        """Where this kernel's fields of the command end (bytes after them must be zero)."""


class CommandPlans:
    """A kernel's `CommandPlan` per command number (a kernel subsystem)."""

    def __init__(self, kernel: Kernel) -> None:
        self.profile = kernel.profile
        self.attr_size = kernel.profile.bpf_attr_size
        self.page_size = kernel.config.page_size
        self.plans: dict[int, CommandPlan] = {}

    def plan(self, cmd: int) -> CommandPlan:
        """The plan of `cmd` (steps 3 and 5 checked: EINVAL for a command this kernel lacks or
        the simulator does not model)."""
        try:
            command = BpfCmd(cmd)
        except ValueError:
            fail(errno.EINVAL, f"unknown bpf command {cmd}")
        profile = self.profile
        if not profile.has(command):
            fail(errno.EINVAL, f"BPF_{command.name} is newer than {profile.version}")
        handler = BPF_COMMANDS.get(command)
        attr_type = ATTR_OF_COMMAND.get(command)
        if handler is None or attr_type is None:  # not cached: a handler may register later
            fail(errno.EINVAL, f"BPF_{command.name} is not modelled by the simulator")
        plan = CommandPlan(command, handler, attr_type, profile.attr_end(attr_type, command))
        self.plans[cmd] = plan
        return plan


def bpf_syscall(kernel: Kernel, cmd: int, uattr: memoryview, size: int) -> int:
    """Run bpf(cmd, uattr, size) on `kernel` (steps in the module docstring)."""
    plans = kernel.subsystem(CommandPlans)
    if size < 0 or size > len(uattr):
        fail(errno.EFAULT, f"size {size} exceeds the {len(uattr)}-byte attr buffer")
    if size > plans.page_size:
        fail(errno.E2BIG, f"attr size {size} exceeds a page")
    known = plans.attr_size
    if size > known:
        if uattr[known:size] != _ZEROS[: size - known]:
            fail(errno.E2BIG, f"non-zero bytes beyond this kernel's {known}-byte bpf_attr")
        size = known
    plan = plans.plans.get(cmd) or plans.plan(cmd)
    last = plan.last
    if size > last and uattr[last:size] != _ZEROS[: size - last]:
        fail(errno.EINVAL, f"non-zero bytes after the last field of BPF_{plan.command.name}")
    if size >= plan.struct_size:
        attr = plan.attr_type.from_buffer_copy(uattr)
    else:  # a short attr: the rest of the kernel's copy is zero
        image = bytearray(plan.struct_size)
        image[:size] = uattr[:size]
        attr = plan.attr_type.from_buffer_copy(image)
    return plan.handler(BpfCall(kernel, plan.command, attr, uattr, size))
