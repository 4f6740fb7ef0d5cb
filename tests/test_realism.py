"""Realism features: Weibull and trace-backed length distributions, churn presets and correlated
failures (shocks), the RIPE Atlas network, and the workload warm-up.

Expected values are recomputed here from their definitions (the Weibull mean by ``math.gamma``, the trace
columns from :mod:`petalgym.datasets`, RIPE Atlas RTTs by an independent haversine), never copied from the
code under test. Statistical checks use fixed seeds and bounds of Z standard errors."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petalgym import datasets
from petalgym.deciders import make_decider
from petalgym.distributions import Distribution, parse_distribution
from petalgym.errors import ScenarioError
from petalgym.metrics import summarise
from petalgym.scenario import CHURN_PRESETS, load_scenario, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.swarm import ServerStatus

CONV, CODE = "azure-conv-2023", "azure-code-2023"
TRACES = (CONV, CODE)
FIELDS = ("l_in", "l_out")
Z = 5.0  # standard errors allowed in the statistical checks
HOUR = 3600.0
DECIDER = "cg-bp-ws-rr"


def _run(scenario, seed: int = 0, decider: str = DECIDER) -> tuple[Simulator, Any]:
    sim = Simulator(scenario, seed, check_invariants=True)
    return sim, sim.run(make_decider(decider))


def _canon(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with NaN replaced by None (NaN != NaN would defeat ==)."""
    nan = lambda v: isinstance(v, float) and math.isnan(v)  # noqa: E731
    return [{k: (None if nan(v) else v) for k, v in r.items()} for r in records]


def _same_metrics(got: dict[str, float], want: dict[str, float]) -> None:
    for key, value in want.items():
        assert key in got, key
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == value, key


def _column(trace: str, field: str) -> np.ndarray:
    return np.asarray(getattr(datasets.azure_trace(trace), field), dtype=float)


# ==================================================================================================
# 1. Distributions: weibull and trace
# ==================================================================================================
@pytest.mark.parametrize(("shape", "scale"), [(0.6, 5400.0), (1.0, 2.0), (2.5, 30.0), (0.7, 3960.0)])
def test_weibull_mean_is_scale_gamma_and_matches_the_sample_mean(shape, scale):
    d = parse_distribution({"dist": "weibull", "shape": shape, "scale": scale}, "x")
    want = scale * math.gamma(1.0 + 1.0 / shape)
    assert d.mean == pytest.approx(want, rel=1e-12)
    assert d.maximum == math.inf
    n = 200_000
    xs = d.sample(np.random.default_rng(7), n)
    assert xs.shape == (n,) and np.all(xs >= 0)
    sd = scale * math.sqrt(math.gamma(1.0 + 2.0 / shape) - math.gamma(1.0 + 1.0 / shape) ** 2)
    assert abs(xs.mean() - want) < Z * sd / math.sqrt(n)
    # the median of a Weibull is scale * ln(2)^(1/shape): pins the shape parameter, not just the mean
    median = scale * math.log(2.0) ** (1.0 / shape)
    assert abs(np.mean(xs <= median) - 0.5) < Z * 0.5 / math.sqrt(n)


