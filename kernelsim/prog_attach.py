"""PROG_ATTACH / PROG_DETACH / PROG_QUERY, and the links whose targets are not modelled.

Theory of operation
-------------------
The simulated kernel has no cgroups, network devices, lirc devices or sockets. What it models
of these attachments is the kernel's answer when the target is missing or of the wrong kind,
with the checks that come before it (kernel/bpf/syscall.c, measured on 6.18):

| target     | looked up by                      | missing / wrong kind of target            |
|------------|-----------------------------------|-------------------------------------------|
| cgroup     | cgroup_get_from_fd(target_fd)     | EBADF (any fd that is not a cgroup dir)   |
| netns      | get_net_ns_by_fd(target_fd)       | EBADF not open, EINVAL not a netns        |
| XDP        | dev_get_by_index(ifindex)         | EINVAL                                    |
| tcx        | __dev_get_by_index(ifindex)       | ENODEV                                    |
| netkit     | (CONFIG_NETKIT off on the oracle) | EINVAL                                    |
| sockmap    | the map fd                        | EBADF / EINVAL; a non-sock map: EOPNOTSUPP|
|            |                                   | (attach, detach, query), EINVAL (link)    |
| lirc       | rc_dev_get_from_fd(target_fd)     | EBADF not open, EINVAL not a lirc device  |

PROG_ATTACH: the attach type's program type (attach_type_to_prog_type; none: EINVAL); attach
flags beyond what that type takes (tcx/netkit: the mprog flags; cgroups: override, multi,
replace, preorder; others: none, and no relative_fd / expected_revision): EINVAL; the program
(EBADF; another fd or program type: EINVAL); `check_attach_type` (EINVAL); then the target.
PROG_DETACH: the attach type (tcx/netkit: the program fd when given), flags: EINVAL; then the
target. PROG_QUERY: CAP_NET_ADMIN (EPERM), query_flags beyond BPF_F_QUERY_EFFECTIVE (EINVAL),
then the target by attach type; other attach types are EINVAL.

Sock maps (SOCKMAP, SOCKHASH) take SK_SKB and SK_MSG programs whole: attach, detach and query
follow the map's program slots (`kernelsim.maps.sockmap`); a query writes attach_flags and
prog_cnt back also when it fails with EOPNOTSUPP (not a sock map) or EBUSY. Sockmap links
(LINK_CREATE) are not modelled: EOPNOTSUPP once the target is a sock map.

The other attachment modelled whole is the flow dissector of the current network namespace
(`FlowDissectorSlot`): attach (target_fd, flags and replace_bpf_fd must be zero; the same program
twice: EINVAL; another program replaces it), detach (ENOENT unless that program is attached),
query through a netns fd of this process (/proc/self/ns/net). Whatever the simulator cannot
reach (a real cgroup directory fd, a real netns fd for attaching) gets the errno of a wrong
target; docs/fidelity/objects.md lists these.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Final, NoReturn

from bpfsys.abi import (
    BPF_F_QUERY_EFFECTIVE,
    AttachFlag,
    AttachType,
    BpfCmd,
    LinkCreateAttr,
    LinkType,
    MapType,
    ProgAttachAttr,
    ProgQueryAttr,
    ProgType,
)
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.link import check_attach_type, link_creator, prog_type_of_attach
from kernelsim.maps.base import BpfMap
from kernelsim.maps.sockmap import SockMapBase
from kernelsim.objects import KernelObject
from kernelsim.prog.program import BpfProgram

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel

CGROUP_PROG_TYPES: Final = frozenset(
    {
        ProgType.CGROUP_SKB,
        ProgType.CGROUP_SOCK,
        ProgType.CGROUP_SOCK_ADDR,
        ProgType.SOCK_OPS,
        ProgType.CGROUP_DEVICE,
        ProgType.CGROUP_SYSCTL,
        ProgType.CGROUP_SOCKOPT,
        ProgType.LSM,
    }
)
SOCKMAP_PROG_TYPES: Final = frozenset({ProgType.SK_SKB, ProgType.SK_MSG})
SOCK_MAPS: Final = frozenset({MapType.SOCKMAP, MapType.SOCKHASH})
NETNS_PROG_TYPES: Final = frozenset({ProgType.FLOW_DISSECTOR, ProgType.SK_LOOKUP})
CGROUP_FLAGS: Final = (
    AttachFlag.ALLOW_OVERRIDE | AttachFlag.ALLOW_MULTI | AttachFlag.REPLACE | AttachFlag.PREORDER
)
MPROG_FLAGS: Final = (
    AttachFlag.REPLACE | AttachFlag.BEFORE | AttachFlag.AFTER | AttachFlag.ID | AttachFlag.LINK
)
TCX: Final = frozenset({AttachType.TCX_INGRESS, AttachType.TCX_EGRESS})


def _cgroup(kernel: Kernel, fd: int) -> NoReturn:
    fail(errno.EBADF, f"fd {fd} is not a cgroup directory (the simulator has no cgroups)")


def _is_host_netns(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("net:[")
    except OSError:
        return False


def _netns(kernel: Kernel, fd: int) -> NoReturn:
    """get_net_ns_by_fd for a target the simulator cannot attach to."""
    kernel.fds.get(fd, KernelObject)  # EBADF when not open, EINVAL for a file of the process
    fail(errno.EINVAL, f"fd {fd} is not a network namespace the simulator can attach to")


def _sock_map(kernel: Kernel, fd: int) -> SockMapBase:
    """The sock map behind `fd` (EBADF / EINVAL for no map; EOPNOTSUPP for another map type:
    sock_map_progs has no programs for it)."""
    bpf_map = kernel.fds.get(fd, BpfMap)
    if not isinstance(bpf_map, SockMapBase):
        fail(errno.EOPNOTSUPP, f"{bpf_map.map_type.name} maps take no programs")
    return bpf_map


def _sched_cls(kernel: Kernel, attach_type: int) -> NoReturn:
    if attach_type in TCX:
        fail(errno.ENODEV, "no such network device (the simulator has none)")
    fail(errno.EINVAL, "netkit is not built into the modelled kernel")


def _lirc(kernel: Kernel, fd: int) -> NoReturn:
    kernel.fds.get(fd, KernelObject)
    fail(errno.EINVAL, f"fd {fd} is not a lirc device")


class FlowDissectorSlot:
    """The flow dissector program of the simulated process's network namespace."""

    def __init__(self, kernel: Kernel) -> None:
        self.prog: BpfProgram | None = None

    def attach(self, prog: BpfProgram) -> None:
        if prog is self.prog:
            fail(errno.EINVAL, "this program is already the flow dissector")
        prog.hold()
        old, self.prog = self.prog, prog
        if old is not None:
            old.put()

    def detach(self, prog: BpfProgram) -> None:
        if self.prog is None or self.prog is not prog:
            fail(errno.ENOENT, "that program is not the flow dissector")
        self.prog = None
        prog.put()


