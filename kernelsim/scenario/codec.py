"""Structs with the memory they point to: encoded by name, decoded back to exact bytes.

Theory of operation
-------------------
A struct image (a bpf attr, a perf_event_attr, an info struct) is encoded as a JSON object:

* every non-zero field by name, its value shown per `kernelsim.scenario.rules` (enum and flag
  names, fd and id symbols, volatile values); nested structs as objects, unions and byte arrays
  as hex with trailing zeros left out, ``char[]`` as text; bytes past the struct (an attr larger
  than the struct) as ``"tail"`` hex;
* every pointer field (from the struct's ``pointers`` table in `bpfsys.abi`) as ``"*<path>"``
  instead of its address: ``{"len": n, "in": <blob>}`` for memory the kernel reads,
  ``{"len": n}`` for memory it only writes (``"init"`` holds the bytes that were there when they
  were not zero, volatile: a native program's uninitialized buffer differs from run to run),
  ``{"len": n, "fault": "0x..."}`` when the address could not be read (it is passed on as it
  is), ``{"unfollowed": "0x..."}`` when its length cannot be known (a map the
  recording never learned). A struct pointee (OBJ_GET_INFO_BY_FD's ``info``) is itself an
  encoded struct. A top-level pointer is followed whenever it is not NULL; a pointer inside a
  union (link info names) only when its length is not zero, as the kernel does.

`encode_struct` returns the object and the `Slot` of each pointer followed; after the call
`encode_written` reads the slots again (what the kernel wrote) and `encode_changed` lists the
fields the kernel changed. `build_struct` is the inverse of `encode_struct`: the image, with
fresh buffers holding the recorded memory at the pointer fields; `apply_written` and
`apply_changed` write recorded results into a caller's memory (a replay).

Lengths: another field times a constant, a C string (read up to its NUL), the key or value size
of the map behind a map fd (per-CPU values: round_up(value_size, 8) * possible CPUs), a batch
cursor (u32 for hash maps, a key otherwise), or the info struct of the object behind an fd. The
`SymbolTable` knows each fd's kind and map parameters.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any, Final, Protocol

import attrs

from bpfsys.abi import (
    AbiStruct,
    AbiUnion,
    BpfBtfInfo,
    BpfCmd,
    BpfLinkInfo,
    BpfMapInfo,
    BpfProgInfo,
    CString,
    Direction,
    FieldProduct,
    FieldTimes,
    MapBatchToken,
    MapElemAttr,
    MapKeySize,
    MapType,
    MapValueSize,
    ObjectInfo,
    PerfEventAttr,
    PerfSwId,
    PerfType,
    Pointer,
    ProgLoadAttr,
    ProgQueryAttr,
)
from kernelsim.scenario.blob import Form, decode_blob, encode_blob
from kernelsim.scenario.rules import (
    VOLATILE_POINTEES,
    FieldValueError,
    is_volatile,
    kind_of,
    parse,
    render,
    volatile,
)
from kernelsim.scenario.symbols import FdInfo, SymbolTable, is_symbol, kind_of_symbol

PERCPU_MAPS: Final = frozenset(
    {
        MapType.PERCPU_HASH,
        MapType.PERCPU_ARRAY,
        MapType.LRU_PERCPU_HASH,
        MapType.PERCPU_CGROUP_STORAGE,
    }
)
HASH_MAPS: Final = frozenset(
    {
        MapType.HASH,
        MapType.PERCPU_HASH,
        MapType.LRU_HASH,
        MapType.LRU_PERCPU_HASH,
        MapType.HASH_OF_MAPS,
    }
)
FD_VALUE_MAPS: Final[dict[MapType, str]] = {
    MapType.PERF_EVENT_ARRAY: "perf",
    MapType.PROG_ARRAY: "prog",
    MapType.ARRAY_OF_MAPS: "map",
    MapType.HASH_OF_MAPS: "map",
    MapType.CGROUP_ARRAY: "obj",
}
"""Maps whose update value is an fd; a lookup of the last three gives the object's id."""
INFO_OF_KIND: Final[dict[str, type[AbiStruct]]] = {
    "prog": BpfProgInfo,
    "map": BpfMapInfo,
    "link": BpfLinkInfo,
    "btf": BpfBtfInfo,
}
TEXT_POINTERS: Final = frozenset({"log_buf", "btf_log_buf", "name", "tp_name"})
PROBE_PMUS: Final = ("%pmu:kprobe", "%pmu:uprobe")
_PTR = 8


