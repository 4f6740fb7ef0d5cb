"""GBP-CR + GCA + JFFC and the dispatchers compared with it (peers.md section 1): the hand-checkable
example of section 1.10, Theorem 4's bounds, and every decider under the simulator's invariants."""

from __future__ import annotations

import numpy as np
import pytest

from petalgym.baselines.composition import (
    ServerCosts,
    choose_cache_jobs,
    gbp_cr,
    gca,
    select_chain,
    server_costs,
)
from petalgym.deciders import make_decider
from petalgym.errors import DeciderError, SolverError
from petalgym.perfmodel import Hop
from petalgym.queueing import chain_response_bounds, death_rates
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus

EPS = 0.01
#: peers.md section 1.10: L = 3, s_m = 10, s_c = 1 (the paper's values x 10), five servers.
EXAMPLE = ServerCosts(
    memory=(20, 30, 20, 20, 20),
    max_blocks=(3,) * 5,
    comm=(1.0, 2.0, 1.0, 1.0, 1.0),
    compute=tuple(EPS * k for k in (1, 2, 3, 4, 5)),
    block_bytes=10,
    cache_bytes=1,
    num_blocks=3,
)


def test_gbp_cr_places_two_chains_at_lambda_0_3():
    plan = gbp_cr(EXAMPLE, 1, arrival_rate=0.3, target_load=0.7)
    assert plan.num_blocks == (1, 2, 1, 1, 1)
    assert plan.order == (0, 1, 2, 3, 4)  # t~ = 1 + l eps
    # 1-indexed (a, m) j1 (1,1), j2 (2,2), j3 (1,1), j4 (2,1), j5 (3,1)
    assert plan.starts == (0, 1, 0, 1, 2)
    assert plan.chains == ((0, 1), (2, 3, 4))
    assert plan.chain_times == pytest.approx((3.05, 3.12))
    assert plan.rate == pytest.approx(1 / 3.05 + 1 / 3.12)


def test_gbp_cr_stops_after_one_chain_at_lambda_0_2():
    plan = gbp_cr(EXAMPLE, 1, arrival_rate=0.2, target_load=0.7)  # 1/3.05 >= 0.2/0.7
    assert plan.chains == ((0, 1),)
    assert plan.placed == (0, 1)


def test_gbp_cr_shifts_the_last_server_of_a_chain_back():
    costs = ServerCosts((50, 50), (3, 3), (1.0, 1.0), (0.1, 0.2), 10, 1, 4)  # m = (3, 3): overlap
    plan = gbp_cr(costs, 1, arrival_rate=10.0)
    assert plan.starts == (0, 1)  # server 1 keeps its 3 blocks: [1, 4), not [3, 4)
    assert plan.chains == ((0, 1),)


def test_gbp_cr_without_a_complete_chain_names_the_reason():
    costs = ServerCosts((20,), (3,), (1.0,), (0.1,), 10, 1, 3)
    with pytest.raises(SolverError, match="fewer than one chain of L=3"):
        gbp_cr(costs, 1, 0.1)


def test_gca_finds_the_three_chains_of_the_example():
    plan = gbp_cr(EXAMPLE, 1, 0.3)
    chains = gca(EXAMPLE, plan.starts, plan.num_blocks)
    assert [ch.servers for ch in chains] == [(0, 1), (0, 3, 4), (2, 3, 4)]  # j1->j4->j5 is new
    assert [ch.capacity for ch in chains] == [5, 5, 5]
    assert [ch.time for ch in chains] == pytest.approx([3.05, 3.10, 3.12])
    assert chains[0].hops == (Hop(0, 0, 1), Hop(1, 1, 3))
    assert sum(ch.capacity * ch.rate for ch in chains) == pytest.approx(4.855, abs=5e-4)


def test_gca_capacities_fit_the_slots():
    plan = gbp_cr(EXAMPLE, 1, 0.3)
    chains = gca(EXAMPLE, plan.starts, plan.num_blocks)
    used = [0] * 5
    for ch in chains:
        for h in ch.hops:
            used[h.server] += h.blocks * ch.capacity
    for j in plan.placed:
        assert used[j] <= EXAMPLE.slots(j, plan.num_blocks[j])


