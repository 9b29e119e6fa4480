"""Learning from the platform's own deliveries: retrain, validate against the serving model,
promote only if better.

One pass (:func:`retrain_once`):

1. read the delivered orders from the Order database (``order_history``);
2. hold out the most recent ``validate_share`` of them (by placement) for validation;
3. make candidates from the rest (their kitchen features as of each placement): the
   serving model refined with them (more boosting rounds, their pickup waits and
   interval widths; from ``min_refine`` deliveries) and a model trained on them alone
   (from ``min_orders``); the better of the two on the held-out deliveries is the
   candidate;
4. score the candidate and the model in service (the newest file of the model
   directory) on the held-out deliveries: MAE of the total promised at placement;
5. promote the candidate (write its file: the ETA service hot-loads it) only if its
   MAE is lower; either way the decision is logged and appended to
   ``retrain.jsonl`` in the model directory. A promoted model's 80 % interval bands
   per stage (``servers.eta.conformal``) are recalibrated on the held-out deliveries; when
   the serving model is kept but its bands no longer fit the deliveries its trees never
   saw (``unseen_by``: every one of the platform's for a model of the simulator's
   history), it is written again under a new version with the fresh bands (same trees),
   so the interval follows the city.

Every promoted model records what it was trained on (source, orders, their time
span) and its validation (orders, its MAE and p90, the serving model's MAE, which
one it replaced). :class:`Retrainer` runs passes on a schedule (``every_s``, when at
least ``min_new_on_schedule`` deliveries are new) and sooner when ``min_new``
deliveries have arrived since the last pass. Replicas sharing one
model directory take turns: a pass runs only under the retraining lease (``lease``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from foodmesh.roads import RoadGraph, TrafficModel
from servers.eta.conformal import MIN_RESIDUALS
from servers.eta.lease import retrain_lease
from servers.eta.model import (
    EtaModel,
    ModelLoadError,
    load_model,
    model_files,
    new_version,
    save_model,
)
from servers.eta.order_history import load_order_history
from servers.eta.training import (
    TrainConfig,
    at_order_minutes,
    calibrate,
    kitchen_columns,
    refine,
    train,
)

__all__ = ["Outcome", "RetrainConfig", "Retrainer", "pass_due", "retrain_once", "validate"]

_log = logging.getLogger("foodmesh.eta.retrain")


@dataclass(frozen=True, slots=True)
class RetrainConfig:
    #: Seconds between scheduled passes.
    every_s: float = 900.0
    #: Seconds between looks at how many deliveries are new.
    poll_s: float = 60.0
    #: New deliveries that start a pass at once.
    min_new: int = 300
    #: New deliveries a scheduled pass needs (fewer: nothing to learn yet).
    min_new_on_schedule: int = 50
    #: Deliveries a full retraining needs (a candidate trained on them alone).
    min_orders: int = 300
    #: Deliveries a refinement needs (the serving model boosted further on them, its
    #: pickup waits and interval widths taken from them).
    min_refine: int = 60
    refine_rounds: int = 40
    #: The most recent share of deliveries kept for validation.
    validate_share: float = 0.2
    rounds: int = 150
    nthread: int = 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one pass did: ``promoted``, ``kept`` (candidate not better) or ``skipped``."""

    decision: str
    reason: str
    deliveries: int = 0
    candidate_version: str = ""
    serving_version: str = ""
    candidate_mae_min: float | None = None
    serving_mae_min: float | None = None
    path: Path | None = None

    def as_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return d


def _rows(h: dict[str, Any], m: np.ndarray) -> dict[str, Any]:
    return {k: v[m] for k, v in h.items()}


def unseen_by(model: EtaModel, h: dict[str, Any], held: dict[str, Any]) -> dict[str, Any]:
    """The deliveries of ``h`` that ``model``'s trees never saw, to calibrate its bands on.

    A model trained on the simulator's history alone never saw any of the platform's
    deliveries: all of them. One that learned from the platform (``trained_on``) saw
    those placed until its ``until_ts``: the later ones. Never fewer than ``held`` (the
    slice no candidate learned from).
    """
    trained_on = model.metrics.get("trained_on")
    if isinstance(trained_on, dict):
        until = float(trained_on.get("until_ts", math.inf))
        rows = _rows(h, np.asarray(h["order_ts"], dtype=np.float64) > until)
    else:
        rows = h
    return rows if len(rows["order_ts"]) > len(held["order_ts"]) else held


