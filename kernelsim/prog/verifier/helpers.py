"""Helper prototypes and which program types may call which helper.

`PROTOS` holds, per modelled helper, the argument kinds the verifier checks (the kernel's
`struct bpf_func_proto`: arg types, return type, gpl_only). `allowed_helpers(prog_type, caps,
version)` is the set the kernel's `<type>_func_proto` functions return non-NULL for (6.x,
x86_64), restricted to the modelled helpers. A helper the kernel knows but that is not modelled, or not
allowed for the type, is refused with "program of this type cannot use helper".

bpf_loop is modelled up to its callback argument: a callback is an ld_imm64 of a function
(BPF_PSEUDO_FUNC), which the kernel only accepts with BTF func_info, and BTF is not modelled;
so no register can hold a function and the call is refused as the kernel refuses it without
one ("R2 type=scalar expected=func"). Syscall programs get the tracing set; their own helpers
(sys_bpf, btf_find_by_name_kind, sys_close, kallsyms_lookup_name) are not modelled.
"""

from __future__ import annotations

import enum
from typing import Final

import attrs

from bpfsys.abi import BpfFunc as F
from bpfsys.abi import MapType, ProgType
from bpfsys.kversion import KernelVersion, since


class Arg(enum.Enum):
    ANYTHING = "anything"
    MAP_PTR = "map_ptr"
    MAP_KEY = "map_key"
    MAP_VALUE = "map_value"
    UNINIT_MAP_VALUE = "uninit_map_value"
    CTX = "ctx"
    MEM = "mem"  # read-only input memory, size in the next argument
    MEM_OR_NULL = "mem_or_null"
    UNINIT_MEM = "uninit_mem"  # memory the helper writes, size in the next argument
    SIZE = "size"
    SIZE_OR_ZERO = "size_or_zero"
    ALLOC_SIZE_OR_ZERO = "alloc_size_or_zero"
    RINGBUF_MEM = "ringbuf_mem"  # released by the call
    FUNC = "func"  # a callback function (BPF_PSEUDO_FUNC)
    STACK_OR_NULL = "stack_or_null"
    UNINIT_MEM_OR_NULL = "uninit_mem_or_null"  # UNINIT_MEM, or NULL with a size of 0
    CONST_STR = "const_str"  # a NUL-terminated string in a frozen read-only map (const_str.py)


class Ret(enum.Enum):
    INTEGER = "integer"
    VOID = "void"
    MAP_VALUE_OR_NULL = "map_value_or_null"
    RINGBUF_MEM_OR_NULL = "ringbuf_mem_or_null"


@attrs.frozen
class Proto:
    args: tuple[Arg, ...]
    ret: Ret = Ret.INTEGER
    gpl_only: bool = False


A, CTX, MAP, KEY, VAL = Arg.ANYTHING, Arg.CTX, Arg.MAP_PTR, Arg.MAP_KEY, Arg.MAP_VALUE
MEM, UMEM, SZ, SZ0 = Arg.MEM, Arg.UNINIT_MEM, Arg.SIZE, Arg.SIZE_OR_ZERO
_PROBE_READ: Final = Proto((UMEM, SZ0, A), gpl_only=True)

