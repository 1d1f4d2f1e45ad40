"""bpf_trace_printk and bpf_snprintf: formatted text (format rules in kernelsim.helpers.bprintf).

trace_printk(fmt, fmt_size, a1, a2, a3): the format must hold a NUL within fmt_size bytes
(-EINVAL); at most three conversions (-EINVAL beyond); the message (cut to 511 bytes, the
kernel's 512-byte buffer) goes to the trace buffer (`TraceBuffer`, as the current task on the
run's CPU) and to tracefs trace_pipe; the result is the message's full length.

snprintf(str, str_size, fmt, data, data_len): data_len not a multiple of 8, above 12 * 8, or
non-zero with data NULL is -EINVAL; the format is checked against data_len / 8 arguments; the
output is cut to str_size - 1 bytes plus a NUL (nothing written for str_size 0); the result is
the full length plus one (the NUL), whatever was cut.
"""

from __future__ import annotations

import errno
from typing import Final

from bpfsys.abi import BpfFunc
from kernelsim.helpers.bprintf import MAX_BPRINTF_BUF, BprintfError, bprintf
from kernelsim.helpers.common import current_of, kernel_of, write_out
from kernelsim.helpers.memory import (
    TASK_SIZE_MAX,
    SimulatedMemory,
    kernel_address_ok,
    user_range_ok,
)
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import RunEnv
from kernelsim.prog.interpreter.trace_buffer import TraceBuffer, TraceEvent
from kernelsim.tracefs import Tracefs

MAX_TRACE_PRINTK_VARARGS: Final = 3
MAX_BPRINTF_VARARGS: Final = 12


class _Reader:
    """The string and IP-address reads of the format (bpf_trace_copy_string)."""

    def __init__(self, env: RunEnv) -> None:
        kernel = kernel_of(env)
        self.memory = kernel.subsystem(SimulatedMemory)
        self.page_size = kernel.config.page_size

    def string(self, kind: str, address: int, limit: int) -> bytes | None:
        user = kind == "u" or (kind == "s" and address < TASK_SIZE_MAX)
        if user and not user_range_ok(address, limit):
            return None
        if not user and not kernel_address_ok(address, self.page_size):
            return None
        text, faulted = self.memory.read_string(address, limit, user=user)
        return None if faulted else text.rstrip(b"\0")

    def ip(self, address: int, size: int) -> bytes | None:
        if not kernel_address_ok(address, self.page_size):
            return None
        return self.memory.read(address, size, user=False)


def _format(env: RunEnv, fmt: bytes, args: list[int]) -> bytes:
    reader = _Reader(env)
    return bprintf(fmt, args, reader.string, reader.ip)


@kernel_helper(BpfFunc.TRACE_PRINTK)
def trace_printk(env: RunEnv, fmt: int, fmt_size: int, a1: int, a2: int, a3: int) -> int:
    kernel = kernel_of(env)
    raw = env.space.read_bytes(fmt, fmt_size & 0xFFFFFFFF) if fmt_size else b""
    if b"\0" not in raw:
        return -errno.EINVAL
    try:
        message = _format(env, raw[: raw.index(b"\0")], [a1, a2, a3])
    except BprintfError as error:
        return -error.errno
    task = current_of(env).task
    shown = message[: MAX_BPRINTF_BUF - 1]
    kernel.subsystem(TraceBuffer).append(
        TraceEvent(kernel.now_ns, env.cpu, task.pid, task.comm, shown)
    )
    kernel.subsystem(Tracefs).trace_printk(shown, env.cpu, pid=task.pid, comm=task.comm)
    return len(message)


@kernel_helper(BpfFunc.SNPRINTF)
def snprintf(env: RunEnv, out: int, out_size: int, fmt: int, data: int, data_len: int) -> int:
    data_len &= 0xFFFFFFFF
    out_size &= 0xFFFFFFFF
    if data_len % 8 or data_len > MAX_BPRINTF_VARARGS * 8 or (data_len and not data):
        return -errno.EINVAL
    raw = env.space.read_bytes(data, data_len) if data_len else b""
    args = [int.from_bytes(raw[i : i + 8], "little") for i in range(0, data_len, 8)]
    fmt_bytes = bytearray()
    while (byte := env.space.read_bytes(fmt + len(fmt_bytes), 1)) != b"\0":
        fmt_bytes += byte
    try:
        text = _format(env, bytes(fmt_bytes), args)
    except BprintfError as error:
        return -error.errno
    if out_size:
        write_out(env, out, text[: out_size - 1] + b"\0")
    return len(text) + 1
