"""perf_event links: LINK_CREATE with BPF_PERF_EVENT (5.15), their info and fdinfo.

Theory of operation
-------------------
bpf_perf_link_attach, after link_create's common checks (kernelsim.link): link_create.flags
must be zero (EINVAL); target_fd must be a perf event (EBADF for anything else, as
perf_event_get); the link's id is allocated; then the event takes the program with the cookie
(`PerfEventTarget.attach_program`, which applies perf_event_set_bpf_prog's rules: EINVAL for a
program type that does not fit the event, EEXIST when it already has one). A failed attach
frees the link, whose id stays used. The link holds the event (closing the event's fd does not
detach it) and the program; its last reference detaches the program and puts the event.

Info and fdinfo (6.6 and later; before, only the common link fields): the event says what it
is through `PerfEventTarget.link_target()` (a `PerfLinkTarget`):

| kind              | link_info.perf_event                       | fdinfo lines                  |
|-------------------|--------------------------------------------|-------------------------------|
| tracepoint        | tracepoint.tp_name/name_len, cookie        | tp_name                       |
| kprobe, kretprobe | kprobe.func_name/name_len, offset, addr,   | name, offset, missed, addr    |
|                   | missed, cookie                             |                               |
| uprobe, uretprobe | uprobe.file_name/name_len, offset,         | name, offset, ref_ctr_offset  |
|                   | ref_ctr_offset, cookie                     |                               |
| event             | event.config, type, cookie                 | type, config                  |

then "event_type" and "cookie" lines. Names follow the two-call convention: buffer and length
both or neither (EINVAL); the length (with the NUL) is always reported; a short buffer gets
what fits and ENOSPC.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, ClassVar, Final, Protocol, runtime_checkable

import attrs

from bpfsys.abi import AttachType, BpfLinkInfo, BpfPerfEventType, LinkCreateAttr, LinkType, ProgType
from kernelsim.dispatch import BpfCall
from kernelsim.errors import fail
from kernelsim.link import BpfLink, copy_name_out, install_link, link_creator
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

EVENT_TYPE_NAMES: Final = {
    BpfPerfEventType.UNSPEC: "unspec",
    BpfPerfEventType.UPROBE: "uprobe",
    BpfPerfEventType.URETPROBE: "uretprobe",
    BpfPerfEventType.KPROBE: "kprobe",
    BpfPerfEventType.KRETPROBE: "kretprobe",
    BpfPerfEventType.TRACEPOINT: "tracepoint",
    BpfPerfEventType.EVENT: "event",
}
_PROBES: Final = frozenset({BpfPerfEventType.KPROBE, BpfPerfEventType.KRETPROBE})
_UPROBES: Final = frozenset({BpfPerfEventType.UPROBE, BpfPerfEventType.URETPROBE})


@attrs.frozen
class PerfLinkTarget:
    """What a perf event reports about itself to a link (bpf_get_perf_event_info)."""

    kind: BpfPerfEventType
    name: bytes = b""
    """Tracepoint name, kprobe function or uprobe file."""
    offset: int = 0
    addr: int = 0
    missed: int = 0
    ref_ctr_offset: int = 0
    config: int = 0
    type: int = 0
    """attr.type / attr.config of an "event" (software, hardware, ...)."""


@runtime_checkable
class PerfEventTarget(Protocol):
    """The perf event side of a perf link (kernelsim.perf.event.PerfEvent provides it)."""

    def attach_program(self, prog: BpfProgram, cookie: int) -> None:
        """Take `prog` with `cookie` (perf_event_set_bpf_prog's errno otherwise)."""
        ...

    def detach_program(self, prog: BpfProgram) -> None:
        """Drop `prog` (perf_event_free_bpf_prog)."""
        ...

    def link_target(self) -> PerfLinkTarget:
        """What the event is, for the link's info and fdinfo."""
        ...

    def hold(self) -> None: ...

    def put(self) -> None: ...


class PerfEventLink(BpfLink):
    """BPF_LINK_TYPE_PERF_EVENT."""

    link_type: ClassVar[LinkType] = LinkType.PERF_EVENT

    def __init__(
        self,
        kernel: Kernel,
        prog: BpfProgram,
        attach_type: int,
        event: PerfEventTarget,
        cookie: int,
    ) -> None:
        super().__init__(kernel, prog, attach_type)
        self.event = event
        self.cookie = cookie
        self.attached = False
        event.hold()

    def attach(self) -> None:
        assert self.prog is not None
        self.event.attach_program(self.prog, self.cookie)
        self.attached = True

    def detach_target(self) -> None:
        if self.attached and self.prog is not None:
            self.event.detach_program(self.prog)
        self.event.put()

    def show_fdinfo(self) -> list[tuple[str, str]]:
        if not self.kernel.profile.has_behaviour("perf_link_info"):
            return []
        target = self.event.link_target()
        kind = target.kind
        name = target.name.decode(errors="replace")
        if kind is BpfPerfEventType.TRACEPOINT:
            lines = [("tp_name", name)]
        elif kind in _PROBES:
            lines = [
                ("name", name),
                ("offset", f"{target.offset:#x}"),
                ("missed", str(target.missed)),
                ("addr", f"{target.addr:#x}"),
            ]
        elif kind in _UPROBES:
            lines = [
                ("name", name),
                ("offset", f"{target.offset:#x}"),
                ("ref_ctr_offset", f"{target.ref_ctr_offset:#x}"),
            ]
        else:
            lines = [("type", str(target.type)), ("config", str(target.config))]
        return [*lines, ("event_type", EVENT_TYPE_NAMES[kind]), ("cookie", str(self.cookie))]

    def fill_link_info(self, info: BpfLinkInfo) -> None:
        if not self.kernel.profile.has_behaviour("perf_link_info"):
            return
        target = self.event.link_target()
        perf = info.perf_event
        if target.kind is BpfPerfEventType.EVENT:
            perf.type = int(target.kind)
            perf.event.config = target.config
            perf.event.type = target.type
            perf.event.cookie = self.cookie
            return
        if target.kind is BpfPerfEventType.TRACEPOINT:
            variant = perf.tracepoint
            buf_field = "tp_name"
        elif target.kind in _PROBES:
            variant = perf.kprobe
            buf_field = "func_name"
        else:
            variant = perf.uprobe
            buf_field = "file_name"
        buf, buf_len = getattr(variant, buf_field), variant.name_len
        perf.type = int(target.kind)
        variant.cookie = self.cookie
        if bool(buf) != bool(buf_len):
            fail(errno.EINVAL, "the name buffer and its length go together")
        variant.name_len = len(target.name) + 1
        if target.kind in _PROBES:
            perf.kprobe.offset = target.offset
            perf.kprobe.addr = target.addr
            perf.kprobe.missed = target.missed
        elif target.kind in _UPROBES:
            perf.uprobe.offset = target.offset
            perf.uprobe.ref_ctr_offset = target.ref_ctr_offset
        if buf:
            copy_name_out(self.kernel, target.name, buf, buf_len)


@link_creator(ProgType.PERF_EVENT, ProgType.TRACEPOINT, ProgType.KPROBE)
def create_perf_link(call: BpfCall, prog: BpfProgram) -> int:
    attr = call.attr_as(LinkCreateAttr)
    kernel = call.kernel
    if prog.prog_type is ProgType.KPROBE and attr.attach_type != AttachType.PERF_EVENT:
        fail(errno.EOPNOTSUPP, "kprobe_multi / uprobe_multi links are not modelled")
    if attr.flags:
        fail(errno.EINVAL, f"perf link flags {attr.flags:#x}")
    event = kernel.fds.lookup(attr.target_fd)
    if not isinstance(event, PerfEventTarget):
        fail(errno.EBADF, f"fd {attr.target_fd} is not a perf event")
    link = PerfEventLink(kernel, prog, attr.attach_type, event, attr.perf_event.bpf_cookie)
    try:
        link.attach()
    except OSError:
        link.put()
        raise
    return install_link(kernel, link)