class CodecError(ValueError):
    """An encoded struct that does not decode (unknown field, bad value, bad blob)."""


class Memory(Protocol):
    """User memory of this process (EFAULT as OSError): kernelsim.usermem.ProcessMemory."""

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...

    def read_cstring(self, addr: int, max_len: int) -> tuple[bytes, bool]: ...


@attrs.define
class Context:
    """What encoding needs besides the bytes: symbols, memory, the possible CPUs, the
    command."""

    symbols: SymbolTable
    memory: Memory
    possible_cpus: int
    cmd: BpfCmd | None = None


@attrs.define
class Slot:
    """A pointer field that was followed: where its memory is and what it holds."""

    path: str
    offset: int
    addr: int
    length: int
    direction: Direction
    form: Form = Form.BYTES
    space: str = ""
    struct: type[AbiStruct] | None = None
    volatile: bool = False
    fault: bool = False
    nested: list[Slot] = attrs.Factory(list)

    @property
    def writes(self) -> bool:
        return self.direction is not Direction.IN and not self.fault


# ---------------------------------------------------------------------------------------------
# Field access by dotted path
# ---------------------------------------------------------------------------------------------
def field_at(cls: type[ctypes.Structure | ctypes.Union], path: str) -> tuple[int, int, Any]:
    """(offset, size, ctype) of the field at dotted `path` in `cls` (a part may name a member
    of an anonymous struct or union, as ``raw_tracepoint`` of bpf_link_info's)."""
    offset, current = 0, cls
    ctype: Any = None
    for part in path.split("."):
        descriptor = getattr(current, part)
        offset += descriptor.offset
        ctype = _type_of(current, part)
        current = ctype
        size = descriptor.size
    return offset, size, ctype


def _type_of(cls: Any, name: str) -> Any:
    """The ctype of member `name` of `cls`, looked for in its anonymous members too."""
    types = dict(_fields_of(cls))
    if name in types:
        return types[name]
    for anonymous in getattr(cls, "_anonymous_", ()):
        if hasattr(types[anonymous], name):
            return _type_of(types[anonymous], name)
    raise AttributeError(f"{cls.__name__} has no member {name!r}")


def _fields_of(cls: Any) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    for klass in reversed(cls.__mro__):
        found.extend((name, ctype) for name, ctype, *_ in klass.__dict__.get("_fields_", ()))
    return found


def _int_at(image: bytes | bytearray, offset: int, size: int, signed: bool = False) -> int:
    return int.from_bytes(image[offset : offset + size], "little", signed=signed)


def _is_signed(ctype: Any) -> bool:
    return ctype in (ctypes.c_int8, ctypes.c_int16, ctypes.c_int32, ctypes.c_int64)


def path_value(cls: type[AbiStruct], image: bytes | bytearray, path: str) -> int:
    offset, size, ctype = field_at(cls, path)
    return _int_at(image, offset, size, _is_signed(ctype))


# ---------------------------------------------------------------------------------------------
# Plain fields
# ---------------------------------------------------------------------------------------------
def _perf_render(name: str, value: int, image: bytes | bytearray, ctx: Context) -> Any:
    """perf_event_attr's type and config: names and symbols that depend on the type."""
    if name == "type":
        try:
            return PerfType(value).name
        except ValueError:
            return ctx.symbols.named_symbol("%pmu", value) or value
    kind = _int_at(image, 0, 4)
    if kind == PerfType.TRACEPOINT:
        return ctx.symbols.named_symbol("%tp", value) or value
    if kind == PerfType.SOFTWARE:
        try:
            return PerfSwId(value).name
        except ValueError:
            return value
    return value


