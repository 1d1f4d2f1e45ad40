"""ctypes mirrors of the kernel's uapi: the single source of truth for every layout and number.

Theory of operation
-------------------
Each struct mirrors one from `linux/bpf.h` or `linux/perf_event.h`. Its `_spec_` lists
``(name, ctype, since)`` where *since* is the kernel version that added the field (as
cilium/ebpf annotates its attrs); `_fields_` is derived from it. Enums whose members the kernel
added over time carry a `since` per member. The simulated kernel derives its version profiles
from these annotations (`since(...)`), and the header test compiles C against the installed
headers to check every size, offset and constant that those headers know.

One attr struct per bpf() command (as cilium/ebpf's internal/sys has them): the kernel reads
only the prefix it knows and requires every byte beyond it, up to the size passed, to be zero.
"""

from __future__ import annotations

import ctypes
import enum
from typing import Any, ClassVar, Final, NamedTuple, TypeAlias

from bpfsys.kversion import KernelVersion, since

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
s16 = ctypes.c_int16
s32 = ctypes.c_int32
s64 = ctypes.c_int64

FieldSpec: TypeAlias = "tuple[str, Any, str]"
"""(name, ctype, since) of one struct field; bit fields are not used (flags are whole words)."""


def fields(spec: tuple[FieldSpec, ...]) -> list[tuple[str, Any]]:
    """The ctypes `_fields_` of a `_spec_`."""
    return [(name, ctype) for name, ctype, _ in spec]


class Direction(enum.Enum):
    """Which way the memory behind a pointer field goes."""

    IN = "in"  # the kernel reads it
    OUT = "out"  # the kernel writes it
    INOUT = "inout"  # the kernel reads it, then writes it


class FieldTimes(NamedTuple):
    """Length: the value of field `field` (a dotted path in nested structs) times `times`."""

    field: str
    times: int = 1


class FieldProduct(NamedTuple):
    """Length: field `count_field` times field `size_field` (an array of records)."""

    count_field: str
    size_field: str


class CString(NamedTuple):
    """Length: a NUL-terminated string of at most `max_len` bytes, NUL included."""

    max_len: int


class MapKeySize(NamedTuple):
    """Length: the key_size of the map whose fd is in field `map_field`, times field
    `count_field` (None: one key)."""

    map_field: str = "map_fd"
    count_field: str | None = None


class MapValueSize(NamedTuple):
    """Length: the user-space value size of the map behind `map_field` (for per-CPU maps
    round_up(value_size, 8) times the possible CPUs), times field `count_field` (None: one
    value)."""

    map_field: str = "map_fd"
    count_field: str | None = None


class MapBatchToken(NamedTuple):
    """Length: a batch cursor of the map behind `map_field`: a u32 bucket for hash maps, a key
    (key_size bytes) for the others (generic_map_lookup_batch / htab_map_lookup_batch)."""

    map_field: str = "map_fd"


class ObjectInfo(NamedTuple):
    """Length from `length`; the memory is the info struct (BpfProgInfo, BpfMapInfo,
    BpfLinkInfo, BpfBtfInfo) of the kind of object whose fd is in field `fd_field`."""

    length: FieldTimes
    fd_field: str = "bpf_fd"


PointerLength: TypeAlias = (
    "FieldTimes | FieldProduct | CString | MapKeySize | MapValueSize | MapBatchToken | ObjectInfo"
)


class Pointer(NamedTuple):
    """A u64 field that holds a user-space address: which way the memory goes, how long it is,
    and the commands that use the field this way (empty: every command of the struct)."""

    direction: Direction
    length: PointerLength
    commands: tuple[BpfCmd, ...] = ()


class AbiStruct(ctypes.Structure):
    """A kernel struct. Subclasses set `_spec_` and `_fields_ = fields(_spec_)`.

    `c_name` is the C type the header test compares against (None: no C counterpart, as for
    the per-command views of `union bpf_attr`, which are checked through `c_member`).
    """

    _spec_: ClassVar[tuple[FieldSpec, ...]] = ()
    c_name: ClassVar[str | None] = None
    c_fields: ClassVar[dict[str, str | None]] = {}
    """C member paths that differ from the field name ("" anonymous, None: no C counterpart)."""
    pointers: ClassVar[dict[str, tuple[Pointer, ...]]] = {}
    """The pointer fields (dotted paths into nested structs and unions): what the memory behind
    each one is, per command. The kernel follows a pointer only when it is not NULL and its
    length is not zero (for the union members of info structs, those set by the caller)."""

    @classmethod
    def pointers_for(cls, cmd: BpfCmd | None = None) -> dict[str, Pointer]:
        """The pointer fields `cmd` uses (None: those of a struct that serves no command)."""
        found: dict[str, Pointer] = {}
        for name, choices in cls.pointers.items():
            for pointer in choices:
                if not pointer.commands or cmd in pointer.commands:
                    found[name] = pointer
                    break
        return found

    @classmethod
    def field_since(cls, name: str) -> KernelVersion:
        """The kernel version that added field `name`."""
        for field_name, _, version in cls._spec_:
            if field_name == name:
                return since(version)
        raise KeyError(f"{cls.__name__} has no field {name!r}")

    @classmethod
    def size_for(cls, version: KernelVersion) -> int:
        """The end of the last field that `version` knew (offsetofend, as bpf's CHECK_ATTR)."""
        return known_end(cls, version)

    @classmethod
    def sizeof_for(cls, version: KernelVersion) -> int:
        """sizeof() of the struct in `version`: size_for rounded up to the struct's alignment."""
        align = ctypes.alignment(cls)
        return -(-cls.size_for(version) // align) * align

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name, _, _ in self._spec_)
        return f"{type(self).__name__}({shown})"


def known_end(cls: type[AbiStruct] | type[AbiUnion], version: KernelVersion) -> int:
    """The end of the last field of `cls` that `version` knew, nested structs and unions
    counted by their own known fields."""
    end = 0
    for name, ctype, added in cls._spec_:
        if since(added) > version:
            continue
        field = getattr(cls, name)
        nested = isinstance(ctype, type) and issubclass(ctype, AbiStruct | AbiUnion)
        end = max(end, field.offset + (known_end(ctype, version) if nested else field.size))
    return end


class AbiUnion(ctypes.Union):
    """A kernel union (members as in AbiStruct)."""

    _spec_: ClassVar[tuple[FieldSpec, ...]] = ()
    c_fields: ClassVar[dict[str, str | None]] = {}


class VersionedEnum(enum.IntEnum):
    """An IntEnum whose members carry the kernel version that added them: `Member = value, "5.7"`.

    `c_prefix` turns a member name into its C name (`BpfCmd.MAP_CREATE` is `BPF_MAP_CREATE`).
    """

    since: KernelVersion

    def __new__(cls, value: int, added: str = "0.0") -> VersionedEnum:
        member = int.__new__(cls, value)
        member._value_ = value
        member.since = since(added)
        return member

    @classmethod
    def c_prefix(cls) -> str:
        raise NotImplementedError

    @property
    def c_name(self) -> str:
        return f"{self.c_prefix()}{self.name}"


# A registry of plain #define constants mirrored here: C name -> (value, since).
C_CONSTANTS: dict[str, tuple[int, KernelVersion]] = {}


def _const(c_name: str, value: int, added: str) -> int:
    C_CONSTANTS[c_name] = (value, since(added))
    return value


# ---------------------------------------------------------------------------------------------
# Instruction encoding (linux/bpf_common.h, linux/bpf.h; RFC 9669)
# ---------------------------------------------------------------------------------------------
# Classes
BPF_LD: Final = _const("BPF_LD", 0x00, "3.18")
BPF_LDX: Final = _const("BPF_LDX", 0x01, "3.18")
BPF_ST: Final = _const("BPF_ST", 0x02, "3.18")
BPF_STX: Final = _const("BPF_STX", 0x03, "3.18")
BPF_ALU: Final = _const("BPF_ALU", 0x04, "3.18")
BPF_JMP: Final = _const("BPF_JMP", 0x05, "3.18")
BPF_JMP32: Final = _const("BPF_JMP32", 0x06, "5.1")
BPF_ALU64: Final = _const("BPF_ALU64", 0x07, "3.18")
# Sizes
BPF_W: Final = _const("BPF_W", 0x00, "3.18")
BPF_H: Final = _const("BPF_H", 0x08, "3.18")
BPF_B: Final = _const("BPF_B", 0x10, "3.18")
BPF_DW: Final = _const("BPF_DW", 0x18, "3.18")
# Modes
BPF_IMM: Final = _const("BPF_IMM", 0x00, "3.18")
BPF_ABS: Final = _const("BPF_ABS", 0x20, "3.18")
BPF_IND: Final = _const("BPF_IND", 0x40, "3.18")
BPF_MEM: Final = _const("BPF_MEM", 0x60, "3.18")
BPF_MEMSX: Final = _const("BPF_MEMSX", 0x80, "6.6")
BPF_ATOMIC: Final = _const("BPF_ATOMIC", 0xC0, "5.12")
# ALU operations
BPF_ADD: Final = _const("BPF_ADD", 0x00, "3.18")
BPF_SUB: Final = _const("BPF_SUB", 0x10, "3.18")
BPF_MUL: Final = _const("BPF_MUL", 0x20, "3.18")
BPF_DIV: Final = _const("BPF_DIV", 0x30, "3.18")
BPF_OR: Final = _const("BPF_OR", 0x40, "3.18")
BPF_AND: Final = _const("BPF_AND", 0x50, "3.18")
BPF_LSH: Final = _const("BPF_LSH", 0x60, "3.18")
BPF_RSH: Final = _const("BPF_RSH", 0x70, "3.18")
BPF_NEG: Final = _const("BPF_NEG", 0x80, "3.18")
BPF_MOD: Final = _const("BPF_MOD", 0x90, "3.18")
BPF_XOR: Final = _const("BPF_XOR", 0xA0, "3.18")
BPF_MOV: Final = _const("BPF_MOV", 0xB0, "3.18")
BPF_ARSH: Final = _const("BPF_ARSH", 0xC0, "3.18")
BPF_END: Final = _const("BPF_END", 0xD0, "3.18")
BPF_TO_LE: Final = _const("BPF_TO_LE", 0x00, "3.18")
BPF_TO_BE: Final = _const("BPF_TO_BE", 0x08, "3.18")
# Jump operations
BPF_JA: Final = _const("BPF_JA", 0x00, "3.18")
BPF_JEQ: Final = _const("BPF_JEQ", 0x10, "3.18")
BPF_JGT: Final = _const("BPF_JGT", 0x20, "3.18")
BPF_JGE: Final = _const("BPF_JGE", 0x30, "3.18")
BPF_JSET: Final = _const("BPF_JSET", 0x40, "3.18")
BPF_JNE: Final = _const("BPF_JNE", 0x50, "3.18")
BPF_JSGT: Final = _const("BPF_JSGT", 0x60, "3.18")
BPF_JSGE: Final = _const("BPF_JSGE", 0x70, "3.18")
BPF_CALL: Final = _const("BPF_CALL", 0x80, "3.18")
BPF_EXIT: Final = _const("BPF_EXIT", 0x90, "3.18")
BPF_JLT: Final = _const("BPF_JLT", 0xA0, "4.14")
BPF_JLE: Final = _const("BPF_JLE", 0xB0, "4.14")
BPF_JSLT: Final = _const("BPF_JSLT", 0xC0, "4.14")
BPF_JSLE: Final = _const("BPF_JSLE", 0xD0, "4.14")
# Source operand
BPF_K: Final = _const("BPF_K", 0x00, "3.18")
BPF_X: Final = _const("BPF_X", 0x08, "3.18")
# Atomic operations (imm of BPF_STX | BPF_ATOMIC)
BPF_FETCH: Final = _const("BPF_FETCH", 0x01, "5.12")
BPF_XCHG: Final = _const("BPF_XCHG", 0xE0 | 0x01, "5.12")
BPF_CMPXCHG: Final = _const("BPF_CMPXCHG", 0xF0 | 0x01, "5.12")
# src_reg of ld_imm64 and of calls
BPF_PSEUDO_MAP_FD: Final = _const("BPF_PSEUDO_MAP_FD", 1, "4.1")
BPF_PSEUDO_MAP_VALUE: Final = _const("BPF_PSEUDO_MAP_VALUE", 2, "5.2")
BPF_PSEUDO_BTF_ID: Final = _const("BPF_PSEUDO_BTF_ID", 3, "5.10")
BPF_PSEUDO_FUNC: Final = _const("BPF_PSEUDO_FUNC", 4, "5.13")
BPF_PSEUDO_MAP_IDX: Final = _const("BPF_PSEUDO_MAP_IDX", 5, "5.14")
BPF_PSEUDO_MAP_IDX_VALUE: Final = _const("BPF_PSEUDO_MAP_IDX_VALUE", 6, "5.14")
BPF_PSEUDO_CALL: Final = _const("BPF_PSEUDO_CALL", 1, "4.16")
BPF_PSEUDO_KFUNC_CALL: Final = _const("BPF_PSEUDO_KFUNC_CALL", 2, "5.13")