def validate(model: EtaModel, held: dict[str, Any]) -> dict[str, float]:
    """The model's error on held-out deliveries (with kitchen columns): the total at placement."""
    mid, lo, hi = at_order_minutes(model, held)
    actual = np.asarray(held["total_s"], dtype=np.float64) / 60.0
    err = np.abs(mid - actual)
    return {
        "orders": int(len(actual)),
        "mae_min": round(float(err.mean()), 3),
        "p90_min": round(float(np.quantile(err, 0.9)), 3),
        "interval80_coverage": round(float(np.mean((actual >= lo) & (actual <= hi))), 3),
    }


def serving_model(model_dir: Path) -> EtaModel | None:
    """The model the ETA service serves: the newest file that loads."""
    for _, path in reversed(model_files(model_dir)):
        try:
            return load_model(path)
        except ModelLoadError:
            continue
    return None


def _trained_until(model: EtaModel | None) -> float:
    if model is None:
        return 0.0
    return float(model.metrics.get("trained_on", {}).get("until_ts", 0.0))


def _moved(before: EtaModel, after: EtaModel) -> bool:
    """Whether ``after``'s interval bands differ from ``before``'s by more than noise: a stage
    calibrated anew or scaled now, or an edge moved by 0.5 min (a scaled band: 0.05 of the
    estimate's spread) or a tenth of the band's width."""
    for stage, new in after.stage_residuals.items():
        old = before.stage_residuals.get(stage)
        if old is None or old.scaled != new.scaled:
            return True
        tol = max(0.05 if old.scaled else 0.5, 0.1 * (old.high - old.low))
        if abs(new.low - old.low) >= tol or abs(new.high - old.high) >= tol:
            return True
    return False


def _record(model_dir: Path, outcome: Outcome) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    with (model_dir / "retrain.jsonl").open("a") as f:
        f.write(json.dumps(outcome.as_json()) + "\n")


def _recalibrate(
    serving: EtaModel,
    h: dict[str, Any],
    held: dict[str, Any] | None,
    model_dir: Path,
    *,
    cut: float | None = None,
    common: dict[str, Any] | None = None,
    deliveries: int = 0,
) -> Outcome | None:
    """The serving model written again (same trees, a new version) with its bands from the
    deliveries it never saw, when those bands moved; None when they did not."""
    unseen = unseen_by(serving, h, held if held is not None else _rows(h, np.zeros(0, int)))
    if len(unseen["order_ts"]) < MIN_RESIDUALS:
        return None
    fresh = calibrate(serving, unseen)
    if not _moved(serving, fresh):
        return None
    # The trees stay; the interval follows the city: its bands from every delivery its
    # trees never saw (all of the platform's, for a model of the simulator's history:
    # bands from 50 deliveries, not a 20 % slice of them).
    recal = dataclasses.replace(
        fresh,
        version=new_version(),
        metrics={
            **serving.metrics,
            "recalibrated": {
                "from_version": serving.version,
                "held_out_orders": len(held["order_ts"]) if held is not None else 0,
                "held_out_from_ts": cut,
                "calibration_orders": len(unseen["order_ts"]),
                **{k: v.as_list() for k, v in fresh.stage_residuals.items()},
            },
        },
    )
    path = save_model(recal, model_dir)
    common = common or {"deliveries": deliveries, "serving_version": serving.version}
    return Outcome(
        "kept",
        "the serving model is as good or better; its interval bands recalibrated on the "
        f"{len(unseen['order_ts'])} deliveries it never saw",
        path=path,
        **common,
    )


