"""Workloads: the shipped Azure 2023 traces as named workloads (windows, rate scaling, thinning, length
mapping, random starts), time-varying Poisson rates (piecewise and diurnal profiles), clients with their own
rates, the warm-up, clear errors for bad input (API and CLI), and short simulations on a trace workload.

Expected values are computed here from the CSV files (an independent reader), from the recorded trace of
:mod:`petalgym.datasets` or from the profile's own formula; the only typed-in numbers are the request counts
stated in ``petalgym/data/traces/README.md``. Statistical checks use fixed seeds and 4.5-sigma bounds."""

from __future__ import annotations

import csv
import itertools
import math
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from petalgym import datasets
from petalgym.cli import main
from petalgym.deciders import make_decider
from petalgym.errors import ScenarioError
from petalgym.metrics import summarise
from petalgym.scenario import Scenario, load_scenario, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus
from petalgym.workload import RateProfile, _poisson_times, _profiled_times, draw_arrivals

CONV, CODE = "azure-conv-2023", "azure-code-2023"
#: Request counts stated in petalgym/data/traces/README.md.
README_COUNTS = {CONV: 19_366, CODE: 8_819}
Z = 4.5  # sigma bound of the statistical checks


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def minimal(workload: dict[str, Any], **top: Any) -> dict[str, Any]:
    """A small valid scenario (BLOOM-176B on two A100s, one client, an RTT matrix) with ``workload``."""
    data: dict[str, Any] = {
        "name": "mini",
        "servers": [{"profile": "a100", "count": 2}],
        "network": {"kind": "matrix", "rtt_ms": [[10, 20]]},
        "workload": workload,
    }
    data.update(top)
    return data


def build(workload: dict[str, Any], **top: Any) -> Scenario:
    return scenario_from_dict(minimal(workload, **top))


def named(trace: dict[str, Any], **workload: Any) -> Scenario:
    """A scenario whose workload is the named trace ``trace`` (plus other workload fields)."""
    return build({"trace": trace, **workload})


