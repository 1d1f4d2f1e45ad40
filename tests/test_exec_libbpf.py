"""kernelsim exec acceptance: a libbpf program (tests/exec_programs/events.c, built here with gcc
against libbpf-dev; its BPF object events.bpf.c with clang) loads a tracepoint program, attaches
it, and consumes events with perf_buffer__poll and ring_buffer__poll while the test fires the
tracepoint: on the live kernel as root (the test calls getpid), on the simulator as uid 65534
(the test calls kernel.fire_tracepoint). A burst larger than both rings arrives while the
program does not read, then one more event: every event that fit arrives once and in order, and
the lost counts (PERF_RECORD_LOST for the perf ring, failed bpf_ringbuf_output calls for the
ring buffer) are what the kernel dropped. Both runs print the same report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import pytest
from exec_support import LINE_TIMEOUT_S, NOBODY, PROGRAMS, Running, need_exec, shared_dir

from kernelsim.pytest_plugin import live_unavailable_reason

BURST: Final = 300
"""More than one perf data page (170 records of 24 bytes) and the 4 KiB ring buffer (255 records
of 16 bytes) hold."""
TRACEPOINT: Final = "syscalls/sys_enter_getpid"


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    need_exec()
    clang, gcc = shutil.which("clang"), shutil.which("gcc")
    if clang is None or gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("needs clang, gcc and libbpf-dev (apt-get install clang libbpf-dev)")
    directory = shared_dir()
    machine_include = f"-I/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(
        [clang, "-O2", "-g", "-target", "bpf", machine_include, "-c",
         str(PROGRAMS / "events.bpf.c"), "-o", str(directory / "events.bpf.o")],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [gcc, "-O2", "-Wall", "-o", str(directory / "events"), str(PROGRAMS / "events.c"),
         "-lbpf"],
        check=True,
    )  # fmt: skip
    for path in directory.iterdir():
        path.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


class _Program:
    """The two ways of talking to events.c: lines out, lines in."""

    def __init__(self, line: Callable[[], str], send: Callable[[str], None]) -> None:
        self.line = line
        self.send = send


def _scenario(program: _Program, fire: Callable[[int], None]) -> list[str]:
    """The protocol of events.c; the report lines."""
    assert program.line() == "ready"
    fire(BURST)
    program.send(f"burst {BURST}")
    drained = program.line()
    assert drained.startswith("drained"), drained
    fire(1)
    program.send("trailer")
    return [program.line() for _ in range(3)]


def _argv(built: Path) -> list[str]:
    return [str(built / "events"), str(built / "events.bpf.o"), str(os.getpid()), "1"]


def run_simulated(built: Path) -> list[str]:
    running = Running(_argv(built), user=NOBODY, merge_stderr=False)

    def fire(count: int) -> None:
        with running.session.lock:
            for _ in range(count):
                running.kernel.fire_tracepoint(TRACEPOINT, cpu=0, pid=os.getpid())

    report = _scenario(_Program(running.line, running.send), fire)
    code, rest = running.finish()
    assert code == 0, rest
    assert running.kernel.live_objects() == {}, "every object goes with the program"
    return report


def run_live(built: Path) -> list[str]:
    reason = live_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    child = subprocess.Popen(_argv(built), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout

    def line() -> str:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(stdout.readline()))
        reader.start()
        reader.join(LINE_TIMEOUT_S)
        assert got, "no line from the program"
        return got[0].rstrip("\n")

    def send(text: str) -> None:
        stdin.write(text + "\n")
        stdin.flush()

    def fire(count: int) -> None:
        for _ in range(count):
            os.getpid()  # glibc does not cache it: one sys_enter_getpid each

    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})  # every event on CPU 0's perf ring, as the simulator fires
    try:
        report = _scenario(_Program(line, send), fire)
    finally:
        os.sched_setaffinity(0, affinity)
    stdin.close()
    assert child.wait(LINE_TIMEOUT_S) == 0
    stdout.close()
    return report


EXPECTED: Final = [
    "perf received 171 lost 130 seqs 0-169,300-300",
    "ring received 256 dropped 45 seqs 0-254,300-300",
    "duplicates 0 out_of_order 0",
]
"""The report, as measured on the live kernel (6.18, x86_64, 4 KiB pages): one perf data page
holds 170 samples of 24 bytes, the 4 KiB ring buffer 255 records of 16 bytes."""


def test_simulated_perf_buffer_and_ring_buffer_events_and_losses(built: Path) -> None:
    assert run_simulated(built) == EXPECTED


def test_the_live_kernel_reports_the_same(built: Path) -> None:
    assert run_live(built) == EXPECTED
