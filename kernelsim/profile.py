"""Kernel version profiles, derived from the ABI's `since` annotations.

A `Profile` answers "did kernel X have this?" for every command, map type, program type,
attach type, link type, helper, flag and attr field that `bpfsys.abi` mirrors, from the version
each was added in: one source of truth. Behaviours that are not an ABI item (for example
LOOKUP_AND_DELETE on hash maps) are listed in BEHAVIOURS with the release that brought them.
"""

from __future__ import annotations

from functools import cached_property
from typing import Final

import attrs

from bpfsys.abi import (
    ATTR_OF_COMMAND,
    BpfAttr,
    BpfCmd,
    MapFlag,
    MapType,
    PerfEventAttr,
    ProgType,
    VersionedEnum,
    VersionedFlag,
)
from bpfsys.kversion import KernelVersion, since, to_version

NAMED_PROFILES: Final = ("6.18", "6.1", "5.15", "5.10", "5.4")
"""The profiles documented and tested; any version string is accepted."""

BEHAVIOURS: Final[dict[str, str]] = {
    "cap_bpf": "5.8",  # CAP_BPF and CAP_PERFMON exist
    "hash_lookup_and_delete": "5.14",  # BPF_MAP_LOOKUP_AND_DELETE_ELEM on hash maps
    "bpf_cookie": "5.15",  # link_create.perf_event.bpf_cookie and bpf_get_attach_cookie
    "perf_link": "5.15",  # BPF_LINK_CREATE with BPF_PERF_EVENT
    "log_true_size": "6.4",
    "memcg_accounting": "5.11",  # map memory is charged to memcg, not RLIMIT_MEMLOCK
}


FEATURES: Final[dict[str, VersionedEnum | VersionedFlag | str]] = {
    "bpf links (BPF_LINK_CREATE)": BpfCmd.LINK_CREATE,
    "batch map operations": BpfCmd.MAP_LOOKUP_BATCH,
    "BPF_ENABLE_STATS": BpfCmd.ENABLE_STATS,
    "BPF_MAP_TYPE_RINGBUF": MapType.RINGBUF,
    "CAP_BPF / CAP_PERFMON": "cap_bpf",
    "mmapable arrays (BPF_F_MMAPABLE)": MapFlag.MMAPABLE,
    "hash map LOOKUP_AND_DELETE": "hash_lookup_and_delete",
    "BPF_PROG_TYPE_SYSCALL": ProgType.SYSCALL,
    "perf_event links": "perf_link",
    "bpf cookie": "bpf_cookie",
    "BPF_MAP_TYPE_BLOOM_FILTER": MapType.BLOOM_FILTER,
    "log_true_size": "log_true_size",
}
"""Features users probe for, by name: an ABI item (its `since`) or a BEHAVIOURS key."""


@attrs.frozen
class Profile:
    """What kernel `version` had."""

    version: KernelVersion = attrs.field(converter=to_version)

    def has(self, item: VersionedEnum | VersionedFlag) -> bool:
        """Whether the kernel knew this enum member or flag."""
        return item.since <= self.version

    def has_behaviour(self, name: str) -> bool:
        """Whether the kernel had the behaviour `name` of BEHAVIOURS."""
        return since(BEHAVIOURS[name]) <= self.version

    def has_feature(self, name: str) -> bool:
        """Whether the kernel had FEATURES[name]."""
        item = FEATURES[name]
        return self.has_behaviour(item) if isinstance(item, str) else self.has(item)

    def lacks(self) -> list[str]:
        """The FEATURES this kernel did not have yet."""
        return [name for name in FEATURES if not self.has_feature(name)]

    def known_flags(self, flag_type: type[VersionedFlag]) -> int:
        """The bits of `flag_type` that this kernel knew."""
        return sum(int(f) for f in flag_type if self.has(f))

    def attr_end(self, attr_type: type[BpfAttr], cmd: BpfCmd) -> int:
        """Where this kernel's fields of `cmd` end (bytes after them must be zero)."""
        return attr_type.end_for(cmd, self.version)

    @cached_property
    def bpf_attr_size(self) -> int:
        """sizeof(union bpf_attr) in this kernel."""
        return max(cls.sizeof_for(self.version) for cls in set(ATTR_OF_COMMAND.values()))

    @cached_property
    def perf_attr_size(self) -> int:
        """sizeof(struct perf_event_attr) in this kernel (PERF_ATTR_SIZE_VERn)."""
        return PerfEventAttr.sizeof_for(self.version)
