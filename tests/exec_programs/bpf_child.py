"""A native program for the kernelsim exec tests: Python running bpfsys on its live backend.

usage: python bpf_child.py [--drop] SNIPPET_FILE

Everything is imported first; with --drop the process then becomes uid/gid 65534 with no
capabilities (so a bpf() call that reached the live kernel would fail with EPERM); then the
snippet runs with `backend` (a LiveBackend), `bpf`, `abi`, `os`, `ctypes`, `errno`, `fcntl`,
`mmap`, `resource`, `select`, `socket`, `struct`, `termios` and `say` (print and flush) in
scope. Under `kernelsim exec` each of those calls is the simulated kernel's.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import resource
import select
import socket
import struct
import sys
import termios

from bpfsys import abi, bpf
from bpfsys.backend import LiveBackend


def say(*parts: object) -> None:
    print(*parts, flush=True)


def main() -> None:
    args = sys.argv[1:]
    drop = args[:1] == ["--drop"]
    if drop:
        args = args[1:]
    with open(args[0]) as source:
        snippet = compile(source.read(), args[0], "exec")
    backend = LiveBackend()
    if drop:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    scope = {
        "backend": backend,
        "bpf": bpf,
        "abi": abi,
        "os": os,
        "ctypes": ctypes,
        "errno": errno,
        "fcntl": fcntl,
        "resource": resource,
        "termios": termios,
        "mmap": mmap,
        "select": select,
        "socket": socket,
        "struct": struct,
        "say": say,
    }
    exec(snippet, scope)


if __name__ == "__main__":
    main()
