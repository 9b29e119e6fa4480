"""``foodmesh train-eta``: XGBoost prep, travel and pickup-wait models from order history,
evaluated honestly.

The history (simulated, or real from the Order database) is split by time: the
last ``holdout`` fraction of orders is never seen in training. Profiles
(restaurants' mean prep, drivers' speed against the graph) come from the
training part only; a kitchen's features (recent prep times, open orders) are
each order's as of its placement (``servers.eta.kitchen``), and so are the free
drivers near the kitchen, the weather and a local event's factor (recorded at
placement; a history without them trains with them unknown). The models are
quantile regressions (10th/50th/90th percentile, ``reg:quantileerror``) trained
with ``xgboost.train`` on a DMatrix.

The held-out report: MAE and p90 absolute error in minutes for prep, travel and
the total, next to the routing-only baseline (the road graph's time × traffic
multiplier with the vehicle's profile, plus a fixed prep: the constant that best
fits the training part), and the 80% interval's coverage. The total is also set
beside two honest baselines: (a) route time + the restaurant's rolling mean prep
time + the best constant, (b) the seed design's fixed formula. The total is scored
twice: at order time (no driver known, what PlaceOrder asks) and once a driver is
assigned (their position, vehicle and history known, what TrackOrder asks).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from foodmesh.core.geo import EARTH_RADIUS_M
from servers.eta.conformal import Residuals, residuals, widen
from servers.eta.features import (
    CENTER,
    DriverProfile,
    RestaurantProfile,
    prep_matrix,
    travel_matrix,
    vehicle_time_s,
    wait_matrix,
)
from servers.eta.kitchen import kitchen_as_of
from servers.eta.model import QUANTILES, EtaModel, new_version, save_model

__all__ = [
    "TrainConfig",
    "TrainResult",
    "assigned_minutes",
    "at_order_minutes",
    "calibrate",
    "evaluate",
    "kitchen_columns",
    "refine",
    "train",
]

_log = logging.getLogger("foodmesh.eta.training")

F64 = npt.NDArray[np.float64]
History = Mapping[str, npt.NDArray[Any]]
_CAR = 3  # VehicleType.VEHICLE_TYPE_CAR
#: Deliveries a driver's speed history is pulled toward the fleet's mean by (shrinkage).
_SHRINK = 5.0
#: The latest fraction of training orders kept back to calibrate the intervals.
_CALIBRATION = 0.15


@dataclass(frozen=True, slots=True)
class TrainConfig:
    rounds: int = 250
    max_depth: int = 6
    learning_rate: float = 0.1
    holdout: float = 0.2
    nthread: int = 2
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TrainResult:
    model: EtaModel
    path: Path | None
    metrics: Mapping[str, Any] = field(default_factory=dict)


def _zone_km(lat: F64, lon: F64) -> F64:
    k = np.radians(1.0) * EARTH_RADIUS_M
    dy = (lat - CENTER[0]) * k
    dx = (lon - CENTER[1]) * k * np.cos(np.radians(CENTER[0]))
    return np.asarray(np.hypot(dx, dy) / 1000.0)


def _profiles(
    h: History, rows: npt.NDArray[np.bool_]
) -> tuple[
    dict[str, RestaurantProfile], dict[str, DriverProfile], RestaurantProfile, DriverProfile
]:
    rid = h["restaurant_id"][rows]
    prep = h["prep_s"][rows].astype(np.float64) / 60.0
    names, inv = np.unique(rid, return_inverse=True)
    sums = np.bincount(inv, weights=prep)
    counts = np.bincount(inv)
    restaurants = {
        str(n): RestaurantProfile(float(s / c), int(c))
        for n, s, c in zip(names, sums, counts, strict=True)
    }
    # A driver's pace: actual over the vehicle's routing time, on the drive to the
    # restaurant (no parking in it), pulled toward the fleet's mean when history is short.
    did = h["driver_id"][rows]
    base = vehicle_time_s(
        h["vehicle"][rows], h["pickup_free_flow_s"][rows], h["pickup_graph_s"][rows]
    )
    ratio = h["pickup_travel_s"][rows].astype(np.float64) / np.maximum(base, 1.0)
    if not np.isfinite(ratio).any():  # real history has no drive to the restaurant: use the other
        route = vehicle_time_s(h["vehicle"][rows], h["route_free_flow_s"][rows],
                               h["route_graph_s"][rows])  # fmt: skip
        ratio = h["travel_s"][rows].astype(np.float64) / np.maximum(route, 1.0)
    ratio = np.clip(ratio, 0.3, 3.0)
    did = did[np.isfinite(ratio)]
    ratio = ratio[np.isfinite(ratio)]
    fleet = float(np.median(ratio)) if len(ratio) else 1.0
    dnames, dinv = np.unique(did, return_inverse=True)
    dsum = np.bincount(dinv, weights=ratio)
    dcount = np.bincount(dinv)
    drivers = {
        str(n): DriverProfile(float((s + _SHRINK * fleet) / (c + _SHRINK)), int(c))
        for n, s, c in zip(dnames, dsum, dcount, strict=True)
    }
    default_r = RestaurantProfile(float(prep.mean()) if len(prep) else 20.0, 0)
    return restaurants, drivers, default_r, DriverProfile(fleet, 0)


def kitchen_columns(h: History) -> dict[str, npt.NDArray[Any]]:
    """``h`` with each order's kitchen as of its placement (``servers.eta.kitchen``).

    Recomputed from the orders themselves, the way Order computes them live: the
    restaurant's recent prep time and count, and its open orders (``restaurant_load``).
    Conditions a history may not have recorded read as unknown: free drivers nearby
    NaN, no event (1.0), weather 0.
    """
    recent, count, open_ = kitchen_as_of(h["restaurant_id"], h["order_ts"], h["prep_s"])
    listed = h.get("restaurant_listed_prep_min")
    n = len(h["order_ts"])
    nearby = h.get("drivers_nearby")
    event = h.get("event_multiplier")
    weather = h.get("weather")
    return {
        **h,
        "drivers_nearby": (np.asarray(nearby, dtype=np.float64)
                           if nearby is not None else np.full(n, np.nan)),
        "event_multiplier": (np.asarray(event, dtype=np.float64)
                             if event is not None else np.ones(n)),
        "weather": np.asarray(weather) if weather is not None else np.zeros(n, dtype=np.int8),
        "restaurant_listed_prep_min": (np.asarray(listed, dtype=np.float64)
                                       if listed is not None else np.full(n, np.nan)),
        "restaurant_recent_prep_min": recent,
        "restaurant_recent_orders": count,
        "restaurant_load": open_,
    }  # fmt: skip


def _prep_x(h: History, model: EtaModel | None = None) -> F64:
    return prep_matrix(
        listed_prep_min=h["restaurant_listed_prep_min"],
        recent_prep_min=h["restaurant_recent_prep_min"],
        recent_orders=h["restaurant_recent_orders"],
        item_count=h["item_count"],
        subtotal=h["subtotal_minor"].astype(np.float64) / 100.0,
        hour=h["hour"],
        day_of_week=h["day_of_week"],
        restaurant_load=h["restaurant_load"],
        weather=h["weather"],
    )


def _wait_x(h: History) -> F64:
    """Features of the pickup wait, as of each order's placement."""
    return wait_matrix(
        hour=h["hour"],
        day_of_week=h["day_of_week"],
        weather=h["weather"],
        event_multiplier=h["event_multiplier"],
        drivers_nearby=h["drivers_nearby"],
        restaurant_load=h["restaurant_load"],
        listed_prep_min=h["restaurant_listed_prep_min"],
        recent_prep_min=h["restaurant_recent_prep_min"],
        item_count=h["item_count"],
    )