PROTOS: Final[dict[int, Proto]] = {
    F.MAP_LOOKUP_ELEM: Proto((MAP, KEY), Ret.MAP_VALUE_OR_NULL),
    F.MAP_UPDATE_ELEM: Proto((MAP, KEY, VAL, A)),
    F.MAP_DELETE_ELEM: Proto((MAP, KEY)),
    F.MAP_PUSH_ELEM: Proto((MAP, VAL, A)),
    F.MAP_POP_ELEM: Proto((MAP, Arg.UNINIT_MAP_VALUE)),
    F.MAP_PEEK_ELEM: Proto((MAP, Arg.UNINIT_MAP_VALUE)),
    F.MAP_LOOKUP_PERCPU_ELEM: Proto((MAP, KEY, A), Ret.MAP_VALUE_OR_NULL),
    F.PROBE_READ: _PROBE_READ,
    F.PROBE_READ_STR: _PROBE_READ,
    F.PROBE_READ_USER: _PROBE_READ,
    F.PROBE_READ_KERNEL: _PROBE_READ,
    F.PROBE_READ_USER_STR: _PROBE_READ,
    F.PROBE_READ_KERNEL_STR: _PROBE_READ,
    F.KTIME_GET_NS: Proto(()),
    F.KTIME_GET_BOOT_NS: Proto(()),
    F.KTIME_GET_COARSE_NS: Proto(()),
    F.KTIME_GET_TAI_NS: Proto(()),
    F.JIFFIES64: Proto(()),
    F.TRACE_PRINTK: Proto((MEM, SZ), gpl_only=True),
    F.GET_PRANDOM_U32: Proto(()),
    F.GET_SMP_PROCESSOR_ID: Proto(()),
    F.GET_NUMA_NODE_ID: Proto(()),
    F.TAIL_CALL: Proto((CTX, MAP, A)),
    F.GET_CURRENT_PID_TGID: Proto(()),
    F.GET_CURRENT_UID_GID: Proto(()),
    F.GET_CURRENT_COMM: Proto((UMEM, SZ)),
    F.GET_CURRENT_TASK: Proto((), gpl_only=True),
    F.GET_CURRENT_CGROUP_ID: Proto(()),
    F.PERF_EVENT_READ: Proto((MAP, A)),
    F.PERF_EVENT_READ_VALUE: Proto((MAP, A, UMEM, SZ), gpl_only=True),
    F.PERF_PROG_READ_VALUE: Proto((CTX, UMEM, SZ), gpl_only=True),
    F.PERF_EVENT_OUTPUT: Proto((CTX, MAP, A, MEM, SZ0), gpl_only=True),
    F.GET_STACKID: Proto((CTX, MAP, A), gpl_only=True),
    F.GET_STACK: Proto((CTX, UMEM, SZ0, A), gpl_only=True),
    F.SEND_SIGNAL: Proto((A,)),
    F.SEND_SIGNAL_THREAD: Proto((A,)),
    F.GET_FUNC_IP: Proto((CTX,)),
    F.GET_ATTACH_COOKIE: Proto((CTX,)),
    F.SKB_STORE_BYTES: Proto((CTX, A, MEM, SZ, A)),
    F.SKB_LOAD_BYTES: Proto((CTX, A, UMEM, SZ)),
    F.SKB_LOAD_BYTES_RELATIVE: Proto((CTX, A, UMEM, SZ, A)),
    F.L3_CSUM_REPLACE: Proto((CTX, A, A, A, A)),
    F.L4_CSUM_REPLACE: Proto((CTX, A, A, A, A)),
    F.CSUM_DIFF: Proto((Arg.MEM_OR_NULL, SZ0, Arg.MEM_OR_NULL, SZ0, A)),
    F.CSUM_UPDATE: Proto((CTX, A)),
    F.CLONE_REDIRECT: Proto((CTX, A, A)),
    F.REDIRECT: Proto((A, A)),
    F.REDIRECT_MAP: Proto((MAP, A, A)),
    F.GET_CGROUP_CLASSID: Proto((CTX,)),
    F.GET_ROUTE_REALM: Proto((CTX,)),
    F.GET_HASH_RECALC: Proto((CTX,)),
    F.SET_HASH_INVALID: Proto((CTX,)),
    F.SET_HASH: Proto((CTX, A)),
    F.SKB_VLAN_PUSH: Proto((CTX, A, A)),
    F.SKB_VLAN_POP: Proto((CTX,)),
    F.SKB_CHANGE_TAIL: Proto((CTX, A, A)),
    F.SKB_PULL_DATA: Proto((CTX, A)),
    F.GET_SOCKET_COOKIE: Proto((CTX,)),
    F.GET_SOCKET_UID: Proto((CTX,)),
    F.XDP_ADJUST_HEAD: Proto((CTX, A)),
    F.XDP_ADJUST_META: Proto((CTX, A)),
    F.XDP_ADJUST_TAIL: Proto((CTX, A)),
    F.XDP_GET_BUFF_LEN: Proto((CTX,)),
    F.XDP_LOAD_BYTES: Proto((CTX, A, UMEM, SZ)),
    F.XDP_STORE_BYTES: Proto((CTX, A, MEM, SZ)),
    F.RINGBUF_OUTPUT: Proto((MAP, MEM, SZ0, A)),
    F.RINGBUF_RESERVE: Proto((MAP, Arg.ALLOC_SIZE_OR_ZERO, A), Ret.RINGBUF_MEM_OR_NULL),
    F.RINGBUF_SUBMIT: Proto((Arg.RINGBUF_MEM, A), Ret.VOID),
    F.RINGBUF_DISCARD: Proto((Arg.RINGBUF_MEM, A), Ret.VOID),
    F.RINGBUF_QUERY: Proto((MAP, A)),
    F.LOOP: Proto((A, Arg.FUNC, Arg.STACK_OR_NULL, A)),
    F.SNPRINTF: Proto(
        (Arg.UNINIT_MEM_OR_NULL, SZ0, Arg.CONST_STR, Arg.MEM_OR_NULL, SZ0), gpl_only=True
    ),
}
"""The modelled helpers."""