def retrain_once(
    history: dict[str, Any] | None,
    model_dir: Path,
    *,
    config: RetrainConfig | None = None,
    say: Callable[[str], None] | None = None,
) -> Outcome:
    """One pass over ``history`` (the Order database's deliveries, or None when too few)."""
    cfg = config or RetrainConfig()
    say = say or _log.info
    serving = serving_model(model_dir)
    need = min(cfg.min_orders, cfg.min_refine) if serving is not None else cfg.min_orders
    if history is None or len(history["order_ts"]) < need:
        n = 0 if history is None else len(history["order_ts"])
        if history is not None and serving is not None and n >= MIN_RESIDUALS:
            # Too few to learn from, enough to tell how the serving model misses.
            h = kitchen_columns({k: np.asarray(v) for k, v in history.items()})
            recal = _recalibrate(serving, h, None, model_dir, deliveries=n)
            if recal is not None:
                _record(model_dir, recal)
                say(f"retrain-eta: {recal.decision}: {recal.reason}")
                return recal
        out = Outcome("skipped", f"{n} deliveries, training needs {need}", n)
        say(f"retrain-eta: skipped: {out.reason}")
        return out
    order = np.argsort(history["order_ts"], kind="stable")
    h = kitchen_columns({k: np.asarray(v)[order] for k, v in history.items()})
    n = len(h["order_ts"])
    cut = float(np.quantile(h["order_ts"], 1.0 - cfg.validate_share))
    fit, held = _rows(h, h["order_ts"] < cut), _rows(h, h["order_ts"] >= cut)
    n_fit = len(fit["order_ts"])
    t0 = time.perf_counter()
    candidates: list[tuple[str, EtaModel]] = []
    if serving is not None and n_fit >= cfg.min_refine:
        candidates.append((f"model {serving.version} refined with {n_fit} deliveries",
                           refine(serving, fit, rounds=cfg.refine_rounds,
                                  nthread=cfg.nthread)))  # fmt: skip
    if n_fit >= cfg.min_orders:
        full = train(fit, out_dir=None, config=TrainConfig(rounds=cfg.rounds, nthread=cfg.nthread),
                     progress=lambda _: None, source="order database").model  # fmt: skip
        candidates.append((f"trained on {n_fit} deliveries alone", full))
    if not candidates:
        out = Outcome("skipped", f"{n_fit} deliveries to learn from: too few", n)
        say(f"retrain-eta: skipped: {out.reason}")
        return out
    scored = [(validate(m, held), how, m) for how, m in candidates]
    ours, how, cand = min(scored, key=lambda t: t[0]["mae_min"])
    theirs = validate(serving, held) if serving is not None else None
    better = theirs is None or ours["mae_min"] < theirs["mae_min"]
    metrics = {
        **cand.metrics,
        "trained_on": {
            "source": "order database (delivered orders)",
            "how": how,
            "orders": n_fit,
            "from_ts": float(fit["order_ts"].min()),
            "until_ts": float(h["order_ts"].max()),
            "base_model": serving.version if serving is not None and "refined" in how else "",
        },
        "validation": {
            **ours,
            "held_out_from_ts": cut,
            "serving_version": serving.version if serving is not None else "",
            "serving_mae_min": theirs["mae_min"] if theirs else None,
            "serving_p90_min": theirs["p90_min"] if theirs else None,
            "candidates": {h_: s_["mae_min"] for s_, h_, _ in scored},
        },
        "retrain_seconds": round(time.perf_counter() - t0, 2),
    }
    # Validated on its own bands; served with bands from the latest deliveries (unseen by
    # its trees), so the interval follows the city as it is now.
    cand = calibrate(cand, held)
    metrics["calibration"] = {
        "held_out_orders": len(held["order_ts"]),
        **{k: v.as_list() for k, v in cand.stage_residuals.items()},
    }
    cand = dataclasses.replace(cand, metrics=metrics)
    common = {
        "deliveries": n,
        "candidate_version": cand.version,
        "serving_version": serving.version if serving is not None else "",
        "candidate_mae_min": ours["mae_min"],
        "serving_mae_min": theirs["mae_min"] if theirs else None,
    }
    if better:
        path = save_model(cand, model_dir)
        out = Outcome("promoted", "better on the latest deliveries", path=path, **common)  # type: ignore[arg-type]
    elif serving is not None and (
        recal := _recalibrate(serving, h, held, model_dir, cut=cut, common=common)
    ):
        out = recal
    else:
        out = Outcome("kept", "the serving model is as good or better", **common)  # type: ignore[arg-type]
    _record(model_dir, out)
    say(
        f"retrain-eta: {out.decision} candidate {cand.version}, {how} (validation MAE "
        f"{ours['mae_min']:.2f} min on {ours['orders']} latest deliveries) against serving "
        f"{out.serving_version or 'none'} ({theirs['mae_min'] if theirs else float('nan'):.2f} "
        f"min)"
    )
    return out