def _wait_xy(h: History) -> tuple[F64, F64]:
    """The wait booster's training rows: each order as recorded, and again with the free
    drivers nearby unknown (a caller that does not send them), so the trees learn what
    missing means from the same orders."""
    unknown = {**h, "drivers_nearby": np.full(len(h["order_ts"]), np.nan)}
    y = np.asarray(h["wait_s"], dtype=np.float64) / 60.0
    return np.vstack([_wait_x(h), _wait_x(unknown)]), np.concatenate([y, y])


def _wait_q(model: EtaModel, h: History) -> F64:
    """(n, 3) minutes of the pickup wait before a driver is known: the wait booster, or the
    history's wait at the hour for a model without one."""
    if model.wait is not None:
        return model.predict_wait(_wait_x(h))
    return np.array([model.pickup_wait_by_hour[int(hr)] for hr in h["hour"]]).reshape(-1, 3)


def _travel_x(h: History, model: EtaModel, *, leg: str, driver_known: bool = True) -> F64:
    """Features of the drive to the customer (``leg="route"``) or to the restaurant ("pickup")."""
    n = len(h["order_ts"])
    if driver_known:
        prof = [model.driver(str(d)) for d in h["driver_id"]]
        ratio = np.array([p.speed_ratio for p in prof])
        count = np.array([p.deliveries for p in prof])
        vehicle = h["vehicle"]
    else:
        ratio = np.full(n, model.default_driver.speed_ratio)
        count = np.zeros(n)
        vehicle = np.full(n, 0)
    if leg == "route":
        lat, lon = h["customer_lat"].astype(np.float64), h["customer_lon"].astype(np.float64)
    else:
        lat, lon = h["restaurant_lat"].astype(np.float64), h["restaurant_lon"].astype(np.float64)
    return travel_matrix(
        distance_m=h[f"{leg}_distance_m"],
        free_flow_s=h[f"{leg}_free_flow_s"],
        graph_s=h[f"{leg}_graph_s"],
        hour=h["hour"],
        day_of_week=h["day_of_week"],
        weather=h["weather"],
        zone_km=_zone_km(lat, lon),
        driver_speed_ratio=ratio,
        driver_deliveries=count,
        vehicle=vehicle,
        to_customer=1.0 if leg == "route" else 0.0,
    )


