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
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from bpfsys.abi import ATTR_OF_COMMAND, BpfAttr, BpfCmd
from kernelsim.errors import fail
from kernelsim.kernel import Kernel

_Attr = TypeVar("_Attr", bound=BpfAttr)


@attrs.frozen
class BpfCall:
    """One bpf() call as a handler sees it."""

    kernel: Kernel
    cmd: BpfCmd
    attr: Any
    """The kernel's copy of the attr: an instance of the command's `bpfsys.abi` attr struct."""
    uattr: memoryview
    """The caller's attr image (bytes), for write-back."""
    size: int = 0
    """The attr size the kernel works with: min(size passed, sizeof(union bpf_attr)) (handlers
    that write a field back only when the caller's attr reaches it, as log_true_size)."""

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


def bpf_syscall(kernel: Kernel, cmd: int, uattr: memoryview, size: int) -> int:
    """Run bpf(cmd, uattr, size) on `kernel` (steps in the module docstring)."""
    profile = kernel.profile
    if size < 0 or size > len(uattr):
        fail(errno.EFAULT, f"size {size} exceeds the {len(uattr)}-byte attr buffer")
    if size > kernel.config.page_size:
        fail(errno.E2BIG, f"attr size {size} exceeds a page")
    known = profile.bpf_attr_size
    if size > known:
        if any(uattr[known:size]):
            fail(errno.E2BIG, f"non-zero bytes beyond this kernel's {known}-byte bpf_attr")
        size = known
    try:
        command = BpfCmd(cmd)
    except ValueError:
        fail(errno.EINVAL, f"unknown bpf command {cmd}")
    if not profile.has(command):
        fail(errno.EINVAL, f"BPF_{command.name} is newer than {profile.version}")
    handler = BPF_COMMANDS.get(command)
    attr_type = ATTR_OF_COMMAND.get(command)
    if handler is None or attr_type is None:
        fail(errno.EINVAL, f"BPF_{command.name} is not modelled by the simulator")
    image = bytearray(max(known, ctypes.sizeof(attr_type)))
    image[:size] = uattr[:size]
    last = profile.attr_end(attr_type, command)
    if image.count(0, last, known) != known - last:  # any() over the slice costs 3x more
        fail(errno.EINVAL, f"non-zero bytes after the last field of BPF_{command.name}")
    attr = attr_type.from_buffer_copy(image)
    return handler(BpfCall(kernel, command, attr, uattr, min(size, known)))
