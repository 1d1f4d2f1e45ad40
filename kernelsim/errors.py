"""The simulator's one error type is the kernel's: `OSError` carrying the kernel's errno.

`fail(errno, why)` raises it with a message that says what the simulated kernel objected to;
SimBackend lets it through unchanged, so callers see exactly what the live kernel would give.
"""

from __future__ import annotations

import errno as _errno
import os
from typing import NoReturn

ENOTSUPP = 524
"""The kernel-internal ENOTSUPP (not in Python's errno): some bpf paths return it to users."""


def fail(err: int, why: str) -> NoReturn:
    """Raise the kernel's error `err` with a reason naming the simulated check."""
    name = "ENOTSUPP" if err == ENOTSUPP else _errno.errorcode.get(err, str(err))
    text = "Unknown error 524" if err == ENOTSUPP else os.strerror(err)
    raise OSError(err, f"{text} [{name}: {why}]")
