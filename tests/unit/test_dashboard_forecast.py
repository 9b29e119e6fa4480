"""The dashboard's demand panel: forecasts beside the half hours that came."""

from __future__ import annotations

from dashboard.forecast import ForecastBoard
from foodmesh.v1 import pricing_pb2 as ppb

T0 = 1_800_000_000  # a multiple of 300 s


def poll(at: int, recent: int, f30: float, f60: float) -> ppb.ForecastDemandResponse:
    r = ppb.ForecastDemandResponse()
    r.forecast_time.FromSeconds(at)
    r.model.kind = "xgboost"
    c = r.cells.add(cell="9q8yy", recent_orders=recent, expected_drivers=3)
    for h, exp in ((30, f30), (60, f60)):
        d = c.forecasts.add(horizon_minutes=h, expected_orders=exp, low=int(exp) - 2,
                            high=int(exp) + 3, surge_risk=ppb.SURGE_RISK_MEDIUM)  # fmt: skip
        d.start_time.FromSeconds(at + (h - 30) * 60)
        d.end_time.FromSeconds(at + h * 60)
    return r


def test_each_half_hour_shows_what_was_forecast_for_it_beside_what_came() -> None:
    b = ForecastBoard()
    b.update(poll(T0, recent=4, f30=10.0, f60=14.0))
    (row,) = b.picture()["cells"]
    assert row[:9] == ["9q8yy", 4, None, 10.0, 8, 13, 14.0, 3, "medium"]
    b.update(poll(T0 + 900, recent=6, f30=12.0, f60=15.0))  # polled again mid-way
    b.update(poll(T0 + 1800, recent=11, f30=13.0, f60=9.0))  # the first half hour is over
    row = b.picture()["cells"][0]
    assert (row[1], row[2]) == (11, 10.0)  # 11 came; 10 were forecast for it at T0
    assert row[9] == [[4, None], [6, None], [11, 10.0]]
    assert b.picture()["model"] == "xgboost"
    b.update(poll(T0 + 1800, recent=11, f30=13.0, f60=9.0))  # the same bucket: no new point
    assert len(b.picture()["cells"][0][9]) == 3
