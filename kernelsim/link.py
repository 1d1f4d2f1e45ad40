"""bpf links: the `BpfLink` object, LINK_CREATE / LINK_UPDATE / LINK_DETACH, and which program
type goes with which attach type.

Theory of operation
-------------------
A link ties a program to an attach point. It holds a reference on its program (and on its
target, e.g. a perf event) for as long as it lives; its fds and pins hold the link. Its last
reference detaches it (`detach_target`, then the program is put). Its fd is O_RDONLY.

LINK_CREATE (kernel/bpf/syscall.c link_create), in order:

1. CHECK_ATTR (dispatch); the program fd: EBADF, or EINVAL for another kind of fd;
2. `check_attach_type` (bpf_prog_attach_check_attach_type): EINVAL when the attach type does
   not go with the program type (an attach type this kernel lacks is unknown: EINVAL);
3. the creator registered for the program type (`@link_creator`) makes the link; a program type
   without one is EINVAL. Creators model what exists here: perf event links
   (kernelsim.perf_link); for cgroup, XDP, netns, tcx, netkit and sockmap targets only the
   errno of a missing target (`kernelsim.prog_attach`).

A creator allocates the link's id before attaching (bpf_link_prime): a failed attach still
uses up an id, as on the kernel.

LINK_UPDATE: flags beyond BPF_F_REPLACE: EINVAL; the link fd (EBADF / EINVAL); the new program
(EBADF / EINVAL); with BPF_F_REPLACE the old program (EBADF / EINVAL), without it a non-zero
old_prog_fd is EINVAL; then the link type's update (`update_program`), EINVAL for the types
without one (raw tracepoint and perf event links). LINK_DETACH: the link fd, then the type's
`detach` (EOPNOTSUPP for types without one, as raw tracepoint and perf event links).

fdinfo: link_type, link_id, prog_tag and prog_id, then the type's own lines (`show_fdinfo`).
Info: type, id, prog_id set on the caller's copy, then the type's `fill_link_info`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Final

from bpfsys.abi import (
    AttachFlag,
    AttachType,
    BpfCmd,
    BpfLinkInfo,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkType,
    LinkUpdateAttr,
    ProgType,
)
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.objects import KernelObject
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

LINK_TYPE_NAMES: Final = {
    LinkType.UNSPEC: "unspec",
    LinkType.RAW_TRACEPOINT: "raw_tracepoint",
    LinkType.TRACING: "tracing",
    LinkType.CGROUP: "cgroup",
    LinkType.ITER: "iter",
    LinkType.NETNS: "netns",
    LinkType.XDP: "xdp",
    LinkType.PERF_EVENT: "perf",
    LinkType.KPROBE_MULTI: "kprobe_multi",
    LinkType.STRUCT_OPS: "struct_ops",
    LinkType.NETFILTER: "netfilter",
    LinkType.TCX: "tcx",
    LinkType.UPROBE_MULTI: "uprobe_multi",
    LinkType.NETKIT: "netkit",
    LinkType.SOCKMAP: "sockmap",
}
"""bpf_link_type_strs: the link_type line of fdinfo."""

_CGROUP_SOCK_ADDR: Final = (
    "CGROUP_INET4_BIND CGROUP_INET6_BIND CGROUP_INET4_CONNECT CGROUP_INET6_CONNECT "
    "CGROUP_UDP4_SENDMSG CGROUP_UDP6_SENDMSG CGROUP_UDP4_RECVMSG CGROUP_UDP6_RECVMSG "
    "CGROUP_INET4_GETPEERNAME CGROUP_INET6_GETPEERNAME CGROUP_INET4_GETSOCKNAME "
    "CGROUP_INET6_GETSOCKNAME CGROUP_UNIX_CONNECT CGROUP_UNIX_SENDMSG CGROUP_UNIX_RECVMSG "
    "CGROUP_UNIX_GETPEERNAME CGROUP_UNIX_GETSOCKNAME"
)
_PROG_TYPE_OF_ATTACH: Final[tuple[tuple[str, ProgType], ...]] = (
    ("CGROUP_INET_INGRESS CGROUP_INET_EGRESS", ProgType.CGROUP_SKB),
    (
        "CGROUP_INET_SOCK_CREATE CGROUP_INET_SOCK_RELEASE CGROUP_INET4_POST_BIND "
        "CGROUP_INET6_POST_BIND",
        ProgType.CGROUP_SOCK,
    ),
    (_CGROUP_SOCK_ADDR, ProgType.CGROUP_SOCK_ADDR),
    ("CGROUP_SOCK_OPS", ProgType.SOCK_OPS),
    ("CGROUP_DEVICE", ProgType.CGROUP_DEVICE),
    ("SK_MSG_VERDICT", ProgType.SK_MSG),
    ("SK_SKB_STREAM_PARSER SK_SKB_STREAM_VERDICT SK_SKB_VERDICT", ProgType.SK_SKB),
    ("LIRC_MODE2", ProgType.LIRC_MODE2),
    ("FLOW_DISSECTOR", ProgType.FLOW_DISSECTOR),
    ("CGROUP_SYSCTL", ProgType.CGROUP_SYSCTL),
    ("CGROUP_GETSOCKOPT CGROUP_SETSOCKOPT", ProgType.CGROUP_SOCKOPT),
    ("TRACE_ITER TRACE_RAW_TP TRACE_FENTRY TRACE_FEXIT MODIFY_RETURN", ProgType.TRACING),
    ("LSM_MAC LSM_CGROUP", ProgType.LSM),
    ("SK_LOOKUP", ProgType.SK_LOOKUP),
    ("XDP", ProgType.XDP),
    ("TCX_INGRESS TCX_EGRESS NETKIT_PRIMARY NETKIT_PEER", ProgType.SCHED_CLS),
)
PROG_TYPE_OF_ATTACH: Final[dict[AttachType, ProgType]] = {
    AttachType[name]: prog_type
    for names, prog_type in _PROG_TYPE_OF_ATTACH
    for name in names.split()
}
"""attach_type_to_prog_type: the program type an attach type belongs to (absent: UNSPEC)."""
_EXPECTED_ATTACH_ONLY: Final = frozenset(
    {ProgType.CGROUP_SOCK, ProgType.CGROUP_SOCK_ADDR, ProgType.CGROUP_SOCKOPT, ProgType.SK_LOOKUP}
)
_PERF_ATTACH: Final = frozenset({ProgType.PERF_EVENT, ProgType.TRACEPOINT})
_SCHED_CLS_ATTACH: Final = frozenset(
    {
        AttachType.TCX_INGRESS,
        AttachType.TCX_EGRESS,
        AttachType.NETKIT_PRIMARY,
        AttachType.NETKIT_PEER,
    }
)
_KPROBE_MULTI: Final = frozenset(
    {
        "TRACE_KPROBE_MULTI",
        "TRACE_KPROBE_SESSION",
        "TRACE_UPROBE_MULTI",
        "TRACE_UPROBE_SESSION",
    }
)


def attach_type_of(kernel: Kernel, value: int) -> AttachType | None:
    """The attach type `value` names on this kernel (None: unknown to it)."""
    try:
        attach_type = AttachType(value)
    except ValueError:
        return None
    return attach_type if kernel.profile.has(attach_type) else None


def prog_type_of_attach(kernel: Kernel, value: int) -> ProgType | None:
    """attach_type_to_prog_type on this kernel (None: BPF_PROG_TYPE_UNSPEC)."""
    attach_type = attach_type_of(kernel, value)
    return None if attach_type is None else PROG_TYPE_OF_ATTACH.get(attach_type)


def check_attach_type(kernel: Kernel, prog: BpfProgram, value: int) -> None:
    """bpf_prog_attach_check_attach_type: EINVAL (EPERM for CGROUP_SKB without CAP_NET_ADMIN)
    when attach type `value` does not go with `prog`."""
    attach_type = attach_type_of(kernel, value)
    ptype = prog.prog_type
    if ptype in _EXPECTED_ATTACH_ONLY:
        if attach_type is None or attach_type != prog.expected_attach_type:
            fail(errno.EINVAL, f"{ptype.name} program loaded for another attach type")
        return
    if ptype is ProgType.CGROUP_SKB:
        if not kernel.capable_sys_admin():
            fail(errno.EPERM, "CGROUP_SKB attachment needs CAP_NET_ADMIN")
        expected = prog.expected_attach_type
        enforced = expected not in (None, AttachType.CGROUP_INET_INGRESS)
        if enforced and attach_type != expected:
            fail(errno.EINVAL, "CGROUP_SKB program loaded for another attach type")
    if ptype is ProgType.EXT:
        return
    if ptype in _PERF_ATTACH:
        if attach_type is not AttachType.PERF_EVENT:
            fail(errno.EINVAL, f"{ptype.name} programs attach as BPF_PERF_EVENT")
        return
    if ptype is ProgType.KPROBE:
        _check_kprobe_attach(prog, attach_type)
        return
    if ptype is ProgType.NETFILTER:
        if attach_type is not AttachType.NETFILTER:
            fail(errno.EINVAL, "NETFILTER programs attach as BPF_NETFILTER")
        return
    if ptype is ProgType.SCHED_CLS:
        if attach_type not in _SCHED_CLS_ATTACH:
            fail(errno.EINVAL, "SCHED_CLS programs attach as tcx or netkit")
        return
    if attach_type is None or PROG_TYPE_OF_ATTACH.get(attach_type) is not ptype:
        fail(errno.EINVAL, f"attach type {value} does not go with {ptype.name}")


def _check_kprobe_attach(prog: BpfProgram, attach_type: AttachType | None) -> None:
    expected = prog.expected_attach_type
    multi = attach_type is not None and attach_type.name in _KPROBE_MULTI
    loaded_multi = expected is not None and expected.name in _KPROBE_MULTI
    if loaded_multi and attach_type != expected:
        fail(errno.EINVAL, "multi-probe program must attach as it was loaded")
    if not loaded_multi and multi:
        fail(errno.EINVAL, "program was not loaded for a multi-probe attachment")
    if attach_type is not AttachType.PERF_EVENT and not multi:
        fail(errno.EINVAL, "KPROBE programs attach as BPF_PERF_EVENT or a multi-probe")


class BpfLink(KernelObject):
    """A link. Subclasses set `link_type` and override the hooks below."""

    id_space = "link"
    anon_name = "bpf_link"
    link_type: ClassVar[LinkType] = LinkType.UNSPEC

    def __init__(self, kernel: Kernel, prog: BpfProgram, attach_type: int) -> None:
        super().__init__(kernel.objects)
        self.kernel = kernel
        self.prog: BpfProgram | None = prog
        self.attach_type = attach_type
        prog.hold()

    def release(self) -> None:
        self.detach_target()
        if self.prog is not None:
            self.prog.put()
            self.prog = None

    # Hooks (bpf_link_ops) --------------------------------------------------------------------
    def detach_target(self) -> None:
        """Undo the attachment (the link's last reference is gone, or it failed to attach)."""

    def show_fdinfo(self) -> list[tuple[str, str]]:
        """The link type's own fdinfo lines."""
        return []

    def fill_link_info(self, info: BpfLinkInfo) -> None:
        """The link type's part of bpf_link_info (may write through kernel.memory)."""

    def update_program(self, new: BpfProgram, old: BpfProgram | None) -> None:
        """LINK_UPDATE: link types without update_prog answer EINVAL."""
        fail(errno.EINVAL, f"{LINK_TYPE_NAMES[self.link_type]} links cannot be updated")

    def detach(self) -> None:
        """LINK_DETACH: link types without a detach op answer EOPNOTSUPP."""
        fail(errno.EOPNOTSUPP, f"{LINK_TYPE_NAMES[self.link_type]} links cannot be detached")

    # Introspection --------------------------------------------------------------------------
    def fdinfo(self) -> list[tuple[str, str]]:
        lines = [
            ("link_type", LINK_TYPE_NAMES.get(self.link_type, f"<{int(self.link_type)}>")),
            ("link_id", str(self.id)),
        ]
        if self.prog is not None:
            lines += [("prog_tag", bytes(self.prog.tag).hex()), ("prog_id", str(self.prog.id))]
        return lines + self.show_fdinfo()

    def link_info(self, info: BpfLinkInfo) -> BpfLinkInfo:
        """bpf_link_get_info_by_fd on the caller's copy `info`."""
        info.type = int(self.link_type)
        info.id = self.id
        if self.prog is not None:
            info.prog_id = self.prog.id
        self.fill_link_info(info)
        return info


def install_link(kernel: Kernel, link: BpfLink) -> int:
    """bpf_link_settle: the new link's fd (O_RDONLY), taking over its first reference."""
    return kernel.fds.install(link, os.O_RDONLY)


def copy_name_out(kernel: Kernel, name: bytes, buf: int, buf_len: int) -> None:
    """bpf_copy_to_user: `name` and its NUL into a `buf_len`-byte buffer, or as much as fits
    with a NUL and ENOSPC."""
    if buf_len >= len(name) + 1:
        kernel.memory.write(buf, name + b"\0")
        return
    kernel.memory.write(buf, name[: buf_len - 1] + b"\0")
    fail(errno.ENOSPC, f"name buffer of {buf_len} bytes for {len(name) + 1}")


LinkCreator = Callable[[BpfCall, BpfProgram], int]
LINK_CREATORS: dict[ProgType, LinkCreator] = {}


def link_creator(*prog_types: ProgType) -> Callable[[LinkCreator], LinkCreator]:
    """Register how LINK_CREATE makes links for `prog_types` (after the common checks)."""

    def register(creator: LinkCreator) -> LinkCreator:
        for prog_type in prog_types:
            if prog_type in LINK_CREATORS:
                raise RuntimeError(f"two link creators for {prog_type!r}")
            LINK_CREATORS[prog_type] = creator
        return creator

    return register


@bpf_command(BpfCmd.LINK_CREATE)
def link_create(call: BpfCall) -> int:
    attr = call.attr_as(LinkCreateAttr)
    kernel = call.kernel
    if attach_type_of(kernel, attr.attach_type) is AttachType.STRUCT_OPS:
        fail(errno.EINVAL, "struct_ops links are not modelled")
    prog = kernel.fds.get(attr.prog_fd, BpfProgram)
    check_attach_type(kernel, prog, attr.attach_type)
    creator = LINK_CREATORS.get(prog.prog_type)
    if creator is None:
        fail(errno.EINVAL, f"no links for {prog.prog_type.name} programs")
    return creator(call, prog)


@bpf_command(BpfCmd.LINK_UPDATE)
def link_update(call: BpfCall) -> int:
    attr = call.attr_as(LinkUpdateAttr)
    fds = call.kernel.fds
    if attr.flags & ~AttachFlag.REPLACE:
        fail(errno.EINVAL, f"LINK_UPDATE flags {attr.flags:#x}")
    link = fds.get(attr.link_fd, BpfLink)
    new = fds.get(attr.new_prog_fd, BpfProgram)
    old = None
    if attr.flags & AttachFlag.REPLACE:
        old = fds.get(attr.old_prog_fd, BpfProgram)
    elif attr.old_prog_fd:
        fail(errno.EINVAL, "old_prog_fd without BPF_F_REPLACE")
    link.update_program(new, old)
    return 0


@bpf_command(BpfCmd.LINK_DETACH)
def link_detach(call: BpfCall) -> int:
    attr = call.attr_as(LinkDetachAttr)
    call.kernel.fds.get(attr.link_fd, BpfLink).detach()
    return 0
