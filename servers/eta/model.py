"""The trained ETA models: one versioned file, loaded whole or refused, and hot-reloaded.

A model file ``eta-<version>.json`` holds the XGBoost boosters (prep, travel and,
from files written since it exists, the pickup wait before a driver is assigned;
each predicting the 10th, 50th and 90th percentile, in minutes), the feature
lists they were trained on, the profiles of restaurants and drivers that history
gives (their mean prep time, their speed against the road graph), the pickup
wait by hour (what a file without the wait booster serves), each stage's conformal
interval band, and the held-out metrics.
``eta-<version>.meta.json`` beside it repeats the metrics and feature lists for people and tools.

:class:`ModelWatcher` polls the model directory; a newer file is loaded off the
event loop and swapped in. A file that does not load (truncated, not JSON, a
booster XGBoost refuses, features that do not match this code) is refused with
a clear error and the model in service stays.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xgboost as xgb

from foodmesh.core.tasks import stop_tasks
from servers.eta.conformal import Residuals, bands_from_doc
from servers.eta.features import (
    PREP_FEATURES,
    TRAVEL_FEATURES,
    WAIT_FEATURES,
    DriverProfile,
    RestaurantProfile,
)

__all__ = [
    "FORMAT",
    "QUANTILES",
    "EtaModel",
    "ModelLoadError",
    "ModelWatcher",
    "load_model",
    "model_files",
    "new_version",
    "save_model",
]

_log = logging.getLogger("foodmesh.eta.model")

FORMAT = "foodmesh-eta/1"
QUANTILES = (0.1, 0.5, 0.9)
_NAME = re.compile(r"^eta-(?P<version>[0-9A-Za-z_.-]+)\.json$")

F64 = npt.NDArray[np.float64]


class ModelLoadError(Exception):
    """A model file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class EtaModel:
    """The boosters and what they need at prediction time."""

    version: str
    prep: xgb.Booster
    travel: xgb.Booster
    restaurants: Mapping[str, RestaurantProfile]
    drivers: Mapping[str, DriverProfile]
    default_restaurant: RestaurantProfile
    default_driver: DriverProfile
    #: Minutes from food ready to picked up when no driver is known yet: (q10, q50, q90) by hour.
    pickup_wait_by_hour: tuple[tuple[float, float, float], ...]
    #: Minutes a driver spends at the counter once there.
    handover_min: float
    #: The pickup wait before a driver is assigned (``WAIT_FEATURES``: live supply, weather,
    #: events); None in files from before it, which serve ``pickup_wait_by_hour``.
    wait: xgb.Booster | None = None
    wait_interval_scale: float = 1.0
    #: Widens (or narrows) each model's 10-90 spread around its median so that 80% of a
    #: calibration slice (the latest training orders, unseen by the trees) falls inside.
    prep_interval_scale: float = 1.0
    travel_interval_scale: float = 1.0
    #: Then widens (or narrows) the total's interval so that 80% of deliveries fall inside.
    total_interval_scale: float = 1.0
    #: Split-conformal bands per stage (``servers.eta.conformal``): where a stage has one,
    #: its 80 % interval is the estimate plus the band, not the scaled spreads.
    stage_residuals: Mapping[str, Residuals] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def restaurant(self, restaurant_id: str) -> tuple[RestaurantProfile, bool]:
        """The restaurant's profile and whether history knows it."""
        p = self.restaurants.get(restaurant_id)
        return (p, True) if p is not None else (self.default_restaurant, False)

    def driver(self, driver_id: str) -> DriverProfile:
        return self.drivers.get(driver_id) or self.default_driver

    @staticmethod
    def _quantiles(booster: xgb.Booster, x: F64, scale: float) -> F64:
        out = np.asarray(booster.inplace_predict(np.ascontiguousarray(x, dtype=np.float32)))
        out = out.reshape(len(x), len(QUANTILES)).astype(np.float64)
        out.sort(axis=1)  # quantile models may cross; order restores q10 <= q50 <= q90
        if scale != 1.0:
            mid = out[:, 1:2]
            out = mid + (out - mid) * scale
        return np.asarray(np.maximum(out, 0.0), dtype=np.float64)

    def predict_prep(self, x: F64) -> F64:
        """(n, 3) minutes: q10, q50, q90 of preparation time."""
        return self._quantiles(self.prep, x, self.prep_interval_scale)

    def predict_travel(self, x: F64) -> F64:
        """(n, 3) minutes: q10, q50, q90 of a leg's travel time."""
        return self._quantiles(self.travel, x, self.travel_interval_scale)

    def predict_wait(self, x: F64) -> F64:
        """(n, 3) minutes: q10, q50, q90 of the pickup wait (rows of ``WAIT_FEATURES``).

        Raises:
            ValueError: the model has no wait booster (check ``model.wait`` first).
        """
        if self.wait is None:
            raise ValueError(f"model {self.version} has no pickup-wait booster")
        return self._quantiles(self.wait, x, self.wait_interval_scale)