PACKET_WRITERS: Final = frozenset(
    {F.SKB_STORE_BYTES, F.L3_CSUM_REPLACE, F.L4_CSUM_REPLACE, F.CLONE_REDIRECT,
     F.SKB_VLAN_PUSH, F.SKB_VLAN_POP, F.SKB_CHANGE_TAIL, F.SKB_PULL_DATA, F.XDP_ADJUST_HEAD,
     F.XDP_ADJUST_META, F.XDP_ADJUST_TAIL, F.XDP_STORE_BYTES, F.CSUM_UPDATE}
)  # fmt: skip
"""Helpers after which packet pointers are invalid (bpf_helper_changes_pkt_data)."""

_BASE: Final = frozenset(
    {F.MAP_LOOKUP_ELEM, F.MAP_UPDATE_ELEM, F.MAP_DELETE_ELEM, F.MAP_PUSH_ELEM, F.MAP_POP_ELEM,
     F.MAP_PEEK_ELEM, F.MAP_LOOKUP_PERCPU_ELEM, F.GET_PRANDOM_U32, F.GET_SMP_PROCESSOR_ID,
     F.GET_NUMA_NODE_ID, F.TAIL_CALL, F.KTIME_GET_NS, F.KTIME_GET_BOOT_NS, F.KTIME_GET_TAI_NS,
     F.RINGBUF_OUTPUT, F.RINGBUF_RESERVE, F.RINGBUF_SUBMIT, F.RINGBUF_DISCARD, F.RINGBUF_QUERY,
     F.LOOP}
)  # fmt: skip
_BASE_6_10: Final = frozenset({F.GET_CURRENT_PID_TGID})
"""Helpers every program type may call since 6.10."""
_BASE_PERFMON_6_18: Final = frozenset(
    {F.GET_CURRENT_UID_GID, F.GET_CURRENT_COMM, F.GET_CURRENT_CGROUP_ID, F.PERF_EVENT_READ,
     F.PERF_EVENT_READ_VALUE, F.SEND_SIGNAL, F.SEND_SIGNAL_THREAD, F.GET_CGROUP_CLASSID}
)  # fmt: skip
"""Tracing helpers every program type may call with CAP_PERFMON, measured on 6.18 (the
version that moved them into the base set is not known here; modelled from 6.18)."""
_BASE_BPF_CAP: Final = frozenset({F.JIFFIES64})
_BASE_PERFMON: Final = frozenset(
    {F.TRACE_PRINTK, F.GET_CURRENT_TASK, F.PROBE_READ_USER, F.PROBE_READ_KERNEL,
     F.PROBE_READ_USER_STR, F.PROBE_READ_KERNEL_STR, F.SNPRINTF}
)  # fmt: skip
_SK_BASE: Final = frozenset({F.KTIME_GET_COARSE_NS})
_SK_FILTER: Final = frozenset(
    {F.SKB_LOAD_BYTES, F.SKB_LOAD_BYTES_RELATIVE, F.GET_SOCKET_COOKIE, F.GET_SOCKET_UID,
     F.PERF_EVENT_OUTPUT}
)  # fmt: skip
_TC: Final = _SK_FILTER | frozenset(
    {F.SKB_STORE_BYTES, F.SKB_PULL_DATA, F.CSUM_DIFF, F.CSUM_UPDATE, F.L3_CSUM_REPLACE,
     F.L4_CSUM_REPLACE, F.CLONE_REDIRECT, F.GET_CGROUP_CLASSID, F.SKB_VLAN_PUSH, F.SKB_VLAN_POP,
     F.SKB_CHANGE_TAIL, F.REDIRECT, F.GET_ROUTE_REALM, F.GET_HASH_RECALC, F.SET_HASH_INVALID,
     F.SET_HASH}
)  # fmt: skip
_XDP: Final = frozenset(
    {F.PERF_EVENT_OUTPUT, F.CSUM_DIFF, F.XDP_ADJUST_HEAD, F.XDP_ADJUST_META, F.REDIRECT,
     F.REDIRECT_MAP, F.XDP_ADJUST_TAIL, F.XDP_GET_BUFF_LEN, F.XDP_LOAD_BYTES, F.XDP_STORE_BYTES}
)  # fmt: skip
_TRACING: Final = frozenset(
    {F.GET_CURRENT_PID_TGID, F.GET_CURRENT_UID_GID, F.GET_CURRENT_COMM, F.TRACE_PRINTK,
     F.GET_CURRENT_TASK, F.PERF_EVENT_READ, F.PROBE_READ, F.PROBE_READ_STR, F.PROBE_READ_USER,
     F.PROBE_READ_KERNEL, F.PROBE_READ_USER_STR, F.PROBE_READ_KERNEL_STR,
     F.GET_CURRENT_CGROUP_ID, F.SEND_SIGNAL, F.SEND_SIGNAL_THREAD, F.PERF_EVENT_READ_VALUE,
     F.JIFFIES64, F.GET_FUNC_IP}
)  # fmt: skip
_TRACE_OUT: Final = frozenset({F.PERF_EVENT_OUTPUT, F.GET_STACKID, F.GET_STACK})
_SK_SKB: Final = frozenset(
    {F.SKB_STORE_BYTES, F.SKB_LOAD_BYTES, F.SKB_PULL_DATA, F.SKB_CHANGE_TAIL,
     F.GET_SOCKET_COOKIE, F.GET_SOCKET_UID, F.PERF_EVENT_OUTPUT}
)  # fmt: skip
_SK_MSG: Final = frozenset(
    {F.PERF_EVENT_OUTPUT, F.GET_CURRENT_UID_GID, F.GET_CURRENT_PID_TGID, F.GET_CURRENT_CGROUP_ID}
)

