"""Records per second drained from a full perf ring, per consumer API, beside two baselines.

Run: python benchmarks/bench_perf_ring.py [pages]

The ring (`pages` data pages on CPU 0, default 64) is filled once per payload size by a raw
tracepoint program calling bpf_perf_event_output (BPF_PROG_TEST_RUN), until the kernel drops a
record. Each API then drains the same bytes: before every run data_tail is stored back to where
the ring starts, which the kernel allows (it only reads data_tail to find free space), so the
figures measure the consumer alone. Best of REPEATS runs. Columns, in records per second:

  memcpy     one bytes() copy of all the records' bytes (the floor of any consumer)
  naive      a per-record struct.unpack_from loop copying each payload (no validation)
  events     PerfRingReader.read_events into one bytearray per record (Aya's API)
  batch      read_batch + RecordRun.raw_samples: zero-copy payload views, headers checked
  views      read_batch + RecordBatch.records: a zero-copy view per whole record
  typed      records(): a decoded Sample per record

Backends: the live kernel (needs bpf() privilege), and the simulated kernel, whose ring is
filled by the same program once its interpreter has bpf_perf_event_output and until then by
its perf output path (kernelsim.perf.output) directly; a backend that cannot run is reported
and skipped.
"""

from __future__ import annotations

import importlib.util
import mmap
import struct
import sys
import time
from collections.abc import Callable

from bpfsys.abi import DATA_TAIL_OFFSET, BpfFunc
from bpfsys.backend import Backend, LiveBackend
from bpfsys.perf_buffer import PerfRingReader
from kernelsim.backend import SimBackend
from kernelsim.strategies import (
    PerfRingWriter,
    ProgramPerfWriter,
    SimPerfWriter,
    payload,
    program_writer_unavailable,
)

PAYLOADS = (16, 52, 64, 256)
"""Payload bytes; 52 makes 64-byte records (8 header + 4 size + 52)."""
REPEATS = 9
_HEADER = struct.Struct("=IHH")
_U32 = struct.Struct("=I")


def memcpy(reader: PerfRingReader, view: memoryview) -> int:
    bytes(view[: reader.pending()])
    return -1  # no records to count


def naive(reader: PerfRingReader, view: memoryview) -> int:
    data, end, pos, out = view, reader.pending(), 0, []
    while pos < end:
        _, _, size = _HEADER.unpack_from(data, pos)
        raw_size = _U32.unpack_from(data, pos + 8)[0]
        out.append(bytes(data[pos + 12 : pos + 12 + raw_size]))
        pos += size
    return len(out)


def events(reader: PerfRingReader, view: memoryview) -> int:
    buffers = [bytearray() for _ in range(reader.pending() // 16 + 1)]
    return reader.read_events(buffers).read


def batch(reader: PerfRingReader, view: memoryview) -> int:
    with reader.read_batch() as got:
        return sum(len(run.raw_samples()) for run in got.runs)


def views(reader: PerfRingReader, view: memoryview) -> int:
    with reader.read_batch() as got:
        return len(got.records())


def typed(reader: PerfRingReader, view: memoryview) -> int:
    return sum(1 for _ in reader.records())


CONSUMERS: dict[str, Callable[[PerfRingReader, memoryview], int]] = {
    "memcpy": memcpy,
    "naive": naive,
    "events": events,
    "batch": batch,
    "views": views,
    "typed": typed,
}


def fill(writer: PerfRingWriter, length: int) -> int:
    """Write records of `length` payload bytes until the ring is full; the count written."""
    count = 0
    while writer.output(payload(count, length)):
        count += 1
    return count


def make_writer(backend: Backend, pages: int) -> ProgramPerfWriter | SimPerfWriter:
    """A program calling bpf_perf_event_output where the backend runs it, else (the simulated
    kernel without that helper) the simulated kernel's perf output path itself."""
    if isinstance(backend, SimBackend) and program_writer_unavailable(
        backend, BpfFunc.PERF_EVENT_OUTPUT
    ):
        return SimPerfWriter(pages * backend.kernel.config.page_size, backend)
    return ProgramPerfWriter(pages * mmap.PAGESIZE, backend=backend, max_payload=max(PAYLOADS))


def measure(backend: Backend, pages: int, length: int) -> tuple[int, dict[str, float]]:
    writer = make_writer(backend, pages)
    try:
        count = fill(writer, length)
        reader = writer.reader
        start = reader.data_tail
        mapping = memoryview(writer.buffer.mapping)
        data = mapping[len(mapping) - reader.data_size :]
        rates: dict[str, float] = {}
        for name, consume in CONSUMERS.items():
            best = float("inf")
            for _ in range(REPEATS):
                struct.pack_into("=Q", mapping, DATA_TAIL_OFFSET, start)
                began = time.perf_counter()
                got = consume(reader, data)
                best = min(best, time.perf_counter() - began)
                if got >= 0 and got != count:
                    raise AssertionError(f"{name} delivered {got} of {count} records")
            rates[name] = count / best
        data.release()
        mapping.release()
        return count, rates
    finally:
        writer.close()


def backends() -> list[tuple[str, Backend | str]]:
    found: list[tuple[str, Backend | str]] = []
    try:
        found.append(("live", LiveBackend()))
    except OSError as exc:
        found.append(("live", f"unavailable: {exc}"))
    if importlib.util.find_spec("kernelsim.perf.output") is None:
        found.append(("sim", "unavailable: simulated perf ring not built (kernelsim.perf)"))
    else:
        found.append(("sim", SimBackend()))
    return found


def main() -> None:
    pages = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    columns = list(CONSUMERS)
    print(f"perf ring drain, {pages} data pages, records/s (M), best of {REPEATS}")
    print(
        f"{'backend':8}{'payload':>8}{'record':>8}{'records':>9}"
        + "".join(f"{c:>9}" for c in columns)
    )
    for name, backend in backends():
        if isinstance(backend, str):
            print(f"{name:8}{backend}")
            continue
        for length in PAYLOADS:
            try:
                count, rates = measure(backend, pages, length)
            except OSError as exc:
                print(f"{name:8}{length:>8}  failed: {exc}")
                continue
            record = 12 + (length + 4 + 7) // 8 * 8 - 4
            cells = "".join(f"{rates[c] / 1e6:>9.2f}" for c in columns)
            print(f"{name:8}{length:>8}{record:>8}{count:>9}{cells}")


if __name__ == "__main__":
    main()
