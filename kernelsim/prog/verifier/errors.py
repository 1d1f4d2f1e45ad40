"""How the verifier refuses a program: the errno and the kernel's message line."""

from __future__ import annotations


class VerifierError(Exception):
    """The load fails with `errno`; `message` is the kernel's log line (without newline);
    `trailer` is what the kernel logs after that line (whole lines, e.g. the states of an
    infinite loop)."""

    def __init__(self, errno: int, message: str, trailer: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.message = message
        self.trailer = trailer