TYPE_HELPERS: Final[dict[ProgType, tuple[frozenset[int], bool]]] = {
    ProgType.SOCKET_FILTER: (_SK_FILTER, True),
    ProgType.CGROUP_SKB: (_SK_FILTER, True),
    ProgType.SCHED_CLS: (_TC, True),
    ProgType.SCHED_ACT: (_TC, True),
    ProgType.XDP: (_XDP, True),
    ProgType.KPROBE: (_TRACING | _TRACE_OUT | {F.GET_FUNC_IP, F.GET_ATTACH_COOKIE}, False),
    ProgType.TRACEPOINT: (_TRACING | _TRACE_OUT | {F.GET_ATTACH_COOKIE}, False),
    ProgType.PERF_EVENT: (
        _TRACING | _TRACE_OUT | {F.PERF_PROG_READ_VALUE, F.GET_ATTACH_COOKIE},
        False,
    ),
    ProgType.RAW_TRACEPOINT: (_TRACING | _TRACE_OUT | {F.GET_ATTACH_COOKIE}, False),
    ProgType.SYSCALL: (_TRACING | _TRACE_OUT, False),
    ProgType.SK_SKB: (_SK_SKB, True),
    ProgType.SK_MSG: (_SK_MSG, True),
    ProgType.FLOW_DISSECTOR: (frozenset({F.SKB_LOAD_BYTES}), True),
}
"""Per type: its own helpers, and whether the socket base (bpf_sk_base_func_proto) applies."""