def new_version(now: dt.datetime | None = None) -> str:
    """A version that sorts by time: ``20261125T104100123456Z``."""
    now = now or dt.datetime.now(dt.UTC)
    return now.strftime("%Y%m%dT%H%M%S%fZ")


def _booster_blob(b: xgb.Booster) -> str:
    return base64.b64encode(bytes(b.save_raw("ubj"))).decode("ascii")


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: EtaModel, directory: Path) -> Path:
    """Writes ``eta-<version>.json`` and its ``.meta.json`` atomically; returns the model's path."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT,
        "version": model.version,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quantiles": list(QUANTILES),
        "prep_features": list(PREP_FEATURES),
        "travel_features": list(TRAVEL_FEATURES),
        "prep_booster": _booster_blob(model.prep),
        "travel_booster": _booster_blob(model.travel),
        "restaurants": {k: [v.avg_prep_min, v.orders] for k, v in model.restaurants.items()},
        "drivers": {k: [v.speed_ratio, v.deliveries] for k, v in model.drivers.items()},
        "default_restaurant": [model.default_restaurant.avg_prep_min, 0],
        "default_driver": [model.default_driver.speed_ratio, 0],
        "pickup_wait_by_hour": [list(w) for w in model.pickup_wait_by_hour],
        "handover_min": model.handover_min,
        "prep_interval_scale": model.prep_interval_scale,
        "travel_interval_scale": model.travel_interval_scale,
        "total_interval_scale": model.total_interval_scale,
        "stage_residuals": {k: v.as_list() for k, v in model.stage_residuals.items()},
        "metrics": dict(model.metrics),
    }
    if model.wait is not None:
        doc["wait_features"] = list(WAIT_FEATURES)
        doc["wait_booster"] = _booster_blob(model.wait)
        doc["wait_interval_scale"] = model.wait_interval_scale
    keys = ("format", "version", "created_at", "quantiles", "prep_features", "travel_features",
            "wait_features", "metrics")  # fmt: skip
    meta = {k: doc[k] for k in keys if k in doc}
    path = directory / f"eta-{model.version}.json"
    _write_atomic(directory / f"eta-{model.version}.meta.json", json.dumps(meta, indent=2))
    _write_atomic(path, json.dumps(doc))
    return path


def _booster(doc: Mapping[str, Any], key: str, n_features: int) -> xgb.Booster:
    b = xgb.Booster()
    b.load_model(bytearray(base64.b64decode(doc[key], validate=True)))
    if b.num_features() != n_features:
        raise ValueError(f"{key} expects {b.num_features()} features, this code has {n_features}")
    b.set_param({"nthread": 1})  # single rows: threads cost more than they save
    return b


def load_model(path: Path) -> EtaModel:
    """Loads a model file whole; raises :class:`ModelLoadError` naming the file and the fault."""
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} model file")
        if tuple(doc["prep_features"]) != PREP_FEATURES:
            raise ValueError("prep features differ from this code's; retrain with train-eta")
        if tuple(doc["travel_features"]) != TRAVEL_FEATURES:
            raise ValueError("travel features differ from this code's; retrain with train-eta")
        wait = tuple((float(a), float(b), float(c)) for a, b, c in doc["pickup_wait_by_hour"])
        if len(wait) != 24:
            raise ValueError("pickup_wait_by_hour must have 24 rows")
        wait_booster = None
        if "wait_booster" in doc:  # files from before it serve the wait by hour
            if tuple(doc.get("wait_features", ())) != WAIT_FEATURES:
                raise ValueError("wait features differ from this code's; retrain with train-eta")
            wait_booster = _booster(doc, "wait_booster", len(WAIT_FEATURES))
        dr = doc["default_restaurant"]
        dd = doc["default_driver"]
        return EtaModel(
            version=str(doc["version"]),
            prep=_booster(doc, "prep_booster", len(PREP_FEATURES)),
            travel=_booster(doc, "travel_booster", len(TRAVEL_FEATURES)),
            restaurants={
                str(k): RestaurantProfile(float(v[0]), int(v[1]))
                for k, v in doc["restaurants"].items()
            },
            drivers={
                str(k): DriverProfile(float(v[0]), int(v[1])) for k, v in doc["drivers"].items()
            },
            default_restaurant=RestaurantProfile(float(dr[0]), int(dr[1])),
            default_driver=DriverProfile(float(dd[0]), int(dd[1])),
            pickup_wait_by_hour=wait,
            handover_min=float(doc["handover_min"]),
            wait=wait_booster,
            wait_interval_scale=float(doc.get("wait_interval_scale", 1.0)),
            prep_interval_scale=float(doc.get("prep_interval_scale", 1.0)),
            travel_interval_scale=float(doc.get("travel_interval_scale", 1.0)),
            total_interval_scale=float(doc.get("total_interval_scale", 1.0)),
            stage_residuals=bands_from_doc(doc.get("stage_residuals", {})),
            metrics=dict(doc.get("metrics", {})),
            path=path,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # every way a file can be bad ends here, named
        raise ModelLoadError(f"model file {path} refused: {type(exc).__name__}: {exc}") from None


def model_files(directory: Path) -> list[tuple[str, Path]]:
    """The model files in ``directory`` as (version, path), oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and not p.name.endswith(".meta.json"):
            found.append((m["version"], p))
    return sorted(found)


