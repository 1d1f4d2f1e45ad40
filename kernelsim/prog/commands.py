"""bpf() PROG_LOAD: the attr checks of bpf_prog_load, the loader check, the program object.

Theory of operation
-------------------
`prog_load` follows the kernel's bpf_prog_load (6.18 order, each step refusing with the
kernel's errno): unknown prog_flags (EINVAL); unprivileged_bpf_disabled without CAP_BPF
(EPERM); insn_cnt 0 or above the limit (E2BIG: 4096 without CAP_BPF, 1M with it since 5.2);
program types an unprivileged caller may not load (EPERM; only socket filter and cgroup skb),
network types without CAP_NET_ADMIN, tracing types without CAP_PERFMON (EPERM); attach targets
and expected_attach_type rules (EINVAL); copying the instructions and the licence (EFAULT);
signatures (EOPNOTSUPP); offload (EINVAL); the program type (EINVAL); the name (EINVAL); kprobe
kern_version before 5.0 (EINVAL). Then `verifier.verify` runs bpf_check and its log is copied to
log_buf, log_true_size written back (6.4+), and a new `BpfProgram` gets an fd.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Final

from bpfsys.abi import BPF_MAXINSNS, AttachType, BpfCmd, ProgFlag, ProgLoadAttr, ProgType
from bpfsys.asm import decode
from kernelsim.dispatch import BpfCall, bpf_command
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import BpfMap
from kernelsim.maps.commands import legacy_permission, map_name
from kernelsim.prog.program import BpfProgram
from kernelsim.prog.tag import prog_tag
from kernelsim.prog.verifier import Caps, LoadRequest, VerifierError, verify
from kernelsim.prog.verifier.context import CTX_RULES
from kernelsim.prog.verifier.log import VerifierLog

LICENSE_MAX: Final = 128
GPL_LICENSES: Final = frozenset(
    {"GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL"}
)
NET_ADMIN_TYPES: Final = frozenset(
    {ProgType.SCHED_CLS, ProgType.SCHED_ACT, ProgType.XDP, ProgType.LWT_IN, ProgType.LWT_OUT,
     ProgType.LWT_XMIT, ProgType.LWT_SEG6LOCAL, ProgType.SK_SKB, ProgType.SK_MSG,
     ProgType.FLOW_DISSECTOR, ProgType.CGROUP_DEVICE, ProgType.CGROUP_SOCK,
     ProgType.CGROUP_SOCK_ADDR, ProgType.CGROUP_SOCKOPT, ProgType.CGROUP_SYSCTL,
     ProgType.SOCK_OPS, ProgType.EXT, ProgType.NETFILTER}
)  # fmt: skip
PERFMON_TYPES: Final = frozenset(
    {ProgType.KPROBE, ProgType.TRACEPOINT, ProgType.PERF_EVENT, ProgType.RAW_TRACEPOINT,
     ProgType.RAW_TRACEPOINT_WRITABLE, ProgType.TRACING, ProgType.LSM, ProgType.STRUCT_OPS,
     ProgType.EXT}
)  # fmt: skip
UNPRIVILEGED_TYPES: Final = frozenset({ProgType.SOCKET_FILTER, ProgType.CGROUP_SKB})
LOG_TRUE_SIZE_END: Final = ProgLoadAttr.log_true_size.offset + ProgLoadAttr.log_true_size.size


def license_gpl_compatible(text: str) -> bool:
    """The kernel's license_is_gpl_compatible."""
    return text in GPL_LICENSES


def _check_attach(prog_type: int, attach: int) -> None:
    """bpf_prog_load_check_attach for the modelled types."""
    if prog_type == ProgType.CGROUP_SKB and attach not in (
        AttachType.CGROUP_INET_INGRESS,
        AttachType.CGROUP_INET_EGRESS,
    ):
        fail(errno.EINVAL, f"expected_attach_type {attach} invalid for cgroup skb programs")


def _check_privileges(kernel: Kernel, prog_type: int) -> None:
    if prog_type not in UNPRIVILEGED_TYPES and not kernel.bpf_capable():
        fail(errno.EPERM, "only socket filter and cgroup skb programs without CAP_BPF")
    if prog_type in NET_ADMIN_TYPES and not kernel.capable_sys_admin():
        fail(errno.EPERM, "network program types need CAP_NET_ADMIN")
    if prog_type in PERFMON_TYPES and not kernel.perfmon_capable():
        fail(errno.EPERM, "tracing program types need CAP_PERFMON")


def _prog_type(kernel: Kernel, value: int) -> ProgType:
    """find_prog_type: EINVAL for a type this kernel lacks (or one the simulator lacks)."""
    try:
        prog_type = ProgType(value)
    except ValueError:
        fail(errno.EINVAL, f"unknown program type {value}")
    if prog_type is ProgType.UNSPEC or not kernel.profile.has(prog_type):
        fail(errno.EINVAL, f"program type {prog_type.name} unknown to {kernel.profile.version}")
    if prog_type not in CTX_RULES:
        fail(errno.EINVAL, f"program type {prog_type.name} is not modelled by the simulator")
    return prog_type


def _map_lookup(kernel: Kernel) -> Callable[[int], BpfMap]:
    def lookup(fd: int) -> BpfMap:
        obj = kernel.fds.lookup(fd)
        if isinstance(obj, BpfMap):
            return obj
        if obj is None and not _open_in_process(fd):
            raise VerifierError(errno.EBADF, f"fd {fd} is not pointing to valid bpf_map")
        raise VerifierError(errno.EINVAL, f"fd {fd} is not pointing to valid bpf_map")

    return lookup


