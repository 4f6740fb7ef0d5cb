"""The requests of an episode: when they arrive, how long they are, which client sends them.

:func:`draw_arrivals` is the one place an episode's workload is drawn (the simulator calls it with the
workload's own random stream):

* **Poisson** at ``workload.arrival_rate``, optionally **time-varying** with a
  :class:`RateProfile` (piecewise-constant factors, or a diurnal sine), drawn by thinning: candidates at
  the peak rate, each kept with probability rate(t) / peak;
* a **trace** (a CSV file, an inline list or a named shipped trace, mapped at load time, see
  :mod:`petalgym.scenario`), cut to a window that may start at a random point of the trace per episode;
* lengths from the workload's distributions (Poisson) or the trace; clients from the trace, or drawn by
  their weights (a client's ``rate`` is its weight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from petalgym.scenario import Scenario


@dataclass(frozen=True)
class RateProfile:
    """A time-varying arrival rate: ``arrival_rate`` x factor(t).

    ``kind`` "piecewise": factor ``factors[i]`` from ``times_s[i]`` (the first at 0) until the next time,
    the last one on (or, with ``period_s``, the pattern repeating every period); "diurnal": factor
    1 + ``amplitude`` sin(2 pi (t - ``phase_s``) / ``period_s``), amplitude in [0, 1)."""

    kind: str
    times_s: tuple[float, ...] = ()
    factors: tuple[float, ...] = ()
    period_s: float | None = None
    amplitude: float = 0.0
    phase_s: float = 0.0

    def factor(self, t: np.ndarray) -> np.ndarray:
        """The rate factor at times ``t`` (s)."""
        t = np.asarray(t, dtype=float)
        if self.kind == "diurnal":
            return 1.0 + self.amplitude * np.sin(2.0 * math.pi * (t - self.phase_s) / float(self.period_s))
        if self.period_s is not None:
            t = np.mod(t, self.period_s)
        idx = np.searchsorted(np.asarray(self.times_s), t, side="right") - 1
        return np.asarray(self.factors)[np.maximum(idx, 0)]

    @property
    def peak(self) -> float:
        """The largest factor."""
        return 1.0 + self.amplitude if self.kind == "diurnal" else max(self.factors)

    def mean_factor(self, horizon_s: float | None = None) -> float:
        """The time-average factor over one period (diurnal: 1), or over [0, ``horizon_s``] for a
        non-periodic piecewise profile (its last factor if no horizon is known)."""
        if self.kind == "diurnal":
            return 1.0
        times = list(self.times_s)
        end = self.period_s if self.period_s is not None else horizon_s
        if end is None or end <= 0:
            return float(self.factors[-1])
        bounds = [*(min(x, end) for x in times), end]
        return sum(f * (bounds[i + 1] - bounds[i]) for i, f in enumerate(self.factors)) / end


def _poisson_times(
    rng: np.random.Generator, rate: float, n: int | None, horizon: float | None, zero: bool
) -> np.ndarray:
    """Homogeneous Poisson arrival times: ``n`` of them, or all up to ``horizon``; the first at 0 with
    ``zero``. (The draws are the ones petalgym has always made for these cases.)"""
    if n is not None:
        gaps = rng.exponential(1.0 / rate, size=n)
        if zero and n:
            gaps[0] = 0.0
        times = np.cumsum(gaps)
    else:
        chunks = []
        t_end = 0.0
        while t_end <= horizon:  # type: ignore[operator]
            gaps = rng.exponential(1.0 / rate, size=4096)
            if zero and not chunks:
                gaps[0] = 0.0
            c = t_end + np.cumsum(gaps)
            chunks.append(c)
            t_end = c[-1]
        times = np.concatenate(chunks)
    if horizon is not None:
        times = times[times <= horizon]
    return times


def _profiled_times(
    rng: np.random.Generator,
    rate: float,
    profile: RateProfile,
    n: int | None,
    horizon: float | None,
    zero: bool,
) -> np.ndarray:
    """Non-homogeneous Poisson arrival times by thinning: candidates at the peak rate, each kept with
    probability factor(t) / peak (exact for any bounded rate); ``n`` of them or all up to ``horizon``."""
    peak = rate * profile.peak
    kept: list[np.ndarray] = []
    count, t_end = 0, 0.0
    while (n is not None and count < n) or (n is None and t_end <= horizon):  # type: ignore[operator]
        c = t_end + np.cumsum(rng.exponential(1.0 / peak, size=4096))
        u = rng.random(4096)
        keep = c[u * profile.peak < profile.factor(c)]
        kept.append(keep)
        count += len(keep)
        t_end = float(c[-1])
    times = np.concatenate(kept) if kept else np.zeros(0)
    if zero:  # a first request at 0; the others keep their times (shifting them would move the profile)
        times = np.concatenate([[0.0], times])
    if n is not None:
        times = times[:n]
    if horizon is not None:
        times = times[times <= horizon]
    return times


def draw_arrivals(
    scenario: Scenario, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(arrival times s, l_in, l_out, client) of one episode of ``scenario``, drawn from ``rng``."""
    w = scenario.workload
    n_clients = scenario.num_clients
    client = None
    if w.trace is not None:
        tr = w.trace
        times, l_in, l_out = tr.arrival_s, tr.l_in, tr.l_out
        client = tr.client
        if w.trace_window_s is not None:
            last = float(times[-1]) if len(times) else 0.0
            start = w.trace_start_s
            if w.trace_random_start:
                start = float(rng.uniform(0.0, max(last - w.trace_window_s, 0.0)))
            keep = (times >= start) & (times < start + w.trace_window_s)
            times, l_in, l_out = times[keep] - start, l_in[keep], l_out[keep]
            client = None if client is None else client[keep]
        if w.horizon_s is not None:
            keep = times <= w.horizon_s
            times, l_in, l_out = times[keep], l_in[keep], l_out[keep]
            client = None if client is None else client[keep]
        if w.num_requests is not None:
            times, l_in, l_out = times[: w.num_requests], l_in[: w.num_requests], l_out[: w.num_requests]
            client = None if client is None else client[: w.num_requests]
        n = len(times)
    else:
        zero = w.first_arrival == "zero"
        if w.rate_profile is None:
            times = _poisson_times(rng, w.arrival_rate, w.num_requests, w.horizon_s, zero)
        else:
            times = _profiled_times(rng, w.arrival_rate, w.rate_profile, w.num_requests, w.horizon_s, zero)
        n = len(times)
        l_in = w.l_in.sample(rng, n)
        l_out = w.l_out.sample(rng, n)
    if client is None:
        if n_clients > 1:
            weights = np.array([c.weight for c in scenario.clients])
            client = rng.choice(n_clients, size=n, p=weights / weights.sum())
        else:
            client = np.zeros(n, dtype=np.int64)
    return times, l_in, l_out, client