class _Progress(xgb.callback.TrainingCallback):
    def __init__(self, label: str, rounds: int, say: Callable[[str], None]) -> None:
        self.label = label
        self.rounds = rounds
        self.say = say
        self.t0 = time.perf_counter()
        self.next = self.t0 + 2.0

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        now = time.perf_counter()
        if now >= self.next or epoch + 1 == self.rounds:
            self.next = now + 2.0
            took = now - self.t0
            self.say(
                f"train-eta: {self.label} round {epoch + 1}/{self.rounds} in {took:.1f}s "
                f"({(epoch + 1) / max(took, 1e-9):.1f} rounds/s)"
            )
        return False


def _fit(
    x: F64, y: F64, *, label: str, cfg: TrainConfig, say: Callable[[str], None]
) -> xgb.Booster:
    known = np.isfinite(y)  # a real history lacks some legs
    d = xgb.DMatrix(x[known], label=y[known], nthread=cfg.nthread)
    params = {
        "objective": "reg:quantileerror",
        "quantile_alpha": np.array(QUANTILES),
        "tree_method": "hist",
        "max_depth": cfg.max_depth,
        "learning_rate": cfg.learning_rate,
        "min_child_weight": 5,
        "subsample": 0.9,
        "nthread": cfg.nthread,
        "seed": cfg.seed,
    }
    return xgb.train(
        params,
        d,
        num_boost_round=cfg.rounds,
        verbose_eval=False,
        callbacks=[_Progress(label, cfg.rounds, say)],
    )


