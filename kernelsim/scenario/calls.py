"""Each backend call as a scenario event: its request, its results, and the way back.

Theory of operation
-------------------
An event is a JSON object with ``"op"`` (bpf, perf_event_open, ioctl, mmap, munmap, close,
read_file, write_file, poll) and the call's arguments, decoded (`request`); the results are
added under the `RESULT_KEYS`:

* ``"ret"``: the return value: a number, the symbol of a new fd (``"$map1"``) or mapping
  (``"%mmap1"``), a list of fd symbols (poll); ``"errno"``: the error name instead
  (``"ENOENT"``), when the call failed;
* ``"changed"``: the fields of the attr (or perf_event_attr) the kernel wrote back;
* ``"written"``: what the kernel left in memory behind pointers (``"*value"``, ``"*info"``,
  ``"*arg"``), including after a failure (logs, batch counts);
* ``"object"``: the kind (and map parameters) of an fd the call returned that the request does
  not tell (OBJ_GET, *_GET_FD_BY_ID), learned by asking the kernel;
* ``"content"``: the bytes read_file returned.

`CallCodec` turns live arguments into a request (`*_request`, which also returns what the
result needs: the attr's bytes before the call and the pointers followed), results into their
JSON (`result`), JSON back into arguments (`rebuild`: a fresh attr image whose pointers aim at
buffers holding the recorded memory) and recorded results back into a caller's memory
(`apply`). The recorder, the replay backend and `replay_against` all use it, so a call is
encoded the same way wherever it is seen.
"""

from __future__ import annotations

import ctypes
import errno as errno_names
import mmap
from collections.abc import Callable
from typing import Any, Final

import attrs

from bpfsys.abi import (
    ATTR_OF_COMMAND,
    PERF_FLAG_FD_CLOEXEC,
    PERF_FLAG_FD_NO_GROUP,
    PERF_FLAG_FD_OUTPUT,
    PERF_FLAG_PID_CGROUP,
    AbiStruct,
    BpfCmd,
    CString,
    Direction,
    FieldTimes,
    MapType,
    PerfAttrFlag,
    PerfEventAttr,
    PerfIoctl,
    Pointer,
)
from kernelsim.scenario.blob import UNRESOLVED_FD, Form
from kernelsim.scenario.codec import (
    Buffers,
    Context,
    Slot,
    apply_changed,
    apply_written,
    build_pointer,
    build_struct,
    encode_changed,
    encode_slot_in,
    encode_struct,
    encode_written,
)
from kernelsim.scenario.rules import EnumKind, parse, render
from kernelsim.scenario.symbols import FdInfo, SymbolTable, is_symbol