def test_theorem4_bounds_of_the_example_and_of_mm1():
    rates = [1 / 3.05, 1 / 3.10, 1 / 3.12]
    lower, upper = chain_response_bounds(rates, [5, 5, 5], 0.3)
    assert (lower, upper) == (pytest.approx(3.0500, abs=5e-5), pytest.approx(3.1200, abs=5e-5))
    lower, upper = chain_response_bounds(rates, [5, 5, 5], 4.0)
    assert (lower, upper) == (pytest.approx(3.5225, abs=5e-5), pytest.approx(3.5404, abs=5e-5))
    assert chain_response_bounds([1.0], [1], 0.5) == (pytest.approx(2.0), pytest.approx(2.0))
    assert chain_response_bounds([1.0], [2], 2.0) == (float("inf"), float("inf"))


def test_death_rates_fill_fastest_or_slowest_chains_first():
    np.testing.assert_allclose(death_rates([1.0, 2.0], [1, 2], True), [2.0, 4.0, 5.0])
    np.testing.assert_allclose(death_rates([1.0, 2.0], [1, 2], False), [1.0, 3.0, 5.0])


def test_jffc_fills_the_chains_fastest_first_then_queues():
    caps, rates = [5, 5, 5], [1 / 3.05, 1 / 3.10, 1 / 3.12]
    running, queued, placed = [0, 0, 0], [0, 0, 0], []
    for _ in range(16):
        k, now = select_chain("jffc", running, queued, caps, rates)
        placed.append(k)
        if now:
            running[k] += 1
    assert placed == [0] * 5 + [1] * 5 + [2] * 5 + [None]  # job 16 waits in the central queue


def test_sed_commits_jobs_16_and_17_as_the_example_says():
    caps, rates = [5, 5, 5], [1 / 3.05, 1 / 3.10, 1 / 3.12]
    running, queued = [5, 5, 5], [0, 0, 0]
    assert select_chain("sed", running, queued, caps, rates) == (0, False)  # 1.2 x 3.05 = 3.66
    queued[0] += 1
    assert select_chain("sed", running, queued, caps, rates) == (1, False)  # 3.72 < 4.27


def test_jsq_picks_uniformly_among_free_chains_and_sa_jsq_the_fastest():
    caps, rates = [5, 5, 5], [1.0, 3.0, 2.0]
    rng = np.random.default_rng(0)
    picks = [select_chain("jsq", [0, 0, 0], [0, 0, 0], caps, rates, rng)[0] for _ in range(300)]
    assert set(picks) == {0, 1, 2} and min(picks.count(k) for k in range(3)) > 60
    assert select_chain("sa-jsq", [0, 0, 0], [0, 0, 0], caps, rates) == (1, True)
    # JIQ: only free chains while one is free
    picks = {select_chain("jiq", [5, 0, 5], [0, 0, 0], caps, rates, rng)[0] for _ in range(50)}
    assert picks == {1}
    assert select_chain("jffc", [5, 5, 5], [0, 0, 0], caps, rates, active=[True, True, True]) == (None, False)
    assert select_chain("jffc", [0, 0, 0], [0, 0, 0], caps, rates, active=[False, True, False]) == (1, True)


def test_choose_cache_jobs_minimises_the_lower_bound():
    c, plan, chains = choose_cache_jobs(EXAMPLE, 0.3)
    scores = {}
    for cc in range(1, 20):
        try:
            p = gbp_cr(EXAMPLE, cc, 0.3)
        except SolverError:
            continue
        ch = gca(EXAMPLE, p.starts, p.num_blocks)
        if ch:
            scores[cc] = chain_response_bounds([x.rate for x in ch], [x.capacity for x in ch], 0.3)[0]
    assert c == min(scores, key=lambda k: (scores[k], k))
    assert plan.cache_jobs == c and chains


def test_the_testbed_scenario_gives_the_authors_whole_model_capacity():
    """The successor's note: 'JFFC only' holds 3 x 24 + 6 x 5 = 102 jobs on its nine MIG slices."""
    decider = make_decider("jffc-only")
    _c, _, chains = decider.planned(load_scenario("llama7b-mig-ripe"))
    assert sorted(ch.capacity for ch in chains) == [5] * 6 + [24] * 3
    costs = server_costs(load_scenario("llama7b-mig-ripe"))
    assert costs.cache_bytes == 2 * 4096 * 2048 * 2  # s_c at the 2,048-token cap: 0.034 GB per block


