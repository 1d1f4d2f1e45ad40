"""How the verifier refuses a program: the errno and the kernel's message line."""

from __future__ import annotations


class VerifierError(Exception):
    """The load fails with `errno`; `message` is the kernel's log line (without newline)."""

    def __init__(self, errno: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
