"""bpf() commands on maps: MAP_CREATE, the element commands, batches, FREEZE."""