def _perf_parse(name: str, value: Any) -> int | None:
    if not isinstance(value, str) or is_symbol(value):
        return None
    table: Any = PerfType if name == "type" else PerfSwId
    try:
        return int(table[value])
    except KeyError:
        raise CodecError(f"{value!r} is not a {table.__name__}") from None


def _text_or_hex(raw: bytes) -> Any:
    body = raw.rstrip(b"\0")
    text = body.decode("ascii", "replace")
    if b"\0" not in body and text.isprintable() and text.encode("ascii", "replace") == body:
        return text
    return {"hex": body.hex()}


def render_fields(
    cls: type[AbiStruct] | type[AbiUnion], image: bytes | bytearray, ctx: Context
) -> dict[str, Any]:
    """The non-zero fields of `image` (exactly sizeof(cls) bytes) by name."""
    out: dict[str, Any] = {}
    for name, ctype, *_ in cls._spec_:
        descriptor = getattr(cls, name)
        raw = bytes(image[descriptor.offset : descriptor.offset + descriptor.size])
        if not any(raw):
            continue
        if isinstance(ctype, type) and issubclass(ctype, AbiStruct):
            out[name] = render_fields(ctype, raw, ctx)
        elif isinstance(ctype, type) and issubclass(ctype, ctypes.Union | ctypes.Array):
            is_text = issubclass(ctype, ctypes.Array) and ctype._type_ is ctypes.c_char  # type: ignore[comparison-overlap]
            out[name] = _text_or_hex(raw) if is_text else raw.rstrip(b"\0").hex()
        else:
            value = int.from_bytes(raw, "little", signed=_is_signed(ctype))
            if cls is PerfEventAttr and name in ("type", "config"):
                out[name] = _perf_render(name, value, image, ctx)
            else:
                out[name] = render(kind_of(cls, name), value, ctx.symbols, ctx.cmd)  # type: ignore[arg-type]
    return out


def _differing_runs(want: bytes | bytearray, got: bytes | bytearray) -> list[list[Any]]:
    runs: list[list[Any]] = []
    index = 0
    while index < len(want):
        if want[index] == got[index]:
            index += 1
            continue
        start = index
        while index < len(want) and want[index] != got[index]:
            index += 1
        runs.append([start, bytes(want[start:index]).hex()])
    return runs


def _keep_padding(
    cls: type[AbiStruct], clean: bytearray, fields: dict[str, Any], ctx: Context
) -> None:
    """Bytes no field covers (struct padding) that are not zero: "padding": [[offset, hex]]."""
    try:
        rebuilt = parse_fields(cls, fields, ctx)
    except CodecError:
        return
    if rebuilt != clean:
        fields["padding"] = _differing_runs(clean, rebuilt)