def _open_in_process(fd: int) -> bool:
    """Whether `fd` is an open fd of this process that is not a simulated object (a file)."""
    if fd < 0:
        return False
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _fd_array(kernel: Kernel, addr: int) -> Callable[[int], int] | None:
    if not addr:
        return None

    def read(index: int) -> int:
        try:
            raw = kernel.memory.read(addr + 4 * index, 4)
        except OSError:
            raise VerifierError(errno.EFAULT, "cannot read fd_array") from None
        return int.from_bytes(raw, "little", signed=True)

    return read


@bpf_command(BpfCmd.PROG_LOAD)
def prog_load(call: BpfCall) -> int:
    kernel = call.kernel
    attr = call.attr_as(ProgLoadAttr)
    profile = kernel.profile
    if attr.prog_flags & ~profile.known_flags(ProgFlag):
        fail(errno.EINVAL, f"unknown prog_flags {attr.prog_flags:#x}")
    legacy_permission(kernel)
    if kernel.sysctl["unprivileged_bpf_disabled"] and not kernel.bpf_capable():
        fail(errno.EPERM, "unprivileged_bpf_disabled and no CAP_BPF")
    big = kernel.bpf_capable() and profile.has_behaviour("bpf_complexity_1m")
    limit = 1_000_000 if big else BPF_MAXINSNS
    if attr.insn_cnt == 0 or attr.insn_cnt > limit:
        fail(errno.E2BIG, f"insn_cnt {attr.insn_cnt} not in 1..{limit}")
    _check_privileges(kernel, attr.prog_type)
    if attr.attach_prog_fd or attr.attach_btf_id:
        fail(errno.EINVAL, "attach targets (BTF, programs) are not modelled")
    _check_attach(attr.prog_type, attr.expected_attach_type)
    insns = kernel.memory.read(attr.insns, attr.insn_cnt * 8)
    license_raw, _ = kernel.memory.read_cstring(attr.license, LICENSE_MAX - 1)
    license_text = license_raw.decode("latin-1")
    if attr.signature:
        fail(errno.EOPNOTSUPP, "signed programs are not modelled")
    if attr.prog_ifindex:
        fail(errno.EINVAL, f"no offload device with ifindex {attr.prog_ifindex}")
    prog_type = _prog_type(kernel, attr.prog_type)
    name_at = ProgLoadAttr.prog_name.offset
    name = map_name(bytes(attr)[name_at : name_at + ProgLoadAttr.prog_name.size])
    if (
        prog_type is ProgType.KPROBE
        and not profile.has_behaviour("kprobe_any_kern_version")
        and attr.kern_version != _version_code(kernel)
    ):
        fail(errno.EINVAL, "kprobe programs need kern_version of the running kernel")
    return _check_and_create(call, prog_type, insns, license_text, name)


def _version_code(kernel: Kernel) -> int:
    version = kernel.profile.version
    return version.major << 16 | version.minor << 8


def _check_and_create(
    call: BpfCall, prog_type: ProgType, insns: bytes, license_text: str, name: bytes
) -> int:
    kernel = call.kernel
    attr = call.attr_as(ProgLoadAttr)
    profile = kernel.profile
    modern_log = profile.has_behaviour("log_true_size")
    try:
        VerifierLog.check_attr(attr.log_level, attr.log_buf, attr.log_size, modern_log)
    except VerifierError as exc:
        fail(exc.errno, exc.message)
    if attr.func_info_cnt or attr.line_info_cnt:
        fail(errno.EINVAL, "BTF func_info/line_info are not modelled")
    log = VerifierLog(attr.log_level, bool(attr.log_buf), attr.log_size, modern_log)
    gpl = license_gpl_compatible(license_text)
    request = LoadRequest(
        insns=decode(insns),
        prog_type=prog_type,
        attach_type=attr.expected_attach_type,
        gpl=gpl,
        caps=Caps(bpf_capable=kernel.bpf_capable(), perfmon=kernel.perfmon_capable()),
        log=log,
        lookup_map=_map_lookup(kernel),
        fd_array=_fd_array(kernel, attr.fd_array),
        array_lookup_nonnull=profile.has_behaviour("array_lookup_nonnull"),
        version=profile.version,
        sleepable=bool(attr.prog_flags & ProgFlag.SLEEPABLE),
    )
    verdict = verify(request)
    try:
        error = verdict.error.errno if verdict.error is not None else None
        result = verdict.log
        if result.text is not None:
            try:
                kernel.memory.write(attr.log_buf, result.text)
            except OSError:
                error = errno.EFAULT
        elif result.error is not None:
            error = result.error
        if result.error is not None and error != errno.EFAULT:
            error = result.error
        if modern_log and call.size >= LOG_TRUE_SIZE_END:
            call.write_back("log_true_size", result.true_size)
        if error is not None:
            why = verdict.error.message if verdict.error is not None else "verifier log"
            fail(error, why)
        program = BpfProgram(
            kernel,
            kernel.objects,
            prog_type,
            insns,
            license_text,
            name,
            _attach_type(attr.expected_attach_type),
            list(verdict.used_maps),
            prog_tag(insns, profile.has_behaviour("prog_tag_sha256")),
            gpl,
            {index: ref.map for index, ref in verdict.map_refs.items()},
            verified_insns=verdict.stats.insn_processed,
            max_ctx_offset=verdict.stats.max_ctx_offset,
            attach_type_raw=attr.expected_attach_type,
        )
    finally:
        for bpf_map in verdict.used_maps:
            bpf_map.put()
    return kernel.fds.install(program)


def _attach_type(value: int) -> AttachType | None:
    try:
        return AttachType(value)
    except ValueError:
        return None
