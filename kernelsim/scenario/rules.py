"""How each field of each struct is shown in a scenario, and which values are volatile.

Theory of operation
-------------------
A field's `Kind` says how its integer is written: an enum member's name (``"HASH"``), flag
names (``["NO_PREALLOC", "RDONLY"]``, with any unnamed bits as a trailing number), an fd or an
object id as a symbol (`kernelsim.scenario.symbols`), a volatile value, or the plain number.
Fields not listed are plain numbers; ``char[]`` fields are text, byte arrays hex.

Volatile values are those that legitimately differ between two runs of the same calls, on the
same kernel or another: they are written ``{"volatile": <value seen>}`` and compare equal to any
other volatile value. The rules (docs/scenarios.md lists them with the reasons):

* PROG_TEST_RUN ``duration`` (wall-clock time);
* prog info ``load_time`` and ``run_time_ns`` (clock), ``netns_dev``/``netns_ino`` of every
  info struct (the machine's namespace), and everything the JIT produced: ``jited_prog_len``,
  ``nr_jited_ksyms``, ``nr_jited_func_lens``, ``nr_jited_line_info``,
  ``jited_line_info_rec_size`` and the memory behind ``jited_*`` pointers (kernel addresses and
  machine code);
* ``/proc/sys/kernel/osrelease`` (the release string; the header records the kernel);
* in a perf ring, the header page's self-monitoring words (lock, index, offset, the time
  fields, capabilities), and a sample's ``time``, ``pid``/``tid`` and ``ip`` fields.

Pointer fields never show their address: the memory behind them is written instead (see
`kernelsim.scenario.codec`).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import attrs

from bpfsys.abi import (
    AbiStruct,
    AttachFlag,
    AttachType,
    BpfBtfInfo,
    BpfCmd,
    BpfLinkInfo,
    BpfMapInfo,
    BpfProgInfo,
    BtfLoadAttr,
    EnableStatsAttr,
    GetIdAttr,
    InfoByFdAttr,
    IterCreateAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkType,
    LinkUpdateAttr,
    MapBatchAttr,
    MapCreateAttr,
    MapElemAttr,
    MapFlag,
    MapType,
    ObjPinAttr,
    PerfAttrFlag,
    PerfEventAttr,
    ProgAttachAttr,
    ProgBindMapAttr,
    ProgFlag,
    ProgLoadAttr,
    ProgQueryAttr,
    ProgType,
    RawTracepointOpenAttr,
    ReadFormat,
    SampleType,
    StatsType,
    TestRunAttr,
    TestRunFlag,
    UpdateFlag,
)
from kernelsim.scenario.symbols import SymbolTable, is_symbol


@attrs.frozen
class EnumKind:
    enum_type: type[enum.IntEnum]


@attrs.frozen
class FlagKind:
    flag_type: type[enum.IntFlag]


@attrs.frozen
class FdKind:
    pass


@attrs.frozen
class IdKind:
    """An object id; `space` None: the id space of the command (GET_NEXT_ID, GET_FD_BY_ID)."""

    space: str | None


@attrs.frozen
class VolatileKind:
    pass


Kind = EnumKind | FlagKind | FdKind | IdKind | VolatileKind

FD: Final = FdKind()
VOLATILE: Final = VolatileKind()

FIELD_KINDS: Final[dict[type[AbiStruct], dict[str, Kind]]] = {
    MapCreateAttr: {
        "map_type": EnumKind(MapType),
        "map_flags": FlagKind(MapFlag),
        "inner_map_fd": FD,
        "btf_fd": FD,
        "value_type_btf_obj_fd": FD,
        "map_token_fd": FD,
    },
    MapElemAttr: {"map_fd": FD, "flags": FlagKind(UpdateFlag)},
    MapBatchAttr: {"map_fd": FD, "elem_flags": FlagKind(UpdateFlag)},
    ProgLoadAttr: {
        "prog_type": EnumKind(ProgType),
        "expected_attach_type": EnumKind(AttachType),
        "prog_flags": FlagKind(ProgFlag),
        "prog_btf_fd": FD,
        "attach_prog_fd": FD,
        "prog_token_fd": FD,
    },
    ObjPinAttr: {"bpf_fd": FD, "file_flags": FlagKind(MapFlag), "path_fd": FD},
    ProgAttachAttr: {
        "target_fd": FD,
        "attach_bpf_fd": FD,
        "attach_type": EnumKind(AttachType),
        "attach_flags": FlagKind(AttachFlag),
        "replace_bpf_fd": FD,
        "relative_fd": FD,
    },
    TestRunAttr: {"prog_fd": FD, "flags": FlagKind(TestRunFlag), "duration": VOLATILE},
    GetIdAttr: {"start_id": IdKind(None), "next_id": IdKind(None), "open_flags": FlagKind(MapFlag)},
    InfoByFdAttr: {"bpf_fd": FD},
    ProgQueryAttr: {
        "target_fd": FD,
        "attach_type": EnumKind(AttachType),
        "attach_flags": FlagKind(AttachFlag),
    },
    RawTracepointOpenAttr: {"prog_fd": FD},
    BtfLoadAttr: {"btf_token_fd": FD},
    LinkCreateAttr: {"prog_fd": FD, "target_fd": FD, "attach_type": EnumKind(AttachType)},
    LinkUpdateAttr: {
        "link_fd": FD,
        "new_prog_fd": FD,
        "old_prog_fd": FD,
        "flags": FlagKind(AttachFlag),
    },
    LinkDetachAttr: {"link_fd": FD},
    EnableStatsAttr: {"type": EnumKind(StatsType)},
    IterCreateAttr: {"link_fd": FD},
    ProgBindMapAttr: {"prog_fd": FD, "map_fd": FD},
    BpfProgInfo: {
        "type": EnumKind(ProgType),
        "id": IdKind("prog"),
        "jited_prog_len": VOLATILE,
        "load_time": VOLATILE,
        "netns_dev": VOLATILE,
        "netns_ino": VOLATILE,
        "nr_jited_ksyms": VOLATILE,
        "nr_jited_func_lens": VOLATILE,
        "btf_id": IdKind("btf"),
        "nr_jited_line_info": VOLATILE,
        "jited_line_info_rec_size": VOLATILE,
        "run_time_ns": VOLATILE,
        "attach_btf_obj_id": IdKind("btf"),
    },
    BpfMapInfo: {
        "type": EnumKind(MapType),
        "id": IdKind("map"),
        "map_flags": FlagKind(MapFlag),
        "netns_dev": VOLATILE,
        "netns_ino": VOLATILE,
        "btf_id": IdKind("btf"),
    },
    BpfLinkInfo: {"type": EnumKind(LinkType), "id": IdKind("link"), "prog_id": IdKind("prog")},
    BpfBtfInfo: {"id": IdKind("btf")},
    PerfEventAttr: {
        "sample_type": FlagKind(SampleType),
        "read_format": FlagKind(ReadFormat),
        "flags": FlagKind(PerfAttrFlag),
    },
}

VOLATILE_POINTEES: Final[dict[type[AbiStruct], frozenset[str]]] = {
    BpfProgInfo: frozenset(
        {"jited_prog_insns", "jited_ksyms", "jited_func_lens", "jited_line_info"}
    )
}
"""Pointer fields whose memory is volatile (JIT output)."""

ID_SPACE_OF_COMMAND: Final[dict[BpfCmd, str]] = {
    BpfCmd.PROG_GET_NEXT_ID: "prog",
    BpfCmd.PROG_GET_FD_BY_ID: "prog",
    BpfCmd.MAP_GET_NEXT_ID: "map",
    BpfCmd.MAP_GET_FD_BY_ID: "map",
    BpfCmd.LINK_GET_NEXT_ID: "link",
    BpfCmd.LINK_GET_FD_BY_ID: "link",
    BpfCmd.BTF_GET_NEXT_ID: "btf",
    BpfCmd.BTF_GET_FD_BY_ID: "btf",
}


class FieldValueError(ValueError):
    """A field value in a file that does not fit its kind."""


def volatile(value: Any) -> dict[str, Any]:
    return {"volatile": value}


def is_volatile(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"volatile"}


def kind_of(struct: type[AbiStruct], field: str) -> Kind | None:
    return FIELD_KINDS.get(struct, {}).get(field)


def _space(kind: IdKind, cmd: BpfCmd | None) -> str:
    if kind.space is not None:
        return kind.space
    return ID_SPACE_OF_COMMAND.get(cmd, "obj") if cmd is not None else "obj"


def render(kind: Kind | None, value: int, symbols: SymbolTable, cmd: BpfCmd | None) -> Any:
    """The JSON of a non-zero field value of `kind`."""
    match kind:
        case EnumKind(enum_type):
            try:
                return enum_type(value).name
            except ValueError:
                return value
        case FlagKind(flag_type):
            names: list[str | int] = []
            rest = value
            for member in flag_type:
                bit = int(member)
                if bit and bit & (bit - 1) == 0 and rest & bit and member.name:
                    names.append(member.name)
                    rest &= ~bit
            return [*names, rest] if rest else names
        case FdKind():
            name = symbols.fd_symbol(value)
            return value if name is None else name
        case IdKind():
            return symbols.id_symbol(_space(kind, cmd), value)
        case VolatileKind():
            return volatile(value)
    return value


def parse(kind: Kind | None, value: Any, symbols: SymbolTable, cmd: BpfCmd | None) -> int:
    """The integer of a field's JSON (FieldValueError when it does not fit the kind)."""
    if isinstance(value, bool):
        raise FieldValueError(f"{value!r} is not a field value")
    if isinstance(value, int):
        return value
    if is_volatile(value) and isinstance(value["volatile"], int):
        return int(value["volatile"])
    if isinstance(value, str) and is_symbol(value):
        if value.startswith("$"):
            found = symbols.fd_of(value)
        elif value.startswith("@"):
            found = symbols.id_of(value)
        else:
            found = symbols.named_value(value)
        from kernelsim.scenario.blob import UNRESOLVED_FD

        return UNRESOLVED_FD if found is None else found
    match kind:
        case EnumKind(enum_type) if isinstance(value, str):
            try:
                return int(enum_type[value])
            except KeyError:
                raise FieldValueError(f"{value!r} is not a {enum_type.__name__}") from None
        case FlagKind(flag_type) if isinstance(value, list):
            total = 0
            for item in value:
                if isinstance(item, int) and not isinstance(item, bool):
                    total |= item
                elif isinstance(item, str) and item in flag_type.__members__:
                    total |= int(flag_type[item])
                else:
                    raise FieldValueError(f"{item!r} is not a {flag_type.__name__}")
            return total
    raise FieldValueError(f"{value!r} is not a value for this field")
