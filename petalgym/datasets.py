"""The measured data shipped with petalgym (``petalgym/data``; attribution in each folder's README).

* :func:`azure_trace`: the Azure LLM inference traces 2023 (CC-BY 4.0, Microsoft Azure): arrival times
  (s after the trace's first request), prompt and output lengths.
* :func:`ripe_atlas`: the European RIPE Atlas latency measurements (MIT, via the successor paper's
  repository): per measured destination, the median of its four pings (ms) and its coordinates.

Each file is read once per process and returned as read-only arrays.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources

import numpy as np

#: Named traces: name -> file in petalgym/data/traces.
AZURE_TRACES = {
    "azure-code-2023": "AzureLLMInferenceTrace_code.csv",
    "azure-conv-2023": "AzureLLMInferenceTrace_conv.csv",
}


@dataclass(frozen=True, eq=False)
class RecordedTrace:
    """A shipped trace: ``arrival_s`` (s after its first request), ``l_in`` and ``l_out`` per request."""

    name: str
    arrival_s: np.ndarray
    l_in: np.ndarray
    l_out: np.ndarray

    @property
    def rate(self) -> float:
        """Mean arrival rate (requests/s): (n - 1) / span."""
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self.arrival_s) - 1) / span if span > 0 else float("inf")


def _timestamp(text: str) -> float:
    """Seconds since the epoch of ``YYYY-MM-DD HH:MM:SS.fffffff`` (7 fractional digits, which
    ``datetime`` cannot parse as they are)."""
    whole, _, fraction = text.partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float("0." + fraction) if fraction else 0.0)


def _frozen(values: list, dtype: type) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    arr.flags.writeable = False
    return arr


@functools.cache
def azure_trace(name: str) -> RecordedTrace:
    """The named Azure trace (KeyError if ``name`` is not one of :data:`AZURE_TRACES`)."""
    path = resources.files("petalgym").joinpath("data", "traces", AZURE_TRACES[name])
    times, l_in, l_out = [], [], []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            times.append(_timestamp(row["TIMESTAMP"]))
            l_in.append(int(row["ContextTokens"]))
            l_out.append(int(row["GeneratedTokens"]))
    t = np.asarray(times)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order[0]]
    return RecordedTrace(
        name,
        _frozen(t, float),
        _frozen(np.asarray(l_in)[order], np.int64),
        _frozen(np.asarray(l_out)[order], np.int64),
    )


@dataclass(frozen=True, eq=False)
class RipeAtlas:
    """RIPE Atlas destinations: ``median_ms`` (median of the four pings from the measuring anchor),
    ``latitude`` and ``longitude`` (degrees), one entry per measured destination."""

    median_ms: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray

    def __len__(self) -> int:
        return len(self.median_ms)


@functools.cache
def ripe_atlas() -> RipeAtlas:
    """The shipped RIPE Atlas measurements (rows without four valid pings or coordinates are skipped)."""
    path = resources.files("petalgym").joinpath("data", "rtt", "LearningDataset_RTT_RipeAtlasEU.csv")
    med, lat, lon = [], [], []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                pings = [float(row[f"latency_m{k}"]) for k in range(1, 5)]
                la, lo = float(row["latitude"]), float(row["longitude"])
            except (TypeError, ValueError):
                continue
            if not all(np.isfinite(pings)) or min(pings) <= 0 or not (np.isfinite(la) and np.isfinite(lo)):
                continue
            med.append(float(np.median(pings)))
            lat.append(la)
            lon.append(lo)
    return RipeAtlas(_frozen(med, float), _frozen(lat, float), _frozen(lon, float))


def great_circle_km(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Haversine distance (km, Earth radius 6,371 km) between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi, dlmb = p2 - p1, np.radians(lon2) - np.radians(lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