def refine(
    model: EtaModel, h: History, *, rounds: int = 40, learning_rate: float = 0.05,
    nthread: int = 1,
) -> EtaModel:  # fmt: skip
    """``model`` updated with deliveries ``h`` (kitchen columns computed): more boosting
    rounds on them for its models (the wait booster too, where the model has one), the
    pickup wait by hour and the intervals' widths from them. What a few hundred of the
    platform's own deliveries can teach a model trained on a bigger simulated history."""
    order = np.argsort(h["order_ts"], kind="stable")
    h = {k: np.asarray(v)[order] for k, v in h.items()}
    n = len(h["order_ts"])
    cut = int(n * (1.0 - _CALIBRATION))
    fit = {k: v[:cut] for k, v in h.items()}
    cal = {k: v[cut:] for k, v in h.items()}
    params = {
        "objective": "reg:quantileerror",
        "quantile_alpha": np.array(QUANTILES),
        "tree_method": "hist",
        "max_depth": 4,
        "learning_rate": learning_rate,
        "min_child_weight": 5,
        "nthread": nthread,
    }

    def more(booster: xgb.Booster, x: F64, y: F64) -> xgb.Booster:
        known = np.isfinite(y)
        d = xgb.DMatrix(x[known], label=y[known], nthread=nthread)
        b = xgb.train(params, d, num_boost_round=rounds, xgb_model=booster.copy())
        b.set_param({"nthread": 1})
        return b

    prep = more(model.prep, _prep_x(fit, model), fit["prep_s"] / 60.0)
    x_travel = np.vstack([_travel_x(fit, model, leg="route"),
                          _travel_x(fit, model, leg="route", driver_known=False)])  # fmt: skip
    travel = more(model.travel, x_travel, np.concatenate([fit["travel_s"], fit["travel_s"]]) / 60.0)
    wait = model.wait
    if wait is not None:
        wait = more(wait, *_wait_xy(fit))
    every = np.ones(n, dtype=bool)
    out = dataclasses.replace(model, version=new_version(), prep=prep, travel=travel, wait=wait,
                              pickup_wait_by_hour=_wait_by_hour(h, every))  # fmt: skip
    if len(cal["order_ts"]) >= 20:
        if out.wait is not None:
            out = dataclasses.replace(
                out,
                wait_interval_scale=out.wait_interval_scale
                * _scale(out.predict_wait(_wait_x(cal)), cal["wait_s"] / 60.0),
            )
        out = dataclasses.replace(
            out,
            total_interval_scale=1.0,
            prep_interval_scale=out.prep_interval_scale
            * _scale(out.predict_prep(_prep_x(cal, out)), cal["prep_s"] / 60.0),
            travel_interval_scale=out.travel_interval_scale
            * _scale(
                out.predict_travel(_travel_x(cal, out, leg="route", driver_known=False)),
                cal["travel_s"] / 60.0,
            ),
        )
        out = calibrate(_with_total_scale(out, cal), cal)
    return out


def _wait_by_hour(
    h: History, rows: npt.NDArray[np.bool_]
) -> tuple[tuple[float, float, float], ...]:
    wait = h["wait_s"][rows].astype(np.float64) / 60.0
    hours = h["hour"][rows]
    overall = tuple(float(q) for q in np.quantile(wait, QUANTILES)) if len(wait) else (1, 2, 3)
    out = []
    for hr in range(24):
        w = wait[hours == hr]
        out.append(tuple(float(q) for q in np.quantile(w, QUANTILES)) if len(w) >= 20 else overall)
    return tuple((a, b, c) for a, b, c in out)


def _scale(q: F64, actual: F64) -> float:
    """The factor on a 10-90 spread that puts 80% of ``actual`` inside (split conformal)."""
    if len(actual) < 20:
        return 1.0
    med = q[:, 1]
    below = (med - actual) / np.maximum(med - q[:, 0], 1e-3)
    above = (actual - med) / np.maximum(q[:, 2] - med, 1e-3)
    score = np.maximum(below, above)
    return float(np.clip(np.quantile(score, 0.8), 0.25, 10.0))


def _err(pred: F64, actual: F64) -> dict[str, float]:
    e = np.abs(pred - actual)
    return {"mae_min": round(float(e.mean()), 3), "p90_min": round(float(np.quantile(e, 0.9)), 3)}


