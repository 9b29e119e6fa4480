"""Free ports for the embedded servers and the soak: distinct in a batch, away from the
kernel's ephemeral range (where outgoing connections take ports)."""

from __future__ import annotations

import socket
from pathlib import Path

from foodmesh.infra import free_port


def test_a_batch_chosen_before_any_binds_is_distinct_and_below_the_ephemeral_range() -> None:
    # The soak chooses every service's two ports before starting any: a repeat in the batch
    # left Order's metrics port bound by Location's in a CI run.
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20000 <= p < low for p in ports)


def test_a_preferred_port_is_kept_while_free_and_replaced_once_taken() -> None:
    port = free_port()
    assert free_port(port) == port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        other = free_port(port)
        assert other != port