@settings(max_examples=60)
@given(
    shape=st.floats(0.3, 5.0),
    scale=st.floats(0.5, 1e4),
    lo=st.one_of(st.none(), st.floats(0.0, 1.0)),
    hi=st.one_of(st.none(), st.floats(1.0, 3.0)),
    integer=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_weibull_min_max_clip_the_samples(shape, scale, lo, hi, integer, seed):
    raw: dict[str, Any] = {"dist": "weibull", "shape": shape, "scale": scale}
    lo_v = None if lo is None else lo * scale  # bounds relative to the scale so both sides clip
    hi_v = None if hi is None else hi * scale
    if integer:
        lo_v = None if lo_v is None else float(math.ceil(lo_v))
        hi_v = None if hi_v is None else float(max(math.floor(hi_v), 1))
        if lo_v is not None and hi_v is not None and lo_v > hi_v:
            lo_v = hi_v
    if lo_v is not None:
        raw["min"] = lo_v
    if hi_v is not None:
        raw["max"] = hi_v
    d = parse_distribution(raw, "x", integer=integer)
    assert d.mean == pytest.approx(scale * math.gamma(1.0 + 1.0 / shape), rel=1e-12)
    assert d.maximum == (math.inf if hi_v is None else hi_v)
    xs = np.asarray(d.sample(np.random.default_rng(seed), 2000), dtype=float)
    assert np.all(xs <= d.maximum)
    if lo_v is not None:
        assert np.all(xs >= lo_v)
    if integer:
        assert np.all(xs == np.rint(xs)) and np.all(xs >= 1)
    # unclipped draws are the plain Weibull ones: same stream, same values where within the bounds
    plain = parse_distribution({"dist": "weibull", "shape": shape, "scale": scale}, "x", integer=integer)
    ys = np.asarray(plain.sample(np.random.default_rng(seed), 2000), dtype=float)
    inside = (ys >= (lo_v or -np.inf)) & (ys <= (hi_v if hi_v is not None else np.inf))
    assert np.array_equal(xs[inside], ys[inside])
    assert np.all(xs[ys < (lo_v or -np.inf)] == lo_v)
    if hi_v is not None:
        assert np.all(xs[ys > hi_v] == hi_v)


def test_weibull_clipping_hits_both_bounds():
    d = parse_distribution({"dist": "weibull", "shape": 0.6, "scale": 100.0, "min": 10.0, "max": 300.0}, "x")
    xs = d.sample(np.random.default_rng(1), 10_000)
    assert xs.min() == 10.0 and xs.max() == 300.0
    assert np.mean(xs == 10.0) > 0.05 and np.mean(xs == 300.0) > 0.05


def test_weibull_max_zero_is_honoured_or_rejected():
    raw = {"dist": "weibull", "shape": 1.0, "scale": 10.0, "max": 0}
    try:
        d = parse_distribution(raw, "x")
    except ScenarioError:
        return  # rejecting max 0 would be fine too
    assert d.maximum == 0.0
    xs = d.sample(np.random.default_rng(0), 100)
    assert np.all(xs <= d.maximum)


@pytest.mark.parametrize("trace", TRACES)
@pytest.mark.parametrize("field", FIELDS)
def test_trace_empirical_resamples_recorded_values(trace, field):
    col = _column(trace, field)
    d = parse_distribution({"dist": "trace", "trace": trace, "field": field}, "w.l_out", integer=True)
    assert d.kind == "trace" and d.params == {"trace": trace, "field": field, "fit": "empirical"}
    assert d.mean == pytest.approx(col.mean(), rel=1e-12)
    assert d.maximum == col.max()
    xs = d.sample(np.random.default_rng(3), 20_000)
    assert xs.dtype.kind == "i"
    assert set(np.unique(xs).tolist()) <= set(np.unique(col).astype(int).tolist())
    assert abs(xs.mean() - col.mean()) < Z * col.std() / math.sqrt(len(xs))
    # a resample, not a constant: many distinct recorded values show up
    assert len(np.unique(xs)) > 50
    scalar = d.sample(np.random.default_rng(3))
    assert isinstance(scalar, int) and scalar in set(col.astype(int).tolist())


@pytest.mark.parametrize("trace", TRACES)
@pytest.mark.parametrize("field", FIELDS)
def test_trace_lognormal_fit_matches_the_log_values(trace, field):
    col = _column(trace, field)
    logs = np.log(col)
    mu, sigma = float(logs.mean()), float(logs.std())
    raw = {"dist": "trace", "trace": trace, "field": field, "fit": "lognormal"}
    d = parse_distribution(raw, "w.l_in")
    assert d._log_fit == pytest.approx((mu, sigma), rel=1e-12)
    assert d.mean == pytest.approx(math.exp(mu + sigma * sigma / 2.0), rel=1e-12)
    assert d.maximum == col.max()
    n = 50_000
    xs = d.sample(np.random.default_rng(11), n)
    assert np.all(xs <= col.max()) and np.all(xs > 0)
    # not resampling: draws below the cap are (almost surely) not recorded values
    below = xs[xs < col.max()]
    assert len(below) > n // 2 and np.mean(np.isin(below, col)) < 0.001
    # the log-median is mu (the cap is far above the median)
    assert abs(np.mean(np.log(xs) <= mu) - 0.5) < Z * 0.5 / math.sqrt(n)
    # the cap is reached with the lognormal's own tail probability
    tail = 0.5 * math.erfc((math.log(col.max()) - mu) / (sigma * math.sqrt(2.0)))
    capped = np.mean(xs == col.max())
    assert abs(capped - tail) < Z * math.sqrt(tail * (1 - tail) / n) + 1e-4
    ints = parse_distribution(raw, "w.l_in", integer=True).sample(np.random.default_rng(11), 1000)
    assert ints.dtype.kind == "i" and np.all(ints >= 1) and np.all(ints <= col.max())


@pytest.mark.parametrize(
    "raw",
    [
        {"dist": "weibull", "shape": 0.6, "scale": 5400.0},
        {"dist": "weibull", "shape": 2.0, "scale": 10.0, "min": 1.0},
        {"dist": "weibull", "shape": 2.0, "scale": 10.0, "max": 40.0},
        {"dist": "weibull", "shape": 0.7, "scale": 3.5, "min": 0.5, "max": 7.0},
        {"dist": "trace", "trace": CONV, "field": "l_out"},
        {"dist": "trace", "trace": CODE, "field": "l_in", "fit": "empirical"},
        {"dist": "trace", "trace": CONV, "field": "l_in", "fit": "lognormal"},
    ],
)
@pytest.mark.parametrize("integer", [False, True])
def test_to_raw_parses_back_to_an_equal_distribution(raw, integer):
    d = parse_distribution(raw, "x", integer=integer)
    back = parse_distribution(d.to_raw(), "x", integer=integer)
    assert back == d
    assert back.mean == d.mean and back.maximum == d.maximum
    if d.kind == "trace":
        assert np.array_equal(back.values, d.values)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(d.sample(rng_a, 100), back.sample(rng_b, 100))
    # and the mapping is plain YAML data
    assert all(isinstance(v, (str, int, float)) for v in d.to_raw().values())


def test_different_weibulls_and_traces_are_not_equal():
    a = parse_distribution({"dist": "weibull", "shape": 0.6, "scale": 10.0}, "x")
    b = parse_distribution({"dist": "weibull", "shape": 0.7, "scale": 10.0}, "x")
    c = parse_distribution({"dist": "trace", "trace": CONV, "field": "l_out"}, "x")
    e = parse_distribution({"dist": "trace", "trace": CONV, "field": "l_out", "fit": "lognormal"}, "x")
    f = parse_distribution({"dist": "trace", "trace": CODE, "field": "l_out"}, "x")
    dists = [a, b, c, e, f]
    assert all(x != y for i, x in enumerate(dists) for y in dists[i + 1 :])
    assert a == parse_distribution({"dist": "weibull", "shape": 0.6, "scale": 10}, "y")


BAD_DISTRIBUTIONS = {
    "shape zero": ({"dist": "weibull", "shape": 0, "scale": 1.0}, "w.l_out.shape"),
    "shape negative": ({"dist": "weibull", "shape": -0.5, "scale": 1.0}, "w.l_out.shape"),
    "scale zero": ({"dist": "weibull", "shape": 1.0, "scale": 0}, "w.l_out.scale"),
    "scale negative": ({"dist": "weibull", "shape": 1.0, "scale": -2.0}, "w.l_out.scale"),
    "shape not a number": ({"dist": "weibull", "shape": "big", "scale": 1.0}, "w.l_out.shape"),
    "scale infinite": ({"dist": "weibull", "shape": 1.0, "scale": math.inf}, "w.l_out.scale"),
    "weibull min > max": ({"dist": "weibull", "shape": 1.0, "scale": 1.0, "min": 5, "max": 2}, "min"),
    "weibull missing scale": ({"dist": "weibull", "shape": 1.0}, "scale"),
    "weibull missing shape": ({"dist": "weibull", "scale": 1.0}, "shape"),
    "weibull unknown field": ({"dist": "weibull", "shape": 1.0, "scale": 1.0, "mean": 3}, "mean"),
    "unknown trace": ({"dist": "trace", "trace": "azure-chat-2099", "field": "l_in"}, "w.l_out.trace"),
    "trace a number": ({"dist": "trace", "trace": 2023, "field": "l_in"}, "w.l_out.trace"),
    "field a list": ({"dist": "trace", "trace": CONV, "field": ["l_in"]}, "w.l_out.field"),
    "fit a mapping": ({"dist": "trace", "trace": CONV, "field": "l_in", "fit": {"a": 1}}, "w.l_out.fit"),
    "bad field": ({"dist": "trace", "trace": CONV, "field": "arrival_s"}, "w.l_out.field"),
    "bad fit": ({"dist": "trace", "trace": CONV, "field": "l_in", "fit": "weibull"}, "w.l_out.fit"),
    "missing field": ({"dist": "trace", "trace": CONV}, "field"),
    "missing trace": ({"dist": "trace", "field": "l_out"}, "trace"),
    "trace unknown key": ({"dist": "trace", "trace": CONV, "field": "l_in", "max": 9}, "max"),
}


@pytest.mark.parametrize(("raw", "names"), BAD_DISTRIBUTIONS.values(), ids=BAD_DISTRIBUTIONS.keys())
def test_bad_distributions_raise_scenario_errors_naming_the_field(raw, names):
    with pytest.raises(ScenarioError) as info:
        parse_distribution(raw, "w.l_out", integer=True)
    msg = str(info.value)
    assert "w.l_out" in msg and names in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", [[CONV], {"name": CONV}])
def test_an_unhashable_trace_name_is_a_scenario_error(name):
    bad = {"workload.l_out": {"dist": "trace", "trace": name, "field": "l_out"}}
    with pytest.raises(ScenarioError, match=r"workload\.l_out\.trace"):
        load_scenario("clustered-9", bad)


def test_bad_trace_distribution_in_a_scenario_names_the_workload_field():
    bad = {"workload.l_out": {"dist": "trace", "trace": CONV, "field": "tokens"}}
    with pytest.raises(ScenarioError, match=r"clustered-9\.yaml: workload\.l_out\.field"):
        load_scenario("clustered-9", bad)
    with pytest.raises(ScenarioError, match=r"workload\.l_in\.shape"):
        load_scenario("clustered-9", {"workload.l_in": {"dist": "weibull", "shape": 0, "scale": 20}})


def test_trace_lengths_in_a_scenario_and_a_short_simulation():
    col = _column(CONV, "l_out")
    sc = load_scenario(
        "clustered-9",
        {"workload.num_requests": 40, "workload.l_out": {"dist": "trace", "trace": CONV, "field": "l_out"}},
    )
    assert sc.workload.l_out.kind == "trace" and sc.workload.l_out.integer
    assert sc.workload.max_tokens == 20 + int(col.max())
    assert sc.workload.mean_lengths() == (20, math.floor(col.mean() + 0.5))
    _, res = _run(sc, seed=2)
    s = res.summary()
    assert s["arrived"] == 40 == s["completed"] + s["failed"] + s["in_flight"]
    assert s["completed"] > 0
    recorded = set(col.astype(int).tolist())
    assert all(r.l_out in recorded for r in res.requests)
    assert len({r.l_out for r in res.requests}) > 5
    assert all(r.l_in == 20 for r in res.requests)


def test_weibull_and_lognormal_trace_lengths_in_a_scenario():
    col = _column(CODE, "l_in")
    sc = load_scenario(
        "clustered-9",
        {
            "workload.num_requests": 30,
            "workload.l_in": {"dist": "trace", "trace": CODE, "field": "l_in", "fit": "lognormal"},
            "workload.l_out": {"dist": "weibull", "shape": 1.5, "scale": 64, "max": 200},
        },
    )
    assert sc.workload.max_tokens == int(col.max()) + 200
    _, res = _run(sc, seed=4)
    assert all(1 <= r.l_in <= col.max() and 1 <= r.l_out <= 200 for r in res.requests)
    s = res.summary()
    assert s["arrived"] == 30 == s["completed"] + s["failed"] + s["in_flight"]


# ==================================================================================================
# 2. Churn presets and shocks
# ==================================================================================================
def _churn(overrides: dict[str, Any], name: str = "clustered-9"):
    return load_scenario(name, overrides).churn


def _weibull(d: Distribution | None) -> tuple[float, float]:
    assert d is not None and d.kind == "weibull"
    return d.params["shape"], d.params["scale"]


def test_spot_independent_preset_sets_exactly_its_parameters():
    c = _churn({"churn": {"preset": "spot-independent"}})
    assert c.enabled is True and c.preset == "spot-independent"
    assert _weibull(c.lifetime_s) == pytest.approx((0.6, 1.5 * HOUR))
    assert _weibull(c.downtime_s) == pytest.approx((0.7, 1.1 * HOUR))
    assert c.failure_fraction == 1.0
    assert c.shocks is None
    assert set(c.lifetime_s.params) == {"shape", "scale"}  # no min/max clipping
    # the other fields keep the defaults of a churn section without a preset
    plain = _churn({"churn": {"enabled": True}})
    assert (c.drain_timeout_s, c.no_chain_timeout_s, c.load_s_per_gb) == (
        plain.drain_timeout_s,
        plain.no_chain_timeout_s,
        plain.load_s_per_gb,
    )


def test_zone_shocks_preset_sets_exactly_its_parameters(clustered9):
    c = _churn({"churn": {"preset": "zone-shocks"}})
    assert c.enabled is True and c.preset == "zone-shocks"
    assert c.lifetime_s is None  # "never": no independent departures
    assert _weibull(c.downtime_s) == pytest.approx((0.7, 1.1 * HOUR))
    assert c.failure_fraction == 1.0
    assert c.shocks is not None
    assert (c.shocks.rate_per_day, c.shocks.probability) == (8.0, 0.6)
    by_loc = defaultdict(list)
    for s in clustered9.servers:
        by_loc[s.location].append(s.id)
    assert c.shocks.groups == tuple(tuple(v) for _, v in sorted(by_loc.items()))


def test_the_preset_table_is_what_the_docs_promise():
    assert set(CHURN_PRESETS) == {"spot-independent", "zone-shocks"}
    spot, zone = CHURN_PRESETS["spot-independent"], CHURN_PRESETS["zone-shocks"]
    assert spot["lifetime_s"] == {"dist": "weibull", "shape": 0.6, "scale": 5400.0}
    assert zone["lifetime_s"] == "never"
    assert zone["shocks"] == {"rate_per_day": 8.0, "probability": 0.6, "groups": "location"}


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        ({"failure_fraction": 0.25}, lambda c: c.failure_fraction == 0.25),
        (
            {"lifetime_s": {"dist": "exponential", "mean": 100}},
            lambda c: c.lifetime_s.kind == "exponential" and c.lifetime_s.mean == 100,
        ),
        ({"lifetime_s": "never"}, lambda c: c.lifetime_s is None),
        ({"downtime_s": 30}, lambda c: c.downtime_s.kind == "constant" and c.downtime_s.mean == 30),
        ({"drain_timeout_s": 12}, lambda c: c.drain_timeout_s == 12),
        ({"enabled": False}, lambda c: c.enabled is False),
        (
            {"shocks": {"rate_per_day": 3, "probability": 0.9, "groups": [["a100-0", "mig-1g-5"]]}},
            lambda c: (c.shocks.rate_per_day, c.shocks.probability, c.shocks.groups) == (3, 0.9, ((0, 5),)),
        ),
    ],
)
@pytest.mark.parametrize("preset", ["spot-independent", "zone-shocks"])
def test_a_field_next_to_a_preset_overrides_it(preset, extra, check):
    c = _churn({"churn": {"preset": preset, **extra}})
    assert check(c)
    assert c.preset == preset
    # every field not given keeps the preset's value
    ref = _churn({"churn": {"preset": preset}})
    for name in ("enabled", "failure_fraction", "drain_timeout_s", "downtime_s", "lifetime_s", "shocks"):
        if name not in extra:
            assert getattr(c, name) == getattr(ref, name), name


