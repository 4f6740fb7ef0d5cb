"""The authors' simulator replayed on petalgym (issue 11): their inputs (clustered-9-authors), their
mechanisms (petals-paper, cg-bp-ws-rr-paper: fixed paths, starts at the back-off-rounded wait, allocation
delays that hold the cache), pinned by hand-computed numbers and by an independent sequential oracle
(tests/authors_reference.py)."""

from __future__ import annotations

import math

import authors_reference as ref
import numpy as np
import pytest

from petalgym.baselines.paper import backoff_rounded_wait
from petalgym.baselines.petals import PetalsDecider
from petalgym.deciders import make_decider
from petalgym.design import cg_bp_placement, offline_instance
from petalgym.errors import DeciderError
from petalgym.scenario import Trace, load_scenario, scenario_from_dict, with_workload
from petalgym.simulator import Simulator, simulate


@pytest.fixture(scope="module")
def authors():
    return load_scenario("clustered-9-authors")


def test_cg_bp_placement_and_one_request_by_hand(authors):
    """CG-BP at |R| = 8 (1-based starts for 7 MIG then 2 A100 servers) and one request on it: the client
    in cluster 0 takes A100 #8 for blocks 1-57, then A100 #9 from block 58."""
    cg = cg_bp_placement(offline_instance(authors, 8), 8)
    assert [a + 1 for a in cg.starts] == [1, 5, 9, 58, 62, 66, 13, 1, 14]
    assert list(cg.num_blocks) == [4] * 7 + [57, 57]
    one = load_scenario("clustered-9-authors", {"workload.num_requests": 1})
    (r,) = simulate(one, make_decider("cg-bp-ws-rr", num_sessions=8), seed=0).requests
    assert r.arrival == 0.0  # first_arrival: zero
    # hops: raw RTT 100 ms + 55 ms prefill overhead + k x 7.2197 ms prefill tau; initial delay 100 ms
    ttft = 0.100 + (0.155 + 57 * 0.0072197) + (0.155 + 13 * 0.0072197)
    token = (0.150 + 57 * 0.0022197) + (0.150 + 13 * 0.0022197)  # RTT 100 + 50 ms overhead + k tau
    assert r.ttft == pytest.approx(ttft, abs=1e-12) and round(r.ttft, 6) == 0.915379
    assert r.per_token == pytest.approx((ttft + 127 * token) / 128, abs=1e-12)
    assert round(r.per_token, 7) == 0.4589728


def test_petals_placement_for_a_given_join_order(authors):
    order = [9, 1, 4, 7, 5, 2, 6, 8, 3]  # 1-based, as the authors' randperm prints it
    dec = PetalsDecider(join_order=lambda sc: [j - 1 for j in order], rebalance=False)
    dec.reset(authors, np.random.default_rng(0))
    placed = [dec._planned[j] for j in range(9)]
    assert [p.start + 1 for p in placed] == [50, 66, 50, 54, 62, 67, 58, 1, 1]
    assert [p.num_blocks for p in placed] == [4] * 7 + [49, 49]


def test_backoff_rounding():
    assert backoff_rounded_wait(0.0, 60.0) == 0.0
    assert backoff_rounded_wait(0.5, 60.0) == 1.0
    assert backoff_rounded_wait(1.0, 60.0) == 1.0
    assert backoff_rounded_wait(1.01, 60.0) == 3.0  # 1 + 2
    assert backoff_rounded_wait(64.0, 60.0) == 123.0  # 1+2+4+8+16+32 = 63, then + 60
    assert backoff_rounded_wait(130.0, 60.0) == 183.0


