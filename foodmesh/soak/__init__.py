"""``foodmesh soak``: the whole platform under load for a long while, its parts killed on a
schedule, then an audit of the data stores that says whether anything was lost, charged twice
or left hanging.

Its parts: ``faults`` (the schedule file, pure), ``timeline`` (the API calls' record, fault
windows, percentiles and recovery, pure), ``proxy`` (a TCP proxy that adds latency or cuts
every connection on command; its own process), ``audit`` (the invariants, read from
PostgreSQL and NATS), ``report`` (report.json, report.md and its plot) and ``run`` (the
orchestration: infrastructure, the supervised platform, the city, the faults).
"""
