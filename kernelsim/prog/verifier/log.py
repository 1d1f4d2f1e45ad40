"""The verifier log: the kernel's struct bpf_verifier_log, sans-IO.

Theory of operation
-------------------
The verifier writes text with `write`, remembers positions (`end_pos`) and cuts the log back to
one with `reset` (level 1 keeps only the path that failed: a branch that verified is cut off
again). The log keeps the whole logical text; what reaches the caller's buffer is decided at the
end by `finalize`, with the kernel's rules:

- 6.4 and later, rotating (default): the buffer keeps the *last* log_size-1 bytes; with
  BPF_LOG_FIXED (level bit 8) the *first* log_size-1 bytes. Either way NUL-terminated.
  `true_size` (written back as log_true_size) is the largest end position the log reached,
  plus the NUL, even if a later reset made the text shorter. A log that did not fit gives
  ENOSPC, whether the program verified or not. A log level without a buffer is allowed (only
  true_size is computed).
- Before 6.4: always "fixed", log_size must be at least 128, level and buffer go together.

`check_attr` applies bpf_vlog_init's EINVAL rules for the profile.
"""

from __future__ import annotations

import errno
from typing import Final

import attrs

from kernelsim.prog.verifier.errors import VerifierError

LOG_LEVEL1: Final = 1
LOG_LEVEL2: Final = 2
LOG_STATS: Final = 4
LOG_FIXED: Final = 8
LOG_MIN_SIZE_OLD: Final = 128
"""log_size minimum before 6.4."""
LOG_SIZE_MAX: Final = 0xFFFFFFFF >> 2


@attrs.frozen
class LogResult:
    """What finalize hands to the syscall: bytes for the buffer, true size, and an errno."""

    text: bytes | None
    """NUL-terminated contents for log_buf (None: nothing to write)."""
    true_size: int
    error: int | None


class VerifierLog:
    """The log of one load (see the module docstring)."""

    def __init__(self, level: int, has_buf: bool, size: int, modern: bool) -> None:
        self.level = level
        self.has_buf = has_buf
        self.size = size
        self.modern = modern
        self.rotating = modern and not level & LOG_FIXED
        self._text = bytearray()
        self._start = 0
        self._len_max = 0

    @staticmethod
    def check_attr(level: int, buf: int, size: int, modern: bool) -> None:
        """bpf_vlog_init: EINVAL for log attributes that do not go together."""
        if modern:
            if bool(buf) != bool(size):
                raise VerifierError(errno.EINVAL, "log_buf and log_size must come together")
            if buf and level == 0:
                raise VerifierError(errno.EINVAL, "log_buf without log_level")
            if level & ~(LOG_LEVEL1 | LOG_LEVEL2 | LOG_STATS | LOG_FIXED):
                raise VerifierError(errno.EINVAL, f"unknown log_level bits {level:#x}")
            if size > LOG_SIZE_MAX:
                raise VerifierError(errno.EINVAL, f"log_size {size} too large")
            return
        if (level or buf or size) and (
            size < LOG_MIN_SIZE_OLD
            or size > LOG_SIZE_MAX
            or not level
            or not buf
            or level & ~(LOG_LEVEL1 | LOG_LEVEL2 | LOG_STATS)
        ):
            raise VerifierError(errno.EINVAL, "log attributes invalid for this kernel")

    @property
    def enabled(self) -> bool:
        """Whether anything is logged at all (bpf_verifier_log_needed)."""
        return self.level != 0 and (self.has_buf or self.modern)

    @property
    def trace(self) -> bool:
        """Whether the instruction trace is logged (level 1 or 2)."""
        return self.enabled and bool(self.level & (LOG_LEVEL1 | LOG_LEVEL2))

    @property
    def level2(self) -> bool:
        return self.enabled and bool(self.level & LOG_LEVEL2)

    @property
    def end_pos(self) -> int:
        return len(self._text)

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        self._text += text.encode()
        end = len(self._text)
        self._len_max = max(self._len_max, end + 1)
        if self.rotating and end + 1 - self._start >= self.size:
            self._start = end + 1 - self.size

    def reset(self, pos: int) -> None:
        if not self.enabled or pos > len(self._text):
            return
        del self._text[pos:]
        self._start = min(self._start, pos)

    def last_byte(self) -> int:
        return self._text[-1] if self._text else 0

    def finalize(self) -> LogResult:
        if not self.enabled:
            return LogResult(None, 0, None)
        keep = max(self.size - 1, 0)
        if self.rotating:
            content = bytes(self._text[self._start :])[-keep:] if keep else b""
        else:
            content = bytes(self._text[:keep])
        truncated = self._len_max > self.size if self.modern else len(self._text) >= keep
        if not self.has_buf:
            return LogResult(None, self._len_max, None)
        return LogResult(content + b"\0", self._len_max, errno.ENOSPC if truncated else None)