def allowed_helpers(
    prog_type: ProgType, bpf_capable: bool, perfmon: bool, version: KernelVersion
) -> frozenset[int]:
    own, socket = TYPE_HELPERS[prog_type]
    allowed = own | _BASE | (_SK_BASE if socket else frozenset())
    if version >= since("6.10"):
        allowed |= _BASE_6_10
    if bpf_capable:
        allowed |= _BASE_BPF_CAP
    if perfmon:
        allowed |= _BASE_PERFMON
        if version >= since("6.18"):
            allowed |= _BASE_PERFMON_6_18
    return allowed


MAP_FUNCS: Final[dict[int, frozenset[MapType]]] = {
    F.PERF_EVENT_OUTPUT: frozenset({MapType.PERF_EVENT_ARRAY}),
    F.PERF_EVENT_READ: frozenset({MapType.PERF_EVENT_ARRAY}),
    F.PERF_EVENT_READ_VALUE: frozenset({MapType.PERF_EVENT_ARRAY}),
    F.GET_STACKID: frozenset({MapType.STACK_TRACE}),
    F.TAIL_CALL: frozenset({MapType.PROG_ARRAY}),
    F.RINGBUF_OUTPUT: frozenset({MapType.RINGBUF}),
    F.RINGBUF_RESERVE: frozenset({MapType.RINGBUF}),
    F.RINGBUF_QUERY: frozenset({MapType.RINGBUF}),
    F.MAP_PUSH_ELEM: frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER}),
    F.MAP_POP_ELEM: frozenset({MapType.QUEUE, MapType.STACK}),
    F.MAP_PEEK_ELEM: frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER}),
    F.REDIRECT_MAP: frozenset(
        {MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP}
    ),
    F.MAP_LOOKUP_PERCPU_ELEM: frozenset(
        {MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH}
    ),
}
"""Helpers restricted to map types (check_map_func_compatibility, helper side)."""

MAP_ONLY_FUNCS: Final[dict[MapType, frozenset[int]]] = {
    MapType.PERF_EVENT_ARRAY: frozenset(
        {F.PERF_EVENT_READ, F.PERF_EVENT_OUTPUT, F.PERF_EVENT_READ_VALUE, F.SKB_OUTPUT}
    ),
    MapType.RINGBUF: frozenset({F.RINGBUF_OUTPUT, F.RINGBUF_RESERVE, F.RINGBUF_QUERY}),
    MapType.STACK_TRACE: frozenset({F.GET_STACKID}),
    MapType.PROG_ARRAY: frozenset({F.TAIL_CALL}),
    MapType.QUEUE: frozenset({F.MAP_PEEK_ELEM, F.MAP_POP_ELEM, F.MAP_PUSH_ELEM}),
    MapType.STACK: frozenset({F.MAP_PEEK_ELEM, F.MAP_POP_ELEM, F.MAP_PUSH_ELEM}),
    MapType.CGROUP_ARRAY: frozenset({F.SKB_UNDER_CGROUP, F.CURRENT_TASK_UNDER_CGROUP}),
    MapType.DEVMAP: frozenset({F.REDIRECT_MAP, F.MAP_LOOKUP_ELEM}),
    MapType.DEVMAP_HASH: frozenset({F.REDIRECT_MAP, F.MAP_LOOKUP_ELEM}),
    MapType.CPUMAP: frozenset({F.REDIRECT_MAP}),
    MapType.XSKMAP: frozenset({F.REDIRECT_MAP}),
    MapType.SOCKMAP: frozenset(
        {F.SK_REDIRECT_MAP, F.SOCK_MAP_UPDATE, F.MSG_REDIRECT_MAP, F.SK_SELECT_REUSEPORT}
    ),
    MapType.SOCKHASH: frozenset(
        {F.SK_REDIRECT_HASH, F.SOCK_HASH_UPDATE, F.MSG_REDIRECT_HASH, F.SK_SELECT_REUSEPORT}
    ),
}
"""Map types usable only with some helpers (check_map_func_compatibility, map side). Lookups in
XSKMAP and sock maps (which give socket pointers) and sock map updates from programs are not
modelled, so they are refused here."""