# -- PROG_ATTACH / PROG_DETACH ----------------------------------------------------------------
def _attach_flags_ok(ptype: ProgType, attr: ProgAttachAttr) -> bool:
    if ptype is ProgType.SCHED_CLS:
        return not attr.attach_flags & ~MPROG_FLAGS
    if ptype in CGROUP_PROG_TYPES:
        return not attr.attach_flags & ~CGROUP_FLAGS
    return not (attr.attach_flags or attr.relative_fd or attr.expected_revision)


@bpf_command(BpfCmd.PROG_ATTACH)
def prog_attach(call: BpfCall) -> int:
    attr = call.attr_as(ProgAttachAttr)
    kernel = call.kernel
    ptype = prog_type_of_attach(kernel, attr.attach_type)
    if ptype is None:
        fail(errno.EINVAL, f"attach type {attr.attach_type} has no program type")
    if not _attach_flags_ok(ptype, attr):
        fail(errno.EINVAL, f"attach_flags {attr.attach_flags:#x} for {ptype.name}")
    prog = kernel.fds.get(attr.attach_bpf_fd, BpfProgram)
    if prog.prog_type is not ptype:
        fail(errno.EINVAL, f"a {prog.prog_type.name} program, not {ptype.name}")
    try:
        check_attach_type(kernel, prog, attr.attach_type)
    except OSError:
        fail(errno.EINVAL, "attach type does not go with the program")
    if ptype in SOCKMAP_PROG_TYPES:
        if attr.attach_flags or attr.replace_bpf_fd:
            fail(errno.EINVAL, "sockmap attachment takes no flags")
        _sock_map(kernel, attr.target_fd).attach(prog, attr.attach_type)
        return 0
    if ptype is ProgType.LIRC_MODE2:
        if attr.attach_flags:
            fail(errno.EINVAL, "lirc attachment takes no flags")
        _lirc(kernel, attr.target_fd)
    if ptype is ProgType.FLOW_DISSECTOR:
        if attr.target_fd or attr.attach_flags or attr.replace_bpf_fd:
            fail(errno.EINVAL, "the flow dissector attaches to the current netns: no target")
        kernel.subsystem(FlowDissectorSlot).attach(prog)
        return 0
    if ptype in CGROUP_PROG_TYPES:
        _cgroup(kernel, attr.target_fd)
    if ptype is ProgType.SCHED_CLS:
        _sched_cls(kernel, attr.attach_type)
    fail(errno.EINVAL, f"{ptype.name} programs are not attached with PROG_ATTACH")