def parse_fields(
    cls: type[AbiStruct] | type[AbiUnion], fields: dict[str, Any], ctx: Context
) -> bytearray:
    """The sizeof(cls) image of encoded fields (pointer entries, "*...", are skipped)."""
    image = bytearray(ctypes.sizeof(cls))
    types = dict(_fields_of(cls))
    for name, value in fields.items():
        if name.startswith("*") or name in ("tail", "padding"):
            continue
        if name not in types:
            raise CodecError(f"{cls.__name__} has no field {name!r}")
        ctype = types[name]
        descriptor = getattr(cls, name)
        start, size = descriptor.offset, descriptor.size
        if isinstance(ctype, type) and issubclass(ctype, AbiStruct):
            if not isinstance(value, dict):
                raise CodecError(f"{name} must be an object, got {value!r}")
            raw = bytes(parse_fields(ctype, value, ctx))
        elif isinstance(ctype, type) and issubclass(ctype, ctypes.Union | ctypes.Array):
            is_text = issubclass(ctype, ctypes.Array) and ctype._type_ is ctypes.c_char  # type: ignore[comparison-overlap]
            raw = _parse_bytes(name, value, is_text)
        else:
            number: int | None = None
            if cls is PerfEventAttr and name in ("type", "config"):
                number = _perf_parse(name, value)
            if number is None:
                try:
                    number = parse(kind_of(cls, name), value, ctx.symbols, ctx.cmd)  # type: ignore[arg-type]
                except FieldValueError as exc:
                    raise CodecError(f"{cls.__name__}.{name}: {exc}") from None
            raw = (number & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        if len(raw) > size:
            raise CodecError(f"{cls.__name__}.{name}: {len(raw)} bytes do not fit in {size}")
        image[start : start + len(raw)] = raw
    for run in fields.get("padding", []):
        if not isinstance(run, list) or len(run) != 2 or not isinstance(run[0], int):
            raise CodecError(f"padding must be [[offset, hex], ...], got {run!r}")
        data = _parse_bytes("padding", run[1])
        image[run[0] : run[0] + len(data)] = data
    return image


def _parse_bytes(name: str, value: Any, is_text: bool = False) -> bytes:
    """Bytes of a union or array field: hex, or for char[] text; {"hex": ...} for both."""
    try:
        if isinstance(value, dict) and isinstance(value.get("hex"), str):
            return bytes.fromhex(value["hex"])
        if isinstance(value, str):
            return value.encode("ascii") if is_text else bytes.fromhex(value)
    except (ValueError, UnicodeEncodeError):
        pass
    raise CodecError(f"{name}: {value!r} is neither {'text' if is_text else 'hex'}")


# ---------------------------------------------------------------------------------------------
# Pointers
# ---------------------------------------------------------------------------------------------
def pointer_table(
    cls: type[AbiStruct], image: bytes | bytearray, ctx: Context
) -> dict[str, Pointer]:
    """The pointer fields of `cls` for the command at hand; perf_event_attr's config1 is a
    C string (kprobe_func / uprobe_path) when its type is the kprobe or uprobe PMU."""
    if cls is PerfEventAttr:
        kind = _int_at(image, 0, 4)
        if ctx.symbols.named_symbol("%pmu", kind) in PROBE_PMUS:
            return {"config1": Pointer(Direction.IN, CString(4096))}
        return {}
    return cls.pointers_for(ctx.cmd)


def _map_of(
    cls: type[AbiStruct], image: bytes | bytearray, field: str, ctx: Context
) -> FdInfo | None:
    info = ctx.symbols.info_of_fd(path_value(cls, image, field))
    return info if info is not None and info.kind == "map" else None


def pointer_length(
    cls: type[AbiStruct], image: bytes | bytearray, pointer: Pointer, addr: int, ctx: Context
) -> int | None:
    """How many bytes the pointer's memory has; None when it cannot be known."""
    rule = pointer.length
    if isinstance(rule, ObjectInfo):
        rule = rule.length
    match rule:
        case FieldTimes(field, times):
            return path_value(cls, image, field) * times
        case FieldProduct(count_field, size_field):
            return path_value(cls, image, count_field) * path_value(cls, image, size_field)
        case CString(max_len):
            text, terminated = ctx.memory.read_cstring(addr, max_len)
            return len(text) + 1 if terminated else max_len
        case MapKeySize(map_field, count) | MapValueSize(map_field, count):
            info = _map_of(cls, image, map_field, ctx)
            if info is None:
                return None
            size = info.key_size
            if isinstance(rule, MapValueSize):
                size = info.value_size
                if info.map_type in PERCPU_MAPS:
                    size = (size + 7) // 8 * 8 * ctx.possible_cpus
            return size * (1 if count is None else path_value(cls, image, count))
        case MapBatchToken(map_field):
            info = _map_of(cls, image, map_field, ctx)
            if info is None:
                return None
            return 4 if info.map_type in HASH_MAPS else int(info.key_size)
    return None


def _form(
    cls: type[AbiStruct], path: str, pointer: Pointer, image: bytes | bytearray, ctx: Context
) -> tuple[Form, str]:
    """How the memory of pointer `path` is best shown (and the id space of ids)."""
    if cls is ProgLoadAttr and path == "insns":
        return Form.INSNS, ""
    if cls is ProgQueryAttr and path in ("prog_ids", "link_ids"):
        return Form.IDS, path.split("_")[0]
    if cls is BpfProgInfo and path == "map_ids":
        return Form.IDS, "map"
    if cls is MapElemAttr and path == "value":
        info = _map_of(cls, image, "map_fd", ctx)
        space = FD_VALUE_MAPS.get(MapType(info.map_type)) if info is not None else None
        if space is not None and ctx.cmd is BpfCmd.MAP_UPDATE_ELEM:
            return Form.FD, space
        if space in ("prog", "map"):
            return Form.ID, str(space)
    if isinstance(pointer.length, CString) or path.rsplit(".", 1)[-1] in TEXT_POINTERS:
        return Form.TEXT, ""
    return Form.BYTES, ""


def _read(ctx: Context, addr: int, size: int) -> bytes | None:
    try:
        return ctx.memory.read(addr, size)
    except OSError:
        return None


def encode_struct(
    cls: type[AbiStruct], image: bytes | bytearray, ctx: Context
) -> tuple[dict[str, Any], list[Slot]]:
    """The encoded form of an input struct image (any length) and the pointers followed."""
    size = ctypes.sizeof(cls)
    clean = bytearray(bytes(image[:size]).ljust(size, b"\0"))
    slots: list[Slot] = []
    taken: set[int] = set()
    for path, pointer in pointer_table(cls, clean, ctx).items():
        offset, _, _ = field_at(cls, path)
        addr = _int_at(clean, offset, _PTR)
        if not addr or offset in taken:
            continue
        length = pointer_length(cls, clean, pointer, addr, ctx)
        if "." in path and not length:
            continue
        taken.add(offset)
        slots.append(_slot(cls, path, offset, addr, length, pointer, clean, ctx))
    for slot in slots:
        clean[slot.offset : slot.offset + _PTR] = bytes(_PTR)
    fields = render_fields(cls, clean, ctx)
    _keep_padding(cls, clean, fields, ctx)
    tail = bytes(image[size:])
    if any(tail):
        fields["tail"] = tail.rstrip(b"\0").hex()
    for slot in slots:
        fields["*" + slot.path] = encode_slot_in(slot, ctx)
    return fields, slots


def _slot(
    cls: type[AbiStruct],
    path: str,
    offset: int,
    addr: int,
    length: int | None,
    pointer: Pointer,
    image: bytes | bytearray,
    ctx: Context,
) -> Slot:
    form, space = _form(cls, path, pointer, image, ctx)
    struct: type[AbiStruct] | None = None
    if isinstance(pointer.length, ObjectInfo):
        info = ctx.symbols.info_of_fd(path_value(cls, image, pointer.length.fd_field))
        struct = INFO_OF_KIND.get(info.kind) if info is not None else None
    is_volatile_memory = path in VOLATILE_POINTEES.get(cls, frozenset())
    if length is None:
        return Slot(path, offset, addr, -1, pointer.direction, form, space, struct, fault=True)
    direction = pointer.direction
    return Slot(path, offset, addr, length, direction, form, space, struct, is_volatile_memory)


def encode_slot_in(slot: Slot, ctx: Context) -> dict[str, Any]:
    if slot.length < 0:
        return {"unfollowed": hex(slot.addr)}
    data = _read(ctx, slot.addr, slot.length)
    if data is None:
        slot.fault = True
        return {"len": slot.length, "fault": hex(slot.addr)}
    out: dict[str, Any] = {"len": slot.length}
    if slot.struct is not None:
        out["in"], slot.nested = encode_struct(slot.struct, data, ctx)
    elif slot.direction is Direction.OUT:
        if any(data):
            out["init"] = volatile(encode_blob(data, slot.form, ctx.symbols, slot.space))
    else:
        out["in"] = encode_blob(data, slot.form, ctx.symbols, slot.space)
    return out


def _mask(value: Any, is_volatile_memory: bool) -> Any:
    return volatile(value) if is_volatile_memory else value


def encode_written(slots: Sequence[Slot], ctx: Context) -> dict[str, Any]:
    """What the kernel left in the memory of each pointer it may write (after the call)."""
    out: dict[str, Any] = {}
    for slot in slots:
        if not slot.writes or slot.length < 0:
            continue
        data = _read(ctx, slot.addr, slot.length)
        if data is None:
            out["*" + slot.path] = {"fault": hex(slot.addr)}
            continue
        if slot.struct is not None:
            out["*" + slot.path] = _encode_struct_out(slot.struct, data, slot.nested, ctx)
        else:
            blob = encode_blob(data, slot.form, ctx.symbols, slot.space)
            out["*" + slot.path] = _mask(blob, slot.volatile)
    return out


def _encode_struct_out(
    cls: type[AbiStruct], data: bytes, nested: Sequence[Slot], ctx: Context
) -> dict[str, Any]:
    size = ctypes.sizeof(cls)
    clean = bytearray(data[:size].ljust(size, b"\0"))
    for slot in nested:
        clean[slot.offset : slot.offset + _PTR] = bytes(_PTR)
    fields = render_fields(cls, clean, ctx)
    if any(data[size:]):
        fields["tail"] = data[size:].rstrip(b"\0").hex()
    fields.update(encode_written(nested, ctx))
    return fields


def encode_changed(
    cls: type[AbiStruct], before: bytes, after: bytes, ctx: Context
) -> dict[str, Any]:
    """The top-level fields whose bytes the call changed, with their new values."""
    size = ctypes.sizeof(cls)
    before_image = before[:size].ljust(size, b"\0")
    after_image = after[:size].ljust(size, b"\0")
    shown = render_fields(cls, after_image, ctx)
    changed: dict[str, Any] = {}
    for name, _, *_ in cls._spec_:
        descriptor = getattr(cls, name)
        window = slice(descriptor.offset, descriptor.offset + descriptor.size)
        if before_image[window] != after_image[window]:
            changed[name] = shown.get(name, 0)
    if before[size:] != after[size:]:
        changed["tail"] = after[size:].rstrip(b"\0").hex()
    return changed


# ---------------------------------------------------------------------------------------------
# Decoding: build the memory of a call, write recorded results
# ---------------------------------------------------------------------------------------------
class Buffers:
    """ctypes buffers kept alive while a rebuilt call runs."""

    def __init__(self) -> None:
        self._held: list[ctypes.Array[ctypes.c_char]] = []

    def new(self, data: bytes, size: int) -> int:
        buf = ctypes.create_string_buffer(data.ljust(size, b"\0"), max(size, 1))
        self._held.append(buf)
        return ctypes.addressof(buf)


def _address(text: Any) -> int:
    if not isinstance(text, str):
        raise CodecError(f"an address must be a hex string, got {text!r}")
    try:
        return int(text, 16)
    except ValueError:
        raise CodecError(f"an address must be a hex string, got {text!r}") from None


def build_struct(
    cls: type[AbiStruct], fields: dict[str, Any], length: int, ctx: Context, buffers: Buffers
) -> bytearray:
    """The `length`-byte image of encoded `fields`, pointers aimed at new buffers that hold
    the recorded memory."""
    if not isinstance(fields, dict):
        raise CodecError(f"{cls.__name__} must be an object, got {fields!r}")
    image = parse_fields(cls, fields, ctx)
    tail = fields.get("tail", "")
    image += _parse_bytes("tail", tail) if tail else b""
    for key, spec in fields.items():
        if not key.startswith("*"):
            continue
        offset, _, _ = field_at(cls, key[1:])
        address = build_pointer(cls, key[1:], spec, fields, ctx, buffers)
        image[offset : offset + _PTR] = address.to_bytes(_PTR, "little")
    return bytearray(bytes(image[:length]).ljust(length, b"\0"))


def build_pointer(
    cls: type[AbiStruct],
    path: str,
    spec: Any,
    fields: dict[str, Any],
    ctx: Context,
    buffers: Buffers,
) -> int:
    if not isinstance(spec, dict):
        raise CodecError(f"*{path} must be an object, got {spec!r}")
    if "unfollowed" in spec:
        return _address(spec["unfollowed"])
    if "fault" in spec:
        return _address(spec["fault"])
    length = spec.get("len")
    if not isinstance(length, int) or length < 0:
        raise CodecError(f"*{path} needs a length, got {spec!r}")
    content: Any = spec.get("in", spec.get("init"))
    if is_volatile(content):
        content = content["volatile"]
    if content is None:
        return buffers.new(b"", length)
    if isinstance(content, dict) and not _is_blob(content):
        struct = _pointee(cls, path, fields, ctx)
        return buffers.new(bytes(build_struct(struct, content, length, ctx, buffers)), length)
    return buffers.new(decode_blob(content, ctx.symbols), length)


def _is_blob(value: dict[str, Any]) -> bool:
    return bool({"hex", "text", "fd", "id", "ids", "insns"} & set(value))


def _pointee(
    cls: type[AbiStruct], path: str, fields: dict[str, Any], ctx: Context
) -> type[AbiStruct]:
    """The info struct a struct-valued pointer holds: that of the kind of the fd beside it."""
    pointer = cls.pointers_for(ctx.cmd).get(path)
    if pointer is None or not isinstance(pointer.length, ObjectInfo):
        raise CodecError(f"*{path} of {cls.__name__} does not point to a struct")
    name = fields.get(pointer.length.fd_field)
    info = ctx.symbols.info(name) if isinstance(name, str) else None
    kind = info.kind if info is not None else kind_of_symbol(name)
    struct = INFO_OF_KIND.get(kind) if kind is not None else None
    if struct is None:
        field = pointer.length.fd_field
        raise CodecError(f"*{path}: {field}={name!r} is no prog, map, link or btf fd")
    return struct


def apply_changed(
    cls: type[AbiStruct], changed: dict[str, Any], target: memoryview, ctx: Context
) -> None:
    """Write recorded changed fields into the caller's struct image `target`."""
    size = ctypes.sizeof(cls)
    image = parse_fields(cls, {k: v for k, v in changed.items() if k != "tail"}, ctx)
    for name in changed:
        if name == "tail":
            tail = _parse_bytes("tail", changed["tail"])
            end = min(len(target), size + len(tail))
            target[size:end] = tail[: end - size]
            continue
        descriptor = getattr(cls, name)
        start, stop = descriptor.offset, min(descriptor.offset + descriptor.size, len(target))
        target[start:stop] = image[start:stop]


def apply_written(slots: Sequence[Slot], written: dict[str, Any], ctx: Context) -> None:
    """Write recorded pointee contents into the caller's memory behind `slots`."""
    for slot in slots:
        value = written.get("*" + slot.path)
        if value is None or not slot.writes or slot.length < 0:
            continue
        if is_volatile(value):
            value = value["volatile"]
        if slot.struct is not None:
            _apply_struct(slot, value, ctx)
            continue
        data = decode_blob(value, ctx.symbols)
        ctx.memory.write(slot.addr, data[: slot.length])


def _apply_struct(slot: Slot, value: dict[str, Any], ctx: Context) -> None:
    assert slot.struct is not None
    current = bytearray(ctx.memory.read(slot.addr, slot.length))
    image = parse_fields(slot.struct, value, ctx)
    tail = value.get("tail", "")
    image += _parse_bytes("tail", tail) if tail else b""
    image = bytearray(bytes(image[: slot.length]).ljust(slot.length, b"\0"))
    for nested in slot.nested:
        image[nested.offset : nested.offset + _PTR] = current[nested.offset : nested.offset + _PTR]
    ctx.memory.write(slot.addr, bytes(image))
    apply_written(slot.nested, value, ctx)