def test_zone_shocks_with_shocks_null_has_no_shocks():
    c = _churn({"churn": {"preset": "zone-shocks", "shocks": None}})
    assert c.shocks is None and c.lifetime_s is None and c.enabled


def test_enabled_defaults_to_false_without_a_preset_and_unknown_presets_error():
    c = _churn({"churn": {"lifetime_s": {"dist": "weibull", "shape": 0.6, "scale": 100}}})
    assert c.enabled is False and c.preset is None
    with pytest.raises(ScenarioError, match=r"churn\.preset.*'spot'"):
        _churn({"churn": {"preset": "spot"}})


def test_shock_groups_by_location_group_servers_sharing_a_location():
    data = {
        "model": "bloom-176b",
        "servers": [
            {"profile": "a100", "count": 2, "location": 3},
            {"profile": "mig-1g", "count": 3, "location": 1},
            {"profile": "a100", "location": 3},
            {"profile": "mig-1g", "location": 7},
        ],
        "clients": [{"name": "c", "location": 0}],
        "network": {"kind": "clusters", "intra_rtt_ms": 5, "inter_rtt_ms": 100},
        "workload": {"arrival_rate": 0.1, "num_requests": 10},
        "churn": {"enabled": True, "shocks": {"rate_per_day": 10, "probability": 0.5, "groups": "location"}},
    }
    sc = scenario_from_dict(data)
    want = defaultdict(set)
    for s in sc.servers:
        want[s.location].add(s.id)
    got = sc.churn.shocks.groups
    assert sorted(map(frozenset, got), key=min) == sorted(map(frozenset, want.values()), key=min)
    assert {frozenset(g) for g in got} == {frozenset({2, 3, 4}), frozenset({0, 1, 5}), frozenset({6})}
    # groups partition the servers
    flat = [sid for g in got for sid in g]
    assert sorted(flat) == list(range(sc.num_servers))
    # groups default to "location"
    del data["churn"]["shocks"]["groups"]
    assert scenario_from_dict(data).churn.shocks.groups == got


