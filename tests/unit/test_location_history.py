"""The history buffer: fixes kept as binary COPY rows, and read back from them to spill."""

from __future__ import annotations

import csv
import struct
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from servers.location.fixes import Fix
from servers.location.history import HistoryConfig, HistoryWriter, copy_binary, copy_rows

NOW = 1_800_000_000.0


def _f4(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


def _us(ts: float) -> float:
    """``ts`` as PostgreSQL keeps it: to the microsecond."""
    return round((ts - 946_684_800) * 1e6) / 1e6 + 946_684_800


fixes = st.builds(
    Fix,
    driver_id=st.text(min_size=1, max_size=40),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    accuracy_m=st.floats(0, 1e6),
    heading_deg=st.floats(0, 359.99),
    speed_mps=st.floats(0, 1e3),
    device_ts=st.floats(NOW - 3600, NOW),
    received_ts=st.floats(NOW - 3600, NOW),
    order_id=st.text(max_size=30),
)


@given(st.lists(fixes, max_size=20))
def test_copy_rows_reads_back_what_copy_binary_wrote(batch: list[Fix]) -> None:
    rows = list(copy_rows(copy_binary(batch)))
    assert rows == [
        (f.driver_id, _us(f.device_ts), f.lat, f.lon, _f4(f.heading_deg), _f4(f.speed_mps),
         _f4(f.accuracy_m), f.order_id, _us(f.received_ts))
        for f in batch
    ]  # fmt: skip


@given(st.lists(st.lists(fixes, max_size=5), max_size=5))
def test_rows_encoded_a_batch_at_a_time_are_the_rows_encoded_at_once(
    batches: list[list[Fix]],
) -> None:
    encoded = b"".join(copy_binary(b) for b in batches)
    assert encoded == copy_binary([f for b in batches for f in b])


def _fix(i: int) -> Fix:
    return Fix(f"drv_{i}", 37.77, -122.41, 5.0, 90.0, 3.5, NOW - 60 + i, NOW - 59 + i, "ord_1")


def test_the_buffer_keeps_no_fix_for_the_collector_to_walk() -> None:
    writer = HistoryWriter(AsyncConnectionPool("postgresql:///nowhere", open=False))
    batch = [_fix(i) for i in range(50)]
    refs = [sys.getrefcount(f) for f in batch]
    writer.add(batch)
    writer.add([_fix(i) for i in range(50, 60)])
    assert writer.buffered == 60
    # Fixes waiting a second here would be promoted to the collector's oldest generation
    # and make its full collections (tens of ms at 2,000 streams) come every few seconds.
    assert [sys.getrefcount(f) for f in batch] == refs


def test_a_full_buffer_spills_the_rows_it_holds(tmp_path: Path) -> None:
    config = HistoryConfig(max_buffer_rows=10, spill_dir=tmp_path)
    writer = HistoryWriter(AsyncConnectionPool("postgresql:///nowhere", open=False), config)
    sent = [_fix(i) for i in range(12)]
    writer.add(sent[:6])
    writer.add(sent[6:])  # 12 > 10: to disk
    assert (writer.buffered, writer.spilled) == (0, 12)
    [path] = tmp_path.glob("spill-*.csv")
    with path.open(newline="") as fh:
        lines = list(csv.reader(fh))
    assert [line[0] for line in lines] == [f.driver_id for f in sent]
    assert [float(line[1]) for line in lines] == [f.device_ts for f in sent]
    assert [float(line[5]) for line in lines] == [f.speed_mps for f in sent]
