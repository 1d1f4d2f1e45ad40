"""CPUMAP: per-CPU queues (and their XDP_CPUMAP programs) for bpf_redirect_map.

Theory of operation
-------------------
Creation (cpu_map_alloc, after the CAP_BPF check): max_entries 0, key_size other than 4,
value_size other than 4 (qsize) or 8 (qsize + program fd, since 5.9), or flags other than
NUMA_NODE: EINVAL; max_entries above NR_CPUS (256 on the oracle's build): E2BIG.

The key is a CPU number. Update, check by check (cpu_map_update_elem): flags above BPF_EXIST:
EINVAL; key >= max_entries: E2BIG; BPF_NOEXIST: EEXIST (slots always exist); qsize above 16384:
EOVERFLOW; a CPU that is not possible: ENODEV; qsize 0 empties the slot (any program fd is
ignored); otherwise a program fd > 0 must be an XDP program loaded for BPF_XDP_CPUMAP, and any
other fd makes the entry's allocation fail: ENOMEM. Lookup gives qsize and the program id
(ENOENT for an empty slot); delete empties a slot (0 also when empty; EINVAL out of range);
GET_NEXT_KEY walks indexes as an array does. memlock is sizeof(bpf_cpu_map) + 8 per slot.
"""

from __future__ import annotations

import errno
from typing import Any, Final

from bpfsys.abi import AttachType, MapFlag, MapType, ProgType, UpdateFlag
from kernelsim.errors import fail
from kernelsim.kernel import Kernel
from kernelsim.maps.base import BpfMap, MapParams, index_after, key_index
from kernelsim.prog.program import BpfProgram

NR_CPUS: Final = 256
"""CONFIG_NR_CPUS of the oracle kernel: the largest CPUMAP."""
QSIZE_MAX: Final = 16384
CPU_MAP_SIZE: Final = 304
"""sizeof(struct bpf_cpu_map), measured through fdinfo memlock on 6.18 x86_64."""


class CpuMap(BpfMap):
    """CPUMAP: CPU -> (qsize, program)."""

    map_types = (MapType.CPUMAP,)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entries: dict[int, tuple[int, BpfProgram | None]] = {}

    @classmethod
    def check_alloc(cls, params: MapParams, kernel: Kernel) -> None:
        sizes = (4, 8) if kernel.profile.has_behaviour("cpumap_prog") else (4,)
        if (
            not params.max_entries
            or params.key_size != 4
            or params.value_size not in sizes
            or params.map_flags & ~int(MapFlag.NUMA_NODE)
        ):
            fail(errno.EINVAL, "bad attributes for CPUMAP")
        if params.max_entries > NR_CPUS:
            fail(errno.E2BIG, f"more than NR_CPUS ({NR_CPUS}) entries")

    def lookup(self, key: bytes) -> bytes:
        entry = self.entries.get(key_index(key))
        if entry is None:
            fail(errno.ENOENT, "no queue for this CPU")
        qsize, prog = entry
        prog_id = 0 if prog is None else prog.id
        return (qsize | prog_id << 32).to_bytes(8, "little")[: self.value_size]

    def update(self, key: bytes, value: bytes, flags: int) -> None:
        cpu = key_index(key)
        qsize = int.from_bytes(value[:4], "little")
        if flags > UpdateFlag.EXIST:
            fail(errno.EINVAL, f"unknown update flags {flags:#x}")
        if cpu >= self.max_entries:
            fail(errno.E2BIG, f"CPU {cpu} out of range")
        if flags == UpdateFlag.NOEXIST:
            fail(errno.EEXIST, "cpumap slots always exist")
        if qsize > QSIZE_MAX:
            fail(errno.EOVERFLOW, f"qsize {qsize} above {QSIZE_MAX}")
        if cpu >= self.kernel.config.cpus:
            fail(errno.ENODEV, f"CPU {cpu} is not possible")
        prog = None
        prog_fd = int.from_bytes(value[4:8], "little", signed=True) if len(value) == 8 else 0
        if qsize and prog_fd > 0:
            prog = self._program(prog_fd)
        self._replace(cpu, (qsize, prog) if qsize else None)

    def _program(self, fd: int) -> BpfProgram:
        prog = self.kernel.fds.lookup(fd)
        if (
            not isinstance(prog, BpfProgram)
            or prog.prog_type is not ProgType.XDP
            or prog.expected_attach_type is not AttachType.XDP_CPUMAP
        ):
            fail(errno.ENOMEM, f"fd {fd} is not an XDP program for BPF_XDP_CPUMAP")
        prog.hold()
        return prog

    def _replace(self, cpu: int, entry: tuple[int, BpfProgram | None] | None) -> None:
        old = self.entries.pop(cpu, None)
        if entry is not None:
            self.entries[cpu] = entry
        if old is not None and old[1] is not None:
            old[1].put()

    def delete(self, key: bytes) -> None:
        cpu = key_index(key)
        if cpu >= self.max_entries:
            fail(errno.EINVAL, f"CPU {cpu} out of range")
        self._replace(cpu, None)

    def get_next_key(self, key: bytes | None) -> bytes:
        return index_after(key, self.max_entries)

    def mem_usage(self) -> int:
        return CPU_MAP_SIZE + 8 * self.max_entries

    def release(self) -> None:
        for cpu in list(self.entries):
            self._replace(cpu, None)