def _side(ours: F64, base: F64, actual: F64) -> dict[str, float]:
    o, b = _err(ours, actual), _err(base, actual)
    return {
        **o,
        "baseline_mae_min": b["mae_min"],
        "baseline_p90_min": b["p90_min"],
        "mae_vs_baseline": round(o["mae_min"] / max(b["mae_min"], 1e-9), 3),
    }


def at_order_minutes(model: EtaModel, t: History) -> tuple[F64, F64, F64]:
    """The total promised at placement (no driver known: a typical one and a car) and its
    80 % interval, minutes, for rows of a history with its kitchen columns."""
    prep_q = model.predict_prep(_prep_x(t, model))
    wait_q = _wait_q(model, t)
    anon_q = model.predict_travel(_travel_x(t, model, leg="route", driver_known=False))
    mid = prep_q[:, 1] + wait_q[:, 1] + anon_q[:, 1]
    lo = mid - np.sqrt(
        (prep_q[:, 1] - prep_q[:, 0]) ** 2 + (wait_q[:, 1] - wait_q[:, 0]) ** 2
        + (anon_q[:, 1] - anon_q[:, 0]) ** 2
    )  # fmt: skip
    hi = mid + np.sqrt(
        (prep_q[:, 2] - prep_q[:, 1]) ** 2 + (wait_q[:, 2] - wait_q[:, 1]) ** 2
        + (anon_q[:, 2] - anon_q[:, 1]) ** 2
    )  # fmt: skip
    band = model.stage_residuals.get("placement")
    if band is not None:
        lo_c, hi_c = widen(mid, band, spread=hi - lo)
        return mid, lo_c, hi_c
    k = model.total_interval_scale
    return mid, np.maximum(0.0, mid - (mid - lo) * k), mid + (hi - mid) * k


def assigned_minutes(model: EtaModel, t: History) -> F64:
    """The total estimated once a driver is assigned, minutes from placement (NaN where the
    history does not know the driver's drive to the kitchen). The driver drives while the
    kitchen cooks; they wait for the food or it waits for them, then the counter."""
    prep_q = model.predict_prep(_prep_x(t, model))
    pick_q = model.predict_travel(_travel_x(t, model, leg="pickup"))
    route_q = model.predict_travel(_travel_x(t, model, leg="route"))
    assign = np.asarray(t["assign_delay_s"], dtype=np.float64) / 60.0
    return np.asarray(
        prep_q[:, 1]
        + np.maximum(0.0, assign + pick_q[:, 1] - prep_q[:, 1])
        + model.handover_min
        + route_q[:, 1]
    )


def calibrate(model: EtaModel, cal: History) -> EtaModel:
    """``model`` with each stage's conformal band (``servers.eta.conformal``) taken from
    deliveries ``cal`` (kitchen columns computed) that its trees never saw: at placement the
    total it promises, once assigned the total with the driver's drive, at pickup the drive
    to the door. A stage ``cal`` cannot score (too few, no drives to the kitchen) keeps its
    band."""
    if len(cal["order_ts"]) == 0:
        return model
    total = np.asarray(cal["total_s"], dtype=np.float64) / 60.0
    plain = dataclasses.replace(model, stage_residuals={})
    placed, lo, hi = at_order_minutes(plain, cal)
    route_q = model.predict_travel(_travel_x(cal, model, leg="route"))
    found: dict[str, Residuals | None] = {
        "placement": residuals(total, placed, spread=hi - lo),
        "assignment": residuals(total, assigned_minutes(model, cal)),
        "pickup": residuals(np.asarray(cal["travel_s"], dtype=np.float64) / 60.0, route_q[:, 1]),
    }
    bands = dict(model.stage_residuals)
    bands.update({k: v for k, v in found.items() if v is not None})
    return dataclasses.replace(model, stage_residuals=bands)