class ModelWatcher:
    """Keeps the newest loadable model of a directory in service, polling for new files."""

    def __init__(self, directory: Path, *, poll_s: float = 2.0) -> None:
        self.directory = directory
        self.poll_s = poll_s
        self.current: EtaModel | None = None
        #: The last refusal (file and reason), for logs and tests.
        self.last_error: str | None = None
        self._tried: dict[Path, float] = {}
        self._task: asyncio.Task[None] | None = None

    def _candidate(self) -> Path | None:
        files = model_files(self.directory)
        current = self.current.version if self.current is not None else ""
        for version, path in reversed(files):
            if version <= current:
                return None
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if self._tried.get(path) == mtime:
                continue  # refused before, unchanged since: do not log it every poll
            return path
        return None

    def _load(self, path: Path) -> bool:
        try:
            self._tried[path] = path.stat().st_mtime
            model = load_model(path)
        except (ModelLoadError, OSError) as exc:
            self.last_error = str(exc)
            kept = self.current.version if self.current is not None else "baseline"
            _log.error("%s; still serving %s", exc, kept)
            return False
        self.current = model
        _log.info("serving ETA model %s (%s)", model.version, path)
        return True

    def poll_once(self) -> bool:
        """Loads the newest untried file, if any (blocking); True when a new model is in service."""
        path = self._candidate()
        return self._load(path) if path is not None else False

    async def poll(self) -> bool:
        path = self._candidate()
        if path is None:
            return False
        return await asyncio.to_thread(self._load, path)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                async with asyncio.timeout(max(30.0, self.poll_s * 5)):
                    await self.poll()
            except TimeoutError:
                _log.warning("loading a model took over the poll budget; trying again")
            except Exception:  # a watcher that dies leaves the service on an old model forever
                _log.exception("model poll failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="eta-model-watcher")

    async def stop(self) -> None:
        await stop_tasks([self._task])
        self._task = None