@bpf_command(BpfCmd.PROG_DETACH)
def prog_detach(call: BpfCall) -> int:
    attr = call.attr_as(ProgAttachAttr)
    kernel = call.kernel
    ptype = prog_type_of_attach(kernel, attr.attach_type)
    if ptype is ProgType.SCHED_CLS:
        if attr.attach_flags & ~MPROG_FLAGS:
            fail(errno.EINVAL, f"attach_flags {attr.attach_flags:#x}")
        if attr.attach_bpf_fd:
            kernel.fds.get(attr.attach_bpf_fd, BpfProgram)
        _sched_cls(kernel, attr.attach_type)
    if attr.attach_flags or attr.relative_fd or attr.expected_revision:
        fail(errno.EINVAL, "PROG_DETACH takes no flags here")
    if ptype in SOCKMAP_PROG_TYPES:
        if attr.replace_bpf_fd:
            fail(errno.EINVAL, "sockmap detachment takes no replace fd")
        kernel.fds.get(attr.target_fd, BpfMap)
        prog = kernel.fds.get(attr.attach_bpf_fd, BpfProgram)
        if prog.prog_type is not ptype:
            fail(errno.EINVAL, f"a {prog.prog_type.name} program, not {ptype.name}")
        _sock_map(kernel, attr.target_fd).detach(prog, attr.attach_type)
        return 0
    if ptype is ProgType.LIRC_MODE2:
        _lirc(kernel, attr.target_fd)
    if ptype is ProgType.FLOW_DISSECTOR:
        prog = kernel.fds.get(attr.attach_bpf_fd, BpfProgram)
        if prog.prog_type is not ptype:
            fail(errno.EINVAL, f"a {prog.prog_type.name} program, not {ptype.name}")
        kernel.subsystem(FlowDissectorSlot).detach(prog)
        return 0
    if ptype in CGROUP_PROG_TYPES:
        _cgroup(kernel, attr.target_fd)
    fail(errno.EINVAL, f"attach type {attr.attach_type} has nothing to detach")


# -- PROG_QUERY -------------------------------------------------------------------------------
@bpf_command(BpfCmd.PROG_QUERY)
def prog_query(call: BpfCall) -> int:
    attr = call.attr_as(ProgQueryAttr)
    kernel = call.kernel
    if not kernel.capable_sys_admin():
        fail(errno.EPERM, "PROG_QUERY needs CAP_NET_ADMIN")
    if attr.query_flags & ~BPF_F_QUERY_EFFECTIVE:
        fail(errno.EINVAL, f"query_flags {attr.query_flags:#x}")
    ptype = prog_type_of_attach(kernel, attr.attach_type)
    if ptype in CGROUP_PROG_TYPES and attr.attach_type != AttachType.LSM_MAC:
        _cgroup(kernel, attr.target_fd)
    if ptype in SOCKMAP_PROG_TYPES:
        return _query_sock_map(call, attr)
    if ptype is ProgType.LIRC_MODE2:
        if attr.query_flags:
            fail(errno.EINVAL, "lirc query takes no flags")
        _lirc(kernel, attr.target_fd)
    if ptype in NETNS_PROG_TYPES:
        return _query_netns(call, attr)
    if ptype is ProgType.SCHED_CLS:
        _sched_cls(kernel, attr.attach_type)
    fail(errno.EINVAL, f"attach type {attr.attach_type} cannot be queried")


