"""The loader check ("verifier"): `verify` runs the kernel's bpf_check steps on a program.

Order (kernel/bpf/verifier.c bpf_check, 6.18): log attributes; add_subprog_and_kfunc and
check_subprogs (module `subprogs`: subprogram starts, jump range, last instruction, LD_ABS and
tail calls only in the main program without BTF); resolve_pseudo_ldimm64 (reserved LDX fields,
ld_imm64 pairs, map fds, unknown opcodes); check_cfg (back-edges, unreachable code);
check_attach_btf_id (which types may or must be sleepable); do_check (the abstract interpreter,
module `check`); check_max_stack_depth (call depth and combined stack over call chains); then
the statistics. The log is written as the kernel writes it (module `log`); the caller copies
`Verdict.log` to log_buf and `Verdict.log_true_size` to the attr.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Final

import attrs

from bpfsys.abi import ProgType
from bpfsys.asm import Insn
from bpfsys.kversion import KernelVersion
from kernelsim.maps.base import BpfMap
from kernelsim.prog.verifier import structure, subprogs
from kernelsim.prog.verifier.check import Caps, Checker, Program, Stats, helper_id_limit
from kernelsim.prog.verifier.errors import VerifierError
from kernelsim.prog.verifier.helpers import PROTOS
from kernelsim.prog.verifier.log import LOG_LEVEL1, LOG_LEVEL2, LOG_STATS, LogResult, VerifierLog
from kernelsim.prog.verifier.structure import MapLookup, MapRef

__all__ = ["Caps", "LoadRequest", "Verdict", "VerifierError", "verify"]


@attrs.frozen
class LoadRequest:
    """What bpf_check needs from PROG_LOAD."""

    insns: Sequence[Insn]
    prog_type: ProgType
    attach_type: int
    gpl: bool
    caps: Caps
    log: VerifierLog
    lookup_map: MapLookup
    fd_array: Callable[[int], int] | None
    array_lookup_nonnull: bool
    version: KernelVersion
    sleepable: bool = False


@attrs.define
class Verdict:
    """The outcome: error (None: accepted), maps used, map loads by instruction, statistics."""

    error: VerifierError | None
    used_maps: list[BpfMap]
    map_refs: dict[int, MapRef]
    stats: Stats
    log: LogResult


RETURN_RANGE_TYPES: Final = frozenset({ProgType.CGROUP_SKB})
"""Modelled types whose return value the checker bounds (check_return_code)."""
SLEEPABLE_TYPES: Final = frozenset({ProgType.KPROBE, ProgType.SYSCALL})
"""Modelled types that may be sleepable (uprobes, syscall programs; the kernel adds tracing,
lsm and struct_ops, which are not modelled)."""


def _call_args(func: int) -> int:
    proto = PROTOS.get(func)
    return 5 if proto is None else len(proto.args)


def _exit_checks_r0(prog_type: ProgType, subs: Sequence[subprogs.Subprog], index: int) -> bool:
    """Whether the value r0 holds at the exit at `index` is checked: a subprogram's goes back
    to its caller; the main program's is checked for the types with a return range."""
    return index >= subs[0].end or prog_type in RETURN_RANGE_TYPES


def _check_sleepable(prog_type: ProgType, sleepable: bool) -> None:
    """check_attach_btf_id's rules on BPF_F_SLEEPABLE."""
    if prog_type is ProgType.SYSCALL and not sleepable:
        raise VerifierError(errno.EINVAL, "Syscall programs can only be sleepable")
    if sleepable and prog_type not in SLEEPABLE_TYPES:
        raise VerifierError(
            errno.EINVAL,
            "Only fentry/fexit/fmod_ret, lsm, iter, uprobe, and struct_ops programs can be "
            "sleepable",
        )


def verify(request: LoadRequest) -> Verdict:
    """Run the checks; never raises VerifierError (it is returned in the verdict)."""
    used: list[BpfMap] = []
    refs: dict[int, MapRef] = {}
    stats = Stats()
    log = request.log
    error: VerifierError | None = None
    try:
        insns = request.insns
        starts = subprogs.find_subprogs(insns, request.caps.bpf_capable)
        stats.stack_depth = [0] * len(starts)
        if log.level2:
            log.write("".join(f"func#{n} @{start}\n" for n, start in enumerate(starts)))
        subs = subprogs.check_subprogs(insns, starts)
        subprogs.check_abnormal_return(subs)
        refs = structure.resolve_ld_imm64(
            insns,
            request.version,
            request.lookup_map,
            request.fd_array,
            used,
            request.sleepable,
        )
        cfg = structure.check_cfg(insns, allow_loops=request.caps.bpf_capable)
        _check_sleepable(request.prog_type, request.sleepable)
        program = Program(
            insns=insns,
            prog_type=request.prog_type,
            attach_type=request.attach_type,
            gpl=request.gpl,
            map_refs=refs,
            prune_points=cfg.prune_points,
            force_checkpoints=cfg.force_checkpoints,
            live=structure.liveness(insns, _call_args),
            precise=structure.precision_needed(
                insns, _call_args, lambda i: _exit_checks_r0(request.prog_type, subs, i)
            ),
            subprogs=subs,
            array_lookup_nonnull=request.array_lookup_nonnull,
            helper_limit=helper_id_limit(request.version),
            version=request.version,
        )
        checker = Checker(program, request.caps, log)
        try:
            checker.run()
        finally:
            stats = checker.stats
        if log.level & LOG_LEVEL1 and not log.level & LOG_LEVEL2:
            log.reset(0)
        subprogs.check_max_stack_depth(
            insns, subs, stats.stack_depth, request.prog_type, request.version
        )
    except VerifierError as exc:
        error = exc
        log.write((exc.message + "\n" if exc.message else "") + exc.trailer)
    if log.level & LOG_STATS:
        depths = "+".join(str(depth) for depth in stats.stack_depth)
        log.write(f"verification time 0 usec\nstack depth {depths}\n")
    log.write(
        f"processed {stats.insn_processed} insns (limit 1000000) max_states_per_insn "
        f"{stats.max_states_per_insn} total_states {stats.total_states} peak_states "
        f"{stats.peak_states} mark_read 0\n"
    )
    return Verdict(error, used, refs, stats, log.finalize())