def test_shock_groups_by_location_on_a_topology_are_singletons():
    sc = load_scenario(
        "bellcanada-26",
        {"churn": {"enabled": True, "shocks": {"rate_per_day": 1, "probability": 1.0, "groups": "location"}}},
    )
    assert sorted(sc.churn.shocks.groups) == [(i,) for i in range(sc.num_servers)]


def test_explicit_shock_groups_by_server_name(clustered9):
    names = [s.name for s in clustered9.servers]
    assert names[:3] == ["a100-0", "a100-1", "mig-1g-2"]
    groups = [["mig-1g-8", "a100-0"], ["mig-1g-3"], ["a100-1", "mig-1g-4", "mig-1g-2"]]
    shocks = {"rate_per_day": 5, "probability": 1, "groups": groups}
    c = _churn({"churn": {"enabled": True, "shocks": shocks}})
    assert c.shocks.groups == tuple(tuple(names.index(n) for n in g) for g in groups)
    assert c.shocks.groups == ((8, 0), (3,), (1, 4, 2))


@pytest.mark.parametrize(
    ("shocks", "names"),
    [
        ({"groups": [["a100-7"]]}, ["churn.shocks.groups[0]", "a100-7"]),
        ({"groups": [["a100-0", "mig-1g-3"], ["a100-0", "gpu-9"]]}, ["churn.shocks.groups[1]", "gpu-9"]),
        ({"groups": [[]]}, ["churn.shocks.groups[0]"]),
        ({"groups": ["a100-0"]}, ["churn.shocks.groups[0]"]),
        ({"groups": []}, ["churn.shocks.groups"]),
        ({"groups": "zone"}, ["churn.shocks.groups", "zone"]),
        ({"probability": 1.5}, ["churn.shocks.probability", "1.5"]),
        ({"probability": -0.1}, ["churn.shocks.probability"]),
        ({"rate_per_day": 0}, ["churn.shocks.rate_per_day"]),
        ({"rate_per_day": -3}, ["churn.shocks.rate_per_day"]),
        ({"rate_per_day": "often"}, ["churn.shocks.rate_per_day"]),
        ({"rate_per_day": None}, ["churn.shocks.rate_per_day"]),
        ({"every": 3}, ["churn.shocks", "every"]),
    ],
)
def test_bad_shocks_raise_errors_naming_the_field(shocks, names):
    good = {"rate_per_day": 10, "probability": 0.5, "groups": "location"}
    merged = {k: v for k, v in {**good, **shocks}.items() if v is not None}
    with pytest.raises(ScenarioError) as info:
        _churn({"churn": {"enabled": True, "shocks": merged}})
    msg = str(info.value)
    assert msg.startswith("clustered-9.yaml: ")
    for name in names:
        assert name in msg


