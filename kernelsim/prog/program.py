"""`BpfProgram`: the kernel object behind a program fd.

A program is made by PROG_LOAD once the loader check accepted its instructions. It holds a
reference on every map its instructions use (and on nothing else); it counts its runs while
stats are enabled. Running it is the interpreter's business (kernelsim.prog.interpreter):
`executable()` decodes the instructions once and caches the result (with its compiled form);
`insn_maps` tells it which map each map-loading ld_imm64 slot refers to (PROG_LOAD fills it, as
the kernel's loader rewrites map fds into map pointers).

What the program reports about itself (OBJ_GET_INFO_BY_FD, /proc/self/fdinfo) is built here:
`prog_info(info)` fills the kernel's copy of the caller's `struct bpf_prog_info` and writes the
arrays it points to (map ids, the tag, the instructions) through `kernel.memory`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from bpfsys.abi import AttachType, BpfProgInfo, ProgType
from kernelsim.objects import KernelObject, ObjectRegistry

if TYPE_CHECKING:
    from bpfsys.asm import Insn
    from kernelsim.kernel import Kernel
    from kernelsim.maps.base import BpfMap
    from kernelsim.prog.interpreter.runtime import Executable

PROG_HEADER_SIZE: Final = 72
"""Bytes of struct bpf_prog before its instructions (bpf_prog_size), for memlock."""


class BpfProgram(KernelObject):
    """A loaded program."""

    id_space = "prog"
    anon_name = "bpf-prog"

    def __init__(
        self,
        kernel: Kernel,
        registry: ObjectRegistry,
        prog_type: ProgType,
        insns: bytes,
        license: str,
        name: bytes,
        expected_attach_type: AttachType | None,
        used_maps: list[BpfMap],
        tag: bytes,
        gpl_compatible: bool,
        insn_maps: dict[int, BpfMap] | None = None,
        *,
        verified_insns: int | None = None,
        max_ctx_offset: int = 0,
        created_by_uid: int | None = None,
        attach_type_raw: int = 0,
    ) -> None:
        super().__init__(registry)
        self.kernel = kernel
        self.prog_type = prog_type
        self.insns = insns
        """The program as loaded (xlated form: map fds replaced by map pointers is not modelled)."""
        self.license = license
        self.name = name
        self.expected_attach_type = expected_attach_type
        self.attach_type_raw = attach_type_raw
        """expected_attach_type as passed (the kernel keeps any value for types ignoring it)."""
        self.used_maps = used_maps
        self.tag = tag
        self.gpl_compatible = gpl_compatible
        self.load_time = kernel.now_ns
        self.run_cnt = 0
        self.run_time_ns = 0
        self.recursion_misses = 0
        self.verified_insns = len(insns) // 8 if verified_insns is None else verified_insns
        self.max_ctx_offset = max_ctx_offset
        """The end of the furthest context byte the program reads (perf attach checks it)."""
        self.created_by_uid = os.getuid() if created_by_uid is None else created_by_uid
        self.insn_maps: dict[int, BpfMap] = dict(insn_maps or {})
        """ld_imm64 slot index -> the map it loads (pseudo map fd / value / idx forms)."""
        self._executable: Executable | None = None
        for bpf_map in used_maps:
            bpf_map.hold()

    @property
    def decoded(self) -> list[Insn]:
        """The instruction slots (an ld_imm64 takes two)."""
        from bpfsys.asm import decode

        return decode(self.insns)

    def executable(self) -> Executable:
        """The decoded (and, on first run, compiled) program; made once, then cached."""
        if self._executable is None:
            from kernelsim.prog.interpreter.runtime import Executable

            name = self.name.decode("ascii", "replace") or f"prog{self.id}"
            self._executable = Executable(self.insns, self.insn_maps, name=name)
        return self._executable

    def memlock(self) -> int:
        """Bytes charged (fdinfo memlock): the program's pages."""
        page = self.kernel.config.page_size
        return -(-(PROG_HEADER_SIZE + len(self.insns)) // page) * page

    def prog_info(self, info: BpfProgInfo) -> BpfProgInfo:
        """Fill `info`, the kernel's copy of the caller's struct bpf_prog_info, as
        bpf_prog_get_info_by_fd does: scalar fields are set, and the arrays the caller points
        to (map_ids for nr_map_ids entries, prog_tags, xlated_prog_insns) are written through
        kernel.memory (EFAULT on a bad pointer). Array lengths are set to the program's, even
        when the caller's array was shorter (only the first entries are written then).
        Without CAP_BPF the instruction dumps and lengths are zero, as in the kernel."""
        kernel = self.kernel
        memory = kernel.memory
        info.type = self.prog_type
        info.id = self.id
        info.tag[:] = list(self.tag)
        info.load_time = self.load_time
        info.created_by_uid = self.created_by_uid
        info.flags = (info.flags & ~1) | int(self.gpl_compatible)
        info.name = self.name
        info.run_time_ns = self.run_time_ns
        info.run_cnt = self.run_cnt
        info.recursion_misses = self.recursion_misses
        info.verified_insns = self.verified_insns
        wanted = info.nr_map_ids
        info.nr_map_ids = len(self.used_maps)
        for index, bpf_map in enumerate(self.used_maps[: min(wanted, len(self.used_maps))]):
            memory.write(info.map_ids + 4 * index, bpf_map.id.to_bytes(4, "little"))
        wanted_tags = info.nr_prog_tags
        info.nr_prog_tags = 1
        if wanted_tags:
            memory.write(info.prog_tags, self.tag)
        info.jited_prog_len = 0
        if not kernel.bpf_capable():
            info.xlated_prog_len = 0
            return info
        wanted_len = info.xlated_prog_len
        info.xlated_prog_len = len(self.insns)
        if wanted_len and info.xlated_prog_insns:
            memory.write(info.xlated_prog_insns, self.insns[: min(wanted_len, len(self.insns))])
        return info

    def fdinfo(self) -> list[tuple[str, str]]:
        return [
            ("prog_type", str(int(self.prog_type))),
            ("prog_jited", "0"),
            ("prog_tag", self.tag.hex()),
            ("memlock", str(self.memlock())),
            ("prog_id", str(self.id)),
            ("run_time_ns", str(self.run_time_ns)),
            ("run_cnt", str(self.run_cnt)),
            ("recursion_misses", str(self.recursion_misses)),
            ("verified_insns", str(self.verified_insns)),
        ]

    def release(self) -> None:
        for bpf_map in self.used_maps:
            bpf_map.put()
        self.used_maps = []
