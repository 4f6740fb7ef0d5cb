"""The alone-on-the-best-chain lower bound (petalgym.bounds): exact against brute force, equal to a
request's realised time when nothing waits on the best chain, and below every decider on every seed."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from strategies import RandomFeasibleDecider, small_scenarios

from petalgym.bounds import alone_bound, best_chain_time, wspt_mean_busy_times
from petalgym.deciders import make_decider
from petalgym.errors import SolverError
from petalgym.perfmodel import TimeModel
from petalgym.scenario import load_scenario, max_blocks_on, scenario_from_dict
from petalgym.simulator import Simulator, simulate


def brute_force(fixed, per_block, caps, L):
    best = math.inf
    n = len(fixed)
    for counts in itertools.product(*[range(min(c, L) + 1) for c in caps]):
        if sum(counts) == L:
            best = min(best, sum(fixed[j] + per_block[j] * counts[j] for j in range(n) if counts[j]))
    return best


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 2.0), st.integers(0, 4)), min_size=1, max_size=5
    ),
    L=st.integers(1, 8),
)
def test_best_chain_time_is_the_brute_force_optimum(data, L):
    fixed, per_block, caps = zip(*data, strict=True)
    expected = brute_force(fixed, per_block, caps, L)
    got = best_chain_time(fixed, per_block, caps, L)
    assert got == pytest.approx(expected) if math.isfinite(expected) else got == math.inf


def test_each_server_is_used_once():
    # one fast server that holds 2 of 4 blocks and a slow one that holds all: the fast one cannot be reused
    assert best_chain_time([1.0, 10.0], [0.0, 1.0], [2, 4], 4) == pytest.approx(1.0 + 10.0 + 2.0)


def test_the_bound_is_reached_where_nothing_waits():
    """On clustered-9 every request of GBP-CR + GCA + JFFC runs alone-fast on the best possible chain."""
    sc = load_scenario("clustered-9", {"workload.num_requests": 40})
    bound = alone_bound(sc, 100)
    summary = simulate(sc, make_decider("gbp-cr-jffc"), 100).summary()
    assert summary["failed"] == 0
    assert summary["per_token_s"] == pytest.approx(bound.per_token_s, rel=1e-9)
    assert summary["response_s"] == pytest.approx(bound.response_s, rel=1e-9)


SETTINGS = [
    ("clustered-9", {"workload.num_requests": 60, "workload.arrival_rate": 2.0}),
    ("bellcanada-26", {"workload.num_requests": 60}),
    ("bellcanada-26-churn", {"workload.horizon_s": 600.0}),
    ("llama7b-mig-ripe", {"workload.trace.duration_s": 60.0}),
    (
        "llama7b-mig-ripe",
        {"workload.trace.duration_s": 60.0, "contention": "fifo", "workload.warmup_s": 10.0},
    ),
]
DECIDERS = ["petals", "cg-bp-ws-rr", "cg-bprr", "gbp-cr-jffc", "gbp-cr-sed", "parallax", "shortest", "random"]


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", SETTINGS)
def test_the_bound_is_below_every_decider_on_validation_seeds(name, overrides):
    sc = load_scenario(name, overrides)
    compared = 0
    for seed in (100, 101):
        bound = alone_bound(sc, seed)
        for decider in DECIDERS:
            try:
                summary = simulate(sc, make_decider(decider), seed).summary()
            except SolverError:  # a decider that cannot plan this load (GBP-CR: lambda >= its chains' rate)
                continue
            if summary["failed"] == 0 and summary["completed"] > 0:
                assert bound.per_token_s <= summary["per_token_s"] + 1e-9, (name, seed, decider)
                assert bound.response_s <= summary["response_s"] + 1e-9, (name, seed, decider)
                compared += 1
    assert compared >= 8  # most deciders complete every request here


_PROFILE = {"memory_gb": 1.002, "tau_ms": 1.0, "prefill_tau_ms": {"per_token": 0.0, "base": 1.0}}
# a server fails inside request 2's initial delay (seed 0, RandomFeasibleDecider)
_FAILS_IN_INITIAL_DELAY = {
    "name": "random-small",
    "model": {"name": "tiny", "num_blocks": 2, "block_gb": 1.0, "d_model": 200000},
    "gpu_profiles": {"g0": _PROFILE, "g1": _PROFILE},
    "servers": [{"profile": "g0"}] * 5,
    "clients": [{"name": "c0", "weight": 1.0}, {"name": "c1", "weight": 1.0}],
    "network": {"kind": "matrix", "rtt_ms": [[0.0] * 5, [0.0] * 5]},
    "workload": {
        "arrival_rate": 1.0,
        "num_requests": 3,
        "l_in": {"dist": "uniform", "low": 1, "high": 1},
        "l_out": {"dist": "uniform", "low": 1, "high": 1},
    },
    "churn": {
        "enabled": True,
        "lifetime_s": {"dist": "exponential", "mean": 5.0},
        "downtime_s": {"dist": "exponential", "mean": 1.0},
        "failure_fraction": 0.0,
        "drain_timeout_s": 0.0,
        "no_chain_timeout_s": 1.0,
        "load_s_per_gb": 0.0,
    },
}


# request 4 recovers after its first token by a replay over 2 tokens; priced as a prefill (cheaper than the
# decode step it replaces under the paper's overheads) it beat its alone bound (0.213 against 0.240 s)
_CHEAP_REPLAY = {
    **_FAILS_IN_INITIAL_DELAY,
    "model": {"name": "tiny", "num_blocks": 1, "block_gb": 1.0, "d_model": 200000},
    "gpu_profiles": {"g0": {**_PROFILE, "memory_gb": 1.003}},
    "clients": [{"name": "c0"}],
    "network": {"kind": "matrix", "rtt_ms": [[0.0] * 5]},
    "workload": {
        "arrival_rate": 3.75,
        "num_requests": 5,
        "l_in": {"dist": "uniform", "low": 1, "high": 1},
        "l_out": {"dist": "uniform", "low": 1, "high": 2},
    },
    "churn": {**_FAILS_IN_INITIAL_DELAY["churn"], "lifetime_s": {"dist": "exponential", "mean": 6.0}},
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=small_scenarios(), seed=st.integers(0, 2**31 - 1))
@example(sc=scenario_from_dict(_CHEAP_REPLAY, source="hypothesis"), seed=70)
def test_no_request_beats_its_own_bound(sc, seed):
    """Interrupted or not, whatever chains it ends on."""
    sim = Simulator(sc, seed)
    sim.run(RandomFeasibleDecider())
    bound = alone_bound(sc, seed)
    assert len(bound.time_s) == len(sim.requests)
    for r in sim.requests:
        if math.isfinite(r.finish) and r.failure_reason == "":
            assert r.finish - r.arrival >= bound.time_s[r.id] - 1e-9


def test_the_cheap_replay_case_recovers_and_respects_its_bound():
    sc = scenario_from_dict(_CHEAP_REPLAY, source="hypothesis")
    sim = Simulator(sc, 70)
    sim.run(RandomFeasibleDecider())
    r = sim.requests[4]
    assert r.recoveries >= 1 and r.failure_reason == "" and r.l_out == 2
    assert r.finish - r.arrival >= alone_bound(sc, 70).time_s[4] - 1e-9


@settings(max_examples=100, deadline=None)
@given(sc=small_scenarios(), tokens=st.integers(1, 400))
def test_a_replay_step_never_costs_less_than_a_decode_step_nor_than_its_prefill(sc, tokens):
    tm = TimeModel(sc)
    o = sc.overheads
    for j in range(sc.num_servers):
        overhead, work = tm.replay_step(j, 0, tokens)
        assert overhead >= tm.t_token[0, j] and work >= tm.tau[j]
        assert overhead >= tm.rtt[0, j] + o.prefill_overhead_s + o.prefill_per_token_s * tokens - 1e-15
        assert work >= tm.prefill_slope[j] * tokens + tm.prefill_base[j] - 1e-15


def test_a_session_interrupted_during_its_initial_delay_starts_afresh():
    """A server fails inside request 2's initial delay, before its prefill reached the downstream hop: the
    request must start afresh (initial delay again), not resume on the upstream hop having spent nothing
    (it then finished 0.197 s after arrival, below its alone bound of 0.207 s)."""
    sc = scenario_from_dict(_FAILS_IN_INITIAL_DELAY, source="hypothesis")
    sim = Simulator(sc, 0)
    sim.run(RandomFeasibleDecider())
    bound = alone_bound(sc, 0)
    r = sim.requests[2]
    assert r.recoveries == 1 and r.failure_reason == ""
    assert r.finish - r.arrival >= bound.time_s[2] - 1e-9


# --------------------------------------------------------------------------------------------------
# The memory-capacity bound
# --------------------------------------------------------------------------------------------------
def time_indexed_lp(release, processing, weight):
    """min sum_j w_j M_j over fractional unit-slot schedules (integer data: exact for preemptive WSPT)."""
    import pulp

    horizon = int(max(release) + sum(processing)) + 1
    prob = pulp.LpProblem("mbt", pulp.LpMinimize)
    x = {
        (j, t): pulp.LpVariable(f"x_{j}_{t}", 0, 1)
        for j in range(len(release))
        for t in range(int(release[j]), horizon)
    }
    prob += pulp.lpSum(weight[j] / processing[j] * (t + 0.5) * v for (j, t), v in x.items())
    for j, p in enumerate(processing):
        prob += pulp.lpSum(v for (i, _), v in x.items() if i == j) == p
    for t in range(horizon):
        prob += pulp.lpSum(v for (_, s), v in x.items() if s == t) <= 1
    from petalgym.baselines.milp import SolverOptions, run_solver  # (the project's one way to run HiGHS)

    outcome = run_solver(prob, SolverOptions("highs", time_limit_s=60.0))
    assert outcome.optimal
    return outcome.objective


@settings(max_examples=25, deadline=None)
@given(
    jobs=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 4), st.integers(1, 5)), min_size=1, max_size=5)
)
def test_preemptive_wspt_minimises_the_weighted_mean_busy_time(jobs):
    """Goemans' result, checked against a time-indexed LP over all fractional schedules."""
    release, processing, weight = (list(map(float, c)) for c in zip(*jobs, strict=True))
    busy = wspt_mean_busy_times(release, processing, weight)
    got = float(np.dot(weight, busy))
    assert got == pytest.approx(time_indexed_lp(release, processing, weight), rel=1e-6, abs=1e-6)
    for j in range(len(jobs)):  # a job is never busy before its release or in under half its length
        assert busy[j] >= release[j] + processing[j] / 2 - 1e-9