MAX_BPF_REG: Final = _const("MAX_BPF_REG", 11, "3.18")
BPF_MAXINSNS: Final = _const("BPF_MAXINSNS", 4096, "3.18")
BPF_OBJ_NAME_LEN: Final = _const("BPF_OBJ_NAME_LEN", 16, "4.15")
BPF_TAG_SIZE: Final = _const("BPF_TAG_SIZE", 8, "4.13")
MAX_BPF_STACK: Final = 512
"""The stack size of one frame (kernel-internal, include/linux/filter.h)."""
BPF_COMPLEXITY_LIMIT_INSNS: Final = 1_000_000
"""Instructions the verifier may process for a privileged load (since 5.2; 4096 before)."""


class BpfInsn(AbiStruct):
    """struct bpf_insn: 8 bytes; dst_reg and src_reg share one byte (dst low nibble)."""

    c_name = "struct bpf_insn"
    c_fields = {"regs": None}
    _spec_ = (
        ("code", u8, "3.18"),
        ("regs", u8, "3.18"),
        ("off", s16, "3.18"),
        ("imm", s32, "3.18"),
    )
    _fields_ = fields(_spec_)

    @property
    def dst_reg(self) -> int:
        return int(self.regs) & 0x0F

    @property
    def src_reg(self) -> int:
        return int(self.regs) >> 4


# ---------------------------------------------------------------------------------------------
# Enums of linux/bpf.h
# ---------------------------------------------------------------------------------------------
class BpfCmd(VersionedEnum):
    """enum bpf_cmd."""

    MAP_CREATE = 0, "3.18"
    MAP_LOOKUP_ELEM = 1, "3.18"
    MAP_UPDATE_ELEM = 2, "3.18"
    MAP_DELETE_ELEM = 3, "3.18"
    MAP_GET_NEXT_KEY = 4, "3.18"
    PROG_LOAD = 5, "3.18"
    OBJ_PIN = 6, "4.4"
    OBJ_GET = 7, "4.4"
    PROG_ATTACH = 8, "4.10"
    PROG_DETACH = 9, "4.10"
    PROG_TEST_RUN = 10, "4.12"
    PROG_GET_NEXT_ID = 11, "4.13"
    MAP_GET_NEXT_ID = 12, "4.13"
    PROG_GET_FD_BY_ID = 13, "4.13"
    MAP_GET_FD_BY_ID = 14, "4.13"
    OBJ_GET_INFO_BY_FD = 15, "4.13"
    PROG_QUERY = 16, "4.15"
    RAW_TRACEPOINT_OPEN = 17, "4.17"
    BTF_LOAD = 18, "4.18"
    BTF_GET_FD_BY_ID = 19, "4.18"
    TASK_FD_QUERY = 20, "4.18"
    MAP_LOOKUP_AND_DELETE_ELEM = 21, "4.20"
    MAP_FREEZE = 22, "5.2"
    BTF_GET_NEXT_ID = 23, "5.4"
    MAP_LOOKUP_BATCH = 24, "5.6"
    MAP_LOOKUP_AND_DELETE_BATCH = 25, "5.6"
    MAP_UPDATE_BATCH = 26, "5.6"
    MAP_DELETE_BATCH = 27, "5.6"
    LINK_CREATE = 28, "5.7"
    LINK_UPDATE = 29, "5.7"
    LINK_GET_FD_BY_ID = 30, "5.8"
    LINK_GET_NEXT_ID = 31, "5.8"
    ENABLE_STATS = 32, "5.8"
    ITER_CREATE = 33, "5.8"
    LINK_DETACH = 34, "5.9"
    PROG_BIND_MAP = 35, "5.10"
    TOKEN_CREATE = 36, "6.9"
    PROG_STREAM_READ_BY_FD = 37, "6.17"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_"


class MapType(VersionedEnum):
    """enum bpf_map_type."""

    UNSPEC = 0, "3.18"
    HASH = 1, "3.19"
    ARRAY = 2, "3.19"
    PROG_ARRAY = 3, "4.2"
    PERF_EVENT_ARRAY = 4, "4.3"
    PERCPU_HASH = 5, "4.6"
    PERCPU_ARRAY = 6, "4.6"
    STACK_TRACE = 7, "4.6"
    CGROUP_ARRAY = 8, "4.8"
    LRU_HASH = 9, "4.10"
    LRU_PERCPU_HASH = 10, "4.10"
    LPM_TRIE = 11, "4.11"
    ARRAY_OF_MAPS = 12, "4.12"
    HASH_OF_MAPS = 13, "4.12"
    DEVMAP = 14, "4.14"
    SOCKMAP = 15, "4.14"
    CPUMAP = 16, "4.15"
    XSKMAP = 17, "4.18"
    SOCKHASH = 18, "4.18"
    CGROUP_STORAGE = 19, "4.19"
    REUSEPORT_SOCKARRAY = 20, "4.19"
    PERCPU_CGROUP_STORAGE = 21, "4.20"
    QUEUE = 22, "4.20"
    STACK = 23, "4.20"
    SK_STORAGE = 24, "5.2"
    DEVMAP_HASH = 25, "5.4"
    STRUCT_OPS = 26, "5.6"
    RINGBUF = 27, "5.8"
    INODE_STORAGE = 28, "5.10"
    TASK_STORAGE = 29, "5.11"
    BLOOM_FILTER = 30, "5.16"
    USER_RINGBUF = 31, "6.1"
    CGRP_STORAGE = 32, "6.2"
    ARENA = 33, "6.9"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_MAP_TYPE_"


class ProgType(VersionedEnum):
    """enum bpf_prog_type."""

    UNSPEC = 0, "3.18"
    SOCKET_FILTER = 1, "3.19"
    KPROBE = 2, "4.1"
    SCHED_CLS = 3, "4.1"
    SCHED_ACT = 4, "4.1"
    TRACEPOINT = 5, "4.7"
    XDP = 6, "4.8"
    PERF_EVENT = 7, "4.9"
    CGROUP_SKB = 8, "4.10"
    CGROUP_SOCK = 9, "4.10"
    LWT_IN = 10, "4.10"
    LWT_OUT = 11, "4.10"
    LWT_XMIT = 12, "4.10"
    SOCK_OPS = 13, "4.13"
    SK_SKB = 14, "4.14"
    CGROUP_DEVICE = 15, "4.15"
    SK_MSG = 16, "4.17"
    RAW_TRACEPOINT = 17, "4.17"
    CGROUP_SOCK_ADDR = 18, "4.17"
    LWT_SEG6LOCAL = 19, "4.18"
    LIRC_MODE2 = 20, "4.18"
    SK_REUSEPORT = 21, "4.19"
    FLOW_DISSECTOR = 22, "4.20"
    CGROUP_SYSCTL = 23, "5.2"
    RAW_TRACEPOINT_WRITABLE = 24, "5.2"
    CGROUP_SOCKOPT = 25, "5.3"
    TRACING = 26, "5.5"
    STRUCT_OPS = 27, "5.6"
    EXT = 28, "5.6"
    LSM = 29, "5.7"
    SK_LOOKUP = 30, "5.9"
    SYSCALL = 31, "5.14"
    NETFILTER = 32, "6.4"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_PROG_TYPE_"


class AttachType(VersionedEnum):
    """enum bpf_attach_type."""

    CGROUP_INET_INGRESS = 0, "4.10"
    CGROUP_INET_EGRESS = 1, "4.10"
    CGROUP_INET_SOCK_CREATE = 2, "4.10"
    CGROUP_SOCK_OPS = 3, "4.13"
    SK_SKB_STREAM_PARSER = 4, "4.14"
    SK_SKB_STREAM_VERDICT = 5, "4.14"
    CGROUP_DEVICE = 6, "4.15"
    SK_MSG_VERDICT = 7, "4.17"
    CGROUP_INET4_BIND = 8, "4.17"
    CGROUP_INET6_BIND = 9, "4.17"
    CGROUP_INET4_CONNECT = 10, "4.17"
    CGROUP_INET6_CONNECT = 11, "4.17"
    CGROUP_INET4_POST_BIND = 12, "4.17"
    CGROUP_INET6_POST_BIND = 13, "4.17"
    CGROUP_UDP4_SENDMSG = 14, "4.18"
    CGROUP_UDP6_SENDMSG = 15, "4.18"
    LIRC_MODE2 = 16, "4.18"
    FLOW_DISSECTOR = 17, "4.20"
    CGROUP_SYSCTL = 18, "5.2"
    CGROUP_UDP4_RECVMSG = 19, "5.2"
    CGROUP_UDP6_RECVMSG = 20, "5.2"
    CGROUP_GETSOCKOPT = 21, "5.3"
    CGROUP_SETSOCKOPT = 22, "5.3"
    TRACE_RAW_TP = 23, "5.5"
    TRACE_FENTRY = 24, "5.5"
    TRACE_FEXIT = 25, "5.5"
    MODIFY_RETURN = 26, "5.7"
    LSM_MAC = 27, "5.7"
    TRACE_ITER = 28, "5.8"
    CGROUP_INET4_GETPEERNAME = 29, "5.8"
    CGROUP_INET6_GETPEERNAME = 30, "5.8"
    CGROUP_INET4_GETSOCKNAME = 31, "5.8"
    CGROUP_INET6_GETSOCKNAME = 32, "5.8"
    XDP_DEVMAP = 33, "5.8"
    CGROUP_INET_SOCK_RELEASE = 34, "5.9"
    XDP_CPUMAP = 35, "5.9"
    SK_LOOKUP = 36, "5.9"
    XDP = 37, "5.9"
    SK_SKB_VERDICT = 38, "5.13"
    SK_REUSEPORT_SELECT = 39, "5.14"
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40, "5.14"
    PERF_EVENT = 41, "5.15"
    TRACE_KPROBE_MULTI = 42, "5.18"
    LSM_CGROUP = 43, "6.0"
    STRUCT_OPS = 44, "6.4"
    NETFILTER = 45, "6.4"
    TCX_INGRESS = 46, "6.6"
    TCX_EGRESS = 47, "6.6"
    TRACE_UPROBE_MULTI = 48, "6.6"
    CGROUP_UNIX_CONNECT = 49, "6.7"
    CGROUP_UNIX_SENDMSG = 50, "6.7"
    CGROUP_UNIX_RECVMSG = 51, "6.7"
    CGROUP_UNIX_GETPEERNAME = 52, "6.7"
    CGROUP_UNIX_GETSOCKNAME = 53, "6.7"
    NETKIT_PRIMARY = 54, "6.7"
    NETKIT_PEER = 55, "6.7"
    TRACE_KPROBE_SESSION = 56, "6.10"
    TRACE_UPROBE_SESSION = 57, "6.13"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_"