def two_requests(delay: float):
    """One A100-like server hosting the 2 blocks with cache for one session; requests at 0 and 1 s."""
    data = {
        "name": "two",
        "model": {"name": "tiny", "num_blocks": 2, "block_gb": 1.0, "d_model": 1000},
        "gpu_profiles": {
            "p": {"memory_gb": 10.0, "tau_ms": 3.0, "prefill_tau_ms": {"per_token": 0.0, "base": 5.0}}
        },
        "servers": [{"profile": "p", "location": 0}],
        "clients": [{"name": "c", "location": 0}],
        "network": {"kind": "clusters", "intra_rtt_ms": 10, "inter_rtt_ms": 10},
        "overheads": {"token_overhead_ms": 50, "prefill_overhead_ms": 55, "prefill_per_token_ms": 0,
                      "initial_delay_ms": 100},
        "workload": {"arrival_rate": 1.0, "num_requests": 2, "l_in": 10, "l_out": 20},
        "petals": {"attn_cache_tokens": 30},  # budget 2 blocks x 30 tokens = one 30-token session
    }  # fmt: skip
    sc = scenario_from_dict(data, source="two")
    trace = Trace(np.array([0.0, 1.0]), np.array([10, 10]), np.array([20, 20]), np.array([0, 0]))
    return with_workload(sc, trace=trace, num_requests=None), delay


@pytest.mark.parametrize("delay", [0.0, 5.0])
def test_petals_paper_two_requests_wait_with_backoff_rounding(delay):
    """The second request finds the only server's cache taken until the first completes: it starts at
    its arrival + the wait rounded up to the back-off schedule (1, 3, 7, 15, ... s), holding its slot from
    then; the allocation delay enters both TTFTs and completion times and holds the cache."""
    sc, delay = two_requests(delay)
    first = delay + 0.100 + (0.010 + 0.055 + 2 * 0.005)  # allocation, initial delay, one prefill hop
    token = 0.010 + 0.050 + 2 * 0.003
    done_0 = 0.0 + first + 19 * token  # the first request's completion
    wait = done_0 - 1.0
    rounded = next(x for x in (1.0, 3.0, 7.0, 15.0, 31.0, 63.0, 123.0) if x >= wait)
    r0, r1 = simulate(sc, make_decider("petals-paper", allocation_delay_s=delay), seed=0).requests
    assert r0.start == 0.0 and r0.finish == pytest.approx(done_0, abs=1e-12)
    assert r0.ttft == pytest.approx(first, abs=1e-12)
    assert r1.start == pytest.approx(1.0 + rounded, abs=1e-12) and r1.start > r0.finish
    assert r1.wait_s == pytest.approx(rounded, abs=1e-12)
    assert r1.ttft == pytest.approx(rounded + first, abs=1e-12)
    assert r1.finish == pytest.approx(1.0 + rounded + first + 19 * token, abs=1e-12)


