"""The PMUs of the simulated kernel (software, tracepoint, kprobe, uprobe) and their sysfs files."""