class LinkType(VersionedEnum):
    """enum bpf_link_type."""

    UNSPEC = 0, "5.7"
    RAW_TRACEPOINT = 1, "5.7"
    TRACING = 2, "5.7"
    CGROUP = 3, "5.7"
    ITER = 4, "5.8"
    NETNS = 5, "5.8"
    XDP = 6, "5.9"
    PERF_EVENT = 7, "5.15"
    KPROBE_MULTI = 8, "5.18"
    STRUCT_OPS = 9, "5.19"
    NETFILTER = 10, "6.4"
    TCX = 11, "6.6"
    UPROBE_MULTI = 12, "6.6"
    NETKIT = 13, "6.7"
    SOCKMAP = 14, "6.10"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_LINK_TYPE_"


class StatsType(VersionedEnum):
    """enum bpf_stats_type."""

    RUN_TIME = 0, "5.8"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_STATS_"


# The highest helper id of each release that added helpers (ids are assigned in order).
# Release tags from isovalent/ebpf-docs data/feature-versions.yaml (bcc's table is off for
# several 5.3-5.8 helpers); 4.7 added none.
HELPER_LAST_ID: Final[tuple[tuple[str, int], ...]] = (
    ("3.19", 3), ("4.1", 11), ("4.2", 16), ("4.3", 22), ("4.4", 25), ("4.5", 26), ("4.6", 30),
    ("4.8", 36), ("4.9", 41), ("4.10", 44), ("4.11", 45), ("4.12", 47), ("4.13", 50),
    ("4.14", 53), ("4.15", 57), ("4.16", 59), ("4.17", 64), ("4.18", 80), ("4.19", 83),
    ("4.20", 90), ("5.0", 92), ("5.1", 98), ("5.2", 108), ("5.3", 109), ("5.4", 110),
    ("5.5", 115), ("5.6", 118), ("5.7", 124), ("5.8", 135), ("5.9", 141), ("5.10", 155),
    ("5.11", 162), ("5.12", 163), ("5.13", 165), ("5.14", 168), ("5.15", 175), ("5.16", 179),
    ("5.17", 185), ("5.18", 193), ("5.19", 203), ("6.0", 207), ("6.1", 209), ("6.2", 211),
)  # fmt: skip


def _helper_since(helper_id: int) -> str:
    for version, last in HELPER_LAST_ID:
        if helper_id <= last:
            return version
    return HELPER_LAST_ID[-1][0]


class BpfFunc(VersionedEnum):
    """Helper function ids (`__BPF_FUNC_MAPPER`); `since` from HELPER_LAST_ID."""

    UNSPEC = 0, _helper_since(0)
    MAP_LOOKUP_ELEM = 1, _helper_since(1)
    MAP_UPDATE_ELEM = 2, _helper_since(2)
    MAP_DELETE_ELEM = 3, _helper_since(3)
    PROBE_READ = 4, _helper_since(4)
    KTIME_GET_NS = 5, _helper_since(5)
    TRACE_PRINTK = 6, _helper_since(6)
    GET_PRANDOM_U32 = 7, _helper_since(7)
    GET_SMP_PROCESSOR_ID = 8, _helper_since(8)
    SKB_STORE_BYTES = 9, _helper_since(9)
    L3_CSUM_REPLACE = 10, _helper_since(10)
    L4_CSUM_REPLACE = 11, _helper_since(11)
    TAIL_CALL = 12, _helper_since(12)
    CLONE_REDIRECT = 13, _helper_since(13)
    GET_CURRENT_PID_TGID = 14, _helper_since(14)
    GET_CURRENT_UID_GID = 15, _helper_since(15)
    GET_CURRENT_COMM = 16, _helper_since(16)
    GET_CGROUP_CLASSID = 17, _helper_since(17)
    SKB_VLAN_PUSH = 18, _helper_since(18)
    SKB_VLAN_POP = 19, _helper_since(19)
    SKB_GET_TUNNEL_KEY = 20, _helper_since(20)
    SKB_SET_TUNNEL_KEY = 21, _helper_since(21)
    PERF_EVENT_READ = 22, _helper_since(22)
    REDIRECT = 23, _helper_since(23)
    GET_ROUTE_REALM = 24, _helper_since(24)
    PERF_EVENT_OUTPUT = 25, _helper_since(25)
    SKB_LOAD_BYTES = 26, _helper_since(26)
    GET_STACKID = 27, _helper_since(27)
    CSUM_DIFF = 28, _helper_since(28)
    SKB_GET_TUNNEL_OPT = 29, _helper_since(29)
    SKB_SET_TUNNEL_OPT = 30, _helper_since(30)
    SKB_CHANGE_PROTO = 31, _helper_since(31)
    SKB_CHANGE_TYPE = 32, _helper_since(32)
    SKB_UNDER_CGROUP = 33, _helper_since(33)
    GET_HASH_RECALC = 34, _helper_since(34)
    GET_CURRENT_TASK = 35, _helper_since(35)
    PROBE_WRITE_USER = 36, _helper_since(36)
    CURRENT_TASK_UNDER_CGROUP = 37, _helper_since(37)
    SKB_CHANGE_TAIL = 38, _helper_since(38)
    SKB_PULL_DATA = 39, _helper_since(39)
    CSUM_UPDATE = 40, _helper_since(40)
    SET_HASH_INVALID = 41, _helper_since(41)
    GET_NUMA_NODE_ID = 42, _helper_since(42)
    SKB_CHANGE_HEAD = 43, _helper_since(43)
    XDP_ADJUST_HEAD = 44, _helper_since(44)
    PROBE_READ_STR = 45, _helper_since(45)
    GET_SOCKET_COOKIE = 46, _helper_since(46)
    GET_SOCKET_UID = 47, _helper_since(47)
    SET_HASH = 48, _helper_since(48)
    SETSOCKOPT = 49, _helper_since(49)
    SKB_ADJUST_ROOM = 50, _helper_since(50)
    REDIRECT_MAP = 51, _helper_since(51)
    SK_REDIRECT_MAP = 52, _helper_since(52)
    SOCK_MAP_UPDATE = 53, _helper_since(53)
    XDP_ADJUST_META = 54, _helper_since(54)
    PERF_EVENT_READ_VALUE = 55, _helper_since(55)
    PERF_PROG_READ_VALUE = 56, _helper_since(56)
    GETSOCKOPT = 57, _helper_since(57)
    OVERRIDE_RETURN = 58, _helper_since(58)
    SOCK_OPS_CB_FLAGS_SET = 59, _helper_since(59)
    MSG_REDIRECT_MAP = 60, _helper_since(60)
    MSG_APPLY_BYTES = 61, _helper_since(61)
    MSG_CORK_BYTES = 62, _helper_since(62)
    MSG_PULL_DATA = 63, _helper_since(63)
    BIND = 64, _helper_since(64)
    XDP_ADJUST_TAIL = 65, _helper_since(65)
    SKB_GET_XFRM_STATE = 66, _helper_since(66)
    GET_STACK = 67, _helper_since(67)
    SKB_LOAD_BYTES_RELATIVE = 68, _helper_since(68)
    FIB_LOOKUP = 69, _helper_since(69)
    SOCK_HASH_UPDATE = 70, _helper_since(70)
    MSG_REDIRECT_HASH = 71, _helper_since(71)
    SK_REDIRECT_HASH = 72, _helper_since(72)
    LWT_PUSH_ENCAP = 73, _helper_since(73)
    LWT_SEG6_STORE_BYTES = 74, _helper_since(74)
    LWT_SEG6_ADJUST_SRH = 75, _helper_since(75)
    LWT_SEG6_ACTION = 76, _helper_since(76)
    RC_REPEAT = 77, _helper_since(77)
    RC_KEYDOWN = 78, _helper_since(78)
    SKB_CGROUP_ID = 79, _helper_since(79)
    GET_CURRENT_CGROUP_ID = 80, _helper_since(80)
    GET_LOCAL_STORAGE = 81, _helper_since(81)
    SK_SELECT_REUSEPORT = 82, _helper_since(82)
    SKB_ANCESTOR_CGROUP_ID = 83, _helper_since(83)
    SK_LOOKUP_TCP = 84, _helper_since(84)
    SK_LOOKUP_UDP = 85, _helper_since(85)
    SK_RELEASE = 86, _helper_since(86)
    MAP_PUSH_ELEM = 87, _helper_since(87)
    MAP_POP_ELEM = 88, _helper_since(88)
    MAP_PEEK_ELEM = 89, _helper_since(89)
    MSG_PUSH_DATA = 90, _helper_since(90)
    MSG_POP_DATA = 91, _helper_since(91)
    RC_POINTER_REL = 92, _helper_since(92)
    SPIN_LOCK = 93, _helper_since(93)
    SPIN_UNLOCK = 94, _helper_since(94)
    SK_FULLSOCK = 95, _helper_since(95)
    TCP_SOCK = 96, _helper_since(96)
    SKB_ECN_SET_CE = 97, _helper_since(97)
    GET_LISTENER_SOCK = 98, _helper_since(98)
    SKC_LOOKUP_TCP = 99, _helper_since(99)
    TCP_CHECK_SYNCOOKIE = 100, _helper_since(100)
    SYSCTL_GET_NAME = 101, _helper_since(101)
    SYSCTL_GET_CURRENT_VALUE = 102, _helper_since(102)
    SYSCTL_GET_NEW_VALUE = 103, _helper_since(103)
    SYSCTL_SET_NEW_VALUE = 104, _helper_since(104)
    STRTOL = 105, _helper_since(105)
    STRTOUL = 106, _helper_since(106)
    SK_STORAGE_GET = 107, _helper_since(107)
    SK_STORAGE_DELETE = 108, _helper_since(108)
    SEND_SIGNAL = 109, _helper_since(109)
    TCP_GEN_SYNCOOKIE = 110, _helper_since(110)
    SKB_OUTPUT = 111, _helper_since(111)
    PROBE_READ_USER = 112, _helper_since(112)
    PROBE_READ_KERNEL = 113, _helper_since(113)
    PROBE_READ_USER_STR = 114, _helper_since(114)
    PROBE_READ_KERNEL_STR = 115, _helper_since(115)
    TCP_SEND_ACK = 116, _helper_since(116)
    SEND_SIGNAL_THREAD = 117, _helper_since(117)
    JIFFIES64 = 118, _helper_since(118)
    READ_BRANCH_RECORDS = 119, _helper_since(119)
    GET_NS_CURRENT_PID_TGID = 120, _helper_since(120)
    XDP_OUTPUT = 121, _helper_since(121)
    GET_NETNS_COOKIE = 122, _helper_since(122)
    GET_CURRENT_ANCESTOR_CGROUP_ID = 123, _helper_since(123)
    SK_ASSIGN = 124, _helper_since(124)
    KTIME_GET_BOOT_NS = 125, _helper_since(125)
    SEQ_PRINTF = 126, _helper_since(126)
    SEQ_WRITE = 127, _helper_since(127)
    SK_CGROUP_ID = 128, _helper_since(128)
    SK_ANCESTOR_CGROUP_ID = 129, _helper_since(129)
    RINGBUF_OUTPUT = 130, _helper_since(130)
    RINGBUF_RESERVE = 131, _helper_since(131)
    RINGBUF_SUBMIT = 132, _helper_since(132)
    RINGBUF_DISCARD = 133, _helper_since(133)
    RINGBUF_QUERY = 134, _helper_since(134)
    CSUM_LEVEL = 135, _helper_since(135)
    SKC_TO_TCP6_SOCK = 136, _helper_since(136)
    SKC_TO_TCP_SOCK = 137, _helper_since(137)
    SKC_TO_TCP_TIMEWAIT_SOCK = 138, _helper_since(138)
    SKC_TO_TCP_REQUEST_SOCK = 139, _helper_since(139)
    SKC_TO_UDP6_SOCK = 140, _helper_since(140)
    GET_TASK_STACK = 141, _helper_since(141)
    LOAD_HDR_OPT = 142, _helper_since(142)
    STORE_HDR_OPT = 143, _helper_since(143)
    RESERVE_HDR_OPT = 144, _helper_since(144)
    INODE_STORAGE_GET = 145, _helper_since(145)
    INODE_STORAGE_DELETE = 146, _helper_since(146)
    D_PATH = 147, _helper_since(147)
    COPY_FROM_USER = 148, _helper_since(148)
    SNPRINTF_BTF = 149, _helper_since(149)
    SEQ_PRINTF_BTF = 150, _helper_since(150)
    SKB_CGROUP_CLASSID = 151, _helper_since(151)
    REDIRECT_NEIGH = 152, _helper_since(152)
    PER_CPU_PTR = 153, _helper_since(153)
    THIS_CPU_PTR = 154, _helper_since(154)
    REDIRECT_PEER = 155, _helper_since(155)
    TASK_STORAGE_GET = 156, _helper_since(156)
    TASK_STORAGE_DELETE = 157, _helper_since(157)
    GET_CURRENT_TASK_BTF = 158, _helper_since(158)
    BPRM_OPTS_SET = 159, _helper_since(159)
    KTIME_GET_COARSE_NS = 160, _helper_since(160)
    IMA_INODE_HASH = 161, _helper_since(161)
    SOCK_FROM_FILE = 162, _helper_since(162)
    CHECK_MTU = 163, _helper_since(163)
    FOR_EACH_MAP_ELEM = 164, _helper_since(164)
    SNPRINTF = 165, _helper_since(165)
    SYS_BPF = 166, _helper_since(166)
    BTF_FIND_BY_NAME_KIND = 167, _helper_since(167)
    SYS_CLOSE = 168, _helper_since(168)
    TIMER_INIT = 169, _helper_since(169)
    TIMER_SET_CALLBACK = 170, _helper_since(170)
    TIMER_START = 171, _helper_since(171)
    TIMER_CANCEL = 172, _helper_since(172)
    GET_FUNC_IP = 173, _helper_since(173)
    GET_ATTACH_COOKIE = 174, _helper_since(174)
    TASK_PT_REGS = 175, _helper_since(175)
    GET_BRANCH_SNAPSHOT = 176, _helper_since(176)
    TRACE_VPRINTK = 177, _helper_since(177)
    SKC_TO_UNIX_SOCK = 178, _helper_since(178)
    KALLSYMS_LOOKUP_NAME = 179, _helper_since(179)
    FIND_VMA = 180, _helper_since(180)
    LOOP = 181, _helper_since(181)
    STRNCMP = 182, _helper_since(182)
    GET_FUNC_ARG = 183, _helper_since(183)
    GET_FUNC_RET = 184, _helper_since(184)
    GET_FUNC_ARG_CNT = 185, _helper_since(185)
    GET_RETVAL = 186, _helper_since(186)
    SET_RETVAL = 187, _helper_since(187)
    XDP_GET_BUFF_LEN = 188, _helper_since(188)
    XDP_LOAD_BYTES = 189, _helper_since(189)
    XDP_STORE_BYTES = 190, _helper_since(190)
    COPY_FROM_USER_TASK = 191, _helper_since(191)
    SKB_SET_TSTAMP = 192, _helper_since(192)
    IMA_FILE_HASH = 193, _helper_since(193)
    KPTR_XCHG = 194, _helper_since(194)
    MAP_LOOKUP_PERCPU_ELEM = 195, _helper_since(195)
    SKC_TO_MPTCP_SOCK = 196, _helper_since(196)
    DYNPTR_FROM_MEM = 197, _helper_since(197)
    RINGBUF_RESERVE_DYNPTR = 198, _helper_since(198)
    RINGBUF_SUBMIT_DYNPTR = 199, _helper_since(199)
    RINGBUF_DISCARD_DYNPTR = 200, _helper_since(200)
    DYNPTR_READ = 201, _helper_since(201)
    DYNPTR_WRITE = 202, _helper_since(202)
    DYNPTR_DATA = 203, _helper_since(203)
    TCP_RAW_GEN_SYNCOOKIE_IPV4 = 204, _helper_since(204)
    TCP_RAW_GEN_SYNCOOKIE_IPV6 = 205, _helper_since(205)
    TCP_RAW_CHECK_SYNCOOKIE_IPV4 = 206, _helper_since(206)
    TCP_RAW_CHECK_SYNCOOKIE_IPV6 = 207, _helper_since(207)
    KTIME_GET_TAI_NS = 208, _helper_since(208)
    USER_RINGBUF_DRAIN = 209, _helper_since(209)
    CGRP_STORAGE_GET = 210, _helper_since(210)
    CGRP_STORAGE_DELETE = 211, _helper_since(211)

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_FUNC_"

    @property
    def c_name(self) -> str:
        return f"BPF_FUNC_{(self.name or '').lower()}"