def test_jffc_only_on_a_scenario_where_no_server_holds_the_model_is_one_error():
    with pytest.raises(SolverError, match="no server holds all L blocks"):
        make_decider("jffc-only").check_scenario(load_scenario("clustered-9"))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dispatch": "fifo"}, "dispatch must be one of"),
        ({"cache_jobs": 0}, "cache_jobs must be an integer"),
        ({"target_load": 1.5}, r"target_load must be a number in \(0, 1\]"),
        ({"cache_jobs_method": "x"}, "cache_jobs_method"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    from petalgym.baselines.composition import ChainCompositionDecider

    with pytest.raises(DeciderError, match=match):
        ChainCompositionDecider(**kwargs)


NAMES = ["gbp-cr-jffc", "gbp-cr-jsq", "gbp-cr-sed", "gbp-cr-sa-jsq", "gbp-cr-jiq"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "scenario,overrides",
    [
        ("clustered-9", {"workload.num_requests": 60, "workload.arrival_rate": 2.0}),
        ("bellcanada-26-churn", {"workload.num_requests": 60}),
        ("clustered-9", {"workload.num_requests": 40, "contention": "fifo"}),
        ("bellcanada-26-churn", {"workload.num_requests": 40, "contention": "fifo"}),
    ],
)
def test_every_dispatcher_runs_under_the_invariants(name, scenario, overrides):
    sc = load_scenario(scenario).with_overrides(overrides)
    decider = make_decider(name, cache_jobs=3)
    result = Simulator(sc, 2, check_invariants=True).run(decider)
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in result.requests)
    assert {r.failure_reason for r in result.requests if r.status == RequestStatus.FAILED} <= {
        "no_chain",
        "wait_timeout",
    }
    assert sum(decider._running) == 0 and sum(decider._queued) == 0 and decider._central == 0
    used = {j for ch in decider.chains for j in ch.servers}
    for r in result.requests:  # fresh jobs run on a chain of the plan
        if r.recoveries == 0 and r.status == RequestStatus.COMPLETED:
            assert r.first_chain in {ch.hops for ch in decider.chains}
        assert {h.server for h in r.first_chain} <= used


def test_per_chain_queues_bind_each_job_to_one_chain():
    sc = load_scenario("llama7b-mig-ripe").with_overrides({"workload.trace.duration_s": 120})
    decider = make_decider("gbp-cr-sed", cache_jobs=2)
    result = Simulator(sc, 1, check_invariants=True).run(decider)
    assert result.summary()["completed"] == len(result.requests)
    assert len(decider.chains) > 1
    seen = {r.first_chain for r in result.requests}
    assert len(seen) > 1  # SED spreads jobs over several chains


def test_successor_rows_put_ours_beside_the_papers_table(monkeypatch):
    from petalgym import reproduce as rp

    # (Helix spends its 10 s MILP limit per scenario variant: left out here, run in test_helix)
    methods = tuple(m for m in rp.SUCCESSOR_METHODS if m[2] != "helix")
    monkeypatch.setattr(rp, "SUCCESSOR_METHODS", methods)
    evaluation = rp.successor_grid(range(2), overrides={"workload.trace.duration_s": 60.0}, progress=False)
    rows = rp.successor_rows(evaluation)
    assert [r["decider"] for r in rows] == [label for _, label, _, _, _ in methods]
    by = {r["decider"]: r for r in rows}
    assert by["gbp-cr-jffc"]["paper"]["response_s"] == 7.3
    assert by["gbp-cr-jffc"]["paper_reduction"] == pytest.approx(1 - 7.3 / 31.4)
    for r in rows:
        for variant in rp.SUCCESSOR_VARIANTS:
            mine = r[variant]
            assert mine["response_s"] > 0 and mine["service_s"] == pytest.approx(
                mine["response_s"] - mine["wait_s"]
            )
    assert "c=35" in by["gbp-cr-jffc c=35"]["model"]["detail"]
    # the proposed plan on petalgym's inputs is the whole-model plan: the same episodes as jffc-only
    assert by["gbp-cr-jffc"]["model"]["response_s"] == pytest.approx(by["jffc-only"]["model"]["response_s"])
    assert by["parallax"]["paper"] == {} and by["parallax"]["model"]["response_s"] > 0
    text = rp.successor_markdown(rows)
    assert text.count("\n") == len(rows) + 2 and "31.4 / 24.2 / 7.2" in text


def test_block_counts_are_cg_bprrs_conservative_counts():
    from petalgym.perfmodel import conservative_num_blocks

    costs = server_costs(load_scenario("llama70b-mixed-spot"))
    for c in (1, 7, 35, 400):
        expected = [
            conservative_num_blocks(m, costs.block_bytes, costs.cache_bytes, c, costs.num_blocks, cap)
            for m, cap in zip(costs.memory, costs.max_blocks, strict=True)
        ]
        assert costs.block_counts(c).tolist() == expected
