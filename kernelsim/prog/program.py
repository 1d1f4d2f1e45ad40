"""`BpfProgram`: the kernel object behind a program fd.

A program is made by PROG_LOAD once the loader check accepted its instructions. It holds a
reference on every map its instructions use (and on nothing else); it counts its runs while
stats are enabled. Running it is the interpreter's business (kernelsim.prog.interpreter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpfsys.abi import AttachType, ProgType
from kernelsim.objects import KernelObject, ObjectRegistry

if TYPE_CHECKING:
    from kernelsim.kernel import Kernel
    from kernelsim.maps.base import BpfMap


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
    ) -> None:
        super().__init__(registry)
        self.kernel = kernel
        self.prog_type = prog_type
        self.insns = insns
        """The program as loaded (xlated form: map fds replaced by map pointers is not modelled)."""
        self.license = license
        self.name = name
        self.expected_attach_type = expected_attach_type
        self.used_maps = used_maps
        self.tag = tag
        self.gpl_compatible = gpl_compatible
        self.load_time = kernel.now_ns
        self.run_cnt = 0
        self.run_time_ns = 0
        self.verified_insns = len(insns) // 8
        for bpf_map in used_maps:
            bpf_map.hold()

    def release(self) -> None:
        for bpf_map in self.used_maps:
            bpf_map.put()
        self.used_maps = []