def arrivals(sc: Scenario, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return draw_arrivals(sc, np.random.default_rng(seed))


def read_csv_trace(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An independent reader of a shipped trace: (s after the first request, prompt, output), by time."""
    path = resources.files("petalgym").joinpath("data", "traces", datasets.AZURE_TRACES[name])
    stamps, l_in, l_out = [], [], []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            stamps.append(np.datetime64(row["TIMESTAMP"].replace(" ", "T"), "ns"))
            l_in.append(int(row["ContextTokens"]))
            l_out.append(int(row["GeneratedTokens"]))
    ns = np.asarray(stamps, dtype="datetime64[ns]").astype(np.int64)
    order = np.argsort(ns, kind="stable")
    t = (ns[order] - ns[order[0]]) * 1e-9
    return t, np.asarray(l_in)[order], np.asarray(l_out)[order]


def locate(times: np.ndarray, l_in: np.ndarray, source: Any) -> tuple[int, float]:
    """(index, offset) such that ``times`` are the consecutive requests ``source[index:]`` (times minus
    ``offset``, same prompt lengths); fails if there is none."""
    n = len(times)
    assert n >= 2
    for i in np.flatnonzero(source.l_in[: len(source.l_in) - n + 1] == l_in[0]):
        seg = source.arrival_s[i : i + n]
        if np.array_equal(source.l_in[i : i + n], l_in) and np.allclose(seg - times, seg[0] - times[0]):
            return int(i), float(seg[0] - times[0])
    raise AssertionError("the arrivals are not a contiguous stretch of the trace")


def assert_count(observed: int, expected: float, what: str = "") -> None:
    """A Poisson count within Z sigma of its expectation."""
    assert abs(observed - expected) <= Z * math.sqrt(expected), f"{what}: {observed} vs {expected:.1f}"


def reference_draw(sc: Scenario, rng: np.random.Generator):
    """The Poisson workload draw of petalgym before rate profiles (Simulator._draw_workload at commit
    55d1c41), copied verbatim but for names: the new code must draw the same arrivals from the same stream."""
    w = sc.workload
    n_clients = sc.num_clients
    if w.num_requests is not None:
        n = w.num_requests
        gaps = rng.exponential(1.0 / w.arrival_rate, size=n)
        if w.first_arrival == "zero" and n:
            gaps[0] = 0.0
        times = np.cumsum(gaps)
    else:
        chunks = []
        t_end = 0.0
        while t_end <= w.horizon_s:
            gaps = rng.exponential(1.0 / w.arrival_rate, size=4096)
            if w.first_arrival == "zero" and not chunks:
                gaps[0] = 0.0
            c = t_end + np.cumsum(gaps)
            chunks.append(c)
            t_end = c[-1]
        times = np.concatenate(chunks)
    if w.horizon_s is not None:
        times = times[times <= w.horizon_s]
    n = len(times)
    l_in = w.l_in.sample(rng, n)
    l_out = w.l_out.sample(rng, n)
    if n_clients > 1:
        weights = np.array([c.weight for c in sc.clients])
        client = rng.choice(n_clients, size=n, p=weights / weights.sum())
    else:
        client = np.zeros(n, dtype=np.int64)
    return times, l_in, l_out, client


# --------------------------------------------------------------------------------------------------
# 1. Named traces
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [CONV, CODE])
def test_recorded_trace_matches_the_csv_and_the_readme(name):
    rec = datasets.azure_trace(name)
    t, l_in, l_out = read_csv_trace(name)
    assert len(rec.arrival_s) == README_COUNTS[name] == len(t)
    assert rec.name == name
    assert rec.arrival_s[0] == 0.0 and np.all(np.diff(rec.arrival_s) >= 0)
    np.testing.assert_allclose(rec.arrival_s, t, rtol=0, atol=1e-5)
    assert np.array_equal(rec.l_in, l_in) and np.array_equal(rec.l_out, l_out)
    assert rec.rate == pytest.approx((len(t) - 1) / t[-1], rel=1e-9)
    assert not rec.arrival_s.flags.writeable  # shared read-only arrays
    assert datasets.azure_trace(name) is rec  # read once per process


@pytest.mark.parametrize("name", [CONV, CODE])
def test_named_trace_kept_unchanged_is_the_recorded_trace(name):
    rec = datasets.azure_trace(name)
    w = named({"name": name, "lengths": "keep"}).workload
    tr = w.trace
    assert len(tr.arrival_s) == README_COUNTS[name]
    assert np.array_equal(tr.arrival_s, rec.arrival_s)
    assert np.array_equal(tr.l_in, rec.l_in) and np.array_equal(tr.l_out, rec.l_out)
    assert tr.client is None  # clients are drawn per episode
    assert w.mean_lengths() == (
        math.floor(float(np.mean(rec.l_in)) + 0.5),
        math.floor(float(np.mean(rec.l_out)) + 0.5),
    )
    assert w.max_tokens == int((rec.l_in + rec.l_out).max())
    assert w.trace_window_s is None and not w.trace_random_start
    assert name in w.trace_note and "CC-BY 4.0" in w.trace_note and "unchanged" in w.trace_note
    # a whole episode replays the whole trace
    times, a_in, a_out, client = arrivals(named({"name": name, "lengths": "keep"}))
    assert np.array_equal(times, rec.arrival_s) and np.array_equal(a_in, rec.l_in)
    assert np.array_equal(a_out, rec.l_out) and np.all(client == 0)


@pytest.mark.parametrize("name", [CONV, CODE])
@pytest.mark.parametrize(("start", "duration"), [(600.0, 300.0), (0.0, 120.0), (3000.0, 10_000.0)])
def test_window_keeps_the_requests_inside_it_shifted_to_zero(name, start, duration):
    rec = datasets.azure_trace(name)
    sc = named({"name": name, "lengths": "keep", "start_s": start, "duration_s": duration})
    times, l_in, l_out, _ = arrivals(sc)
    inside = (rec.arrival_s >= start) & (rec.arrival_s < start + duration)
    assert len(times) == int(inside.sum()) > 0
    np.testing.assert_allclose(times, rec.arrival_s[inside] - start, rtol=0, atol=1e-9)
    assert np.array_equal(l_in, rec.l_in[inside]) and np.array_equal(l_out, rec.l_out[inside])
    assert times.min() >= 0.0 and times.max() < duration
    assert f"window of {duration:g} s from {start:g} s" in sc.workload.trace_note


def test_window_statistics_match_the_csv():
    """Request count and length statistics of a window equal those computed from the CSV itself."""
    t, c_in, c_out = read_csv_trace(CONV)
    start, duration = 1200.0, 600.0
    inside = (t >= start) & (t < start + duration)
    times, l_in, l_out, _ = arrivals(
        named({"name": CONV, "lengths": "keep", "start_s": start, "duration_s": duration})
    )
    assert len(times) == int(inside.sum())
    for got, want in ((l_in, c_in[inside]), (l_out, c_out[inside])):
        assert got.mean() == pytest.approx(want.mean(), rel=1e-12)
        assert np.median(got) == np.median(want)
        assert (got.min(), got.max()) == (want.min(), want.max())
        assert np.percentile(got, 95) == pytest.approx(np.percentile(want, 95))


def test_start_without_duration_runs_to_the_end_of_the_trace():
    rec = datasets.azure_trace(CODE)
    times, *_ = arrivals(named({"name": CODE, "lengths": "keep", "start_s": 1800}))
    assert len(times) == int((rec.arrival_s >= 1800).sum())
    np.testing.assert_allclose(times, rec.arrival_s[rec.arrival_s >= 1800] - 1800, atol=1e-9)


def test_horizon_and_num_requests_cut_the_window():
    rec = datasets.azure_trace(CONV)
    base = {"name": CONV, "lengths": "keep", "start_s": 600, "duration_s": 600}
    inside = rec.arrival_s[(rec.arrival_s >= 600) & (rec.arrival_s < 1200)] - 600
    times, *_ = arrivals(named(base, horizon_s=100.0))
    np.testing.assert_allclose(times, inside[inside <= 100.0], atol=1e-9)
    times, *_ = arrivals(named(base, num_requests=25))
    np.testing.assert_allclose(times, inside[:25], atol=1e-9)


@pytest.mark.parametrize("name", [CONV, CODE])
@pytest.mark.parametrize("target", [0.05, 1.0, 12.5])
def test_rate_scales_inter_arrival_times_to_the_target_mean_rate(name, target):
    rec = datasets.azure_trace(name)
    tr = named({"name": name, "lengths": "keep", "rate": target}).workload.trace
    assert len(tr.arrival_s) == len(rec.arrival_s)
    mean_rate = (len(tr.arrival_s) - 1) / (tr.arrival_s[-1] - tr.arrival_s[0])
    assert mean_rate == pytest.approx(target, rel=1e-6)
    factor = rec.rate / target
    # (to rounding of the scaled absolute times)
    np.testing.assert_allclose(
        np.diff(tr.arrival_s), np.diff(rec.arrival_s) * factor, rtol=1e-9, atol=1e-12 * tr.arrival_s[-1]
    )


@pytest.mark.parametrize("name", [CONV, CODE])
def test_rate_is_the_mean_rate_after_dropping(name):
    tr = named({"name": name, "lengths": "drop", "rate": 1.0}).workload.trace
    mean_rate = (len(tr.arrival_s) - 1) / (tr.arrival_s[-1] - tr.arrival_s[0])
    assert mean_rate == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("scale", [0.25, 3.0])
def test_time_scale_multiplies_times_and_the_window_is_in_trace_seconds(scale):
    rec = datasets.azure_trace(CONV)
    sc = named({"name": CONV, "lengths": "keep", "time_scale": scale})
    np.testing.assert_allclose(sc.workload.trace.arrival_s, rec.arrival_s * scale, rtol=1e-12)
    # the window is given in the trace's own seconds: the same requests, times scaled
    sc = named({"name": CONV, "lengths": "keep", "time_scale": scale, "start_s": 600, "duration_s": 300})
    times, l_in, _, _ = arrivals(sc)
    inside = (rec.arrival_s >= 600) & (rec.arrival_s < 900)
    assert len(times) == int(inside.sum())
    np.testing.assert_allclose(times, (rec.arrival_s[inside] - 600) * scale, rtol=1e-9, atol=1e-9)
    assert np.array_equal(l_in, rec.l_in[inside])
    assert sc.workload.trace_window_s == pytest.approx(300 * scale)


def test_rate_with_a_window():
    rec = datasets.azure_trace(CODE)
    sc = named({"name": CODE, "lengths": "keep", "rate": 0.5, "start_s": 900, "duration_s": 600})
    factor = rec.rate / 0.5
    times, *_ = arrivals(sc)
    inside = (rec.arrival_s >= 900) & (rec.arrival_s < 1500)
    np.testing.assert_allclose(times, (rec.arrival_s[inside] - 900) * factor, rtol=1e-9, atol=1e-9)
    assert times.max() < 600 * factor


@pytest.mark.parametrize("name", [CONV, CODE])
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_thin_keeps_about_the_given_fraction(name, p):
    rec = datasets.azure_trace(name)
    n = len(rec.arrival_s)
    tr = named({"name": name, "lengths": "keep", "thin": p}).workload.trace
    k = len(tr.arrival_s)
    assert abs(k - p * n) <= Z * math.sqrt(n * p * (1 - p))
    # a subset of the requests (recorded times are distinct), times and lengths untouched
    assert np.all(np.diff(rec.arrival_s) > 0)
    idx = np.searchsorted(rec.arrival_s, tr.arrival_s)
    assert np.array_equal(rec.arrival_s[idx], tr.arrival_s)
    assert np.array_equal(rec.l_in[idx], tr.l_in) and np.array_equal(rec.l_out[idx], tr.l_out)


def test_thin_seed():
    def kept(seed: int | None) -> np.ndarray:
        extra = {} if seed is None else {"seed": seed}
        return named({"name": CODE, "lengths": "keep", "thin": 0.3, **extra}).workload.trace.arrival_s

    assert np.array_equal(kept(7), kept(7))
    assert np.array_equal(kept(None), kept(0))  # seed 0 is the default
    assert not np.array_equal(kept(7), kept(8))


@pytest.mark.parametrize("name", [CONV, CODE])
def test_cap_fits_the_models_longest_session(name):
    rec = datasets.azure_trace(name)
    sc = named({"name": name})  # lengths: cap is the default
    cap = sc.model.max_session_tokens
    assert cap is not None
    tr = sc.workload.trace
    over = rec.l_in + rec.l_out > cap
    assert over.any()  # the cap does something on these traces
    assert len(tr.l_in) == len(rec.l_in)  # nothing dropped
    assert np.all(tr.l_in + tr.l_out <= cap) and np.all(tr.l_in >= 1) and np.all(tr.l_out >= 1)
    assert np.array_equal(tr.l_in[~over], rec.l_in[~over]) and np.array_equal(
        tr.l_out[~over], rec.l_out[~over]
    )
    # an overlong request keeps its output (it fits) and has its prompt cut to fill the session
    assert np.all(tr.l_in <= rec.l_in) and np.all(tr.l_out <= rec.l_out)
    fits = over & (rec.l_out < cap)
    assert np.array_equal(tr.l_out[fits], rec.l_out[fits])
    assert np.array_equal(tr.l_in[fits], cap - rec.l_out[fits])
    assert sc.workload.max_tokens <= cap
    assert f"{int(over.sum())} prompts capped to fit {cap} tokens" in sc.workload.trace_note


def test_cap_follows_the_model():
    """The default cap is the model's own longest session, not a fixed number."""
    bloom = named({"name": CONV})
    llama = build({"trace": {"name": CONV}}, model="llama-3.1-70b")
    small, large = bloom.model.max_session_tokens, llama.model.max_session_tokens
    assert small is not None and large is not None and large > small
    tr = llama.workload.trace
    assert np.all(tr.l_in + tr.l_out <= large)
    assert (tr.l_in + tr.l_out > small).any()


@pytest.mark.parametrize("limit", [500, 3000])
def test_max_tokens_overrides_the_cap(limit):
    rec = datasets.azure_trace(CONV)
    sc = named({"name": CONV, "max_tokens": limit})
    tr = sc.workload.trace
    assert np.all(tr.l_in + tr.l_out <= limit) and np.all(tr.l_in >= 1)
    assert sc.workload.max_tokens == limit  # some requests are cut exactly to it
    fits = rec.l_in + rec.l_out <= limit
    assert np.array_equal(tr.l_in[fits], rec.l_in[fits])
    # an output longer than the limit is cut too (to limit - 1, leaving one prompt token)
    long_out = rec.l_out >= limit
    if long_out.any():
        assert np.all(tr.l_out[long_out] == limit - 1) and np.all(tr.l_in[long_out] == 1)


@pytest.mark.parametrize("name", [CONV, CODE])
def test_drop_removes_the_long_requests(name):
    rec = datasets.azure_trace(name)
    sc = named({"name": name, "lengths": "drop", "max_tokens": 2000})
    tr = sc.workload.trace
    fits = rec.l_in + rec.l_out <= 2000
    assert len(tr.arrival_s) == int(fits.sum()) < len(rec.arrival_s)
    assert np.array_equal(tr.arrival_s, rec.arrival_s[fits])
    assert np.array_equal(tr.l_in, rec.l_in[fits]) and np.array_equal(tr.l_out, rec.l_out[fits])
    assert f"{int((~fits).sum())} requests over 2000 tokens dropped" in sc.workload.trace_note


@pytest.mark.parametrize("s", [0.5, 2.0, 0.001])
def test_scale_multiplies_both_lengths(s):
    rec = datasets.azure_trace(CODE)
    tr = named({"name": CODE, "lengths": {"scale": s}}).workload.trace
    assert len(tr.l_in) == len(rec.l_in)
    for got, orig in ((tr.l_in, rec.l_in), (tr.l_out, rec.l_out)):
        assert np.all(got >= 1)
        big = orig * s >= 1
        assert np.all(np.abs(got[big] - orig[big] * s) <= 0.5)
        assert np.all(got[~big] == 1)
    assert np.array_equal(tr.arrival_s, rec.arrival_s)


def test_trace_note_names_every_change():
    note = named(
        {"name": CODE, "lengths": "drop", "thin": 0.5, "start_s": "random", "duration_s": 600}
    ).workload.trace_note
    assert note.startswith(f"{CODE} (Azure LLM inference 2023, CC-BY 4.0)")
    assert "dropped" in note and "thinned to 50 %" in note and "window of 600 s at a random start" in note
    assert "inter-arrival times x" in named({"name": CODE, "rate": 1.0}).workload.trace_note


@pytest.mark.parametrize("name", [CONV, CODE])
def test_random_start_depends_on_the_seed_only(name):
    rec = datasets.azure_trace(name)
    duration = 300.0
    sc = named({"name": name, "lengths": "keep", "start_s": "random", "duration_s": duration})
    assert sc.workload.trace_random_start and sc.workload.trace_window_s == duration
    starts = []
    for seed in range(5):
        times, l_in, l_out, _ = arrivals(sc, seed)
        again = arrivals(sc, seed)
        assert np.array_equal(times, again[0]) and np.array_equal(l_in, again[1])
        assert times.min() >= 0.0 and times.max() < duration
        i, start = locate(times, l_in, rec)
        assert 0.0 <= start <= rec.arrival_s[-1] - duration + 1e-9
        # exactly the recorded requests of [start, start + duration) (start recovered to ~1e-12 s)
        inside = (rec.arrival_s >= start - 1e-9) & (rec.arrival_s < start + duration - 1e-9)
        assert int(inside.sum()) == len(times) and int(np.flatnonzero(inside)[0]) == i
        assert np.array_equal(l_out, rec.l_out[i : i + len(times)])
        starts.append(round(start, 6))
    assert len(set(starts)) == len(starts)  # a different window per seed


# --------------------------------------------------------------------------------------------------
# 2. Rate profiles
# --------------------------------------------------------------------------------------------------
def profiled(profile: dict[str, Any], rate: float, **workload: Any) -> Scenario:
    return build({"arrival_rate": rate, "rate_profile": profile, **workload})


def test_piecewise_profile_rates_per_segment():
    times_s, factors, rate, horizon = [0, 200, 400], [1.0, 4.0, 0.5], 1.0, 700.0
    sc = profiled({"kind": "piecewise", "times_s": times_s, "factors": factors}, rate, horizon_s=horizon)
    prof = sc.workload.rate_profile
    assert prof == RateProfile("piecewise", (0.0, 200.0, 400.0), (1.0, 4.0, 0.5), None)
    t, l_in, l_out, client = arrivals(sc, seed=0)
    assert len(t) == len(l_in) == len(l_out) == len(client)
    edges = [*times_s, horizon]
    for k, f in enumerate(factors):
        n = int(((t >= edges[k]) & (t < edges[k + 1])).sum())
        assert_count(n, rate * f * (edges[k + 1] - edges[k]), f"segment {k}")
    assert_count(len(t), rate * prof.mean_factor(horizon) * horizon, "total")


def test_periodic_piecewise_profile():
    period = 40.0
    sc = profiled(
        {"kind": "piecewise", "times_s": [0, 30], "factors": [3, 0.5], "period_s": period},
        0.5,
        horizon_s=4000.0,
    )
    t, *_ = arrivals(sc, seed=1)
    phase = np.mod(t, period)
    assert_count(int((phase < 30).sum()), 0.5 * 3 * 30 * 100, "high phase")
    assert_count(int((phase >= 30).sum()), 0.5 * 0.5 * 10 * 100, "low phase")


def test_diurnal_profile_follows_the_sine():
    amplitude, period, phase_s, rate, horizon = 0.9, 100.0, 25.0, 2.0, 2000.0
    sc = profiled(
        {"kind": "diurnal", "amplitude": amplitude, "period_s": period, "phase_s": phase_s},
        rate,
        horizon_s=horizon,
    )
    prof = sc.workload.rate_profile
    assert prof.kind == "diurnal" and prof.peak == pytest.approx(1 + amplitude)
    t, *_ = arrivals(sc, seed=2)
    w = 2 * math.pi / period

    def integral(a: float, b: float) -> float:  # of 1 + A sin(w (t - phase)) over [a, b]
        return (b - a) - amplitude / w * (math.cos(w * (b - phase_s)) - math.cos(w * (a - phase_s)))

    periods = horizon / period
    bins = np.linspace(0.0, period, 9)
    ph = np.mod(t, period)
    counts = [int(((ph >= a) & (ph < b)).sum()) for a, b in itertools.pairwise(bins.tolist())]
    expected = [rate * periods * integral(a, b) for a, b in itertools.pairwise(bins.tolist())]
    for k, (n, e) in enumerate(zip(counts, expected, strict=True)):
        assert_count(n, e, f"phase bin {k}")
    assert max(expected) / min(expected) > 3  # the bins do differ
    assert_count(len(t), rate * horizon, "total")


def test_profile_factor_and_mean_factor():
    p = RateProfile("piecewise", (0.0, 100.0), (1.0, 3.0))
    assert p.factor(np.array([0.0, 99.9, 100.0, 1e6])).tolist() == [1.0, 1.0, 3.0, 3.0]
    assert p.peak == 3.0
    assert p.mean_factor(400.0) == pytest.approx((100 * 1 + 300 * 3) / 400)
    assert p.mean_factor(50.0) == pytest.approx(1.0)
    assert p.mean_factor() == 3.0  # no horizon: the last factor
    q = RateProfile("piecewise", (0.0, 100.0), (1.0, 3.0), period_s=200.0)
    t = np.linspace(0, 199, 50)
    assert np.array_equal(q.factor(t), q.factor(t + 200.0))
    assert q.mean_factor(1e6) == pytest.approx((100 * 1 + 100 * 3) / 200)
    d = RateProfile("diurnal", period_s=60.0, amplitude=0.5, phase_s=15.0)
    assert d.factor(np.array([15.0, 30.0, 60.0])) == pytest.approx([1.0, 1.5, 0.5])
    assert d.mean_factor() == 1.0 and d.peak == 1.5


def test_profile_with_num_requests_and_first_arrival_zero():
    prof = {"kind": "piecewise", "times_s": [0, 10], "factors": [0.2, 5]}
    t, *_ = arrivals(profiled(prof, 1.0, num_requests=300), seed=3)
    assert len(t) == 300 and np.all(np.diff(t) >= 0) and t[0] > 0
    t, *_ = arrivals(profiled(prof, 1.0, num_requests=300, first_arrival="zero"), seed=3)
    assert len(t) == 300 and t[0] == 0.0


def test_first_arrival_zero_keeps_the_profile_in_place():
    """A request at t = 0, and the profile still in absolute time: almost nothing in the quiet first
    100 s (rate 0.01/s), about 1,000 requests in the busy [100, 200] s (rate 10/s)."""
    prof = {"kind": "piecewise", "times_s": [0, 100], "factors": [0.01, 10]}
    sc = profiled(prof, 1.0, horizon_s=200.0, first_arrival="zero")
    for seed in range(5):
        t, *_ = arrivals(sc, seed)
        assert t[0] == 0.0
        assert int((t < 100).sum()) <= 1 + 8  # the request at 0 + Poisson(1) arrivals, generously
        assert_count(int((t >= 100).sum()), 10.0 * 100, "busy segment")


@pytest.mark.parametrize(
    "workload",
    [
        {"arrival_rate": 0.7, "num_requests": 50},
        {"arrival_rate": 0.7, "num_requests": 50, "first_arrival": "zero"},
        {"arrival_rate": 3.0, "horizon_s": 2000.0},  # more than one chunk of 4096 gaps
        {"arrival_rate": 3.0, "horizon_s": 500.0, "first_arrival": "zero"},
        {"arrival_rate": 2.0, "num_requests": 80, "horizon_s": 20.0},
        {"arrival_rate": 0.4, "num_requests": 40, "l_in": {"dist": "uniform", "low": 5, "high": 50}},
    ],
)
@pytest.mark.parametrize("clients", [1, 3])
def test_without_a_profile_arrivals_are_the_old_draws(workload, clients):
    top: dict[str, Any] = {}
    if clients > 1:
        top["clients"] = [{"name": f"c{i}", "weight": float(i + 1)} for i in range(clients)]
        top["network"] = {"kind": "matrix", "rtt_ms": [[10, 20]] * clients}
    sc = build(workload, **top)
    assert sc.workload.rate_profile is None
    for seed in (0, 1, 12345):
        new = draw_arrivals(sc, np.random.default_rng(seed))
        old = reference_draw(sc, np.random.default_rng(seed))
        for a, b in zip(new, old, strict=True):
            assert np.array_equal(a, b)


def test_poisson_times_is_the_old_draw():
    for n, horizon, zero in ((100, None, False), (100, None, True), (None, 3000.0, False), (5, 1.0, True)):
        a = _poisson_times(np.random.default_rng(4), 2.0, n, horizon, zero)
        w = build({"arrival_rate": 2.0, "num_requests": n, "horizon_s": horizon,
                   "first_arrival": "zero" if zero else "drawn"})  # fmt: skip
        b = reference_draw(w, np.random.default_rng(4))[0]
        assert np.array_equal(a, b)


def test_a_flat_profile_keeps_the_rate():
    """A profile of factor 1 is a (differently drawn) Poisson process at the same rate."""
    sc = profiled({"kind": "piecewise", "times_s": [0], "factors": [1.0]}, 2.0, horizon_s=2000.0)
    t, *_ = arrivals(sc, seed=5)
    assert_count(len(t), 4000.0, "total")
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(0.5, rel=0.1) and gaps.std() == pytest.approx(0.5, rel=0.1)


# --------------------------------------------------------------------------------------------------
# 3. Clients with rates
# --------------------------------------------------------------------------------------------------
def rated_clients(rates: list[float], workload: dict[str, Any]) -> Scenario:
    clients = [{"name": f"c{i}", "rate": r} for i, r in enumerate(rates)]
    network = {"kind": "matrix", "rtt_ms": [[10, 20]] * len(rates)}
    return build(workload, clients=clients, network=network)


@pytest.mark.parametrize("rates", [[0.5, 1.5], [1.0, 2.0, 0.25]])
def test_client_rates_split_the_arrivals(rates):
    total = sum(rates)
    sc = rated_clients(rates, {"num_requests": 6000})
    assert sc.workload.arrival_rate == pytest.approx(total)
    assert [c.weight for c in sc.clients] == rates
    t, _, _, client = arrivals(sc, seed=6)
    n = len(t)
    assert n == 6000
    assert n / t[-1] == pytest.approx(total, rel=Z / math.sqrt(n))
    for i, r in enumerate(rates):
        share = r / total
        k = int((client == i).sum())
        assert abs(k - share * n) <= Z * math.sqrt(n * share * (1 - share)), f"client {i}"
        assert k / t[-1] == pytest.approx(r, rel=2 * Z / math.sqrt(k))


def test_client_rates_with_a_horizon_and_a_matching_arrival_rate():
    sc = rated_clients([0.5, 1.5], {"horizon_s": 2000.0, "arrival_rate": 2.0})
    t, _, _, client = arrivals(sc, seed=7)
    assert_count(len(t), 2.0 * 2000.0, "total")
    assert_count(int((client == 0).sum()), 0.5 * 2000.0, "client 0")
    assert_count(int((client == 1).sum()), 1.5 * 2000.0, "client 1")


def test_client_rates_with_a_rate_profile():
    sc = rated_clients(
        [1.0, 3.0],
        {
            "horizon_s": 1000.0,
            "rate_profile": {"kind": "piecewise", "times_s": [0, 500], "factors": [1, 0.25]},
        },
    )
    t, _, _, client = arrivals(sc, seed=8)
    assert_count(int((t < 500).sum()), 4.0 * 500, "first half")
    assert_count(int((t >= 500).sum()), 1.0 * 500, "second half")
    assert abs((client == 1).mean() - 0.75) <= Z * math.sqrt(0.75 * 0.25 / len(t))


def test_client_rates_with_a_trace_are_weights():
    sc = build(
        {"trace": {"name": CONV, "lengths": "keep"}},
        clients=[{"name": "a", "rate": 1.0}, {"name": "b", "rate": 3.0}],
        network={"kind": "matrix", "rtt_ms": [[10, 20], [10, 20]]},
    )
    t, _, _, client = arrivals(sc, seed=9)
    assert len(t) == README_COUNTS[CONV]
    assert abs((client == 1).mean() - 0.75) <= Z * math.sqrt(0.75 * 0.25 / len(t))


# --------------------------------------------------------------------------------------------------
# 4. Bad input
# --------------------------------------------------------------------------------------------------
def _trace(**kw: Any) -> dict[str, Any]:
    return {"workload": {"trace": {"name": CONV, **kw}}}


def _profile(**kw: Any) -> dict[str, Any]:
    return {"workload": {"arrival_rate": 1.0, "horizon_s": 100.0, "rate_profile": kw}}


def _two_clients(*clients: dict[str, Any], **workload: Any) -> dict[str, Any]:
    return {
        "clients": list(clients),
        "network": {"kind": "matrix", "rtt_ms": [[10, 20]] * len(clients)},
        "workload": {"num_requests": 5, **workload},
    }


BAD = {
    "unknown trace name": (_trace(name="azure-foo-2023"), "workload.trace.name", "azure-conv-2023"),
    "unknown trace option": (_trace(speed=2), "workload.trace", "unknown field 'speed'"),
    "trace rate zero": (_trace(rate=0), "workload.trace.rate", "must be > 0"),
    "trace rate negative": (_trace(rate=-1.5), "workload.trace.rate", "must be > 0"),
    "trace rate not a number": (_trace(rate="fast"), "workload.trace.rate", "expected a number"),
    "time_scale zero": (_trace(time_scale=0), "workload.trace.time_scale", "must be > 0"),
    "thin zero": (_trace(thin=0), "workload.trace.thin", "must be > 0"),
    "thin above one": (_trace(thin=1.5), "workload.trace.thin", "must be <= 1"),
    "rate and thin": (_trace(rate=1, thin=0.5), "workload.trace", "give one of rate, time_scale and thin"),
    "bad lengths": (_trace(lengths="squeeze"), "workload.trace.lengths", "expected cap, drop, keep"),
    "scale zero": (_trace(lengths={"scale": 0}), "workload.trace.lengths.scale", "must be > 0"),
    "scale unknown key": (_trace(lengths={"factor": 2}), "workload.trace.lengths", "unknown field"),
    "max_tokens one": (_trace(max_tokens=1), "workload.trace.max_tokens", "must be >= 2"),
    "random start, no duration": (_trace(start_s="random"), "workload.trace.start_s", "needs duration_s"),
    "start after the end": (_trace(start_s=1e6), "workload.trace.start_s", "the trace ends at"),
    "start negative": (_trace(start_s=-5), "workload.trace.start_s", "must be >= 0"),
    "duration zero": (_trace(duration_s=0), "workload.trace.duration_s", "must be > 0"),
    "nothing left": (_trace(thin=1e-9), "workload.trace", "no request of trace"),
    "profile with a trace": (
        {"workload": {"trace": {"name": CONV}, "rate_profile": {"kind": "diurnal", "amplitude": 0.5}}},
        "workload.rate_profile",
        "a trace brings its own arrival times",
    ),
    "arrival rate zero": (
        {"workload": {"arrival_rate": 0, "num_requests": 5}},
        "workload.arrival_rate",
        "> 0",
    ),
    "arrival rate negative": (
        {"workload": {"arrival_rate": -2, "num_requests": 5}},
        "workload.arrival_rate",
        "must be > 0",
    ),
    "factor zero": (
        _profile(kind="piecewise", times_s=[0, 10], factors=[1, 0]),
        "workload.rate_profile.factors[1]",
        "expected a number > 0",
    ),
    "factor negative": (
        _profile(kind="piecewise", times_s=[0], factors=[-1]),
        "workload.rate_profile.factors[0]",
        "> 0",
    ),
    "factor not a number": (
        _profile(kind="piecewise", times_s=[0], factors=["x"]),
        "workload.rate_profile.factors[0]",
        "> 0",
    ),
    "factors missing": (_profile(kind="piecewise", times_s=[0]), "workload.rate_profile.factors", "missing"),
    "factors empty": (
        _profile(kind="piecewise", times_s=[0], factors=[]),
        "workload.rate_profile.factors",
        "non-empty",
    ),
    "mismatched lengths": (
        _profile(kind="piecewise", times_s=[0, 10], factors=[1, 2, 3]),
        "workload.rate_profile",
        "times_s and factors need the same length, got 2 and 3",
    ),
    "times not from zero": (
        _profile(kind="piecewise", times_s=[5, 10], factors=[1, 2]),
        "workload.rate_profile.times_s",
        "must start at 0 and increase",
    ),
    "times decreasing": (
        _profile(kind="piecewise", times_s=[0, 10, 10], factors=[1, 2, 3]),
        "workload.rate_profile.times_s",
        "must start at 0 and increase",
    ),
    "time negative": (
        _profile(kind="piecewise", times_s=[0, -1], factors=[1, 2]),
        "workload.rate_profile.times_s[1]",
        ">= 0",
    ),
    "period before the last time": (
        _profile(kind="piecewise", times_s=[0, 10], factors=[1, 2], period_s=10),
        "workload.rate_profile.period_s",
        "must exceed the last time",
    ),
    "piecewise period negative": (
        _profile(kind="piecewise", times_s=[0], factors=[1], period_s=-3),
        "workload.rate_profile.period_s",
        "must be > 0",
    ),
    "amplitude one": (
        _profile(kind="diurnal", amplitude=1.0),
        "workload.rate_profile.amplitude",
        "must be < 1",
    ),
    "amplitude above one": (
        _profile(kind="diurnal", amplitude=1.5),
        "workload.rate_profile.amplitude",
        "must be < 1",
    ),
    "amplitude negative": (
        _profile(kind="diurnal", amplitude=-0.2),
        "workload.rate_profile.amplitude",
        "must be >= 0",
    ),
    "amplitude missing": (_profile(kind="diurnal"), "workload.rate_profile.amplitude", "missing"),
    "diurnal period zero": (
        _profile(kind="diurnal", amplitude=0.5, period_s=0),
        "workload.rate_profile.period_s",
        "must be > 0",
    ),
    "diurnal period negative": (
        _profile(kind="diurnal", amplitude=0.5, period_s=-86400),
        "workload.rate_profile.period_s",
        "must be > 0",
    ),
    "unknown profile kind": (_profile(kind="weekly"), "workload.rate_profile.kind", "piecewise, diurnal"),
    "unknown profile field": (
        _profile(kind="diurnal", amplitude=0.5, offset=3),
        "workload.rate_profile",
        "unknown field 'offset'",
    ),
    "profile not a mapping": (
        {"workload": {"arrival_rate": 1.0, "num_requests": 5, "rate_profile": [1, 2]}},
        "workload.rate_profile",
        "expected a mapping",
    ),
    "too many expected requests": (
        _profile(kind="piecewise", times_s=[0], factors=[1e7]),
        "workload",
        "more than",
    ),
    "warmup negative": (
        {"workload": {"arrival_rate": 1.0, "num_requests": 5, "warmup_s": -1}},
        "workload.warmup_s",
        "must be >= 0",
    ),
    "client rate zero": (_two_clients({"rate": 0}, {"rate": 1}), "clients[0].rate", "must be > 0"),
    "client rate negative": (_two_clients({"rate": 1}, {"rate": -1}), "clients[1].rate", "must be > 0"),
    "client rate and weight": (_two_clients({"rate": 1, "weight": 2}, {"rate": 1}), "clients[0]", "not both"),
    "some clients without a rate": (_two_clients({"rate": 1}, {}), "clients[1].rate", "give every client"),
    "client rates and another arrival rate": (
        _two_clients({"rate": 1}, {"rate": 2}, arrival_rate=2.5),
        "workload.arrival_rate",
        "the clients' rates sum to 3",
    ),
    "unknown model": ({"model": "gpt-17"}, "model", "unknown model 'gpt-17'"),
    "unknown base model": ({"model": {"base": "gpt-17"}}, "model.base", "unknown model 'gpt-17'"),
    "unknown gpu": (
        {"servers": [{"profile": "tpu-v9", "count": 2}]},
        "servers[0].profile",
        "unknown GPU profile",
    ),
}


def bad_data(case: str) -> dict[str, Any]:
    patch, _, _ = BAD[case]
    data = minimal({"arrival_rate": 0.1, "num_requests": 5})
    data.update(patch)
    return data


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_the_field(case):
    _, field, needle = BAD[case]
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(bad_data(case), source="bad.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("bad.yaml: ")
    assert f" {field}:" in msg or f" {field}[" in msg or f" {field}." in msg, msg
    assert needle in msg, msg


@pytest.mark.parametrize("case", ["unknown trace option", "amplitude one", "client rate negative"])
def test_bad_input_via_overrides_and_files(case, tmp_path):
    _, field, needle = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad_data(case)))
    with pytest.raises(ScenarioError, match=r"bad\.yaml: ") as info:
        load_scenario(path)
    assert field in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"workload.trace": {"name": "azure-nope"}}, "workload.trace.name"),
        ({"workload.rate_profile": {"kind": "diurnal", "amplitude": 2}}, "workload.rate_profile.amplitude"),
        ({"workload.rate_profile": {"kind": "piecewise", "times_s": [0], "factors": [0]}}, "factors[0]"),
    ],
)
def test_bad_overrides_of_a_shipped_scenario(overrides, field):
    with pytest.raises(ScenarioError, match=r"^clustered-9\.yaml: ") as info:
        load_scenario("clustered-9", overrides)
    assert field in str(info.value)