def _reference_servers(sim: Simulator, kv: int, decode_only: bool = False) -> list[ref.Server]:
    tm = sim.time_model
    out = []
    for s in sim.servers:
        p = s.spec.profile
        out.append(ref.Server(s.start, s.end, s.cache_capacity // kv, float(tm.rtt[0][s.id]), p.tau_s,
                              p.prefill_base_s))  # fmt: skip
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("decider", "seed", "overrides"), [
    ("cg-bp-ws-rr-paper", 0, {}), ("cg-bp-ws-rr-paper", 1, {"workload.l_out": 64}),
    ("cg-bp-ws-rr-paper", 2, {"clients.0.location": 2}),
    ("petals-paper", 0, {}), ("petals-paper", 3, {"workload.l_out": 64}),
    ("petals-paper", 4, {"clients.0.location": 1}),
])  # fmt: skip
def test_the_replay_equals_the_authors_sequential_simulator(decider, seed, overrides):
    """Every request's start, TTFT and completion, and its path, as the sequential oracle computes them on
    the same placement and arrivals (fixed paths, waits counted from arrival, back-off rounding, allocation
    delays holding the cache)."""
    sc = load_scenario("clustered-9-authors", overrides)
    sim = Simulator(sc, seed, check_invariants=True)
    res = sim.run(make_decider(decider))
    kv = res.requests[0].kv_bytes
    servers = _reference_servers(sim, kv)
    arrivals = [r.arrival for r in res.requests]
    o = sc.overheads
    l_out = sc.workload.l_out.mean
    alloc = 250.0 if decider == "petals-paper" else 60.0
    overheads = (o.token_overhead_s, o.prefill_overhead_s)
    if decider == "petals-paper":
        capacity = [s.cache_capacity // ((s.end - s.start) * kv) for s in sim.servers]
        want = ref.petals(servers, sc.num_blocks, arrivals, int(l_out), sc.network.server_rtt_s, overheads,
                          o.initial_delay_s, alloc, capacity=capacity)  # fmt: skip
    else:
        want = ref.ws_rr(servers, sc.num_blocks, arrivals, int(l_out), 10, overheads, o.initial_delay_s,
                         alloc)  # fmt: skip
    waited = 0
    for r, w in zip(res.requests, want, strict=True):
        assert tuple(h.server for h in r.first_chain) == w.path, r.id
        assert r.start == pytest.approx(w.start, abs=1e-9), r.id
        assert r.ttft == pytest.approx(w.ttft, abs=1e-9), r.id
        assert r.finish == pytest.approx(w.completion, abs=1e-9), r.id
        waited += r.start > r.arrival
    assert waited > 10  # the case exercises waiting, not just free swarms


def test_a_matrix_network_without_server_rtts_is_a_clear_error():
    sc = load_scenario("clustered-9", {"network": {"kind": "matrix", "rtt_ms": [[5.0] * 9]}})
    with pytest.raises(DeciderError, match="server-to-server RTTs"):
        simulate(sc, make_decider("petals-paper"), seed=0)
    network = {"kind": "matrix", "rtt_ms": [[5.0] * 9], "server_rtt_ms": [[5.0] * 9] * 9}
    ok = load_scenario("clustered-9", {"network": network})
    assert simulate(ok, make_decider("petals-paper"), seed=0).summary()["completed"] == 100


def test_allocation_delay_is_a_keyword_of_every_decider():
    for name in ("petals", "cg-bp-ws-rr", "shortest", "petals-opt-rr"):
        dec = make_decider(name, allocation_delay_s=7.5)
        assert dec.allocation_delay_s == 7.5
    with pytest.raises(DeciderError, match="allocation_delay_s must be a number"):
        make_decider("petals", allocation_delay_s=-1)
    sc = load_scenario("clustered-9", {"workload.num_requests": 5})
    base = simulate(sc, make_decider("cg-bp-ws-rr"), seed=0).requests
    slow = simulate(sc, make_decider("cg-bp-ws-rr", allocation_delay_s=7.5), seed=0).requests
    for a, b in zip(base, slow, strict=True):
        assert b.ttft >= a.ttft + 7.5 - 1e-9 and math.isfinite(b.per_token)
    assert make_decider("petals-paper").allocation_delay_s == 250.0
    assert make_decider("cg-bp-ws-rr-paper").allocation_delay_s == 60.0


@pytest.mark.slow
def test_the_authors_offline_instance_and_its_proven_optimum():
    """test_general_case.m's 9 x 3 instance (the paper's MILP case): local MIG slices 25 + U[0, 5] ms,
    remote A100s 25 + U[100, 200] ms, tau 15 and 15/7 ms, 9.5 and 79.138427734375 GB, no block cap,
    l_out 100; both solvers prove the same optimum, which CG-BPRR does not beat."""
    from petalgym.baselines.cg import cg_bprr
    from petalgym.baselines.milp import solve_milp
    from petalgym.baselines.paper import authors_offline_instance

    inst = authors_offline_instance(seed=1)
    assert inst.num_servers == 9 and inst.num_requests == 3 and inst.l_out == 100
    assert np.all((inst.t[0, :7] >= 0.025) & (inst.t[0, :7] <= 0.030))
    assert np.all((inst.t[0, 7:] >= 0.125) & (inst.t[0, 7:] <= 0.225))
    assert inst.tau[0] == 0.015 and inst.tau[8] == pytest.approx(0.015 / 7)
    assert list(inst.max_blocks) == [70] * 9
    assert inst.memory[0] == 9_500_000_000 and inst.session_bytes == round(2 * 14336 * 100 * 2 / 2**30 * 1e9)
    assert np.array_equal(authors_offline_instance(seed=1).t, inst.t)  # seeded
    highs = solve_milp(inst, "highs", time_limit_s=120)
    cbc = solve_milp(inst, "cbc", time_limit_s=120)
    assert highs.status == cbc.status == "optimal"
    assert highs.objective == pytest.approx(cbc.objective, rel=1e-9)
    assert highs.objective <= cg_bprr(inst).objective + 1e-9