def _shock_scenario(**shocks: Any):
    churn = {
        "enabled": True,
        "lifetime_s": {"dist": "exponential", "mean": 400},
        "downtime_s": {"dist": "exponential", "mean": 20},
        "failure_fraction": 1.0,
        "no_chain_timeout_s": 60,
        "shocks": {"rate_per_day": 800, "probability": 0.6, "groups": "location", **shocks},
    }
    return load_scenario("clustered-9", {"workload.num_requests": 60, "churn": churn})


def _record_offline(monkeypatch) -> list[tuple[float, int, str]]:
    log: list[tuple[float, int, str]] = []
    original = Simulator._go_offline

    def recording(self, s, reason):
        log.append((self.now, s.id, reason))
        return original(self, s, reason)

    monkeypatch.setattr(Simulator, "_go_offline", recording)
    return log


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_shock_takes_down_servers_of_one_group_only(monkeypatch, seed):
    log = _record_offline(monkeypatch)
    sc = _shock_scenario()
    groups = [set(g) for g in sc.churn.shocks.groups]
    assert groups == [{0, 1}, set(range(2, 9))]
    sim, res = _run(sc, seed=seed)
    at: dict[float, list[int]] = defaultdict(list)
    for t, sid, reason in log:
        if reason == "shock":
            at[t].append(sid)
    assert sim.leaves.get("shock", 0) == sum(map(len, at.values())) > 0
    assert sum(r == "failure" for _, _, r in log) == sim.leaves.get("failure", 0)
    for t, sids in at.items():
        assert len(sids) == len(set(sids)), t
        assert any(set(sids) <= g for g in groups), (t, sids)
    # shocks do take several servers down at once (else the check above would be vacuous)
    assert max(map(len, at.values())) >= 2
    s = res.summary()
    assert s["arrived"] == 60 == s["completed"] + s["failed"] + s["in_flight"]
    assert s["in_flight"] == 0


def test_a_certain_shock_takes_down_every_up_server_of_its_group(monkeypatch):
    log = _record_offline(monkeypatch)
    seen: list[tuple[set[int], set[int]]] = []
    original = Simulator._shock
    up = (ServerStatus.ONLINE, ServerStatus.LOADING, ServerStatus.DRAINING)

    def watching(self, group):
        members = self._churn.shocks.groups[group]
        before = {sid for sid in members if self.servers[sid].status in up}
        n0 = len(log)
        original(self, group)
        gone = [(sid, reason) for _, sid, reason in log[n0:]]
        assert all(reason == "shock" for _, reason in gone)
        assert all(self.servers[sid].status == ServerStatus.OFFLINE for sid in members)
        seen.append((before, {sid for sid, _ in gone}))

    monkeypatch.setattr(Simulator, "_shock", watching)
    sim, _ = _run(_shock_scenario(probability=1.0), seed=5)
    assert seen and all(before == gone for before, gone in seen)
    assert any(len(gone) >= 2 for _, gone in seen)
    assert sim.leaves["shock"] == sum(len(g) for _, g in seen)


def test_explicit_shock_groups_in_a_simulation(monkeypatch):
    log = _record_offline(monkeypatch)
    groups = [["a100-0", "mig-1g-2", "mig-1g-3"], ["a100-1", "mig-1g-8"]]
    sc = _shock_scenario(groups=groups, probability=1.0)
    _run(sc, seed=3)
    at: dict[float, set[int]] = defaultdict(set)
    for t, sid, reason in log:
        if reason == "shock":
            at[t].add(sid)
    ids = [{0, 2, 3}, {1, 8}]
    assert at and all(any(g <= grp for grp in ids) for g in at.values())
    # servers in no group are never taken down by a shock
    assert not set().union(*at.values()) & {4, 5, 6, 7}


def test_lifetime_never_means_only_shocks_take_servers_down():
    sc = load_scenario(
        "clustered-9",
        {
            "workload.num_requests": 50,
            "churn": {
                "preset": "zone-shocks",
                "downtime_s": {"dist": "exponential", "mean": 30},
                "shocks": {"rate_per_day": 1500, "probability": 0.6},
            },
        },
    )
    assert sc.churn.lifetime_s is None
    sim, res = _run(sc, seed=1)
    assert set(sim.leaves) == {"shock"} and sim.leaves["shock"] > 0
    assert set(res.extra["leaves"]) == {"shock"}
    s = res.summary()
    assert s["arrived"] == 50 == s["completed"] + s["failed"] + s["in_flight"]


def test_lifetime_never_without_shocks_means_no_departures():
    sc = load_scenario(
        "clustered-9", {"workload.num_requests": 40, "churn": {"preset": "zone-shocks", "shocks": None}}
    )
    sim, res = _run(sc, seed=0)
    assert sim.leaves == {}
    assert res.summary()["completed"] == 40


