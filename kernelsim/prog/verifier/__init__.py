"""The loader check ("verifier"): `verify` runs the kernel's bpf_check steps on a program.

Order (kernel/bpf/verifier.c bpf_check, 6.x): log attributes; check_subprogs (jump range, last
instruction); resolve_pseudo_ldimm64 (reserved LDX fields, ld_imm64 pairs, map fds, unknown
opcodes); check_cfg (back-edges, unreachable code); do_check (the abstract interpreter, module
`check`); then the statistics line. The log is written as the kernel writes it (module `log`);
the caller copies `Verdict.log` to log_buf and `Verdict.log_true_size` to the attr.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from bpfsys.abi import ProgType
from bpfsys.asm import Insn
from bpfsys.kversion import KernelVersion
from kernelsim.maps.base import BpfMap
from kernelsim.prog.verifier import structure
from kernelsim.prog.verifier.check import Caps, Checker, Program, Stats
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


@attrs.define
class Verdict:
    """The outcome: error (None: accepted), maps used, map loads by instruction, statistics."""

    error: VerifierError | None
    used_maps: list[BpfMap]
    map_refs: dict[int, MapRef]
    stats: Stats
    log: LogResult


def _call_args(func: int) -> int:
    proto = PROTOS.get(func)
    return 5 if proto is None else len(proto.args)


def verify(request: LoadRequest) -> Verdict:
    """Run the checks; never raises VerifierError (it is returned in the verdict)."""
    used: list[BpfMap] = []
    refs: dict[int, MapRef] = {}
    stats = Stats()
    log = request.log
    error: VerifierError | None = None
    try:
        insns = request.insns
        structure.check_jumps(insns)
        refs = structure.resolve_ld_imm64(
            insns,
            request.version,
            request.lookup_map,
            request.fd_array,
            used,
        )
        cfg = structure.check_cfg(insns, allow_loops=request.caps.bpf_capable)
        program = Program(
            insns=insns,
            prog_type=request.prog_type,
            attach_type=request.attach_type,
            gpl=request.gpl,
            map_refs=refs,
            prune_points=cfg.prune_points,
            live=structure.liveness(insns, _call_args),
            array_lookup_nonnull=request.array_lookup_nonnull,
        )
        checker = Checker(program, request.caps, log)
        try:
            checker.run()
        finally:
            stats = checker.stats
        if log.level & LOG_LEVEL1 and not log.level & LOG_LEVEL2:
            log.reset(0)
    except VerifierError as exc:
        error = exc
        log.write(exc.message + "\n")
    if log.level & LOG_STATS:
        log.write(f"verification time 0 usec\nstack depth {stats.stack_depth}\n")
    log.write(
        f"processed {stats.insn_processed} insns (limit 1000000) max_states_per_insn "
        f"{stats.max_states_per_insn} total_states {stats.total_states} peak_states "
        f"{stats.peak_states} mark_read 0\n"
    )
    return Verdict(error, used, refs, stats, log.finalize())
