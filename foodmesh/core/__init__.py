"""The small shared core under every process: tokens, settings, telemetry, metrics,
the Redis and NATS client factories, geo math, errors, event subjects, the trace format."""
