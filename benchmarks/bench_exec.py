"""kernelsim exec: how fast a native program's intercepted calls are answered, and that ring data
is read through the program's own mapping without any call.

A C program (benchmarks/exec_programs/exec_loops.c, built with gcc) does a bare loop of
BPF_MAP_LOOKUP_ELEM calls on an array map, timed inside the program, then maps a ring buffer
and, once the simulated kernel has written records into it, consumes them all by reading the
mapping. Printed: intercepted lookups a second under exec (target: at least 30 000), beside the
same loop answered by a bare responder that simulates nothing (the round trip's floor on this
machine at this moment), on the live kernel (where this process may use bpf()) and on the
in-process SimBackend; the records consumed and the intercepted calls counted meanwhile
(target: none).

    python benchmarks/bench_exec.py [--lookups 50000] [--records 20000]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from bpfsys.abi import BpfCmd, MapCreateAttr, MapElemAttr, MapType
from kernelsim import SimBackend
from kernelsim.exec.launch import launch
from kernelsim.exec.seccomp import native_arch
from kernelsim.exec.session import ExecSession
from kernelsim.maps.ringbuf import RingbufMap, ringbuf_output

SOURCE = Path(__file__).resolve().parent / "exec_programs" / "exec_loops.c"
TARGET_RATE = 30_000


def build(directory: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("bench_exec: needs gcc")
    binary = directory / "exec_loops"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(SOURCE)], check=True)
    return binary


def _line(stream: IO[str]) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()))
    reader.start()
    reader.join(120)
    if not got or not got[0]:
        sys.exit("bench_exec: the program stopped answering")
    return got[0].strip()


def under_exec(binary: Path, lookups: int, records: int) -> tuple[float, int, int, float]:
    """(lookups a second, records consumed, intercepted calls while consuming, seconds)."""
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    session = ExecSession([str(binary), str(lookups)], stdio=(in_read, out_write, None))
    os.close(in_read)
    os.close(out_write)
    thread = session.serve_in_thread()
    with os.fdopen(in_write, "w") as stdin, os.fdopen(out_read) as stdout:
        _, count, seconds = _line(stdout).split()
        rate = int(count) / float(seconds)
        if _line(stdout) != "ring ready":
            sys.exit("bench_exec: no ring")
        with session.lock:
            (ring,) = [o for o in session.fds.objects() if isinstance(o, RingbufMap)]
            for index in range(records):
                if ringbuf_output(session.kernel, ring, index.to_bytes(8, "little")) != 0:
                    sys.exit(f"bench_exec: the ring took only {index} records")
            calls_before = session.stats.calls
        stdin.write("go\n")
        stdin.flush()
        _, consumed, _, consume_seconds = _line(stdout).split()
        calls_during = session.stats.calls - calls_before
    thread.join(60)
    return rate, int(consumed), calls_during, float(consume_seconds)


def floor(binary: Path, lookups: int) -> float:
    """Lookups a second when every intercepted call is answered at once, without simulating
    anything: what the notification round trip itself allows here and now."""
    arch = native_arch()
    stdin_read, stdin_write = os.pipe()
    os.write(stdin_write, b"go\n")
    out_read, out_write = os.pipe()
    launched = launch([str(binary), str(lookups)], stdio=(stdin_read, out_write, out_write))
    for fd in (stdin_read, stdin_write, out_write):
        os.close(fd)
    launched.start()
    listener = launched.listener
    poller = select.epoll()
    poller.register(listener.fd, select.EPOLLIN)
    while not any(events & select.EPOLLHUP for _, events in poller.poll()):
        notification = listener.receive()
        if notification is None:
            continue
        if notification.nr == arch.bpf:  # MAP_CREATE (0) gets an "fd", a lookup 0
            listener.reply_value(notification.id, 3 if notification.args[0] == 0 else 0)
        else:
            listener.reply_continue(notification.id)
    poller.close()
    listener.close()
    os.waitpid(launched.pid, 0)
    with os.fdopen(out_read) as out:
        _, count, seconds = out.readline().split()
    return int(count) / float(seconds)


def live(binary: Path, lookups: int) -> float | None:
    done = subprocess.run(
        [str(binary), str(lookups)], input="go\n", capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        return None
    _, count, seconds = done.stdout.splitlines()[0].split()
    return int(count) / float(seconds)


def in_process(lookups: int) -> float:
    backend = SimBackend()
    create = MapCreateAttr(map_type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1)
    fd = backend.bpf(BpfCmd.MAP_CREATE, create, ctypes.sizeof(create))
    key, value = ctypes.c_uint32(0), ctypes.c_uint64()
    attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(key), value=ctypes.addressof(value))
    size = ctypes.sizeof(attr)
    start = time.perf_counter()
    for _ in range(lookups):
        backend.bpf(BpfCmd.MAP_LOOKUP_ELEM, attr, size)
    rate = lookups / (time.perf_counter() - start)
    backend.kernel.close_all()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=50_000)
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(Path(tmp))
        rate, consumed, calls, seconds = under_exec(binary, args.lookups, args.records)
        bare_rate = floor(binary, args.lookups)
        live_rate = live(binary, args.lookups)
    local_rate = in_process(args.lookups)
    verdict = "ok" if rate >= TARGET_RATE else f"below the {TARGET_RATE} target"
    print(f"intercepted lookups under exec: {rate:,.0f}/s ({verdict})")
    print(f"bare round trips (no simulator): {bare_rate:,.0f}/s (the floor here and now)")
    print(f"in-process SimBackend lookups:  {local_rate:,.0f}/s")
    if live_rate is None:
        print("live kernel lookups:            - (bpf() not permitted here)")
    else:
        print(
            f"live kernel lookups:            {live_rate:,.0f}/s (exec/live {rate / live_rate:.3f})"
        )
    print(
        f"ring: {consumed} records read through the mapping in {seconds * 1e3:.1f} ms, "
        f"{calls} intercepted calls meanwhile ({'ok' if calls == 0 else 'expected none'})"
    )


if __name__ == "__main__":
    main()