def test_wspt_without_release_dates_is_smiths_rule():
    busy = wspt_mean_busy_times([0.0, 0.0, 0.0], [3.0, 1.0, 2.0], [1.0, 1.0, 4.0])
    # ratios 1/3, 1, 2: order job 2 (0-2), job 1 (2-3), job 0 (3-6)
    assert busy.tolist() == pytest.approx([4.5, 2.5, 1.0])


def test_a_later_better_job_preempts():
    busy = wspt_mean_busy_times([0.0, 1.0], [4.0, 1.0], [1.0, 10.0])
    # job 0 runs 0-1, job 1 runs 1-2, job 0 resumes 2-5: mean busy (0.5 * 1 + 3.5 * 3) / 4
    assert busy.tolist() == pytest.approx([(0.5 + 3.5 * 3) / 4, 1.5])


def long_sessions_scenario(rate: float):
    """clustered-9 with 2,048-token outputs: the swarm's memory holds few such sessions at once."""
    return load_scenario(
        "clustered-9",
        {"workload.num_requests": 40, "workload.arrival_rate": rate, "workload.l_out": 2048},
    )


def test_the_capacity_bound_binds_with_long_sessions_and_stays_below_the_deciders():
    from petalgym.bounds import capacity_bound, episode_bound

    sc = long_sessions_scenario(2.0)
    compared = 0
    for seed in (100, 101):
        bound = episode_bound(sc, seed)
        assert bound.binding == "capacity" and bound.capacity > 1.5 * bound.alone
        capacity = capacity_bound(sc, seed)
        assert bound.value == max(bound.alone, bound.capacity)
        assert capacity["per_token_s"] == bound.capacity
        for decider in ("petals", "cg-bp-ws-rr", "shortest", "parallax"):
            summary = simulate(sc, make_decider(decider), seed).summary()
            if summary["failed"] == 0:
                assert capacity["per_token_s"] <= summary["per_token_s"] + 1e-9, (seed, decider)
                assert capacity["response_s"] <= summary["response_s"] + 1e-9, (seed, decider)
                compared += 1
    assert compared >= 4


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=small_scenarios(), seed=st.integers(0, 2**31 - 1))
def test_no_episode_beats_its_capacity_bound(sc, seed):
    from petalgym.bounds import capacity_bound

    sim = Simulator(sc, seed)
    sim.run(RandomFeasibleDecider())
    done = [r for r in sim.requests if r.failure_reason == "" and math.isfinite(r.finish)]
    if len(done) < len(sim.requests) or not done:
        return  # the bound is for episodes that complete every request
    bound = capacity_bound(sc, seed)
    counted = [r for r in done if r.arrival >= sc.workload.warmup_s]
    if counted:
        assert bound["per_token_s"] <= np.mean([r.per_token for r in counted]) + 1e-9
        assert bound["response_s"] <= np.mean([r.latency for r in counted]) + 1e-9


@settings(max_examples=50, deadline=None)
@given(sc=small_scenarios(), seed=st.integers(0, 1000))
def test_the_bound_is_at_most_the_time_alone_on_one_chain(sc, seed):
    """The best prefill chain and the best decode chain, chosen apart, cost at most one chain for both."""
    bound = alone_bound(sc, seed)
    tm = TimeModel(sc)
    for (_, l_in, l_out, client), time_s in zip(Simulator(sc, seed).arrivals(), bound.time_s, strict=True):
        caps = [max_blocks_on(sc, s, l_in + l_out) for s in sc.servers]
        one_chain = best_chain_time(*tm.hop_costs(client, l_in, l_out), caps, sc.num_blocks)
        one_chain += tm.initial_delay
        assert time_s <= one_chain + 1e-9