def _query_sock_map(call: BpfCall, attr: ProgQueryAttr) -> int:
    """sock_map_bpf_prog_query: attach_flags and prog_cnt are written back even when the map
    has no such attach point (EOPNOTSUPP) or the other verdict is attached (EBUSY)."""
    kernel = call.kernel
    if attr.query_flags:
        fail(errno.EINVAL, "sockmap query takes no flags")
    bpf_map = kernel.fds.get(attr.target_fd, BpfMap)
    prog: BpfProgram | None = None
    error: OSError | None = None
    try:
        if not isinstance(bpf_map, SockMapBase):
            fail(errno.EOPNOTSUPP, f"{bpf_map.map_type.name} maps take no programs")
        prog = bpf_map.attached(attr.attach_type)
    except OSError as exc:
        error = exc
    count = 0 if prog is None else 1
    call.write_back("attach_flags", 0)
    if prog is not None and attr.prog_cnt and attr.prog_ids:
        kernel.memory.write(attr.prog_ids, prog.id.to_bytes(4, "little"))
    call.write_back("prog_cnt", count)
    if error is not None:
        raise error
    return 0


def _query_netns(call: BpfCall, attr: ProgQueryAttr) -> int:
    """netns_bpf_prog_query on the process's own netns (a /proc/self/ns/net fd)."""
    kernel = call.kernel
    if attr.query_flags:
        fail(errno.EINVAL, "netns query takes no flags")
    if not _is_host_netns(attr.target_fd):
        _netns(kernel, attr.target_fd)
    prog = (
        kernel.subsystem(FlowDissectorSlot).prog
        if attr.attach_type == AttachType.FLOW_DISSECTOR
        else None
    )
    ids = [] if prog is None else [prog.id]
    call.write_back("attach_flags", 0)
    if attr.prog_ids and attr.prog_cnt:
        shown = ids[: attr.prog_cnt]
        kernel.memory.write(attr.prog_ids, b"".join(i.to_bytes(4, "little") for i in shown))
    call.write_back("prog_cnt", len(ids))
    if attr.prog_ids and attr.prog_cnt < len(ids):
        fail(errno.ENOSPC, "prog_ids holds fewer ids than are attached")
    return 0


# -- LINK_CREATE for targets that are not modelled --------------------------------------------
@link_creator(*CGROUP_PROG_TYPES)
def create_cgroup_link(call: BpfCall, prog: BpfProgram) -> int:
    attr = call.attr_as(LinkCreateAttr)
    if attr.flags:
        fail(errno.EINVAL, f"cgroup link flags {attr.flags:#x}")
    _cgroup(call.kernel, attr.target_fd)


@link_creator(*NETNS_PROG_TYPES)
def create_netns_link(call: BpfCall, prog: BpfProgram) -> int:
    attr = call.attr_as(LinkCreateAttr)
    if attr.flags:
        fail(errno.EINVAL, f"netns link flags {attr.flags:#x}")
    _netns(call.kernel, attr.target_fd)


@link_creator(ProgType.XDP)
def create_xdp_link(call: BpfCall, prog: BpfProgram) -> int:
    fail(errno.EINVAL, "no such network device (the simulator has none)")


@link_creator(ProgType.SCHED_CLS)
def create_sched_cls_link(call: BpfCall, prog: BpfProgram) -> int:
    _sched_cls(call.kernel, call.attr_as(LinkCreateAttr).attach_type)


@link_creator(*SOCKMAP_PROG_TYPES)
def create_sockmap_link(call: BpfCall, prog: BpfProgram) -> int:
    attr = call.attr_as(LinkCreateAttr)
    kernel = call.kernel
    if not kernel.profile.has(LinkType.SOCKMAP) or attr.flags:
        fail(errno.EINVAL, "sockmap links take no flags")
    bpf_map = kernel.fds.get(attr.target_fd, BpfMap)
    if bpf_map.map_type not in SOCK_MAPS:
        fail(errno.EINVAL, f"{bpf_map.map_type.name} maps take no program links")
    fail(errno.EOPNOTSUPP, "sockmap links are not modelled")
