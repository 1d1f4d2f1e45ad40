"""Simulator steps and expectations: the hand-written events of a scenario.

Steps (``{"op": "step", "step": ...}``) make the simulated kernel do what a test needs and no
system call does:

* ``{"step": "tick", "ns": 1000}``: advance the virtual clock;
* ``{"step": "perf_output", "fd": "$perf1", "raw": "<hex>", "cpu": 0}``: one
  bpf_perf_event_output-style sample carrying `raw` into the ring of the perf event
  (`kernelsim.perf.output.perf_output`); an optional ``"ret"`` is the value it must return
  (0, or a negative errno such as -28 when the ring drops it);
* ``{"step": "fire_tracepoint", "tracepoint": "syscalls/sys_enter_getpid", "args": {...}}``:
  hit a tracepoint, running what is attached (`kernel.fire_tracepoint(name, **args)`, where the
  simulator has it; a clear StepUnavailable where it does not).

Each needs a simulated kernel (a backend with ``.kernel``): on another backend the step is a
difference, not a crash. A `ReplayBackend` (no kernel) skips steps: their effects are in the
ring events that follow them, when there are any.

Expectations (``{"op": "expect", ...}``) are checked against the backend's state when they
come; only the keys written are compared, so volatile fields are simply left out:

* ``{"ring": "%mmap1", "records": [{"type": "SAMPLE", "raw": "<hex>"}, ...]}``: the unread
  records of a mapping (as `kernelsim.scenario.rings.ring_view` shows them);
* ``{"ring": "%mmap1", "lost": 3}``: the sum of the lost counts of its unread LOST records;
* ``{"map": "$map1", "contents": {"<key hex>": "<value hex>", ...}}``: every element of a map
  (walked with GET_NEXT_KEY and LOOKUP_ELEM on the backend, per-CPU values whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from bpfsys import bpf
from bpfsys.backend import Backend
from kernelsim.scenario.calls import CallCodec
from kernelsim.scenario.codec import PERCPU_MAPS

if TYPE_CHECKING:
    from kernelsim.scenario.against import Difference, _Replayer

STEPS: Final = ("tick", "perf_output", "fire_tracepoint")
EXPECTATIONS: Final = ("records", "lost", "contents")


def _kernel(backend: Backend, step: str) -> Any:
    from kernelsim.scenario.against import StepUnavailable

    kernel = getattr(backend, "kernel", None)
    if kernel is None:
        raise StepUnavailable(
            f"step {step!r} needs the simulated kernel, not {type(backend).__name__}"
        )
    return kernel


def run_step(backend: Backend, codec: CallCodec, event: dict[str, Any]) -> Any:
    """Take one step on the backend's simulated kernel; its result (perf_output's return)."""
    from kernelsim.scenario.against import StepUnavailable

    name = event["step"]
    kernel = _kernel(backend, str(name))
    if name == "tick":
        return kernel.advance(int(event["ns"])) and None
    if name == "perf_output":
        from kernelsim.perf.output import perf_output

        fd = codec.fd_value(event["fd"])
        cpu = event.get("cpu")
        try:
            return perf_output(kernel, fd, bytes.fromhex(event["raw"]), cpu=cpu)
        except OSError as exc:
            raise StepUnavailable(f"perf_output on {event['fd']}: {exc}") from None
    if name == "fire_tracepoint":
        fire = getattr(kernel, "fire_tracepoint", None)
        if fire is None:
            raise StepUnavailable(
                "the simulated kernel has no fire_tracepoint yet (kernel.fire_tracepoint)"
            )
        args = event.get("args", {})
        return fire(str(event["tracepoint"]), **args)
    raise ValueError(f"unknown step {name!r} (known: {', '.join(STEPS)})")


def map_contents(backend: Backend, fd: int, key_size: int, value_size: int) -> dict[str, str]:
    """Every element of the map `fd`: key hex -> value hex."""
    out: dict[str, str] = {}
    key: bytes | None = None
    while True:
        key = bpf.map_get_next_key(fd, key, key_size, backend=backend)
        if key is None or key.hex() in out:
            return out
        value = bpf.map_lookup_elem(fd, key, value_size, backend=backend)
        if value is not None:
            out[key.hex()] = value.hex()


def check_expectation(replayer: _Replayer, event: dict[str, Any]) -> list[Difference]:
    from kernelsim.scenario.against import Difference, compare, compare_given

    if "ring" in event:
        mapped = replayer.mapped.get(str(event["ring"]))
        if mapped is None:
            return [Difference("ring", event["ring"], "not mapped in this run")]
        view = replayer._view(mapped, replayer._actual_bytes(mapped))
        records = view.get("records", [])
        found: list[Difference] = []
        if "records" in event:
            found += compare_given(event["records"], records, "records")
        if "lost" in event:
            lost = sum(r.get("lost", 0) for r in records if r.get("type") == "LOST")
            found += compare(event["lost"], lost, "lost")
        return found
    if "map" in event:
        fd = replayer.codec.fd_value(event["map"])
        info = replayer.symbols.info(str(event["map"]))
        if info is None or info.kind != "map":
            return [Difference("map", event["map"], "no map of that name in this run")]
        value_size = info.value_size
        if info.map_type in PERCPU_MAPS:
            value_size = (value_size + 7) // 8 * 8 * replayer.scenario.possible_cpus
        try:
            contents = map_contents(replayer.backend, fd, info.key_size, value_size)
        except OSError as exc:
            return [Difference("contents", event.get("contents"), f"error: {exc}")]
        return compare(event.get("contents", {}), contents, "contents")
    raise ValueError("an expect event needs ring or map")