def pass_due(
    cfg: RetrainConfig, *, new_since_model: int, new_since_pass: int, since_pass_s: float
) -> bool:
    """Whether a pass is due: ``min_new`` deliveries arrived since the last pass (or, before
    any, since the serving model), or the schedule came round with ``min_new_on_schedule``
    deliveries the serving model has not learned from. Counting from the last pass keeps a
    serving model that keeps winning from being retrained at every look."""
    if new_since_pass >= cfg.min_new:
        return True
    return since_pass_s >= cfg.every_s and new_since_model >= cfg.min_new_on_schedule


class Retrainer:
    """Retrains on a schedule and when enough new deliveries arrived; one pass at a time."""

    def __init__(
        self,
        postgres_url: str,
        model_dir: Path,
        *,
        config: RetrainConfig | None = None,
        graph: RoadGraph | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.postgres_url = postgres_url
        self.model_dir = model_dir
        self.config = config or RetrainConfig()
        self.graph = graph
        self.say = say or _log.info
        self.last_pass = time.monotonic()
        #: The newest delivery the last pass saw: a kept model is not retrained every look.
        self.looked_until = 0.0

    async def _deliveries(self) -> dict[str, Any] | None:
        if self.graph is None:
            self.graph = await asyncio.to_thread(RoadGraph.default)
        return await load_order_history(self.postgres_url, self.graph, traffic=TrafficModel(),
                                        min_orders=1, progress=lambda _: None)  # fmt: skip

    async def check(self, *, force: bool = False) -> Outcome | None:
        """One look: a pass if it is due (schedule or new deliveries) or ``force``d, else None."""
        h = await self._deliveries()
        n = 0 if h is None else len(h["order_ts"])
        serving = await asyncio.to_thread(serving_model, self.model_dir)
        until = _trained_until(serving)
        ts = np.asarray(h["order_ts"]) if h is not None else np.empty(0)
        new = int(np.sum(ts > until))
        cfg = self.config
        due = pass_due(
            cfg,
            new_since_model=new,
            new_since_pass=int(np.sum(ts > max(until, self.looked_until))),
            since_pass_s=time.monotonic() - self.last_pass,
        )
        if not (force or due):
            _log.debug("retrain-eta: %d deliveries, %d new: not yet", n, new)
            return None
        self.last_pass = time.monotonic()
        self.looked_until = float(ts.max()) if len(ts) else self.looked_until
        async with retrain_lease(self.postgres_url) as mine:
            if not mine:  # another replica writes the shared store; it hot-loads here too
                self.say("retrain-eta: another process holds the retraining lease: skipped")
                return Outcome("skipped", "another process is retraining", n)
            self.say(f"retrain-eta: {n} deliveries, {new} new since the serving model: "
                     "retraining")  # fmt: skip
            return await asyncio.to_thread(retrain_once, h, self.model_dir, config=cfg,
                                           say=self.say)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        """Looks every ``poll_s`` until ``stop``; a failed pass is logged, the next one tries."""
        while not stop.is_set():
            try:
                await self.check()
            except Exception as exc:  # the database away, a bad history: next look
                _log.warning("retrain-eta pass failed: %s: %s", type(exc).__name__, exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.poll_s)
            except TimeoutError:
                pass