RESULT_KEYS: Final = frozenset({"ret", "errno", "changed", "written", "object", "content"})
CALL_OPS: Final = (
    "bpf",
    "perf_event_open",
    "ioctl",
    "mmap",
    "munmap",
    "close",
    "read_file",
    "write_file",
    "poll",
)
FD_OF_COMMAND: Final[dict[BpfCmd, str]] = {
    BpfCmd.MAP_CREATE: "map",
    BpfCmd.PROG_LOAD: "prog",
    BpfCmd.OBJ_GET: "obj",
    BpfCmd.PROG_GET_FD_BY_ID: "prog",
    BpfCmd.MAP_GET_FD_BY_ID: "map",
    BpfCmd.LINK_GET_FD_BY_ID: "link",
    BpfCmd.BTF_GET_FD_BY_ID: "btf",
    BpfCmd.RAW_TRACEPOINT_OPEN: "link",
    BpfCmd.BTF_LOAD: "btf",
    BpfCmd.LINK_CREATE: "link",
    BpfCmd.ENABLE_STATS: "stats",
    BpfCmd.ITER_CREATE: "iter",
    BpfCmd.TOKEN_CREATE: "token",
}
"""Commands that return a new fd, and its kind ("obj": to be learned)."""
LEARNED: Final = frozenset(
    {
        BpfCmd.OBJ_GET,
        BpfCmd.MAP_GET_FD_BY_ID,
        BpfCmd.PROG_GET_FD_BY_ID,
        BpfCmd.LINK_GET_FD_BY_ID,
        BpfCmd.BTF_GET_FD_BY_ID,
    }
)
"""Commands whose new fd is described by an "object" entry."""
PERF_OPEN_FLAGS: Final = {
    "FD_NO_GROUP": PERF_FLAG_FD_NO_GROUP,
    "FD_OUTPUT": PERF_FLAG_FD_OUTPUT,
    "PID_CGROUP": PERF_FLAG_PID_CGROUP,
    "FD_CLOEXEC": PERF_FLAG_FD_CLOEXEC,
}
PROT_NAMES: Final = {"READ": mmap.PROT_READ, "WRITE": mmap.PROT_WRITE, "EXEC": mmap.PROT_EXEC}
MAP_NAMES: Final = {"SHARED": mmap.MAP_SHARED, "PRIVATE": mmap.MAP_PRIVATE}
IOCTL_POINTERS: Final[dict[PerfIoctl, Pointer]] = {
    PerfIoctl.PERIOD: Pointer(Direction.IN, FieldTimes("", 8)),
    PerfIoctl.SET_FILTER: Pointer(Direction.IN, CString(4096)),
    PerfIoctl.ID: Pointer(Direction.OUT, FieldTimes("", 8)),
    PerfIoctl.QUERY_BPF: Pointer(Direction.INOUT, FieldTimes("ids_len", 4)),
    PerfIoctl.MODIFY_ATTRIBUTES: Pointer(Direction.IN, FieldTimes("size")),
}
"""Perf ioctls whose argument is a pointer: its memory (QUERY_BPF: 8 bytes of
perf_event_query_bpf, then ids_len u32 ids; MODIFY_ATTRIBUTES: a perf_event_attr of its size)."""
IOCTL_FDS: Final = frozenset({PerfIoctl.SET_BPF, PerfIoctl.SET_OUTPUT})
"""Perf ioctls whose argument is an fd."""

Learn = Callable[[int, str], FdInfo]
"""Asks the kernel what an fd just returned is (the fd, the kind the command tells)."""


class EventError(ValueError):
    """A recorded event that does not decode."""


def errno_name(err: int) -> str | int:
    name = errno_names.errorcode.get(err)
    return err if name is None else name


def errno_value(name: Any) -> int:
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if isinstance(name, str) and hasattr(errno_names, name):
        return int(getattr(errno_names, name))
    if name == "ENOTSUPP":
        return 524
    raise EventError(f"unknown errno {name!r}")


def errno_of(err: int) -> str | int:
    """The name of an errno (ENOTSUPP, 524, is kernel-internal and has none in Python)."""
    return "ENOTSUPP" if err == 524 else errno_name(err)


def names_of(value: int, table: dict[str, int]) -> list[str | int]:
    names: list[str | int] = [name for name, bit in table.items() if bit and value & bit == bit]
    rest = value
    for name in names:
        rest &= ~table[str(name)]
    return [*names, rest] if rest else names


def value_of(names: Any, table: dict[str, int]) -> int:
    if isinstance(names, int) and not isinstance(names, bool):
        return names
    if not isinstance(names, list):
        raise EventError(f"flags must be a list of names, got {names!r}")
    total = 0
    for name in names:
        if isinstance(name, int) and not isinstance(name, bool):
            total |= name
        elif isinstance(name, str) and name in table:
            total |= table[name]
        else:
            raise EventError(f"unknown flag {name!r} (known: {', '.join(table)})")
    return total