class VersionedFlag(enum.IntFlag):
    """An IntFlag whose members carry the kernel version that added them (as VersionedEnum)."""

    since: KernelVersion

    def __new__(cls, value: int, added: str = "0.0") -> VersionedFlag:
        member = int.__new__(cls, value)
        member._value_ = value
        member.since = since(added)
        return member

    @classmethod
    def c_prefix(cls) -> str:
        raise NotImplementedError

    @property
    def c_name(self) -> str:
        return f"{self.c_prefix()}{self.name}"


class MapFlag(VersionedFlag):
    """map_flags of BPF_MAP_CREATE."""

    NO_PREALLOC = 1 << 0, "4.6"
    NO_COMMON_LRU = 1 << 1, "4.10"
    NUMA_NODE = 1 << 2, "4.14"
    RDONLY = 1 << 3, "4.15"
    WRONLY = 1 << 4, "4.15"
    STACK_BUILD_ID = 1 << 5, "4.17"
    ZERO_SEED = 1 << 6, "5.0"
    RDONLY_PROG = 1 << 7, "5.2"
    WRONLY_PROG = 1 << 8, "5.2"
    CLONE = 1 << 9, "5.4"
    MMAPABLE = 1 << 10, "5.5"
    PRESERVE_ELEMS = 1 << 11, "5.10"
    INNER_MAP = 1 << 12, "5.10"
    TOKEN_FD = 1 << 16, "6.9"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_F_"


class UpdateFlag(VersionedFlag):
    """flags of BPF_MAP_UPDATE_ELEM (ANY is 0; LOCK also applies to lookups)."""

    ANY = 0, "3.18"
    NOEXIST = 1, "3.18"
    EXIST = 2, "3.18"
    LOCK = 4, "5.1"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_"

    @property
    def c_name(self) -> str:
        return "BPF_F_LOCK" if self is UpdateFlag.LOCK else f"BPF_{self.name}"


class ProgFlag(VersionedFlag):
    """prog_flags of BPF_PROG_LOAD."""

    STRICT_ALIGNMENT = 1 << 0, "4.13"
    ANY_ALIGNMENT = 1 << 1, "5.0"
    TEST_RND_HI32 = 1 << 2, "5.3"
    TEST_STATE_FREQ = 1 << 3, "5.10"
    SLEEPABLE = 1 << 4, "5.10"
    XDP_HAS_FRAGS = 1 << 5, "5.18"
    XDP_DEV_BOUND_ONLY = 1 << 6, "6.3"
    TEST_REG_INVARIANTS = 1 << 7, "6.7"
    TOKEN_FD = 1 << 16, "6.9"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_F_"


class AttachFlag(VersionedFlag):
    """attach_flags of BPF_PROG_ATTACH."""

    ALLOW_OVERRIDE = 1 << 0, "4.10"
    ALLOW_MULTI = 1 << 1, "4.15"
    REPLACE = 1 << 2, "5.6"
    BEFORE = 1 << 3, "6.6"
    AFTER = 1 << 4, "6.6"
    ID = 1 << 5, "6.6"
    PREORDER = 1 << 6, "6.15"
    LINK = 1 << 13, "6.6"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_F_"


class TestRunFlag(VersionedFlag):
    """flags of BPF_PROG_TEST_RUN."""

    __test__ = False  # not a pytest class

    RUN_ON_CPU = 1 << 0, "5.10"
    XDP_LIVE_FRAMES = 1 << 1, "5.18"
    SKB_CHECKSUM_COMPLETE = 1 << 2, "6.11"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_F_TEST_"


BPF_F_QUERY_EFFECTIVE: Final = _const("BPF_F_QUERY_EFFECTIVE", 1 << 0, "4.15")
BPF_F_PATH_FD: Final = _const("BPF_F_PATH_FD", 1 << 14, "6.5")
"""file_flags of OBJ_PIN / OBJ_GET: `path_fd` is the directory a relative pathname starts at."""
BPF_F_CURRENT_CPU: Final = _const("BPF_F_CURRENT_CPU", 0xFFFFFFFF, "4.4")
BPF_F_INDEX_MASK: Final = _const("BPF_F_INDEX_MASK", 0xFFFFFFFF, "4.4")
BPF_F_CTXLEN_MASK: Final = _const("BPF_F_CTXLEN_MASK", 0xFFFFF << 32, "4.14")
BPF_RINGBUF_BUSY_BIT: Final = _const("BPF_RINGBUF_BUSY_BIT", 1 << 31, "5.8")
BPF_RINGBUF_DISCARD_BIT: Final = _const("BPF_RINGBUF_DISCARD_BIT", 1 << 30, "5.8")
BPF_RINGBUF_HDR_SZ: Final = _const("BPF_RINGBUF_HDR_SZ", 8, "5.8")
BPF_RB_NO_WAKEUP: Final = _const("BPF_RB_NO_WAKEUP", 1 << 0, "5.8")
BPF_RB_FORCE_WAKEUP: Final = _const("BPF_RB_FORCE_WAKEUP", 1 << 1, "5.8")
BPF_RB_AVAIL_DATA: Final = _const("BPF_RB_AVAIL_DATA", 0, "5.8")
BPF_RB_RING_SIZE: Final = _const("BPF_RB_RING_SIZE", 1, "5.8")
BPF_RB_CONS_POS: Final = _const("BPF_RB_CONS_POS", 2, "5.8")
BPF_RB_PROD_POS: Final = _const("BPF_RB_PROD_POS", 3, "5.8")


# ---------------------------------------------------------------------------------------------
# union bpf_attr, one struct per command. `c_member` names the anonymous member in C that the
# header test reaches by the first field (the C union has no named per-command members).
# ---------------------------------------------------------------------------------------------
class BpfAttr(AbiStruct):
    """One command's view of `union bpf_attr`. `commands` lists the commands using it;
    `c_member` names its member of the C union ("" for an anonymous one)."""

    c_name = "union bpf_attr"
    c_member: ClassVar[str] = ""
    commands: ClassVar[tuple[BpfCmd, ...]] = ()
    last_fields: ClassVar[dict[BpfCmd, tuple[tuple[str, str], ...]]] = {}
    """Per command whose `BPF_<CMD>_LAST_FIELD` is not simply the newest field: its history as
    ((field, since), ...); bytes after it must be zero (CHECK_ATTR)."""

    @classmethod
    def end_for(cls, cmd: BpfCmd, version: KernelVersion) -> int:
        """Where `cmd`'s fields end in `version` (offsetofend of its LAST_FIELD)."""
        history = cls.last_fields.get(cmd)
        if history is None:
            return cls.size_for(version)
        end = 0
        for name, added in history:
            if since(added) <= version:
                field = getattr(cls, name)
                end = field.offset + field.size
        return end