def test_spot_independent_preset_only_fails_servers():
    sc = load_scenario(
        "clustered-9",
        {
            "workload.num_requests": 50,
            "churn": {
                "preset": "spot-independent",
                "lifetime_s": {"dist": "weibull", "shape": 0.6, "scale": 150},
                "downtime_s": {"dist": "weibull", "shape": 0.7, "scale": 30},
            },
        },
    )
    sim, res = _run(sc, seed=2)
    # failure_fraction 1 from the preset: every departure is an abrupt failure, and there are no shocks
    assert set(sim.leaves) == {"failure"} and sim.leaves["failure"] > 0
    s = res.summary()
    assert s["arrived"] == 50 == s["completed"] + s["failed"] + s["in_flight"]


def test_the_same_seed_gives_the_same_episode_with_shocks():
    sc = _shock_scenario()
    _, a = _run(sc, seed=9)
    _, b = _run(load_scenario(sc), seed=9)
    _, c = _run(sc, seed=10)
    assert _canon(a.records()) == _canon(b.records())
    assert a.extra == b.extra and a.events == b.events and a.end_time == b.end_time
    assert _canon(a.records()) != _canon(c.records())


CHURN_NO_SHOCKS = {
    "enabled": True,
    "lifetime_s": {"dist": "exponential", "mean": 300},
    "downtime_s": {"dist": "exponential", "mean": 40},
    "failure_fraction": 0.5,
    "drain_timeout_s": 30,
}


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "decider"), [(0, DECIDER), (4, DECIDER), (1, "petals")])
def test_churn_without_shocks_is_unchanged_by_the_shock_machinery(seed, decider):
    base = {"workload.num_requests": 60}
    plain = load_scenario("clustered-9", {**base, "churn": CHURN_NO_SHOCKS})
    null = load_scenario("clustered-9", {**base, "churn": {**CHURN_NO_SHOCKS, "shocks": None}})
    # shocks so rare that none happens in the episode: the other random streams are untouched
    rare = load_scenario(
        "clustered-9",
        {**base, "churn": {**CHURN_NO_SHOCKS, "shocks": {"rate_per_day": 1e-9, "probability": 1.0}}},
    )
    assert plain.churn.shocks is None and null.churn.shocks is None and rare.churn.shocks is not None
    sim_p, p = _run(plain, seed, decider)
    _, n = _run(null, seed, decider)
    sim_r, r = _run(rare, seed, decider)
    assert sum(sim_p.leaves.values()) > 0  # churn did happen
    assert "shock" not in sim_p.leaves and "shock" not in sim_r.leaves
    assert _canon(p.records()) == _canon(n.records()) == _canon(r.records())
    assert p.extra == n.extra == r.extra and p.events == n.events == r.events


def test_shocks_on_disabled_churn_change_nothing():
    base = {"workload.num_requests": 40}
    off = load_scenario("clustered-9", base)
    shocks = {"rate_per_day": 5000, "probability": 1.0, "groups": "location"}
    off_shocks = load_scenario("clustered-9", {**base, "churn": {"enabled": False, "shocks": shocks}})
    sim_a, a = _run(off, 1)
    sim_b, b = _run(off_shocks, 1)
    assert sim_a.leaves == sim_b.leaves == {}
    assert _canon(a.records()) == _canon(b.records())


