"""tracefs: tracepoint ids and formats, kprobe_events/uprobe_events, trace_pipe."""