class MapCreateAttr(BpfAttr):
    commands = (BpfCmd.MAP_CREATE,)
    _spec_ = (
        ("map_type", u32, "3.18"),
        ("key_size", u32, "3.18"),
        ("value_size", u32, "3.18"),
        ("max_entries", u32, "3.18"),
        ("map_flags", u32, "4.6"),
        ("inner_map_fd", u32, "4.12"),
        ("numa_node", u32, "4.14"),
        ("map_name", ctypes.c_char * 16, "4.15"),
        ("map_ifindex", u32, "4.16"),
        ("btf_fd", u32, "4.18"),
        ("btf_key_type_id", u32, "4.18"),
        ("btf_value_type_id", u32, "4.18"),
        ("btf_vmlinux_value_type_id", u32, "5.6"),
        ("map_extra", u64, "5.16"),
        ("value_type_btf_obj_fd", s32, "6.9"),
        ("map_token_fd", s32, "6.9"),
        ("excl_prog_hash", u64, "6.18"),
        ("excl_prog_hash_size", u32, "6.18"),
    )
    _fields_ = fields(_spec_)
    pointers = {"excl_prog_hash": (Pointer(Direction.IN, FieldTimes("excl_prog_hash_size")),)}


class MapElemAttr(BpfAttr):
    """BPF_MAP_*_ELEM and GET_NEXT_KEY: `value` is `next_key` for GET_NEXT_KEY."""

    commands = (
        BpfCmd.MAP_LOOKUP_ELEM,
        BpfCmd.MAP_UPDATE_ELEM,
        BpfCmd.MAP_DELETE_ELEM,
        BpfCmd.MAP_GET_NEXT_KEY,
        BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM,
        BpfCmd.MAP_FREEZE,
    )
    last_fields = {
        BpfCmd.MAP_GET_NEXT_KEY: (("value", "3.18"),),
        BpfCmd.MAP_DELETE_ELEM: (("key", "3.18"),),
        BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM: (("value", "4.20"), ("flags", "5.14")),
        BpfCmd.MAP_FREEZE: (("map_fd", "5.2"),),
    }
    _spec_ = (
        ("map_fd", u32, "3.18"),
        ("_pad0", u32, "3.18"),
        ("key", u64, "3.18"),
        ("value", u64, "3.18"),
        ("flags", u64, "3.18"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "key": (
            Pointer(
                Direction.IN,
                MapKeySize(),
                (
                    BpfCmd.MAP_LOOKUP_ELEM,
                    BpfCmd.MAP_UPDATE_ELEM,
                    BpfCmd.MAP_DELETE_ELEM,
                    BpfCmd.MAP_GET_NEXT_KEY,
                    BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM,
                ),
            ),
        ),
        "value": (
            Pointer(
                Direction.OUT,
                MapValueSize(),
                (BpfCmd.MAP_LOOKUP_ELEM, BpfCmd.MAP_LOOKUP_AND_DELETE_ELEM),
            ),
            Pointer(Direction.IN, MapValueSize(), (BpfCmd.MAP_UPDATE_ELEM,)),
            Pointer(Direction.OUT, MapKeySize(), (BpfCmd.MAP_GET_NEXT_KEY,)),  # next_key
        ),
    }


class MapBatchAttr(BpfAttr):
    c_member = "batch"
    commands = (
        BpfCmd.MAP_LOOKUP_BATCH,
        BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH,
        BpfCmd.MAP_UPDATE_BATCH,
        BpfCmd.MAP_DELETE_BATCH,
    )
    _spec_ = (
        ("in_batch", u64, "5.6"),
        ("out_batch", u64, "5.6"),
        ("keys", u64, "5.6"),
        ("values", u64, "5.6"),
        ("count", u32, "5.6"),
        ("map_fd", u32, "5.6"),
        ("elem_flags", u64, "5.6"),
        ("flags", u64, "5.6"),
    )
    _fields_ = fields(_spec_)
    _LOOKUPS = (BpfCmd.MAP_LOOKUP_BATCH, BpfCmd.MAP_LOOKUP_AND_DELETE_BATCH)
    pointers = {
        "in_batch": (Pointer(Direction.IN, MapBatchToken()),),
        "out_batch": (Pointer(Direction.OUT, MapBatchToken(), _LOOKUPS),),
        "keys": (
            Pointer(Direction.OUT, MapKeySize(count_field="count"), _LOOKUPS),
            Pointer(
                Direction.IN,
                MapKeySize(count_field="count"),
                (BpfCmd.MAP_UPDATE_BATCH, BpfCmd.MAP_DELETE_BATCH),
            ),
        ),
        "values": (
            Pointer(Direction.OUT, MapValueSize(count_field="count"), _LOOKUPS),
            Pointer(Direction.IN, MapValueSize(count_field="count"), (BpfCmd.MAP_UPDATE_BATCH,)),
        ),
    }


class ProgLoadAttr(BpfAttr):
    commands = (BpfCmd.PROG_LOAD,)
    _spec_ = (
        ("prog_type", u32, "3.18"),
        ("insn_cnt", u32, "3.18"),
        ("insns", u64, "3.18"),
        ("license", u64, "3.18"),
        ("log_level", u32, "3.18"),
        ("log_size", u32, "3.18"),
        ("log_buf", u64, "3.18"),
        ("kern_version", u32, "4.1"),
        ("prog_flags", u32, "4.12"),
        ("prog_name", ctypes.c_char * 16, "4.15"),
        ("prog_ifindex", u32, "4.15"),
        ("expected_attach_type", u32, "4.17"),
        ("prog_btf_fd", u32, "5.0"),
        ("func_info_rec_size", u32, "5.0"),
        ("func_info", u64, "5.0"),
        ("func_info_cnt", u32, "5.0"),
        ("line_info_rec_size", u32, "5.0"),
        ("line_info", u64, "5.0"),
        ("line_info_cnt", u32, "5.0"),
        ("attach_btf_id", u32, "5.5"),
        ("attach_prog_fd", u32, "5.5"),
        ("core_relo_cnt", u32, "5.17"),
        ("fd_array", u64, "5.14"),
        ("core_relos", u64, "5.17"),
        ("core_relo_rec_size", u32, "5.17"),
        ("log_true_size", u32, "6.4"),
        ("prog_token_fd", s32, "6.9"),
        ("fd_array_cnt", u32, "6.14"),
        ("signature", u64, "6.18"),
        ("signature_size", u32, "6.18"),
        ("keyring_id", s32, "6.18"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "insns": (Pointer(Direction.IN, FieldTimes("insn_cnt", 8)),),
        "license": (Pointer(Direction.IN, CString(128)),),
        "log_buf": (Pointer(Direction.OUT, FieldTimes("log_size")),),
        "func_info": (Pointer(Direction.IN, FieldProduct("func_info_cnt", "func_info_rec_size")),),
        "line_info": (Pointer(Direction.IN, FieldProduct("line_info_cnt", "line_info_rec_size")),),
        "fd_array": (Pointer(Direction.IN, FieldTimes("fd_array_cnt", 4)),),
        "core_relos": (Pointer(Direction.IN, FieldProduct("core_relo_cnt", "core_relo_rec_size")),),
        "signature": (Pointer(Direction.IN, FieldTimes("signature_size")),),
    }


class ObjPinAttr(BpfAttr):
    """BPF_OBJ_PIN / BPF_OBJ_GET."""

    commands = (BpfCmd.OBJ_PIN, BpfCmd.OBJ_GET)
    _spec_ = (
        ("pathname", u64, "4.4"),
        ("bpf_fd", u32, "4.4"),
        ("file_flags", u32, "4.15"),
        ("path_fd", s32, "6.5"),
    )
    _fields_ = fields(_spec_)
    pointers = {"pathname": (Pointer(Direction.IN, CString(4096)),)}  # PATH_MAX


class ProgAttachAttr(BpfAttr):
    """BPF_PROG_ATTACH / BPF_PROG_DETACH."""

    commands = (BpfCmd.PROG_ATTACH, BpfCmd.PROG_DETACH)
    _spec_ = (
        ("target_fd", u32, "4.10"),
        ("attach_bpf_fd", u32, "4.10"),
        ("attach_type", u32, "4.10"),
        ("attach_flags", u32, "4.10"),
        ("replace_bpf_fd", u32, "5.6"),
        ("relative_fd", u32, "6.6"),  # union with relative_id
        ("expected_revision", u64, "6.6"),
    )
    _fields_ = fields(_spec_)


class TestRunAttr(BpfAttr):
    """BPF_PROG_TEST_RUN."""

    __test__ = False  # not a pytest class

    c_member = "test"
    commands = (BpfCmd.PROG_TEST_RUN,)
    _spec_ = (
        ("prog_fd", u32, "4.12"),
        ("retval", u32, "4.12"),
        ("data_size_in", u32, "4.12"),
        ("data_size_out", u32, "4.12"),
        ("data_in", u64, "4.12"),
        ("data_out", u64, "4.12"),
        ("repeat", u32, "4.12"),
        ("duration", u32, "4.12"),
        ("ctx_size_in", u32, "5.2"),
        ("ctx_size_out", u32, "5.2"),
        ("ctx_in", u64, "5.2"),
        ("ctx_out", u64, "5.2"),
        ("flags", u32, "5.10"),
        ("cpu", u32, "5.10"),
        ("batch_size", u32, "5.18"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "data_in": (Pointer(Direction.IN, FieldTimes("data_size_in")),),
        "data_out": (Pointer(Direction.OUT, FieldTimes("data_size_out")),),
        "ctx_in": (Pointer(Direction.IN, FieldTimes("ctx_size_in")),),
        "ctx_out": (Pointer(Direction.OUT, FieldTimes("ctx_size_out")),),
    }


class GetIdAttr(BpfAttr):
    """BPF_*_GET_NEXT_ID and BPF_*_GET_FD_BY_ID: `start_id` is also prog_id/map_id/link_id."""

    commands = (
        BpfCmd.PROG_GET_NEXT_ID,
        BpfCmd.MAP_GET_NEXT_ID,
        BpfCmd.LINK_GET_NEXT_ID,
        BpfCmd.BTF_GET_NEXT_ID,
        BpfCmd.PROG_GET_FD_BY_ID,
        BpfCmd.MAP_GET_FD_BY_ID,
        BpfCmd.LINK_GET_FD_BY_ID,
        BpfCmd.BTF_GET_FD_BY_ID,
    )
    last_fields = {
        BpfCmd.PROG_GET_NEXT_ID: (("next_id", "4.13"),),
        BpfCmd.MAP_GET_NEXT_ID: (("next_id", "4.13"),),
        BpfCmd.LINK_GET_NEXT_ID: (("next_id", "5.8"),),
        BpfCmd.BTF_GET_NEXT_ID: (("next_id", "5.4"),),
        BpfCmd.PROG_GET_FD_BY_ID: (("start_id", "4.13"),),
        BpfCmd.LINK_GET_FD_BY_ID: (("start_id", "5.8"),),
        BpfCmd.BTF_GET_FD_BY_ID: (("start_id", "4.18"),),
    }
    _spec_ = (
        ("start_id", u32, "4.13"),
        ("next_id", u32, "4.13"),
        ("open_flags", u32, "4.15"),
    )
    _fields_ = fields(_spec_)


class InfoByFdAttr(BpfAttr):
    c_member = "info"
    commands = (BpfCmd.OBJ_GET_INFO_BY_FD,)
    _spec_ = (
        ("bpf_fd", u32, "4.13"),
        ("info_len", u32, "4.13"),
        ("info", u64, "4.13"),
    )
    _fields_ = fields(_spec_)
    pointers = {"info": (Pointer(Direction.INOUT, ObjectInfo(FieldTimes("info_len"))),)}


class ProgQueryAttr(BpfAttr):
    c_member = "query"
    commands = (BpfCmd.PROG_QUERY,)
    _spec_ = (
        ("target_fd", u32, "4.15"),
        ("attach_type", u32, "4.15"),
        ("query_flags", u32, "4.15"),
        ("attach_flags", u32, "4.15"),
        ("prog_ids", u64, "4.15"),
        ("prog_cnt", u32, "4.15"),
        ("_pad0", u32, "4.15"),
        ("prog_attach_flags", u64, "6.0"),
        ("link_ids", u64, "6.6"),
        ("link_attach_flags", u64, "6.6"),
        ("revision", u64, "6.6"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        name: (Pointer(Direction.OUT, FieldTimes("prog_cnt", 4)),)
        for name in ("prog_ids", "prog_attach_flags", "link_ids", "link_attach_flags")
    }


class RawTracepointOpenAttr(BpfAttr):
    c_member = "raw_tracepoint"
    commands = (BpfCmd.RAW_TRACEPOINT_OPEN,)
    _spec_ = (
        ("name", u64, "4.17"),
        ("prog_fd", u32, "4.17"),
        ("_pad0", u32, "4.17"),
        ("cookie", u64, "6.10"),
    )
    _fields_ = fields(_spec_)
    pointers = {"name": (Pointer(Direction.IN, CString(128)),)}


class BtfLoadAttr(BpfAttr):
    commands = (BpfCmd.BTF_LOAD,)
    _spec_ = (
        ("btf", u64, "4.18"),
        ("btf_log_buf", u64, "4.18"),
        ("btf_size", u32, "4.18"),
        ("btf_log_size", u32, "4.18"),
        ("btf_log_level", u32, "4.18"),
        ("btf_log_true_size", u32, "6.4"),
        ("btf_flags", u32, "6.9"),
        ("btf_token_fd", s32, "6.9"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "btf": (Pointer(Direction.IN, FieldTimes("btf_size")),),
        "btf_log_buf": (Pointer(Direction.OUT, FieldTimes("btf_log_size")),),
    }


class PerfEventLinkOpts(AbiStruct):
    """link_create.perf_event."""

    _spec_ = (("bpf_cookie", u64, "5.15"),)
    _fields_ = fields(_spec_)


class KprobeMultiLinkOpts(AbiStruct):
    """link_create.kprobe_multi."""

    _spec_ = (
        ("flags", u32, "5.18"),
        ("cnt", u32, "5.18"),
        ("syms", u64, "5.18"),
        ("addrs", u64, "5.18"),
        ("cookies", u64, "5.18"),
    )
    _fields_ = fields(_spec_)


class TracingLinkOpts(AbiStruct):
    """link_create.tracing."""

    _spec_ = (
        ("target_btf_id", u32, "5.19"),
        ("_pad0", u32, "5.19"),
        ("cookie", u64, "5.19"),
    )
    _fields_ = fields(_spec_)


class IterLinkOpts(AbiStruct):
    """link_create's iterator fields."""

    _spec_ = (
        ("iter_info", u64, "5.9"),
        ("iter_info_len", u32, "5.9"),
    )
    _fields_ = fields(_spec_)


class RevisionLinkOpts(AbiStruct):
    """link_create.tcx / netkit / cgroup (multi-program attachment with revisions)."""

    _spec_ = (
        ("relative_fd", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("expected_revision", u64, "6.6"),
    )
    _fields_ = fields(_spec_)


class UprobeMultiLinkOpts(AbiStruct):
    """link_create.uprobe_multi."""

    _spec_ = (
        ("path", u64, "6.6"),
        ("offsets", u64, "6.6"),
        ("ref_ctr_offsets", u64, "6.6"),
        ("cookies", u64, "6.6"),
        ("cnt", u32, "6.6"),
        ("flags", u32, "6.6"),
        ("pid", u32, "6.6"),
    )
    _fields_ = fields(_spec_)


class LinkCreateTarget(AbiUnion):
    """The per-attach-type union at the end of link_create."""

    c_fields = {"iter": ""}

    _spec_ = (
        ("target_btf_id", u32, "5.10"),
        ("iter", IterLinkOpts, "5.9"),
        ("perf_event", PerfEventLinkOpts, "5.15"),
        ("kprobe_multi", KprobeMultiLinkOpts, "5.18"),
        ("tracing", TracingLinkOpts, "5.19"),
        ("tcx", RevisionLinkOpts, "6.6"),
        ("uprobe_multi", UprobeMultiLinkOpts, "6.6"),
    )
    _fields_ = fields(_spec_)


class LinkCreateAttr(BpfAttr):
    """BPF_LINK_CREATE: `prog_fd` is also map_fd, `target_fd` also target_ifindex."""

    c_member = "link_create"
    commands = (BpfCmd.LINK_CREATE,)
    c_fields = {"target": ""}
    _anonymous_ = ("target",)
    _spec_ = (
        ("prog_fd", u32, "5.7"),
        ("target_fd", u32, "5.7"),
        ("attach_type", u32, "5.7"),
        ("flags", u32, "5.7"),
        ("target", LinkCreateTarget, "5.9"),
    )
    _fields_ = fields(_spec_)


class LinkUpdateAttr(BpfAttr):
    c_member = "link_update"
    commands = (BpfCmd.LINK_UPDATE,)
    _spec_ = (
        ("link_fd", u32, "5.7"),
        ("new_prog_fd", u32, "5.7"),
        ("flags", u32, "5.7"),
        ("old_prog_fd", u32, "5.7"),
    )
    _fields_ = fields(_spec_)


class LinkDetachAttr(BpfAttr):
    c_member = "link_detach"
    commands = (BpfCmd.LINK_DETACH,)
    _spec_ = (("link_fd", u32, "5.9"),)
    _fields_ = fields(_spec_)


class EnableStatsAttr(BpfAttr):
    c_member = "enable_stats"
    commands = (BpfCmd.ENABLE_STATS,)
    _spec_ = (("type", u32, "5.8"),)
    _fields_ = fields(_spec_)


class IterCreateAttr(BpfAttr):
    c_member = "iter_create"
    commands = (BpfCmd.ITER_CREATE,)
    _spec_ = (
        ("link_fd", u32, "5.8"),
        ("flags", u32, "5.8"),
    )
    _fields_ = fields(_spec_)


class ProgBindMapAttr(BpfAttr):
    c_member = "prog_bind_map"
    commands = (BpfCmd.PROG_BIND_MAP,)
    _spec_ = (
        ("prog_fd", u32, "5.10"),
        ("map_fd", u32, "5.10"),
        ("flags", u32, "5.10"),
    )
    _fields_ = fields(_spec_)


ATTR_OF_COMMAND: Final[dict[BpfCmd, type[BpfAttr]]] = {
    cmd: cls
    for cls in (
        MapCreateAttr,
        MapElemAttr,
        MapBatchAttr,
        ProgLoadAttr,
        ObjPinAttr,
        ProgAttachAttr,
        TestRunAttr,
        GetIdAttr,
        InfoByFdAttr,
        ProgQueryAttr,
        RawTracepointOpenAttr,
        BtfLoadAttr,
        LinkCreateAttr,
        LinkUpdateAttr,
        LinkDetachAttr,
        EnableStatsAttr,
        IterCreateAttr,
        ProgBindMapAttr,
    )
    for cmd in cls.commands
}
"""The attr struct of each command bpfsys issues."""


# ---------------------------------------------------------------------------------------------
# Object info (BPF_OBJ_GET_INFO_BY_FD)
# ---------------------------------------------------------------------------------------------
class BpfProgInfo(AbiStruct):
    """struct bpf_prog_info; `flags` bit 0 is gpl_compatible (a 1-bit field in C)."""

    c_name = "struct bpf_prog_info"
    c_fields = {"flags": None}
    _spec_ = (
        ("type", u32, "4.13"),
        ("id", u32, "4.13"),
        ("tag", u8 * 8, "4.13"),
        ("jited_prog_len", u32, "4.13"),
        ("xlated_prog_len", u32, "4.13"),
        ("jited_prog_insns", u64, "4.13"),
        ("xlated_prog_insns", u64, "4.13"),
        ("load_time", u64, "4.15"),
        ("created_by_uid", u32, "4.15"),
        ("nr_map_ids", u32, "4.15"),
        ("map_ids", u64, "4.15"),
        ("name", ctypes.c_char * 16, "4.15"),
        ("ifindex", u32, "4.16"),
        ("flags", u32, "4.18"),
        ("netns_dev", u64, "4.16"),
        ("netns_ino", u64, "4.16"),
        ("nr_jited_ksyms", u32, "4.18"),
        ("nr_jited_func_lens", u32, "4.18"),
        ("jited_ksyms", u64, "4.18"),
        ("jited_func_lens", u64, "4.18"),
        ("btf_id", u32, "5.0"),
        ("func_info_rec_size", u32, "5.0"),
        ("func_info", u64, "5.0"),
        ("nr_func_info", u32, "5.0"),
        ("nr_line_info", u32, "5.0"),
        ("line_info", u64, "5.0"),
        ("jited_line_info", u64, "5.0"),
        ("nr_jited_line_info", u32, "5.0"),
        ("line_info_rec_size", u32, "5.0"),
        ("jited_line_info_rec_size", u32, "5.0"),
        ("nr_prog_tags", u32, "5.0"),
        ("prog_tags", u64, "5.0"),
        ("run_time_ns", u64, "5.1"),
        ("run_cnt", u64, "5.1"),
        ("recursion_misses", u64, "5.12"),
        ("verified_insns", u32, "5.16"),
        ("attach_btf_obj_id", u32, "6.0"),
        ("attach_btf_id", u32, "6.0"),
        ("_pad1", u32, "6.0"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "jited_prog_insns": (Pointer(Direction.OUT, FieldTimes("jited_prog_len")),),
        "xlated_prog_insns": (Pointer(Direction.OUT, FieldTimes("xlated_prog_len")),),
        "map_ids": (Pointer(Direction.OUT, FieldTimes("nr_map_ids", 4)),),
        "jited_ksyms": (Pointer(Direction.OUT, FieldTimes("nr_jited_ksyms", 8)),),
        "jited_func_lens": (Pointer(Direction.OUT, FieldTimes("nr_jited_func_lens", 4)),),
        "func_info": (Pointer(Direction.OUT, FieldProduct("nr_func_info", "func_info_rec_size")),),
        "line_info": (Pointer(Direction.OUT, FieldProduct("nr_line_info", "line_info_rec_size")),),
        "jited_line_info": (
            Pointer(Direction.OUT, FieldProduct("nr_jited_line_info", "jited_line_info_rec_size")),
        ),
        "prog_tags": (Pointer(Direction.OUT, FieldTimes("nr_prog_tags", 8)),),
    }

    @property
    def gpl_compatible(self) -> bool:
        return bool(self.flags & 1)


class BpfMapInfo(AbiStruct):
    """struct bpf_map_info."""

    c_name = "struct bpf_map_info"
    _spec_ = (
        ("type", u32, "4.13"),
        ("id", u32, "4.13"),
        ("key_size", u32, "4.13"),
        ("value_size", u32, "4.13"),
        ("max_entries", u32, "4.13"),
        ("map_flags", u32, "4.13"),
        ("name", ctypes.c_char * 16, "4.15"),
        ("ifindex", u32, "4.16"),
        ("btf_vmlinux_value_type_id", u32, "5.6"),
        ("netns_dev", u64, "4.16"),
        ("netns_ino", u64, "4.16"),
        ("btf_id", u32, "4.18"),
        ("btf_key_type_id", u32, "4.18"),
        ("btf_value_type_id", u32, "4.18"),
        ("_pad0", u32, "4.18"),
        ("map_extra", u64, "5.16"),
        ("hash", u64, "6.18"),
        ("hash_size", u32, "6.18"),
    )
    _fields_ = fields(_spec_)
    pointers = {"hash": (Pointer(Direction.OUT, FieldTimes("hash_size")),)}


class RawTracepointLinkInfo(AbiStruct):
    _spec_ = (
        ("tp_name", u64, "5.8"),
        ("tp_name_len", u32, "5.8"),
        ("_pad0", u32, "6.10"),
        ("cookie", u64, "6.10"),
    )
    _fields_ = fields(_spec_)


class TracingLinkInfo(AbiStruct):
    _spec_ = (
        ("attach_type", u32, "5.8"),
        ("target_obj_id", u32, "5.13"),
        ("target_btf_id", u32, "5.13"),
    )
    _fields_ = fields(_spec_)


class CgroupLinkInfo(AbiStruct):
    _spec_ = (("cgroup_id", u64, "5.8"), ("attach_type", u32, "5.8"))
    _fields_ = fields(_spec_)


class NetnsLinkInfo(AbiStruct):
    _spec_ = (("netns_ino", u32, "5.8"), ("attach_type", u32, "5.8"))
    _fields_ = fields(_spec_)


class XdpLinkInfo(AbiStruct):
    _spec_ = (("ifindex", u32, "5.9"),)
    _fields_ = fields(_spec_)


class UprobeLinkInfo(AbiStruct):
    """link_info.perf_event.uprobe."""

    _spec_ = (
        ("file_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("offset", u32, "6.6"),
        ("cookie", u64, "6.9"),
        ("ref_ctr_offset", u64, "6.15"),
    )
    _fields_ = fields(_spec_)


class KprobeLinkInfo(AbiStruct):
    """link_info.perf_event.kprobe."""

    _spec_ = (
        ("func_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("offset", u32, "6.6"),
        ("addr", u64, "6.6"),
        ("missed", u64, "6.7"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class TracepointLinkInfo(AbiStruct):
    """link_info.perf_event.tracepoint."""

    _spec_ = (
        ("tp_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class EventLinkInfo(AbiStruct):
    """link_info.perf_event.event (software and hardware events)."""

    _spec_ = (
        ("config", u64, "6.6"),
        ("type", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class PerfEventLinkVariants(AbiUnion):
    _spec_ = (
        ("uprobe", UprobeLinkInfo, "6.6"),
        ("kprobe", KprobeLinkInfo, "6.6"),
        ("tracepoint", TracepointLinkInfo, "6.6"),
        ("event", EventLinkInfo, "6.6"),
    )
    _fields_ = fields(_spec_)


class PerfEventProbeLinkInfo(AbiStruct):
    """link_info.perf_event.kprobe: a kprobe/kretprobe event (uprobes: PerfEventUprobeLinkInfo)."""

    _spec_ = (
        ("func_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("offset", u32, "6.6"),
        ("addr", u64, "6.6"),
        ("missed", u64, "6.7"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class PerfEventUprobeLinkInfo(AbiStruct):
    """link_info.perf_event.uprobe."""

    _spec_ = (
        ("file_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("offset", u32, "6.6"),
        ("cookie", u64, "6.9"),
        ("ref_ctr_offset", u64, "6.13"),
    )
    _fields_ = fields(_spec_)


class PerfEventTracepointLinkInfo(AbiStruct):
    """link_info.perf_event.tracepoint."""

    _spec_ = (
        ("tp_name", u64, "6.6"),
        ("name_len", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class PerfEventEventLinkInfo(AbiStruct):
    """link_info.perf_event.event: any other perf event (software, hardware, ...)."""

    _spec_ = (
        ("config", u64, "6.6"),
        ("type", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("cookie", u64, "6.9"),
    )
    _fields_ = fields(_spec_)


class PerfEventLinkVariant(AbiUnion):
    """The union in link_info.perf_event, chosen by its `type` (enum bpf_perf_event_type)."""

    _spec_ = (
        ("uprobe", PerfEventUprobeLinkInfo, "6.6"),
        ("kprobe", PerfEventProbeLinkInfo, "6.6"),
        ("tracepoint", PerfEventTracepointLinkInfo, "6.6"),
        ("event", PerfEventEventLinkInfo, "6.6"),
    )
    _fields_ = fields(_spec_)


class PerfEventLinkInfo(AbiStruct):
    """link_info.perf_event (since 6.6): `type` is enum bpf_perf_event_type and selects the
    member of the anonymous union."""

    c_fields = {"variant": ""}
    _anonymous_ = ("variant",)
    _spec_ = (
        ("type", u32, "6.6"),
        ("_pad0", u32, "6.6"),
        ("variant", PerfEventLinkVariant, "6.6"),
    )
    _fields_ = fields(_spec_)


class LinkInfoUnion(AbiUnion):
    _spec_ = (
        ("raw_tracepoint", RawTracepointLinkInfo, "5.8"),
        ("tracing", TracingLinkInfo, "5.8"),
        ("cgroup", CgroupLinkInfo, "5.8"),
        ("netns", NetnsLinkInfo, "5.8"),
        ("xdp", XdpLinkInfo, "5.9"),
        ("perf_event", PerfEventLinkInfo, "6.6"),
        ("_size", u8 * 32, "5.8"),
    )
    _fields_ = fields(_spec_)


class BpfLinkInfo(AbiStruct):
    """struct bpf_link_info (the members bpfsys reads)."""

    c_name = "struct bpf_link_info"
    c_fields = {"u": ""}
    _anonymous_ = ("u",)
    _spec_ = (
        ("type", u32, "5.8"),
        ("id", u32, "5.8"),
        ("prog_id", u32, "5.8"),
        ("_pad0", u32, "5.8"),
        ("u", LinkInfoUnion, "5.8"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "raw_tracepoint.tp_name": (
            Pointer(Direction.OUT, FieldTimes("raw_tracepoint.tp_name_len")),
        ),
        "perf_event.tracepoint.tp_name": (
            Pointer(Direction.OUT, FieldTimes("perf_event.tracepoint.name_len")),
        ),
        "perf_event.kprobe.func_name": (
            Pointer(Direction.OUT, FieldTimes("perf_event.kprobe.name_len")),
        ),
        "perf_event.uprobe.file_name": (
            Pointer(Direction.OUT, FieldTimes("perf_event.uprobe.name_len")),
        ),
    }


class BpfBtfInfo(AbiStruct):
    """struct bpf_btf_info."""

    c_name = "struct bpf_btf_info"
    _spec_ = (
        ("btf", u64, "4.18"),
        ("btf_size", u32, "4.18"),
        ("id", u32, "4.18"),
        ("name", u64, "5.11"),
        ("name_len", u32, "5.11"),
        ("kernel_btf", u32, "5.11"),
    )
    _fields_ = fields(_spec_)
    pointers = {
        "btf": (Pointer(Direction.OUT, FieldTimes("btf_size")),),
        "name": (Pointer(Direction.OUT, FieldTimes("name_len")),),
    }


class BpfPerfEventType(VersionedEnum):
    """enum bpf_perf_event_type (link_info.perf_event.type)."""

    UNSPEC = 0, "6.6"
    UPROBE = 1, "6.6"
    URETPROBE = 2, "6.6"
    KPROBE = 3, "6.6"
    KRETPROBE = 4, "6.6"
    TRACEPOINT = 5, "6.6"
    EVENT = 6, "6.6"

    @classmethod
    def c_prefix(cls) -> str:
        return "BPF_PERF_EVENT_"


# ---------------------------------------------------------------------------------------------
# linux/perf_event.h
# ---------------------------------------------------------------------------------------------
class PerfType(VersionedEnum):
    """enum perf_type_id (dynamic PMUs such as kprobe get their type from sysfs)."""

    HARDWARE = 0, "2.6"
    SOFTWARE = 1, "2.6"
    TRACEPOINT = 2, "2.6"
    HW_CACHE = 3, "2.6"
    RAW = 4, "2.6"
    BREAKPOINT = 5, "2.6"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_TYPE_"


class PerfSwId(VersionedEnum):
    """enum perf_sw_ids (config of PERF_TYPE_SOFTWARE)."""

    CPU_CLOCK = 0, "2.6"
    TASK_CLOCK = 1, "2.6"
    PAGE_FAULTS = 2, "2.6"
    CONTEXT_SWITCHES = 3, "2.6"
    CPU_MIGRATIONS = 4, "2.6"
    PAGE_FAULTS_MIN = 5, "2.6"
    PAGE_FAULTS_MAJ = 6, "2.6"
    ALIGNMENT_FAULTS = 7, "2.6"
    EMULATION_FAULTS = 8, "2.6"
    DUMMY = 9, "3.12"
    BPF_OUTPUT = 10, "4.4"
    CGROUP_SWITCHES = 11, "5.13"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_COUNT_SW_"


class SampleType(VersionedFlag):
    """enum perf_event_sample_format."""

    IP = 1 << 0, "2.6"
    TID = 1 << 1, "2.6"
    TIME = 1 << 2, "2.6"
    ADDR = 1 << 3, "2.6"
    READ = 1 << 4, "2.6"
    CALLCHAIN = 1 << 5, "2.6"
    ID = 1 << 6, "2.6"
    CPU = 1 << 7, "2.6"
    PERIOD = 1 << 8, "2.6"
    STREAM_ID = 1 << 9, "2.6"
    RAW = 1 << 10, "2.6"
    BRANCH_STACK = 1 << 11, "3.4"
    REGS_USER = 1 << 12, "3.7"
    STACK_USER = 1 << 13, "3.7"
    WEIGHT = 1 << 14, "3.10"
    DATA_SRC = 1 << 15, "3.10"
    IDENTIFIER = 1 << 16, "3.12"
    TRANSACTION = 1 << 17, "3.13"
    REGS_INTR = 1 << 18, "3.19"
    PHYS_ADDR = 1 << 19, "4.13"
    AUX = 1 << 20, "5.5"
    CGROUP = 1 << 21, "5.7"
    DATA_PAGE_SIZE = 1 << 22, "5.11"
    CODE_PAGE_SIZE = 1 << 23, "5.11"
    WEIGHT_STRUCT = 1 << 24, "5.12"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_SAMPLE_"


class ReadFormat(VersionedFlag):
    """enum perf_event_read_format."""

    TOTAL_TIME_ENABLED = 1 << 0, "2.6"
    TOTAL_TIME_RUNNING = 1 << 1, "2.6"
    ID = 1 << 2, "2.6"
    GROUP = 1 << 3, "2.6"
    LOST = 1 << 4, "6.0"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_FORMAT_"


class PerfAttrFlag(VersionedFlag):
    """The bit fields of perf_event_attr, kept here as bits of the one `flags` word."""

    DISABLED = 1 << 0, "2.6"
    INHERIT = 1 << 1, "2.6"
    PINNED = 1 << 2, "2.6"
    EXCLUSIVE = 1 << 3, "2.6"
    EXCLUDE_USER = 1 << 4, "2.6"
    EXCLUDE_KERNEL = 1 << 5, "2.6"
    EXCLUDE_HV = 1 << 6, "2.6"
    EXCLUDE_IDLE = 1 << 7, "2.6"
    MMAP = 1 << 8, "2.6"
    COMM = 1 << 9, "2.6"
    FREQ = 1 << 10, "2.6"
    INHERIT_STAT = 1 << 11, "2.6"
    ENABLE_ON_EXEC = 1 << 12, "2.6"
    TASK = 1 << 13, "2.6"
    WATERMARK = 1 << 14, "2.6"
    PRECISE_IP_0 = 1 << 15, "2.6"
    PRECISE_IP_1 = 1 << 16, "2.6"
    MMAP_DATA = 1 << 17, "2.6"
    SAMPLE_ID_ALL = 1 << 18, "2.6"
    EXCLUDE_HOST = 1 << 19, "3.2"
    EXCLUDE_GUEST = 1 << 20, "3.2"
    EXCLUDE_CALLCHAIN_KERNEL = 1 << 21, "3.7"
    EXCLUDE_CALLCHAIN_USER = 1 << 22, "3.7"
    MMAP2 = 1 << 23, "3.12"
    COMM_EXEC = 1 << 24, "3.16"
    USE_CLOCKID = 1 << 25, "4.1"
    CONTEXT_SWITCH = 1 << 26, "4.3"
    WRITE_BACKWARD = 1 << 27, "4.7"
    NAMESPACES = 1 << 28, "4.12"
    KSYMBOL = 1 << 29, "5.1"
    BPF_EVENT = 1 << 30, "5.1"
    AUX_OUTPUT = 1 << 31, "5.4"
    CGROUP = 1 << 32, "5.7"
    TEXT_POKE = 1 << 33, "5.9"
    BUILD_ID = 1 << 34, "5.12"
    INHERIT_THREAD = 1 << 35, "5.13"
    REMOVE_ON_EXEC = 1 << 36, "5.13"
    SIGTRAP = 1 << 37, "5.13"

    @classmethod
    def c_prefix(cls) -> str:
        return ""

    @property
    def c_name(self) -> str:
        return (self.name or "").lower()


PERF_ATTR_FLAGS_KNOWN: Final = sum(int(f) for f in PerfAttrFlag)
"""All bits of the flags word that some kernel defines (the rest is __reserved_1)."""


class PerfEventAttr(AbiStruct):
    """struct perf_event_attr. Sizes by version: PERF_ATTR_SIZE_VER0..VER8 below."""

    c_name = "struct perf_event_attr"
    c_fields = {"flags": None}
    _spec_ = (
        ("type", u32, "2.6"),
        ("size", u32, "2.6"),
        ("config", u64, "2.6"),
        ("sample_period", u64, "2.6"),  # union with sample_freq
        ("sample_type", u64, "2.6"),
        ("read_format", u64, "2.6"),
        ("flags", u64, "2.6"),  # the bit fields, see PerfAttrFlag
        ("wakeup_events", u32, "2.6"),  # union with wakeup_watermark
        ("bp_type", u32, "2.6"),
        ("config1", u64, "2.6"),  # union: bp_addr, kprobe_func, uprobe_path
        ("config2", u64, "2.6"),  # union: bp_len, kprobe_addr, probe_offset
        ("branch_sample_type", u64, "3.4"),
        ("sample_regs_user", u64, "3.7"),
        ("sample_stack_user", u32, "3.7"),
        ("clockid", s32, "4.1"),
        ("sample_regs_intr", u64, "3.19"),
        ("aux_watermark", u32, "4.1"),
        ("sample_max_stack", u16, "4.8"),
        ("_reserved_2", u16, "4.8"),
        ("aux_sample_size", u32, "5.5"),
        ("_reserved_3", u32, "5.5"),
        ("sig_data", u64, "5.13"),
        ("config3", u64, "6.3"),
    )
    _fields_ = fields(_spec_)

    @property
    def sample_freq(self) -> int:
        return int(self.sample_period)

    @property
    def wakeup_watermark(self) -> int:
        return int(self.wakeup_events)


PERF_ATTR_SIZE_VER0: Final = _const("PERF_ATTR_SIZE_VER0", 64, "2.6")
PERF_ATTR_SIZE_VER1: Final = _const("PERF_ATTR_SIZE_VER1", 72, "2.6")
PERF_ATTR_SIZE_VER2: Final = _const("PERF_ATTR_SIZE_VER2", 80, "3.4")
PERF_ATTR_SIZE_VER3: Final = _const("PERF_ATTR_SIZE_VER3", 96, "3.7")
PERF_ATTR_SIZE_VER4: Final = _const("PERF_ATTR_SIZE_VER4", 104, "3.19")
PERF_ATTR_SIZE_VER5: Final = _const("PERF_ATTR_SIZE_VER5", 112, "4.1")
PERF_ATTR_SIZE_VER6: Final = _const("PERF_ATTR_SIZE_VER6", 120, "5.5")
PERF_ATTR_SIZE_VER7: Final = _const("PERF_ATTR_SIZE_VER7", 128, "5.13")
PERF_ATTR_SIZE_VER8: Final = _const("PERF_ATTR_SIZE_VER8", 136, "6.3")

PERF_FLAG_FD_NO_GROUP: Final = _const("PERF_FLAG_FD_NO_GROUP", 1 << 0, "2.6")
PERF_FLAG_FD_OUTPUT: Final = _const("PERF_FLAG_FD_OUTPUT", 1 << 1, "2.6")
PERF_FLAG_PID_CGROUP: Final = _const("PERF_FLAG_PID_CGROUP", 1 << 2, "2.6")
PERF_FLAG_FD_CLOEXEC: Final = _const("PERF_FLAG_FD_CLOEXEC", 1 << 3, "3.14")
PERF_IOC_FLAG_GROUP: Final = _const("PERF_IOC_FLAG_GROUP", 1 << 0, "2.6")


class PerfEventMmapPage(AbiStruct):
    """struct perf_event_mmap_page: the first page of a perf ring (1088 bytes used)."""

    c_name = "struct perf_event_mmap_page"
    _spec_ = (
        ("version", u32, "2.6"),
        ("compat_version", u32, "2.6"),
        ("lock", u32, "2.6"),
        ("index", u32, "2.6"),
        ("offset", s64, "2.6"),
        ("time_enabled", u64, "2.6"),
        ("time_running", u64, "2.6"),
        ("capabilities", u64, "3.12"),
        ("pmc_width", u16, "3.12"),
        ("time_shift", u16, "3.12"),
        ("time_mult", u32, "3.12"),
        ("time_offset", u64, "3.12"),
        ("time_zero", u64, "3.12"),
        ("size", u32, "3.12"),
        ("_reserved_1", u32, "4.15"),
        ("time_cycles", u64, "4.15"),
        ("time_mask", u64, "4.15"),
        ("_reserved", u8 * (116 * 8), "2.6"),
        ("data_head", u64, "2.6"),
        ("data_tail", u64, "2.6"),
        ("data_offset", u64, "4.1"),
        ("data_size", u64, "4.1"),
        ("aux_head", u64, "4.1"),
        ("aux_tail", u64, "4.1"),
        ("aux_offset", u64, "4.1"),
        ("aux_size", u64, "4.1"),
    )
    _fields_ = fields(_spec_)


DATA_HEAD_OFFSET: Final = PerfEventMmapPage.data_head.offset
DATA_TAIL_OFFSET: Final = PerfEventMmapPage.data_tail.offset


class PerfEventHeader(AbiStruct):
    """struct perf_event_header: 8 bytes before every record in the ring."""

    c_name = "struct perf_event_header"
    _spec_ = (
        ("type", u32, "2.6"),
        ("misc", u16, "2.6"),
        ("size", u16, "2.6"),
    )
    _fields_ = fields(_spec_)


class PerfRecordType(VersionedEnum):
    """enum perf_event_type: the record types found in a ring."""

    MMAP = 1, "2.6"
    LOST = 2, "2.6"
    COMM = 3, "2.6"
    EXIT = 4, "2.6"
    THROTTLE = 5, "2.6"
    UNTHROTTLE = 6, "2.6"
    FORK = 7, "2.6"
    READ = 8, "2.6"
    SAMPLE = 9, "2.6"
    MMAP2 = 10, "3.12"
    AUX = 11, "4.1"
    ITRACE_START = 12, "4.1"
    LOST_SAMPLES = 13, "4.2"
    SWITCH = 14, "4.3"
    SWITCH_CPU_WIDE = 15, "4.3"
    NAMESPACES = 16, "4.12"
    KSYMBOL = 17, "5.1"
    BPF_EVENT = 18, "5.1"
    CGROUP = 19, "5.7"
    TEXT_POKE = 20, "5.9"
    AUX_OUTPUT_HW_ID = 21, "5.16"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_RECORD_"


class PerfEventQueryBpf(AbiStruct):
    """struct perf_event_query_bpf (PERF_EVENT_IOC_QUERY_BPF); the ids follow it."""

    c_name = "struct perf_event_query_bpf"
    _spec_ = (("ids_len", u32, "4.16"), ("prog_cnt", u32, "4.16"))
    _fields_ = fields(_spec_)


# ---------------------------------------------------------------------------------------------
# ioctl numbers (asm-generic/ioctl.h): dir 30-31, size 16-29, type 8-15, nr 0-7
# ---------------------------------------------------------------------------------------------
IOC_NONE: Final = 0
IOC_WRITE: Final = 1
IOC_READ: Final = 2


def _IOC(direction: int, type_: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(type_) << 8) | nr


def _IO(type_: str, nr: int) -> int:
    return _IOC(IOC_NONE, type_, nr, 0)


def _IOR(type_: str, nr: int, size: int) -> int:
    return _IOC(IOC_READ, type_, nr, size)


def _IOW(type_: str, nr: int, size: int) -> int:
    return _IOC(IOC_WRITE, type_, nr, size)


def _IOWR(type_: str, nr: int, size: int) -> int:
    return _IOC(IOC_READ | IOC_WRITE, type_, nr, size)


def ioc_type(request: int) -> int:
    """_IOC_TYPE: the type byte of an ioctl request ('$' for perf)."""
    return (request >> 8) & 0xFF


def ioc_nr(request: int) -> int:
    """_IOC_NR: the command number of an ioctl request."""
    return request & 0xFF


_PTR = ctypes.sizeof(ctypes.c_void_p)


class PerfIoctl(VersionedEnum):
    """The perf event ioctl requests (linux/perf_event.h)."""

    ENABLE = _IO("$", 0), "2.6"
    DISABLE = _IO("$", 1), "2.6"
    REFRESH = _IO("$", 2), "2.6"
    RESET = _IO("$", 3), "2.6"
    PERIOD = _IOW("$", 4, 8), "2.6"
    SET_OUTPUT = _IO("$", 5), "2.6"
    SET_FILTER = _IOW("$", 6, _PTR), "2.6"
    ID = _IOR("$", 7, _PTR), "3.12"
    SET_BPF = _IOW("$", 8, 4), "4.1"
    PAUSE_OUTPUT = _IOW("$", 9, 4), "4.7"
    QUERY_BPF = _IOWR("$", 10, _PTR), "4.16"
    MODIFY_ATTRIBUTES = _IOW("$", 11, _PTR), "4.17"

    @classmethod
    def c_prefix(cls) -> str:
        return "PERF_EVENT_IOC_"


def perf_ioctl_name(request: int) -> str:
    """The C name of a perf ioctl request, or its number in hex."""
    try:
        return PerfIoctl(request).c_name
    except ValueError:
        return hex(request)