# ==================================================================================================
# 3. Network kind: ripe-atlas
# ==================================================================================================
def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """An independent haversine (Earth radius 6,371 km), scalar math."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(1.0, max(0.0, a))))


def _ripe_rtt_ms(i: int, j: int) -> float:
    if i == j:
        return 0.0
    atlas = datasets.ripe_atlas()
    km = _haversine_km(atlas.latitude[i], atlas.longitude[i], atlas.latitude[j], atlas.longitude[j])
    return 0.3 * atlas.median_ms[i] + 0.3 * atlas.median_ms[j] + 0.01 * km


def _ripe_dict(seed: int | None = 0, servers=None, clients=None, **workload: Any) -> dict[str, Any]:
    net: dict[str, Any] = {"kind": "ripe-atlas"}
    if seed is not None:
        net["seed"] = seed
    return {
        "name": "ripe",
        "model": "bloom-176b",
        "servers": servers or [{"profile": "a100", "count": 2}, {"profile": "mig-1g", "count": 7}],
        "clients": clients or [{"name": "c0"}, {"name": "c1"}],
        "network": net,
        "workload": {"arrival_rate": 0.1, "num_requests": 30, "l_in": 20, "l_out": 128, **workload},
    }


def _nodes(sc) -> tuple[list[int], list[int]]:
    return [s.location for s in sc.servers], [c.location for c in sc.clients]


def _check_ripe_matrices(sc) -> None:
    s_nodes, c_nodes = _nodes(sc)
    net = sc.network
    assert net.kind == "ripe-atlas"
    want = np.array([[_ripe_rtt_ms(c, s) for s in s_nodes] for c in c_nodes]) / 1e3
    assert net.rtt_s.shape == (sc.num_clients, sc.num_servers)
    np.testing.assert_allclose(net.rtt_s, want, rtol=1e-9, atol=1e-12)
    among = np.array([[_ripe_rtt_ms(a, b) for b in s_nodes] for a in s_nodes]) / 1e3
    assert net.server_rtt_s is not None and net.server_rtt_s.shape == (sc.num_servers,) * 2
    np.testing.assert_allclose(net.server_rtt_s, among, rtol=1e-9, atol=1e-12)
    assert np.all(np.diag(net.server_rtt_s) == 0.0)
    np.testing.assert_allclose(net.server_rtt_s, net.server_rtt_s.T, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_ripe_atlas_rtts_follow_the_construction(seed):
    sc = scenario_from_dict(_ripe_dict(seed))
    s_nodes, c_nodes = _nodes(sc)
    n = len(datasets.ripe_atlas())
    assert all(0 <= v < n for v in s_nodes + c_nodes)
    assert len(set(s_nodes + c_nodes)) == len(s_nodes + c_nodes)  # distinct destinations
    _check_ripe_matrices(sc)
    off = sc.network.server_rtt_s[~np.eye(sc.num_servers, dtype=bool)]
    assert np.all(off > 0) and np.all(sc.network.rtt_s > 0)
    # European destinations: tens of ms, not seconds
    assert np.all(sc.network.rtt_s < 1.0)


def test_ripe_atlas_nodes_are_reproducible_and_depend_on_the_seed():
    a = scenario_from_dict(_ripe_dict(3))
    b = scenario_from_dict(_ripe_dict(3))
    assert _nodes(a) == _nodes(b)
    assert np.array_equal(a.network.rtt_s, b.network.rtt_s)
    others = [_nodes(scenario_from_dict(_ripe_dict(s))) for s in (4, 5, 6)]
    assert all(o != _nodes(a) for o in others)
    assert len({tuple(o[0]) for o in others}) == 3
    # no seed means seed 0
    assert _nodes(scenario_from_dict(_ripe_dict(None))) == _nodes(scenario_from_dict(_ripe_dict(0)))
    # and re-validation (overrides) keeps the nodes
    assert _nodes(a.with_overrides({"workload.num_requests": 10})) == _nodes(a)


def test_ripe_atlas_explicit_locations_are_honoured():
    servers = [
        {"profile": "a100", "location": 17},
        {"profile": "a100"},
        {"profile": "mig-1g", "count": 3, "location": [100, 101, 3000]},
        {"profile": "mig-1g", "count": 4},
    ]
    clients = [{"name": "near", "location": 18}, {"name": "any"}]
    sc = scenario_from_dict(_ripe_dict(2, servers=servers, clients=clients))
    s_nodes, c_nodes = _nodes(sc)
    assert s_nodes[0] == 17 and s_nodes[2:5] == [100, 101, 3000] and c_nodes[0] == 18
    assert len(set(s_nodes + c_nodes)) == len(s_nodes + c_nodes)  # drawn ones avoid the given ones
    _check_ripe_matrices(sc)
    assert sc.network.rtt_s[0, 0] * 1e3 == pytest.approx(_ripe_rtt_ms(18, 17))


@pytest.mark.parametrize("seed", [0, 8])
def test_ripe_atlas_drawn_nodes_avoid_the_given_ones(seed):
    # half of the destinations taken by clients given explicitly: servers drawn on them by mistake
    # would show up with probability 1 - 2**-9
    n = len(datasets.ripe_atlas())
    clients = [{"name": f"c{k}", "location": k} for k in range(0, n, 2)]
    sc = scenario_from_dict(_ripe_dict(seed, clients=clients))
    s_nodes, c_nodes = _nodes(sc)
    assert c_nodes == list(range(0, n, 2))
    assert len(set(s_nodes)) == len(s_nodes) and not set(s_nodes) & set(c_nodes)
    assert sc.network.rtt_s.shape == (len(clients), sc.num_servers)


def test_ripe_atlas_all_given_locations_do_not_depend_on_the_seed():
    servers = [{"profile": "a100", "count": 2, "location": [0, 1]}]
    servers += [{"profile": "mig-1g", "count": 7, "location": [2, 3, 4, 5, 6, 7, 8]}]
    clients = [{"name": "c", "location": len(datasets.ripe_atlas()) - 1}]
    a = scenario_from_dict(_ripe_dict(0, servers=servers, clients=clients))
    b = scenario_from_dict(_ripe_dict(99, servers=servers, clients=clients))
    assert _nodes(a) == _nodes(b) == (list(range(9)), [len(datasets.ripe_atlas()) - 1])
    assert np.array_equal(a.network.rtt_s, b.network.rtt_s)
    _check_ripe_matrices(a)


def test_ripe_atlas_location_beyond_the_data_is_an_error():
    n = len(datasets.ripe_atlas())
    servers = [{"profile": "a100"}, {"profile": "a100", "location": n}, {"profile": "mig-1g", "count": 7}]
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(_ripe_dict(0, servers=servers))
    msg = str(info.value)
    assert msg.startswith("<dict>: servers (a100-1).location") and str(n) in msg and str(n - 1) in msg
    clients = [{"name": "c0"}, {"name": "c1", "location": n + 5}]
    with pytest.raises(ScenarioError, match=r"clients\[1\]\.location.*" + str(n + 5)):
        scenario_from_dict(_ripe_dict(0, clients=clients))
    # the last destination is fine
    sc = scenario_from_dict(_ripe_dict(0, clients=[{"name": "c", "location": n - 1}]))
    assert sc.clients[0].location == n - 1


def test_ripe_atlas_location_error_names_the_server():
    """Entries have counts: the error names the server (its name), not an expanded index."""
    n = len(datasets.ripe_atlas())
    servers = [{"profile": "a100", "count": 2}, {"profile": "mig-1g", "count": 7, "location": n}]
    with pytest.raises(ScenarioError, match=r"servers \(mig-1g-2\)\.location"):
        scenario_from_dict(_ripe_dict(0, servers=servers))


def test_great_circle_km_known_distances():
    gc = datasets.great_circle_km
    assert float(gc(0.0, 0.0, 0.0, 1.0)) == pytest.approx(6371.0 * math.pi / 180.0, rel=1e-12)
    assert float(gc(0.0, 0.0, 1.0, 0.0)) == pytest.approx(6371.0 * math.pi / 180.0, rel=1e-12)
    assert float(gc(0.0, 0.0, 0.0, 180.0)) == pytest.approx(6371.0 * math.pi, rel=1e-12)
    assert float(gc(90.0, 0.0, -90.0, 0.0)) == pytest.approx(6371.0 * math.pi, rel=1e-12)
    assert float(gc(48.85, 2.35, 48.85, 2.35)) == 0.0
    # Paris - London, about 344 km
    assert float(gc(48.8566, 2.3522, 51.5074, -0.1278)) == pytest.approx(343.5, abs=2.0)
    # broadcasting
    out = gc(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((1, 4)), np.arange(4.0)[None, :])
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out[1], 6371.0 * np.radians(np.arange(4.0)), rtol=1e-12)


coords = st.tuples(st.floats(-89.0, 89.0), st.floats(-180.0, 180.0))


@settings(max_examples=100)
@given(a=coords, b=coords, c=coords)
def test_great_circle_km_is_a_metric(a, b, c):
    gc = datasets.great_circle_km
    ab, ba = float(gc(*a, *b)), float(gc(*b, *a))
    bc, ac = float(gc(*b, *c)), float(gc(*a, *c))
    assert ab == pytest.approx(ba, abs=1e-6)
    assert 0.0 <= ab <= 6371.0 * math.pi + 1e-6
    assert ac <= ab + bc + 1e-6
    assert ab == pytest.approx(_haversine_km(*a, *b), abs=1e-6)


def test_a_short_simulation_on_a_ripe_atlas_network():
    sc = scenario_from_dict(_ripe_dict(7))
    _, res = _run(sc, seed=1)
    s = res.summary()
    assert s["arrived"] == 30 == s["completed"] + s["failed"] + s["in_flight"]
    assert s["completed"] == 30
    # the first token needs at least the client's RTT to every server of the chain and back
    rtt = sc.network.rtt_s
    assert all(r.ttft > rtt.min() for r in res.requests)


def test_ripe_atlas_with_churn_and_shocks_simulates():
    data = _ripe_dict(1, num_requests=40)
    data["churn"] = {
        "preset": "zone-shocks",
        "downtime_s": {"dist": "exponential", "mean": 30},
        "shocks": {"rate_per_day": 2000, "probability": 0.8, "groups": [["a100-0", "a100-1"]]},
    }
    sc = scenario_from_dict(data)
    sim, res = _run(sc, seed=0)
    assert set(sim.leaves) <= {"shock"}
    s = res.summary()
    assert s["arrived"] == 40 == s["completed"] + s["failed"] + s["in_flight"]


# ==================================================================================================
# 4. workload.warmup_s
# ==================================================================================================
_TIMING_KEYS = {"decide_s", "events", "wall_s"}


def _warm(warmup: float | None, n: int = 40, seed: int = 3):
    ov: dict[str, Any] = {"workload.num_requests": n}
    if warmup is not None:
        ov["workload.warmup_s"] = warmup
    sc = load_scenario("clustered-9", ov)
    _, res = _run(sc, seed)
    return sc, res


@pytest.mark.parametrize("warmup", [50.0, 150.0, 300.0])
def test_warmup_leaves_early_arrivals_out_of_the_summary(warmup):
    sc, res = _warm(warmup)
    assert sc.workload.warmup_s == warmup and res.warmup_s == warmup
    kept = [r for r in res.requests if r.arrival >= warmup]
    excluded = len(res.requests) - len(kept)
    assert 0 < excluded < len(res.requests)
    s = res.summary()
    want = summarise(kept)
    assert "warmup_excluded" not in want
    _same_metrics(s, want)
    assert set(s) == set(want) | _TIMING_KEYS | {"warmup_excluded"}
    assert s["warmup_excluded"] == excluded
    assert s["arrived"] == len(kept) == s["completed"] + s["failed"] + s["in_flight"]
    assert s["arrived"] + s["warmup_excluded"] == 40
    # the same as metrics.summarise with the warm-up
    _same_metrics(s, summarise(res.requests, warmup))


def test_warmup_does_not_change_the_episode():
    _, plain = _warm(None)
    _, warm = _warm(150.0)
    assert _canon(plain.records()) == _canon(warm.records())
    assert plain.events == warm.events
    assert warm.summary()["arrived"] < plain.summary()["arrived"]


def test_zero_warmup_gives_the_summary_of_before():
    _, plain = _warm(None)
    _, zero = _warm(0.0)
    assert plain.warmup_s == zero.warmup_s == 0.0
    a, b = plain.summary(), zero.summary()
    assert "warmup_excluded" not in a and "warmup_excluded" not in b
    for s in (a, b):
        _same_metrics(s, summarise(plain.requests))
        assert set(s) == set(summarise(plain.requests)) | _TIMING_KEYS
    _same_metrics(b, {k: v for k, v in a.items() if k not in _TIMING_KEYS})


def test_warmup_beyond_every_arrival_excludes_all():
    _, res = _warm(1e6, n=20)
    s = res.summary()
    assert s["arrived"] == 0 and s["completed"] == 0 and s["warmup_excluded"] == 20
    assert math.isnan(s["per_token_s"]) and math.isnan(s["ttft_s"])


def test_warmup_keeps_a_request_arriving_exactly_at_the_warmup():
    trace = {"arrival_s": [0.0, 10.0, 20.0, 30.0, 40.0], "l_in": [20] * 5, "l_out": [16, 32, 48, 64, 80]}
    sc = load_scenario("clustered-9", {"workload": {"trace": trace, "warmup_s": 20.0}})
    _, res = _run(sc, seed=0)
    s = res.summary()
    assert s["warmup_excluded"] == 2 and s["arrived"] == 3
    _same_metrics(s, summarise([r for r in res.requests if r.l_out >= 48]))
    # a warm-up before the first arrival excludes nothing: no warmup_excluded key
    sc = load_scenario("clustered-9", {"workload": {"trace": trace, "warmup_s": 0.0}})
    _, res = _run(sc, seed=0)
    assert "warmup_excluded" not in res.summary()


@pytest.mark.parametrize("bad", [-1, "soon", math.inf, True])
def test_bad_warmup_is_an_error(bad):
    with pytest.raises(ScenarioError, match=r"workload\.warmup_s"):
        load_scenario("clustered-9", {"workload.warmup_s": bad})


def test_a_shock_field_next_to_the_zone_shocks_preset_keeps_the_other_shock_fields():
    sc = load_scenario("clustered-9", {"churn": {"preset": "zone-shocks", "shocks": {"rate_per_day": 20}}})
    assert sc.churn.shocks.rate_per_day == 20.0 and sc.churn.shocks.probability == 0.6
