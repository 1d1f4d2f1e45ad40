"""BPF_ENABLE_STATS: run_cnt and run_time_ns are counted while a stats fd is open."""
