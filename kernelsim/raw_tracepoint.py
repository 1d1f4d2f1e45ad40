"""Raw tracepoint links: RAW_TRACEPOINT_OPEN and the kernel's table of raw tracepoints.

Theory of operation
-------------------
RAW_TRACEPOINT_OPEN (bpf_raw_tracepoint_open, bpf_raw_tp_link_attach), in order:

1. CHECK_ATTR (dispatch; `cookie` exists since 6.10); the program fd (EBADF / EINVAL);
2. RAW_TRACEPOINT and RAW_TRACEPOINT_WRITABLE programs: the name is read from user memory with
   strncpy_from_user into a 128-byte buffer (EFAULT for a bad or NULL pointer; longer names
   are cut to 127 bytes); TRACING, EXT and LSM programs name their attach point at load time
   (a name here is EINVAL; the attachment itself is not modelled: EINVAL); any other program
   type is EINVAL;
3. a name that is not a raw tracepoint of this kernel (`RawTracepoints`) is ENOENT;
4. the link gets its id, then the program is registered on the tracepoint.

Since 5.7 the fd is a `RawTracepointLink` (a bpf link: pinnable, with info and an id). Before,
it was a plain "bpf-raw-tracepoint" file: `RawTracepointFile`, same attachment, no id.

`RawTracepoints` is the per-kernel table: the tracepoint names (those of
kernelsim.perf.tracepoint_table, the live kernel's tracepoints; syscall events such as
sys_enter_openat are not raw tracepoints) and the programs attached to each, in attach order,
with their cookies, for whatever fires the tracepoint.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, ClassVar, Final

import attrs

from bpfsys.abi import BpfCmd, BpfLinkInfo, LinkType, ProgType, RawTracepointOpenAttr
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.link import BpfLink, copy_name_out, install_link
from kernelsim.objects import KernelObject
from kernelsim.perf.tracepoint_table import TRACEPOINTS
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

NAME_BUF: Final = 128
"""bpf_raw_tp_link_attach's name buffer: names are read up to 127 bytes."""
RAW_TP_PROG_TYPES: Final = frozenset({ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE})
BTF_ATTACHED_PROG_TYPES: Final = frozenset({ProgType.TRACING, ProgType.EXT, ProgType.LSM})


@attrs.frozen
class RawTracepointProbe:
    """One program registered on a raw tracepoint."""

    prog: BpfProgram
    cookie: int


class RawTracepoints:
    """The kernel's raw tracepoints and what is attached to each."""

    def __init__(self, kernel: Kernel) -> None:
        self.names: set[str] = {name for _, name, *_ in TRACEPOINTS}
        self._probes: dict[str, list[RawTracepointProbe]] = {}

    def attached(self, name: str) -> list[RawTracepointProbe]:
        """The programs on tracepoint `name`, in attach order."""
        return list(self._probes.get(name, ()))

    def register(self, name: str, probe: RawTracepointProbe) -> None:
        self._probes.setdefault(name, []).append(probe)

    def unregister(self, name: str, probe: RawTracepointProbe) -> None:
        self._probes[name].remove(probe)


class RawTracepointAttachment:
    """A program on a raw tracepoint, for as long as the object that owns it lives."""

    def __init__(self, kernel: Kernel, name: str, prog: BpfProgram, cookie: int) -> None:
        self.table = kernel.subsystem(RawTracepoints)
        self.name = name
        self.probe = RawTracepointProbe(prog, cookie)
        self.table.register(name, self.probe)

    def remove(self) -> None:
        self.table.unregister(self.name, self.probe)


class RawTracepointLink(BpfLink):
    """BPF_LINK_TYPE_RAW_TRACEPOINT."""

    link_type: ClassVar[LinkType] = LinkType.RAW_TRACEPOINT

    def __init__(self, kernel: Kernel, prog: BpfProgram, name: str, cookie: int) -> None:
        super().__init__(kernel, prog, int(prog.expected_attach_type or 0))
        self.tp_name = name
        self.cookie = cookie
        self.attachment = RawTracepointAttachment(kernel, name, prog, cookie)

    def detach_target(self) -> None:
        self.attachment.remove()

    def show_fdinfo(self) -> list[tuple[str, str]]:
        lines = [("tp_name", self.tp_name)]
        if self.kernel.profile.has_behaviour("raw_tp_cookie"):
            lines.append(("cookie", str(self.cookie)))
        return lines

    def fill_link_info(self, info: BpfLinkInfo) -> None:
        """tp_name / tp_name_len: both or neither (EINVAL); the length is always reported."""
        raw = info.raw_tracepoint
        buf, buf_len = raw.tp_name, raw.tp_name_len
        if bool(buf) != bool(buf_len):
            fail(errno.EINVAL, "tp_name and tp_name_len go together")
        name = self.tp_name.encode()
        raw.tp_name_len = len(name) + 1
        if self.kernel.profile.has_behaviour("raw_tp_cookie"):
            raw.cookie = self.cookie
        if buf:
            copy_name_out(self.kernel, name, buf, buf_len)


class RawTracepointFile(KernelObject):
    """Before 5.7: the fd RAW_TRACEPOINT_OPEN returned, a plain file holding the attachment."""

    anon_name = "bpf-raw-tracepoint"

    def __init__(self, kernel: Kernel, prog: BpfProgram, name: str) -> None:
        super().__init__(kernel.objects)
        self.prog = prog
        prog.hold()
        self.attachment = RawTracepointAttachment(kernel, name, prog, 0)

    def release(self) -> None:
        self.attachment.remove()
        self.prog.put()


@bpf_command(BpfCmd.RAW_TRACEPOINT_OPEN)
def raw_tracepoint_open(call: BpfCall) -> int:
    attr = call.attr_as(RawTracepointOpenAttr)
    kernel = call.kernel
    prog = kernel.fds.get(attr.prog_fd, BpfProgram)
    if prog.prog_type in BTF_ATTACHED_PROG_TYPES:
        if attr.name:
            fail(errno.EINVAL, f"{prog.prog_type.name} programs name their target at load")
        fail(errno.EINVAL, f"attaching {prog.prog_type.name} programs is not modelled")
    if prog.prog_type not in RAW_TP_PROG_TYPES:
        fail(errno.EINVAL, f"{prog.prog_type.name} programs are not raw tracepoint programs")
    raw_name, _ = kernel.memory.read_cstring(attr.name, NAME_BUF - 1)
    name = raw_name.decode(errors="replace")
    if name not in kernel.subsystem(RawTracepoints).names:
        fail(errno.ENOENT, f"no raw tracepoint {name!r}")
    if not kernel.profile.has(BpfCmd.LINK_CREATE):
        return kernel.fds.install(RawTracepointFile(kernel, prog, name), os.O_RDONLY)
    return install_link(kernel, RawTracepointLink(kernel, prog, name, attr.cookie))