def _with_total_scale(model: EtaModel, cal: History) -> EtaModel:
    """``model`` with the total's interval widened or narrowed to hold 80 % of ``cal``."""
    if len(cal["order_ts"]) < 20:
        return model
    mid, lo, hi = at_order_minutes(dataclasses.replace(model, stage_residuals={}), cal)
    factor = _scale(np.column_stack([lo, mid, hi]), np.asarray(cal["total_s"]) / 60.0)
    return dataclasses.replace(model, total_interval_scale=model.total_interval_scale * factor)


def rolling_prep_min(h: History, *, default_min: float) -> F64:
    """Baseline (a)'s prep: the restaurant's recent mean, else its listed time, else a default."""
    recent = np.asarray(h["restaurant_recent_prep_min"], dtype=np.float64)
    listed = np.asarray(h["restaurant_listed_prep_min"], dtype=np.float64)
    return np.asarray(np.where(np.isfinite(recent), recent,
                               np.where(np.isfinite(listed), listed, default_min)))  # fmt: skip


def seed_formula_min(h: History) -> F64:
    """Baseline (b), the seed design's fixed formula at order time: the listed prep time
    (clamped to 5-60, 20 unknown) + 8 minutes for a driver to come + whole minutes of the
    route with the traffic multiplier."""
    listed = np.asarray(h["restaurant_listed_prep_min"], dtype=np.float64)
    prep = np.clip(np.where(np.isfinite(listed), listed, 20.0), 5.0, 60.0)
    return np.asarray(prep + 8.0 + np.floor(np.asarray(h["route_graph_s"]) / 60.0))


