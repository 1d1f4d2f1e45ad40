"""bpf_probe_read_user / _kernel, their _str forms, and the legacy probe_read / probe_read_str.

Theory of operation
-------------------
Each copies from `SimulatedMemory` (kernelsim.helpers.memory, which also states the address
rules) into the program's buffer, as kernel/trace/bpf_trace.c does (x86_64):

* user (copy_from_user_nofault): a range outside user space or a byte that cannot be read is
  -EFAULT; 0 on success (size 0 reads nothing: 0);
* kernel (copy_from_kernel_nofault): an address that is not a kernel address is -ERANGE, even
  for size 0; a byte that cannot be read -EFAULT; 0 on success;
* user_str (strncpy_from_user_nofault): size 0 is 0; a range [addr, addr + size) outside user
  space -EFAULT; the string up to and including its NUL is copied and its length with the NUL
  returned; with no NUL in size bytes, size bytes are copied, the last replaced by NUL, and
  size returned; a fault before the NUL is -EFAULT;
* kernel_str (strncpy_from_kernel_nofault): size 0 is 0; a non-kernel address -ERANGE; then as
  user_str;
* legacy probe_read / probe_read_str (bpf_probe_read_compat): an address below TASK_SIZE is
  read as user memory, any other as kernel memory.
On any error the whole destination (size bytes) is zeroed. User strings are copied a word
(8 bytes) at a time while 8 or more bytes remain, the word holding the NUL with the bytes after
it zeroed (measured: "hello world" into 16 bytes leaves 5 zero bytes after the NUL), the rest a
byte at a time; kernel strings byte by byte; the bytes after the copy are left as they were.
"""

from __future__ import annotations

import errno

from bpfsys.abi import BpfFunc
from kernelsim.helpers.common import kernel_of, write_out
from kernelsim.helpers.memory import (
    TASK_SIZE_MAX,
    SimulatedMemory,
    kernel_address_ok,
    user_range_ok,
)
from kernelsim.prog.interpreter.helpers import kernel_helper
from kernelsim.prog.interpreter.runtime import RunEnv

U32: int = 0xFFFFFFFF


def _memory(env: RunEnv) -> SimulatedMemory:
    return kernel_of(env).subsystem(SimulatedMemory)


def _fail(env: RunEnv, dst: int, size: int, err: int) -> int:
    write_out(env, dst, bytes(size))
    return -err


def read_memory(env: RunEnv, dst: int, size: int, src: int, *, user: bool) -> int:
    """bpf_probe_read_user_common / bpf_probe_read_kernel_common."""
    size &= U32
    if user:
        if not user_range_ok(src, size):
            return _fail(env, dst, size, errno.EFAULT)
    elif not kernel_address_ok(src, kernel_of(env).config.page_size):
        return _fail(env, dst, size, errno.ERANGE)
    data = _memory(env).read(src, size, user=user)
    if data is None:
        return _fail(env, dst, size, errno.EFAULT)
    write_out(env, dst, data)
    return 0


def read_string(env: RunEnv, dst: int, size: int, src: int, *, user: bool) -> int:
    """bpf_probe_read_user_str_common / bpf_probe_read_kernel_str_common."""
    size &= U32
    if not size:
        return 0
    if user:
        if not user_range_ok(src, size):
            return _fail(env, dst, size, errno.EFAULT)
    elif not kernel_address_ok(src, kernel_of(env).config.page_size):
        return _fail(env, dst, size, errno.ERANGE)
    text, faulted = _memory(env).read_string(src, size, user=user)
    if faulted:
        return _fail(env, dst, size, errno.EFAULT)
    if not text.endswith(b"\0"):
        text = text[:-1] + b"\0"
    written = text
    if user and len(text) <= size // 8 * 8:
        written = text.ljust(-(-len(text) // 8) * 8, b"\0")  # the NUL's word, masked
    write_out(env, dst, written)
    return len(text)


@kernel_helper(BpfFunc.PROBE_READ_USER)
def probe_read_user(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_memory(env, dst, size, src, user=True)


@kernel_helper(BpfFunc.PROBE_READ_KERNEL)
def probe_read_kernel(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_memory(env, dst, size, src, user=False)


@kernel_helper(BpfFunc.PROBE_READ_USER_STR)
def probe_read_user_str(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_string(env, dst, size, src, user=True)


@kernel_helper(BpfFunc.PROBE_READ_KERNEL_STR)
def probe_read_kernel_str(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_string(env, dst, size, src, user=False)


@kernel_helper(BpfFunc.PROBE_READ)
def probe_read(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_memory(env, dst, size, src, user=src < TASK_SIZE_MAX)


@kernel_helper(BpfFunc.PROBE_READ_STR)
def probe_read_str(env: RunEnv, dst: int, size: int, src: int, r4: int, r5: int) -> int:
    return read_string(env, dst, size, src, user=src < TASK_SIZE_MAX)
