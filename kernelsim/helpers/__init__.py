"""The simulated kernel's helpers beyond the interpreter's own (kernelsim.prog.interpreter).

Each module registers its helpers with `@kernel_helper(BpfFunc.X)` when imported; the kernel
imports this package at start (kernelsim.subsystems). docs/fidelity/helpers.md lists every
modelled helper with its checks and return codes.

- `task`: current task and clocks (pid/tgid, uid/gid, comm, task, boot/coarse ns, jiffies),
  bpf_get_func_ip, bpf_get_attach_cookie;
- `probe_read`: bpf_probe_read_{user,kernel}[_str] and the legacy probe_read[_str], over
  `SimulatedMemory` (module `memory`);
- `trace`: bpf_trace_printk (trace buffer and tracefs trace_pipe) and bpf_snprintf (module
  `bprintf` holds their format language);
- `perf_output`: bpf_perf_event_output;
- `ringbuf`: bpf_ringbuf_output / reserve / submit / discard / query;
- `queue`: bpf_map_push_elem / pop / peek;
- `callbacks`: bpf_loop and bpf_for_each_map_elem.
"""

import kernelsim.helpers.callbacks
import kernelsim.helpers.perf_output
import kernelsim.helpers.probe_read
import kernelsim.helpers.queue
import kernelsim.helpers.ringbuf
import kernelsim.helpers.task
import kernelsim.helpers.trace  # noqa: F401 - each registers its helpers