def evaluate(model: EtaModel, h: History, rows: npt.NDArray[np.bool_], *, fixed_min: float,
             fixed_prep_min: float, rolling_offset_min: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Held-out errors of ``model`` on ``rows`` of ``h``, beside three baselines.

    Routing only (the graph's time + the best constant), (a) route time + the
    restaurant's rolling mean prep time + the best constant for the rest
    (``rolling_offset_min``, fitted on the training orders), (b) the seed's formula.
    """
    t = {k: v[rows] for k, v in h.items()}
    prep_q = model.predict_prep(_prep_x(t, model))
    prep_true = t["prep_s"] / 60.0
    route_q = model.predict_travel(_travel_x(t, model, leg="route"))
    travel_true = t["travel_s"] / 60.0
    total_true = t["total_s"] / 60.0

    route_vt = vehicle_time_s(t["vehicle"], t["route_free_flow_s"], t["route_graph_s"]) / 60.0
    route_car = t["route_graph_s"] / 60.0

    at_order, lo, hi = at_order_minutes(model, t)
    assigned = assigned_minutes(model, t)
    base_assigned = fixed_min + route_vt
    has_pickup = np.isfinite(assigned)
    base_a = rolling_prep_min(t, default_min=fixed_prep_min) + route_car + rolling_offset_min
    base_b = seed_formula_min(t)
    a_err, ours, seed_err = (_err(x, total_true) for x in (base_a, at_order, base_b))
    by_hour_err: dict[str, float] = {}
    if model.wait is not None:  # the same total with the wait by hour: what the wait model adds
        by_hour_total, _, _ = at_order_minutes(dataclasses.replace(model, wait=None), t)
        e = _err(by_hour_total, total_true)
        by_hour_err = {"wait_by_hour_mae_min": e["mae_min"], "wait_by_hour_p90_min": e["p90_min"]}
    wait_true = np.asarray(t["wait_s"], dtype=np.float64) / 60.0
    wait_q = _wait_q(model, t)
    by_hour = np.array([model.pickup_wait_by_hour[int(hr)][1] for hr in t["hour"]])
    known_wait = np.isfinite(wait_true)
    out = {
        "rows": int(rows.sum()),
        "prep": _side(prep_q[:, 1], np.full(len(prep_true), fixed_prep_min), prep_true),
        # The pickup part before a driver is known, beside the history's median at the hour.
        "wait": {
            **_side(wait_q[known_wait, 1], by_hour[known_wait], wait_true[known_wait]),
            "model": "booster" if model.wait is not None else "by hour",
            "interval80_coverage": round(
                float(
                    np.mean(
                        (wait_true[known_wait] >= wait_q[known_wait, 0])
                        & (wait_true[known_wait] <= wait_q[known_wait, 2])
                    )
                )
                if known_wait.any()
                else float("nan"),
                3,
            ),
        },
        "travel": _side(route_q[:, 1], route_vt, travel_true),
        "total": {
            **_side(at_order, fixed_min + route_car, total_true),
            "interval80_coverage": round(
                float(np.mean((total_true >= lo) & (total_true <= hi))), 3
            ),
            "rolling_baseline_mae_min": a_err["mae_min"],
            "rolling_baseline_p90_min": a_err["p90_min"],
            "mae_vs_rolling_baseline": round(ours["mae_min"] / max(a_err["mae_min"], 1e-9), 3),
            "seed_baseline_mae_min": seed_err["mae_min"],
            "seed_baseline_p90_min": seed_err["p90_min"],
            "mae_vs_seed_baseline": round(ours["mae_min"] / max(seed_err["mae_min"], 1e-9), 3),
            **by_hour_err,
        },
        "prep_interval80_coverage": round(
            float(np.mean((prep_true >= prep_q[:, 0]) & (prep_true <= prep_q[:, 2]))), 3
        ),
        "travel_interval80_coverage": round(
            float(np.mean((travel_true >= route_q[:, 0]) & (travel_true <= route_q[:, 2]))), 3
        ),
    }
    if has_pickup.any():  # the simulator knows where the driver was; a real history may not
        m = has_pickup
        out["total_driver_assigned"] = _side(assigned[m], base_assigned[m], total_true[m])
    return out


def train(
    history: History,
    *,
    out_dir: Path | None,
    config: TrainConfig | None = None,
    progress: Callable[[str], None] | None = None,
    source: str = "simulator",
) -> TrainResult:
    """Trains both models on ``history``, evaluates them on its latest part, writes the file.

    ``out_dir`` None keeps the model in memory only (tests, benchmarks).
    """
    cfg = config or TrainConfig()
    say = progress or _log.info
    t0 = time.perf_counter()
    n = len(history["order_ts"])
    if n < 50:
        raise ValueError(f"history has {n} orders; training needs at least 50")
    order = np.argsort(history["order_ts"], kind="stable")
    h = kitchen_columns({k: np.asarray(v)[order] for k, v in history.items()})
    cut = float(np.quantile(h["order_ts"], 1.0 - cfg.holdout))
    train_rows = h["order_ts"] < cut
    test_rows = ~train_rows
    say(f"train-eta: {n:,} orders ({int(train_rows.sum()):,} train, "
        f"{int(test_rows.sum()):,} held out after {cut:.0f})")  # fmt: skip

    restaurants, drivers, default_r, default_d = _profiles(h, train_rows)
    tr = {k: v[train_rows] for k, v in h.items()}
    handover_rows = tr["assign_delay_s"] + tr["pickup_travel_s"] < tr["prep_s"] - 60.0
    handover = float(np.median(tr["wait_s"][handover_rows]) / 60.0) if handover_rows.any() else 2.0
    draft = EtaModel(
        version=new_version(),
        prep=xgb.Booster(),
        travel=xgb.Booster(),
        restaurants=restaurants,
        drivers=drivers,
        default_restaurant=default_r,
        default_driver=default_d,
        pickup_wait_by_hour=_wait_by_hour(h, train_rows),
        handover_min=handover,
    )
    # The trees learn from the earlier part of the training orders; the latest slice
    # (unseen by them) calibrates the width of their intervals.
    fit_rows = tr["order_ts"] < float(np.quantile(tr["order_ts"], 1.0 - _CALIBRATION))
    cal = {k: v[~fit_rows] for k, v in tr.items()}
    fit = {k: v[fit_rows] for k, v in tr.items()}
    prep = _fit(_prep_x(fit, draft), fit["prep_s"] / 60.0, label="prep", cfg=cfg, say=say)
    # The drive to the customer a second time as if the driver were not known yet (no
    # vehicle, the fleet's pace): what PlaceOrder asks before anyone is assigned.
    x_travel = np.vstack(
        [
            _travel_x(fit, draft, leg="route"),
            _travel_x(fit, draft, leg="pickup"),
            _travel_x(fit, draft, leg="route", driver_known=False),
        ]
    )
    y_travel = np.concatenate(
        [fit["travel_s"] / 60.0, fit["pickup_travel_s"] / 60.0, fit["travel_s"] / 60.0]
    )
    travel = _fit(x_travel, y_travel, label="travel", cfg=cfg, say=say)
    # Food ready -> in the driver's hands, from what is known at placement (no driver yet).
    wait = _fit(*_wait_xy(fit), label="wait", cfg=cfg, say=say)
    for b in (prep, travel, wait):
        b.set_param({"nthread": 1})
    trained = time.perf_counter() - t0
    model = dataclasses.replace(draft, prep=prep, travel=travel, wait=wait)
    model = dataclasses.replace(
        model,
        prep_interval_scale=_scale(model.predict_prep(_prep_x(cal, model)), cal["prep_s"] / 60.0),
        wait_interval_scale=_scale(model.predict_wait(_wait_x(cal)), cal["wait_s"] / 60.0),
        travel_interval_scale=_scale(
            model.predict_travel(_travel_x(cal, model, leg="route")), cal["travel_s"] / 60.0
        ),
    )

    model = calibrate(_with_total_scale(model, cal), cal)
    fixed_prep = float(tr["prep_s"].mean() / 60.0)
    fixed = float(np.mean((tr["total_s"] - tr["route_graph_s"]) / 60.0))
    rolling = float(np.mean(tr["total_s"] / 60.0 - tr["route_graph_s"] / 60.0
                            - rolling_prep_min(tr, default_min=fixed_prep)))  # fmt: skip
    held_out = evaluate(model, h, test_rows, fixed_min=fixed, fixed_prep_min=fixed_prep,
                        rolling_offset_min=rolling)  # fmt: skip
    metrics: dict[str, Any] = {
        "source": source,
        "orders": n,
        "train_rows": int(train_rows.sum()),
        "split_ts": cut,
        "train_seconds": round(trained, 2),
        "baseline": "road graph time x traffic multiplier (vehicle profile) + fixed prep",
        "baseline_fixed_prep_min": round(fixed_prep, 3),
        "baseline_fixed_total_offset_min": round(fixed, 3),
        "rolling_baseline": "route time + the restaurant's rolling mean prep time (as of the"
        " order) + the best constant for the rest",
        "rolling_baseline_offset_min": round(rolling, 3),
        "seed_baseline": "listed prep (5-60) + 8 min + whole minutes of route time with traffic",
        "config": {
            "rounds": cfg.rounds,
            "max_depth": cfg.max_depth,
            "learning_rate": cfg.learning_rate,
            "holdout": cfg.holdout,
        },  # fmt: skip
        "held_out": held_out,
    }
    model = dataclasses.replace(model, metrics=metrics)
    path = save_model(model, out_dir) if out_dir is not None else None
    ho = held_out
    say(
        f"train-eta: done in {time.perf_counter() - t0:.1f}s; held-out MAE total "
        f"{ho['total']['mae_min']:.2f} min (baseline {ho['total']['baseline_mae_min']:.2f}), "
        f"prep {ho['prep']['mae_min']:.2f} ({ho['prep']['baseline_mae_min']:.2f}), "
        f"travel {ho['travel']['mae_min']:.2f} ({ho['travel']['baseline_mae_min']:.2f}), "
        f"pickup wait {ho['wait']['mae_min']:.2f} (by hour {ho['wait']['baseline_mae_min']:.2f}); "
        f"baselines (a) rolling prep {ho['total']['rolling_baseline_mae_min']:.2f}, "
        f"(b) seed formula {ho['total']['seed_baseline_mae_min']:.2f}"
        + (f"; wrote {path}" if path else "")
    )
    return TrainResult(model=model, path=path, metrics=metrics)
