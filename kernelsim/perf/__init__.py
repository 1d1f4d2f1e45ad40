"""perf events: perf_event_open, the ioctl state machine, PMUs and the mmap ring."""