def _write(tmp_path: Path, case: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad_data(case)))
    return path


@pytest.mark.parametrize(
    "case", ["unknown trace name", "unknown trace option", "factor zero", "amplitude one", "unknown gpu"]
)
def test_cli_bad_scenario_is_one_error_line(case, tmp_path, capsys):
    _, field, _ = BAD[case]
    assert main(["simulate", "--scenario", str(_write(tmp_path, case))]) == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in (out + err).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert field in lines[0] and "bad.yaml" in lines[0] and "Traceback" not in out + err


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "petalgym.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown trace option", "mismatched lengths"])
def test_cli_process_exits_2_with_one_error_line(case, tmp_path):
    _, field, _ = BAD[case]
    proc = _run_cli("simulate", "--scenario", str(_write(tmp_path, case)), "--decider", "shortest")
    assert proc.returncode == 2
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both
    lines = [ln for ln in both.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert field in lines[0]


def test_cli_error_line_is_on_stderr(tmp_path):
    proc = _run_cli("simulate", "--scenario", str(_write(tmp_path, "unknown trace option")))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and proc.stdout == ""


# --------------------------------------------------------------------------------------------------
# 5. Properties
# --------------------------------------------------------------------------------------------------
@st.composite
def rate_profiles(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        k = draw(st.integers(1, 4))
        times = [0.0]
        for _ in range(k - 1):
            times.append(times[-1] + draw(st.floats(0.5, 100.0)))
        factors = draw(st.lists(st.floats(0.05, 10.0), min_size=k, max_size=k))
        prof: dict[str, Any] = {"kind": "piecewise", "times_s": times, "factors": factors}
        if draw(st.booleans()):
            prof["period_s"] = times[-1] + draw(st.floats(0.5, 100.0))
        return prof
    return {
        "kind": "diurnal",
        "amplitude": draw(st.floats(0.0, 0.99)),
        "period_s": draw(st.floats(1.0, 1000.0)),
        "phase_s": draw(st.floats(0.0, 1000.0)),
    }


@settings(max_examples=100, deadline=None)
@given(
    profile=rate_profiles(),
    rate=st.floats(0.01, 3.0),
    horizon=st.none() | st.floats(1.0, 300.0),
    n=st.none() | st.integers(1, 200),
    zero=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_profiled_arrivals_are_sorted_bounded_and_reproducible(profile, rate, horizon, n, zero, seed):
    if horizon is None and n is None:
        n = 50
    workload = {"arrival_rate": rate, "rate_profile": profile, "first_arrival": "zero" if zero else "drawn"}
    if horizon is not None:
        workload["horizon_s"] = horizon
    if n is not None:
        workload["num_requests"] = n
    sc = build(workload)
    prof = sc.workload.rate_profile
    grid = np.linspace(0.0, 2000.0, 97)
    f = prof.factor(grid)
    assert np.all(f > 0) and np.all(f <= prof.peak + 1e-12)
    t, l_in, l_out, client = arrivals(sc, seed)
    assert len(t) == len(l_in) == len(l_out) == len(client)
    assert np.all(np.isfinite(t)) and np.all(t >= 0) and np.all(np.diff(t) >= 0)
    if horizon is not None:
        assert np.all(t <= horizon)
    if n is not None:
        assert len(t) <= n
        if horizon is None:
            assert len(t) == n
    if zero and len(t):
        assert t[0] == 0.0
    again = arrivals(sc, seed)
    for a, b in zip((t, l_in, l_out, client), again, strict=True):
        assert np.array_equal(a, b)
    # the same draw as the thinning function itself
    direct = _profiled_times(np.random.default_rng(seed), rate, prof, sc.workload.num_requests, horizon, zero)
    assert np.array_equal(direct, t)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(0.01, 5.0),
    horizon=st.none() | st.floats(1.0, 500.0),
    n=st.none() | st.integers(0, 300),
    zero=st.booleans(),
    clients=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_plain_poisson_draws_are_the_old_draws(rate, horizon, n, zero, clients, seed):
    if horizon is None and n is None:
        n = 20
    rng_new, rng_old = np.random.default_rng(seed), np.random.default_rng(seed)
    if n == 0:  # (a scenario needs num_requests >= 1: compare the raw draw)
        assert np.array_equal(_poisson_times(rng_new, rate, 0, horizon, zero), np.zeros(0))
        return
    top: dict[str, Any] = {}
    if clients > 1:
        top["clients"] = [{"name": f"c{i}", "weight": float(i + 1)} for i in range(clients)]
        top["network"] = {"kind": "matrix", "rtt_ms": [[10, 20]] * clients}
    workload: dict[str, Any] = {"arrival_rate": rate, "first_arrival": "zero" if zero else "drawn"}
    if horizon is not None:
        workload["horizon_s"] = horizon
    if n is not None:
        workload["num_requests"] = n
    sc = build(workload, **top)
    for a, b in zip(draw_arrivals(sc, rng_new), reference_draw(sc, rng_old), strict=True):
        assert np.array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from([CONV, CODE]),
    duration=st.floats(10.0, 1000.0),
    rate=st.none() | st.floats(0.05, 20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_windows_are_inside_the_trace(name, duration, rate, seed):
    trace: dict[str, Any] = {"name": name, "start_s": "random", "duration_s": duration}
    if rate is not None:
        trace["rate"] = rate
    sc = named(trace)
    window = sc.workload.trace_window_s
    t, l_in, l_out, _ = arrivals(sc, seed)
    assert np.all(t >= 0) and np.all(t < window) and np.all(np.diff(t) >= 0)
    assert np.all(l_in + l_out <= sc.model.max_session_tokens)
    again = arrivals(sc, seed)
    assert np.array_equal(t, again[0]) and np.array_equal(l_out, again[2])


# --------------------------------------------------------------------------------------------------
# 6. Simulations on trace workloads
# --------------------------------------------------------------------------------------------------
def trace_episode(overrides: dict[str, Any], seed: int = 0, decider: str = "cg-bp-ws-rr"):
    sc = load_scenario("clustered-9", overrides)
    sim = Simulator(sc, seed, check_invariants=True)
    planned = sim.num_arrivals_planned
    return sc, planned, sim.run(make_decider(decider))


CONV_WINDOW = {
    "workload": {
        "trace": {"name": CONV, "start_s": "random", "duration_s": 60, "rate": 0.2},
        "num_requests": 12,
    }
}


@pytest.mark.parametrize("decider", ["cg-bp-ws-rr", "petals"])
def test_simulation_on_a_trace_window_completes(decider):
    sc, planned, res = trace_episode(CONV_WINDOW, seed=3, decider=decider)
    assert sc.workload.trace is not None and sc.workload.trace_random_start
    s = res.summary()
    assert 0 < planned <= 12
    assert s["arrived"] == planned == len(res.requests)
    assert s["completed"] + s["failed"] + s["in_flight"] == s["arrived"]
    assert s["in_flight"] == 0 and s["completed"] > 0
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in res.requests)
    # the requests are the trace's, in a contiguous stretch of the (rate-scaled) trace
    t = np.array([r.arrival for r in res.requests])
    l_in = np.array([r.l_in for r in res.requests])
    if planned >= 2:
        locate(t, l_in, sc.workload.trace)
    assert all(r.l_in + r.l_out <= sc.model.max_session_tokens for r in res.requests)


def test_simulation_on_a_trace_is_reproducible_per_seed():
    a = trace_episode(CONV_WINDOW, seed=5)[2]
    b = trace_episode(CONV_WINDOW, seed=5)[2]
    c = trace_episode(CONV_WINDOW, seed=6)[2]
    rows = [[(r.arrival, r.l_in, r.l_out, r.status, r.finish) for r in x.requests] for x in (a, b, c)]
    assert rows[0] == rows[1] and rows[0] != rows[2]


def test_warmup_leaves_early_requests_out_of_the_metrics():
    trace = {"name": CODE, "start_s": 600, "duration_s": 300, "rate": 0.1}
    base = {"workload": {"trace": trace, "num_requests": 16}}
    _, _, plain = trace_episode(base, seed=1)
    arrivals_s = sorted(r.arrival for r in plain.requests)
    warmup = float(arrivals_s[len(arrivals_s) // 2])
    sc, _, res = trace_episode({"workload": {**base["workload"], "warmup_s": warmup}}, seed=1)
    assert sc.workload.warmup_s == warmup
    # the warm-up changes the metrics only, not the episode
    assert [(r.arrival, r.status, r.finish) for r in res.requests] == [
        (r.arrival, r.status, r.finish) for r in plain.requests
    ]
    kept = [r for r in res.requests if r.arrival >= warmup]
    assert 0 < len(kept) < len(res.requests)
    want = summarise(kept)
    got = res.summary()
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value), key
    assert got["arrived"] == len(kept)