def byte_view(buf: Any) -> memoryview:
    view = memoryview(buf)
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def map_info_of(attr_fields: dict[str, Any]) -> FdInfo:
    """The FdInfo of a map created with these (encoded) MAP_CREATE fields."""
    kind = EnumKind(MapType)
    table = SymbolTable()
    return FdInfo(
        "map",
        parse(kind, attr_fields.get("map_type", 0), table, None),
        int(attr_fields.get("key_size", 0)),
        int(attr_fields.get("value_size", 0)),
    )


def object_json(info: FdInfo) -> dict[str, Any]:
    """The "object" entry of an fd: its kind, and a map's type and sizes."""
    out: dict[str, Any] = {"kind": info.kind}
    if info.kind == "map":
        out["map_type"] = render(EnumKind(MapType), info.map_type, SymbolTable(), None)
        out["key_size"] = info.key_size
        out["value_size"] = info.value_size
    return out


def object_info(value: Any) -> FdInfo:
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise EventError(f"object must be {{'kind': ...}}, got {value!r}")
    if value["kind"] == "map":
        return map_info_of(value)
    return FdInfo(value["kind"])


@attrs.define
class Pending:
    """A request being made: what its result needs."""

    event: dict[str, Any]
    struct: type[AbiStruct] | None = None
    view: memoryview | None = None
    before: bytes = b""
    slots: list[Slot] = attrs.Factory(list)
    fd_kind: str | None = None
    new_info: FdInfo | None = None


