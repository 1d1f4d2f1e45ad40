"""bpf maps: one module per map family; `base.BpfMap` is what every family implements."""