class CallCodec:
    """Encodes and decodes calls against one symbol table (see the module docstring)."""

    def __init__(self, symbols: SymbolTable, memory: Any, possible_cpus: int) -> None:
        self.symbols = symbols
        self.memory = memory
        self.possible_cpus = possible_cpus

    def context(self, cmd: BpfCmd | None = None) -> Context:
        return Context(self.symbols, self.memory, self.possible_cpus, cmd)

    def fd_json(self, fd: int) -> str | int:
        return self.symbols.fd_symbol(fd) or fd

    def fd_value(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.startswith("$"):
            found = self.symbols.fd_of(value)
            return UNRESOLVED_FD if found is None else found
        raise EventError(f"an fd must be a symbol or a number, got {value!r}")

    # -- requests -----------------------------------------------------------------------------
    def bpf_request(self, cmd: int, attr: Any, size: int) -> Pending:
        view = byte_view(attr)
        image = bytes(view[: max(0, size)])
        try:
            command: BpfCmd | None = BpfCmd(cmd)
        except ValueError:
            command = None
        struct = ATTR_OF_COMMAND.get(command) if command is not None else None
        event: dict[str, Any] = {"op": "bpf", "cmd": cmd if command is None else command.name}
        event["size"] = size
        pending = Pending(event, struct, view, image)
        if struct is None:
            event["attr"] = image.hex()
            return pending
        fields, pending.slots = encode_struct(struct, image, self.context(command))
        event["attr"] = fields
        pending.fd_kind = FD_OF_COMMAND.get(command) if command is not None else None
        if command is BpfCmd.MAP_CREATE:
            pending.new_info = map_info_of(fields)
        return pending

    def perf_open_request(
        self, attr: Any, pid: int, cpu: int, group_fd: int, flags: int
    ) -> Pending:
        view = byte_view(attr)
        image = bytes(view)
        fields, slots = encode_struct(PerfEventAttr, image, self.context())
        event: dict[str, Any] = {"op": "perf_event_open", "attr": fields}
        if len(image) != ctypes.sizeof(PerfEventAttr):
            event["len"] = len(image)
        event["pid"] = pid
        event["cpu"] = cpu
        event["group_fd"] = self.fd_json(group_fd) if group_fd >= 0 else group_fd
        if flags:
            event["flags"] = names_of(flags, PERF_OPEN_FLAGS)
        attr_struct = PerfEventAttr.from_buffer_copy(
            image.ljust(ctypes.sizeof(PerfEventAttr), b"\0")[: ctypes.sizeof(PerfEventAttr)]
        )
        info = FdInfo(
            "perf",
            sample_type=int(attr_struct.sample_type),
            sample_id_all=bool(attr_struct.flags & PerfAttrFlag.SAMPLE_ID_ALL),
        )
        return Pending(event, PerfEventAttr, view, image, slots, "perf", info)

    def _ioctl_slot(self, request: int, arg: int) -> Slot | None:
        try:
            which = PerfIoctl(request)
        except ValueError:
            return None
        pointer = IOCTL_POINTERS.get(which)
        if pointer is None or not arg:
            return None
        length: int
        try:
            if isinstance(pointer.length, CString):
                text, done = self.memory.read_cstring(arg, pointer.length.max_len)
                length = len(text) + 1 if done else pointer.length.max_len
            elif which is PerfIoctl.QUERY_BPF:
                length = 8 + 4 * int.from_bytes(self.memory.read(arg, 4), "little")
            elif which is PerfIoctl.MODIFY_ATTRIBUTES:
                length = int.from_bytes(self.memory.read(arg + 4, 4), "little")
            else:
                length = pointer.length.times if isinstance(pointer.length, FieldTimes) else 8
        except OSError:
            length = 0
        form = Form.TEXT if which is PerfIoctl.SET_FILTER else Form.BYTES
        if which is PerfIoctl.ID:
            form = Form.ID
        return Slot("arg", 0, arg, length, pointer.direction, form, "perf")

    def ioctl_request(self, fd: int, request: int, arg: int) -> Pending:
        try:
            name: str | int = PerfIoctl(request).name
        except ValueError:
            name = request
        event: dict[str, Any] = {"op": "ioctl", "fd": self.fd_json(fd), "request": name}
        slot = self._ioctl_slot(request, arg)
        pending = Pending(event)
        if slot is not None:
            event["*arg"] = encode_slot_in(slot, self.context())
            pending.slots = [slot]
        elif isinstance(name, str) and PerfIoctl[name] in IOCTL_FDS and arg >= 0:
            event["arg"] = self.fd_json(arg)
        else:
            event["arg"] = arg
        return pending

    def mmap_request(self, fd: int, length: int, prot: int, flags: int, offset: int) -> Pending:
        event = {
            "op": "mmap",
            "fd": self.fd_json(fd),
            "length": length,
            "prot": names_of(prot, PROT_NAMES),
            "flags": names_of(flags, MAP_NAMES),
            "offset": offset,
        }
        info = self.symbols.info_of_fd(fd)
        ring = "raw"
        if info is not None and info.kind == "perf":
            ring = "perf"
        elif info is not None and info.kind == "map" and info.map_type == MapType.RINGBUF:
            ring = "ringbuf_producer" if offset else "ringbuf_consumer"
        event["ring"] = ring
        return Pending(event)

    def simple_request(self, op: str, **arguments: Any) -> Pending:
        return Pending({"op": op, **arguments})

    # -- results ------------------------------------------------------------------------------
    def result(
        self,
        pending: Pending,
        ret: int | None,
        error: OSError | None,
        learn: Learn | None = None,
        expected_symbol: str | None = None,
    ) -> dict[str, Any]:
        """The results of a bpf, perf_event_open or ioctl call (binding any new fd)."""
        out: dict[str, Any] = {}
        cmd = _command(pending.event)
        if error is not None:
            out["errno"] = errno_of(error.errno or 0)
        elif ret is not None and pending.fd_kind is not None:
            info = pending.new_info or FdInfo(pending.fd_kind)
            if cmd in LEARNED and learn is not None:
                info = learn(ret, pending.fd_kind)
                out["object"] = object_json(info)
            out["ret"] = self.symbols.new_fd(ret, info, expected_symbol)
        else:
            out["ret"] = ret
        ctx = self.context(cmd)
        if pending.struct is not None and pending.view is not None:
            after = bytes(pending.view[: len(pending.before)])
            changed = encode_changed(pending.struct, pending.before, after, ctx)
            if changed:
                out["changed"] = changed
        elif pending.view is not None:
            after = bytes(pending.view[: len(pending.before)])
            if after != pending.before:
                out["changed"] = {"attr": after.hex()}
        written = encode_written(pending.slots, ctx)
        if written:
            out["written"] = written
        return out

    # -- rebuilding a recorded call -----------------------------------------------------------
    def rebuild_bpf(self, event: dict[str, Any], buffers: Buffers) -> tuple[int, bytearray]:
        cmd = _command(event)
        size = event.get("size")
        if not isinstance(size, int) or size < 0:
            raise EventError(f"size must be a non-negative number, got {size!r}")
        attr = event.get("attr")
        struct = ATTR_OF_COMMAND.get(cmd) if cmd is not None else None
        raw_cmd = int(cmd) if cmd is not None else event.get("cmd")
        if not isinstance(raw_cmd, int):
            raise EventError(f"unknown command {event.get('cmd')!r}")
        if struct is None:
            if not isinstance(attr, str):
                raise EventError("the attr of an unknown command must be hex")
            return raw_cmd, bytearray(bytes.fromhex(attr).ljust(size, b"\0"))
        if not isinstance(attr, dict):
            raise EventError(f"attr must be an object, got {attr!r}")
        image = build_struct(struct, attr, max(size, 0), self.context(cmd), buffers)
        return raw_cmd, image

    def rebuild_perf_attr(self, event: dict[str, Any], buffers: Buffers) -> bytearray:
        attr = event.get("attr")
        if not isinstance(attr, dict):
            raise EventError(f"attr must be an object, got {attr!r}")
        length = event.get("len", ctypes.sizeof(PerfEventAttr))
        if not isinstance(length, int) or length < 0:
            raise EventError(f"len must be a number, got {length!r}")
        return build_struct(PerfEventAttr, attr, length, self.context(), buffers)

    def rebuild_ioctl_arg(self, event: dict[str, Any], buffers: Buffers) -> int:
        if "*arg" in event:
            spec = event["*arg"]
            return build_pointer(PerfEventAttr, "arg", spec, {}, self.context(), buffers)
        value = event.get("arg", 0)
        if isinstance(value, str) and is_symbol(value):
            return self.fd_value(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise EventError(f"arg must be a number, an fd symbol or *arg, got {value!r}")

    # -- applying recorded results (replay) ---------------------------------------------------
    def apply(self, pending: Pending, recorded: dict[str, Any]) -> None:
        """Write the recorded "changed" and "written" into the caller's memory."""
        ctx = self.context(_command(pending.event))
        changed = recorded.get("changed")
        if isinstance(changed, dict) and pending.view is not None:
            if pending.struct is not None:
                apply_changed(pending.struct, changed, pending.view, ctx)
            elif isinstance(changed.get("attr"), str):
                data = bytes.fromhex(changed["attr"])
                pending.view[: len(data)] = data
        written = recorded.get("written")
        if isinstance(written, dict):
            apply_written(pending.slots, written, ctx)


def _command(event: dict[str, Any]) -> BpfCmd | None:
    if event.get("op") != "bpf":
        return None
    name = event.get("cmd")
    if isinstance(name, str):
        try:
            return BpfCmd[name]
        except KeyError:
            raise EventError(f"unknown bpf command {name!r}") from None
    if isinstance(name, int) and not isinstance(name, bool):
        try:
            return BpfCmd(name)
        except ValueError:
            return None
    raise EventError(f"cmd must be a command name or number, got {name!r}")


def request_of(event: dict[str, Any]) -> dict[str, Any]:
    """The request part of an event (without its results)."""
    return {k: v for k, v in event.items() if k not in RESULT_KEYS}


def result_of(event: dict[str, Any]) -> dict[str, Any]:
    """The results part of an event."""
    return {k: v for k, v in event.items() if k in RESULT_KEYS}
