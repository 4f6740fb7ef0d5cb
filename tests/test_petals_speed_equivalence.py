"""The fast PETALS baseline (baselines/petals.py) gives bit-identical results to the frozen original.

``petals_reference`` (tests/petals_reference.py) is baselines/petals.py as it was before the speed-up. Every
public function and every decision of :class:`PetalsDecider` is compared with it on random inputs built to
make ties common (identical servers, equal RTTs, few distinct throughputs, zero-cost edges), including the
random-stream consumption of the balance checks, and whole simulations are compared request by request.
Floats are compared exactly (``==`` plus ``repr``, or the arrays' bytes), never approximately.
"""

from __future__ import annotations

import math

import numpy as np
import petals_reference as ref
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import gpu_profile

from petalgym.baselines import petals as fast
from petalgym.errors import DeciderError
from petalgym.perfmodel import TimeModel
from petalgym.scenario import load_scenario, scenario_from_dict
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import Request, ServerState, ServerStatus, SwarmView

ON, LOAD, OFF, DRAIN = ServerStatus.ONLINE, ServerStatus.LOADING, ServerStatus.OFFLINE, ServerStatus.DRAINING


def same(x: object, y: object) -> bool:
    """Exactly equal, floats included (repr tells 0.0 from -0.0 and shows every bit of a float)."""
    return x == y and repr(x) == repr(y)


def outcome(fn, *args, **kwargs) -> tuple[str, object]:
    """("ok", result) or ("error", exception type) of fn(*args, **kwargs)."""
    try:
        return "ok", fn(*args, **kwargs)
    except (DeciderError, ZeroDivisionError, IndexError) as exc:
        return "error", type(exc)


# --------------------------------------------------------------------------------------------------
# choose_best_start and block_throughputs
# --------------------------------------------------------------------------------------------------
VALUES = [0.0, -0.0, 1.0, 2.0, 2.5, 7.0, -1.0, 1e-3, math.inf, 1.0 + 2**-52]


@settings(max_examples=600)
@given(st.lists(st.sampled_from(VALUES), min_size=1, max_size=30), st.integers(min_value=1, max_value=30))
def test_choose_best_start_matches(t, m):
    m = min(m, len(t))
    assert fast.choose_best_start(t, m) == ref.choose_best_start(t, m)
    assert fast.choose_best_start(np.array(t), m) == ref.choose_best_start(np.array(t), m)


@settings(max_examples=100)
@given(st.lists(st.sampled_from([*VALUES[:6], math.nan]), min_size=1, max_size=12), st.integers(1, 12))
def test_choose_best_start_with_nan_is_an_error(t, m):
    """NaN throughputs have no order: the literal rule's answer would depend on the sort's luck."""
    m = min(m, len(t))
    if any(math.isnan(x) for x in t):
        assert outcome(fast.choose_best_start, t, m) == ("error", DeciderError)
    else:
        assert fast.choose_best_start(t, m) == ref.choose_best_start(t, m)


def test_choose_best_start_random_piecewise_constant():
    """T as block selection sees it: runs of equal sums (blocks hosted by the same servers)."""
    rng = np.random.default_rng(1)
    for _ in range(3000):
        L = int(rng.integers(1, 80))
        levels = rng.choice([0.0, 1.0, 3.0, 4.0, 1e3, 1e3 + 1e-9], size=int(rng.integers(1, 6)))
        t = np.repeat(rng.choice(levels, size=L), 1)
        if rng.random() < 0.5:  # runs
            cut = np.sort(rng.integers(0, L, size=int(rng.integers(0, 6))))
            t = np.concatenate([np.full(n, rng.choice(levels)) for n in np.diff([0, *cut, L])])
        m = int(rng.integers(1, L + 1))
        assert fast.choose_best_start(t, m) == ref.choose_best_start(t, m)


def test_best_start_memo_is_keyed_by_values_and_width():
    """The balance check's memoised best start: the same array with every width, then other arrays."""
    rng = np.random.default_rng(9)
    memo = fast.PetalsMemo()
    for _ in range(200):
        L = int(rng.integers(1, 40))
        t = rng.choice([0.0, 1.0, 2.0, -1e-3], size=L)
        for m in rng.permutation(np.arange(1, L + 1)).tolist() * 2:
            assert memo.best_start(t.tolist(), m) == ref.choose_best_start(t, m)


def test_choose_best_start_errors():
    for m in (0, 4):
        assert outcome(fast.choose_best_start, [1.0, 2.0, 3.0], m) == outcome(
            ref.choose_best_start, [1.0, 2.0, 3.0], m
        )


def random_throughput_spans(rng: np.random.Generator, n: int, L: int) -> list[tuple[int, int, int, float]]:
    """n servers with unique ids, random spans, throughputs from a few values (some with awkward bits)."""
    thr_values = [2.0, 3.0, 771.4444444444445, 1103.2, 0.1, 0.7, 1e-3, 3020.0]
    ids = rng.permutation(n + 5)[:n].tolist()
    spans = []
    for j in ids:
        a = int(rng.integers(0, L))
        e = int(rng.integers(a + 1, L + 1))
        spans.append((j, a, e, float(rng.choice(thr_values)) * (1 + rng.integers(0, 3) * 1e-7)))
    return spans


def test_block_throughputs_bit_identical():
    rng = np.random.default_rng(2)
    for _ in range(600):
        L = int(rng.integers(1, 80))
        spans = random_throughput_spans(rng, int(rng.integers(0, 120)), L)
        a, b = fast.block_throughputs(spans, L), ref.block_throughputs(spans, L)
        assert a.tobytes() == b.tobytes()


# --------------------------------------------------------------------------------------------------
# should_choose_other_blocks: decision and random-stream consumption
# --------------------------------------------------------------------------------------------------
def check_balance(spans, local, L, quality, seed, pass_throughputs: bool) -> None:
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    kwargs = {"throughputs": ref.block_throughputs(spans, L)} if pass_throughputs else {}
    got = outcome(fast.should_choose_other_blocks, spans, local, L, quality, r1, **kwargs)
    want = outcome(ref.should_choose_other_blocks, spans, local, L, quality, r2)
    assert got == want
    assert r1.bit_generator.state == r2.bit_generator.state  # same draws consumed


@pytest.mark.slow
def test_should_choose_other_blocks_random_swarms():
    rng = np.random.default_rng(3)
    moves = 0
    for case in range(1200):
        L = int(rng.integers(2, 40))
        n = int(rng.integers(1, 30))
        spans = random_throughput_spans(rng, n, L)
        if rng.random() < 0.5:  # identical servers: many equal T and equal windows
            width = int(rng.integers(1, L + 1))
            spans = [(j, min(a, L - width), min(a, L - width) + width, 2.0) for j, a, _, _ in spans]
        local = spans[int(rng.integers(0, n))][0] if rng.random() < 0.95 else 10**6
        quality = float(rng.choice([0.75, 0.9, 0.99, 1.0, 1.5, 0.0]))
        check_balance(spans, local, L, quality, case, pass_throughputs=bool(rng.random() < 0.5))
        verdict = outcome(
            ref.should_choose_other_blocks, spans, local, L, quality, np.random.default_rng(case)
        )
        moves += verdict == ("ok", True)
    assert moves > 100  # the interesting branch (a simulated re-balancing) is exercised


@pytest.mark.slow
@settings(max_examples=300)
@given(st.data())
def test_should_choose_other_blocks_hypothesis(data):
    L = data.draw(st.integers(2, 12))
    n = data.draw(st.integers(1, 8))
    spans = []
    for j in range(n):
        a = data.draw(st.integers(0, L - 1))
        e = data.draw(st.integers(a + 1, L))
        spans.append((j, a, e, data.draw(st.sampled_from([1.0, 2.0, 3.0, 0.5, 1e-4]))))
    local = data.draw(st.integers(0, n - 1))
    quality = data.draw(st.sampled_from([0.75, 0.9, 1.0]))
    check_balance(spans, local, L, quality, data.draw(st.integers(0, 2**32)), data.draw(st.booleans()))


# --------------------------------------------------------------------------------------------------
# min_latency_chain
# --------------------------------------------------------------------------------------------------
def valid_route_inputs(spans, L, rtt, rps, lacks, start, overhead, penalty) -> bool:
    """Whether the inputs are what a scenario can produce: distinct servers with int spans inside 0..L and
    every edge cost of PETALS' graph from ``start`` finite and >= 0 (else the fast rule raises
    DeciderError)."""
    ids = [sp[0] for sp in spans]
    if len(set(ids)) != len(ids):
        return False
    for sp in spans:
        if len(sp) != 3 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in sp):
            return False
        j, a, e = (int(x) for x in sp)
        if not (j >= 0 and 0 <= a < e <= L and j < min(len(rtt), len(rps), len(lacks))):
            return False
        step = 1.0 / float(rps[j]) if float(rps[j]) != 0 else math.inf
        delay = min(float(rtt[j]) / 2, 5.0) if e > start else 0.0  # servers before start have no node
        entry = delay + overhead + (penalty if lacks[j] else 0.0) if e > start else 0.0
        if not all(math.isfinite(c) and c >= 0 for c in (delay, step, entry)):
            return False
    return True


def check_route(spans, L, rtt, rps, lacks, start, overhead=0.018, penalty=10.0) -> tuple[float, tuple]:
    kw = {"start": start, "overhead_s": overhead, "penalty_s": penalty}
    got = outcome(fast.min_latency_chain, spans, L, rtt, rps, lacks, **kw)
    want = outcome(ref.min_latency_chain, spans, L, rtt, rps, lacks, **kw)
    if (
        want[0] == "ok"
        and want[1][1]
        and not valid_route_inputs(spans, L, rtt, rps, lacks, start, overhead, penalty)
    ):
        assert got == ("error", DeciderError), (got, want)  # the literal Dijkstra's answer is not PETALS'
        return math.inf, ()
    assert got[0] == want[0], (got, want)
    if got[0] == "ok":
        (c1, chain1), (c2, chain2) = got[1], want[1]  # type: ignore[misc]
        # the value is bit-identical; its type is always float (the reference's is np.float64 when it is
        # given numpy arrays, which no caller does)
        assert chain1 == chain2 and same(float(c1), float(c2)) and type(c1) is float, (got, want)
        return got[1]  # type: ignore[return-value]
    return math.inf, ()


def random_route_case(rng: np.random.Generator, n: int, L: int, ties: bool) -> tuple:
    """Spans (unique ids, shuffled), client RTTs, speeds, lacking flags, start."""
    ids = rng.permutation(n + 3)[:n].tolist()
    widths = rng.integers(1, L + 1, size=n)
    spans = []
    for j, w in zip(ids, widths, strict=True):
        w = int(w) if rng.random() < 0.7 else int(rng.choice([1, L, max(1, L // 2)]))
        a = int(rng.integers(0, L - w + 1))
        spans.append((j, a, a + w))
    size = max(ids) + 1
    if ties:
        rtt = rng.choice([0.0, 0.01, 0.02, 0.03], size=size).tolist()
        rps = rng.choice([100.0, 200.0, 400.0], size=size).tolist()
    else:
        rtt = rng.uniform(0.005, 0.2, size=size).round(4).tolist()
        rps = rng.choice([61.55, 300.0, 369.2, 1e4], size=size).tolist()
    lacks = (rng.random(size) < rng.choice([0.0, 0.2, 0.6])).tolist()
    start = int(rng.integers(0, L)) if rng.random() < 0.4 else 0
    return spans, rtt, rps, lacks, start


@pytest.mark.slow
def test_min_latency_chain_random_swarms():
    rng = np.random.default_rng(4)
    routed = 0
    for _ in range(2500):
        L = int(rng.integers(1, 25))
        n = int(rng.integers(1, 25))
        spans, rtt, rps, lacks, start = random_route_case(rng, n, L, ties=bool(rng.random() < 0.7))
        overhead, penalty = [(0.018, 10.0), (0.0, 10.0), (0.0, 0.0), (0.25, 1.0)][int(rng.integers(0, 4))]
        cost, _ = check_route(spans, L, rtt, rps, lacks, start, overhead, penalty)
        routed += cost < math.inf
    assert routed > 1000


def test_min_latency_chain_identical_servers():
    """All servers alike, equal RTTs: every chain of the same shape ties; only dijkstar's order decides."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        L = int(rng.integers(2, 16))
        n = int(rng.integers(2, 30))
        width = int(rng.integers(1, L + 1))
        spans = []
        for j in rng.permutation(n).tolist():
            a = int(rng.integers(0, L - width + 1)) if rng.random() < 0.8 else 0
            spans.append((j, a, a + width if rng.random() < 0.8 else L))
        rtt, rps = [0.02] * n, [100.0] * n
        lacks = [bool(x) for x in rng.random(n) < 0.3]
        check_route(spans, L, rtt, rps, lacks, int(rng.integers(0, L)), float(rng.choice([0.0, 0.018])))


@pytest.mark.slow
def test_min_latency_chain_large_swarms():
    """Hundreds of servers (the offline benchmark's regime): few cases, many nodes and ties each."""
    rng = np.random.default_rng(6)
    for case in range(12):
        n = [100, 300, 600][case % 3]
        spans, rtt, rps, lacks, start = random_route_case(rng, n, 70, ties=case % 2 == 0)
        check_route(spans, 70, rtt, rps, lacks, start if case < 6 else 0)


@pytest.mark.slow
@settings(max_examples=400)
@given(st.data())
def test_min_latency_chain_hypothesis(data):
    L = data.draw(st.integers(1, 8))
    n = data.draw(st.integers(1, 7))
    spans = []
    for j in data.draw(st.permutations(list(range(n)))):
        a = data.draw(st.integers(0, L - 1))
        spans.append((j, a, data.draw(st.integers(a + 1, L))))
    rtt = data.draw(st.lists(st.sampled_from([0.0, 0.005, 0.1, 12.0]), min_size=n, max_size=n))
    rps = data.draw(st.lists(st.sampled_from([61.55, 300.0, 1e300, math.inf]), min_size=n, max_size=n))
    lacks = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    start = data.draw(st.integers(0, L - 1))
    overhead = data.draw(st.sampled_from([0.018, 0.0]))
    penalty = data.draw(st.sampled_from([10.0, 0.0, math.inf]))
    check_route(spans, L, rtt, rps, lacks, start, overhead, penalty)


def test_min_latency_chain_unusual_inputs_are_errors():
    spans = [(0, 0, 4), (1, 2, 8), (2, 0, 8)]
    base = ([0.01, 0.02, 0.03], [100.0, 200.0, 300.0], [False, True, False])
    cases = [
        (spans, *base, 0),
        (spans, [-0.5, 0.02, 0.03], base[1], base[2], 0),  # negative delay
        (spans, [math.nan, 0.02, 0.03], base[1], base[2], 0),
        (spans, base[0], [0.0, 200.0, 300.0], base[2], 0),  # ZeroDivisionError in both
        (spans, base[0], [-100.0, 200.0, 300.0], base[2], 0),
        ([(0, 0, 4), (0, 4, 8)], *base, 0),  # a repeated server
        ([(0, 0, 4), (1, 4, 9)], *base, 0),  # beyond L
        ([(0, 0, 4), (1, 4, 4), (2, 4, 8)], *base, 0),  # empty span
        ([(np.int64(0), 0, 8), (1, np.int64(2), 8)], *base, 3),
        ([(0, 0, 8)], np.array(base[0]), np.array(base[1]), np.array(base[2]), 1),
        ([(5, 0, 8)], *base, 0),  # index beyond the lists
    ]
    for sp, rtt, rps, lacks, start in cases:
        check_route(sp, 8, rtt, rps, lacks, start)
    check_route(spans, 8, *base, 0, penalty=math.inf)
    check_route(spans, 8, *base, 0, overhead=-1.0)
    for start in (-1, 8):
        check_route(spans, 8, *base, start)


# --------------------------------------------------------------------------------------------------
# The decider: place, rebalance and route on random states of one view, mutated between decisions
# --------------------------------------------------------------------------------------------------


#: PETALS puts 2 blocks of 1 GB on a 2.4 GB GPU (throughput 3 / 1.5 = 2 for p2, 3 for p3), 4 on mid.
PROFILES = {
    "p2": gpu_profile(2.4, 3.0, 100.0),
    "p3": gpu_profile(2.4, 4.5, 400.0),
    "mid": gpu_profile(4.5, 3000.0, 300.0),
    "big": gpu_profile(20.0, 3000.0, 300.0),
}


def scenario_of(names: list[str], L: int, rtt_ms: list[list[float]]):
    """One server per profile name, one client per row of ``rtt_ms``."""
    return scenario_from_dict(
        {
            "model": {"name": "tiny", "num_blocks": L, "block_gb": 1.0, "d_model": 1024},
            "gpu_profiles": PROFILES,
            "servers": [{"profile": p} for p in names],
            "clients": [{"name": f"c{i}"} for i in range(len(rtt_ms))],
            "network": {"kind": "matrix", "rtt_ms": rtt_ms},
            "workload": {"arrival_rate": 1.0, "num_requests": 1, "l_in": 20, "l_out": 128},
        }
    )


def decider_scenario(rng: np.random.Generator, n: int, L: int):
    """n servers of random profiles (the first big enough to make the scenario feasible), 2 clients."""
    names = ["big", *rng.choice(["p2", "p2", "p3", "mid", "big"], size=n - 1).tolist()]
    return scenario_of(names, L, rng.choice([10.0, 10.0, 30.0], size=(2, n)).tolist())


def mutate(rng: np.random.Generator, view: SwarmView) -> None:
    """Change a few servers' status, span or cache use, without telling the view (as a test might)."""
    L = view.num_blocks
    for _ in range(int(rng.integers(0, 4))):
        s = view.servers[int(rng.integers(0, len(view.servers)))]
        s.status = [ON, ON, LOAD, OFF, DRAIN][int(rng.integers(0, 5))]
        if s.status == OFF and rng.random() < 0.8:
            s.start = s.end = -1
        else:
            width = int(rng.choice([1, 2, 4, L, int(rng.integers(1, L + 1))]))
            width = min(width, L)
            s.start = int(rng.integers(0, L - width + 1))
            s.end = s.start + width
        s.cache_capacity = int(rng.integers(0, 5)) * 2**24
        s.used_bytes = int(rng.integers(0, 3)) * 2**23
        if rng.random() < 0.05:  # another profile (another announced throughput), same status and span
            s.spec = view.scenario.servers[int(rng.integers(0, len(view.servers)))]
    if rng.random() < 0.5:
        view.placement_version += 1


@pytest.mark.slow
def test_decider_decisions_on_mutating_views():
    rng = np.random.default_rng(7)
    decisions = {"place": 0, "rebalance": 0, "route": 0, "moves": 0}
    for episode in range(60):
        n = int(rng.integers(1, 40))
        L = int(rng.integers(2, 16))
        sc = decider_scenario(rng, n, L)
        quality = [None, 0.9, 1.5, 0.0][episode % 4]
        new, old = fast.PetalsDecider(balance_quality=quality), ref.PetalsDecider(balance_quality=quality)
        new.reset(sc, np.random.default_rng(episode))
        old.reset(sc, np.random.default_rng(episode))
        servers = [ServerState(spec) for spec in sc.servers]
        view = SwarmView(sc, TimeModel(sc), servers)
        for step in range(60):
            mutate(rng, view)
            if step % 20 == 19:  # a new view (a copy of the servers' states): the decider re-reads all
                copies = [ServerState(s.spec) for s in view.servers]
                for c, s in zip(copies, view.servers, strict=True):
                    for attr in (
                        "id",
                        "status",
                        "start",
                        "end",
                        "cache_capacity",
                        "used_bytes",
                        "placements",
                    ):
                        setattr(c, attr, getattr(s, attr))
                view = SwarmView(sc, view.time_model, copies)
            kind = ["place", "rebalance", "route"][int(rng.integers(0, 3))]
            if kind == "route":
                req = Request(0, int(rng.integers(0, 2)), 0.0, 20, 128, int(rng.integers(1, 4)) * 2**20)
                req.route_from = int(rng.integers(0, L))
                got, want = outcome(new.route, view, req), outcome(old.route, view, req)
            else:
                j = int(rng.integers(0, n))
                got = outcome(getattr(new, kind), view, j)
                want = outcome(getattr(old, kind), view, j)
                decisions["moves"] += kind == "rebalance" and want[0] == "ok" and want[1] is not None
            assert got == want
            assert new.rng.bit_generator.state == old.rng.bit_generator.state
            decisions[kind] += 1
    assert decisions["moves"] > 20


def test_a_changed_profile_alone_is_seen():
    """Only a server's spec changes (same status and span): its announced throughput, so T, changes."""
    scenario = scenario_of(["p2", "p2", "p2", "p3", "big"], 4, [[10.0] * 5])
    servers = [ServerState(spec) for spec in scenario.servers]
    for s, (a, e) in zip(servers[:2], [(0, 2), (2, 4)], strict=True):
        s.status, s.start, s.end = ON, a, e
    view = SwarmView(scenario, TimeModel(scenario), servers)
    new, old = fast.PetalsDecider(), ref.PetalsDecider()
    for d in (new, old):
        d.reset(scenario, np.random.default_rng(0))
    assert new.place(view, 2) == old.place(view, 2)
    servers[0].spec = scenario.servers[3]  # throughput 2 -> 3 on blocks 0-1: the best start moves to 2
    assert new.place(view, 2) == old.place(view, 2)
    assert old.place(view, 2).start == 2


def test_join_order_precompute_matches():
    rng = np.random.default_rng(8)
    for case in range(20):
        n, L = int(rng.integers(1, 60)), int(rng.integers(2, 30))
        sc = decider_scenario(rng, n, L)
        order = rng.permutation(n).tolist()[: int(rng.integers(1, n + 1))]
        plans = []
        for module in (fast, ref):
            d = module.PetalsDecider(join_order=lambda s, order=order: order)
            d.reset(sc, np.random.default_rng(case))
            plans.append(d._planned)
        assert plans[0] == plans[1]


# --------------------------------------------------------------------------------------------------
# Whole simulations and the offline solver
# --------------------------------------------------------------------------------------------------
def episode(module, scenario, seed: int, skip_retries: bool = False, **kwargs) -> tuple:
    """The episode's records and statistics. With ``skip_retries`` the fast decider's retries are skipped
    (it is pure), the frozen one's are not, so only the records and the end time are compared then."""
    res = Simulator(scenario, seed, skip_retries=skip_retries).run(module.PetalsDecider(**kwargs))
    if skip_retries:
        return res.records(), res.end_time
    return res.records(), res.extra, res.decisions, res.events, res.end_time


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "overrides", "seed", "kwargs"),
    [
        ("clustered-9", {}, 0, {}),
        ("clustered-9", {"workload.arrival_rate": 0.3}, 1, {}),
        ("bellcanada-26", {}, 0, {}),
        ("bellcanada-26", {}, 2, {"balance_quality": 1.5}),
        ("bellcanada-26-churn", {"workload.horizon_s": 900.0}, 0, {}),
        ("bellcanada-26-churn", {"workload.horizon_s": 900.0}, 1, {"balance_quality": 0.95}),
    ],
)
def test_simulations_are_identical(name, overrides, seed, kwargs):
    scenario = load_scenario(name, overrides)
    got, want = episode(fast, scenario, seed, **kwargs), episode(ref, scenario, seed, **kwargs)
    assert repr(got) == repr(want)
    skipping = episode(fast, scenario, seed, skip_retries=True, **kwargs)
    assert repr(skipping) == repr((want[0], want[-1]))


def test_offline_petals_is_identical(monkeypatch):
    """petals_offline (all servers join, then 100 requests routed one by one) on 150 servers."""
    from petalgym.baselines.offline_solve import petals_offline
    from petalgym.offline import OfflineInstance

    rng = np.random.default_rng(0)
    n = 150
    scenario = scenario_from_dict(
        {
            "name": "offline-150",
            "model": "bloom-176b",
            "servers": [{"profile": "a100", "count": 30}, {"profile": "mig-1g", "count": n - 30}],
            "clients": [{"name": "client"}],
            "network": {"kind": "matrix", "rtt_ms": rng.uniform(5.0, 200.0, size=(1, n)).round(0).tolist()},
            "workload": {"arrival_rate": 0.1, "num_requests": 100, "l_in": 20, "l_out": 128},
        }
    )
    instance = OfflineInstance.from_scenario(scenario, 100)
    got = petals_offline(scenario, instance, seed=3)
    monkeypatch.setattr(fast, "PetalsDecider", ref.PetalsDecider)
    monkeypatch.setattr(fast, "min_latency_chain", lambda *a, memo=None, **k: ref.min_latency_chain(*a, **k))
    want = petals_offline(scenario, instance, seed=3)
    assert got.placement == want.placement and got.routes == want.routes
    assert same(got.objective, want.objective) and got.status == want.status and got.info == want.info


def test_initial_placements_of_a_large_swarm_match():
    """300 servers join one at a time (place() with the incrementally kept throughputs)."""
    scenario = scenario_from_dict(
        {
            "model": "bloom-176b",
            "servers": [{"profile": "a100", "count": 60}, {"profile": "mig-1g", "count": 240}],
            "clients": [{"name": "client"}],
            "network": {"kind": "matrix", "rtt_ms": [[20.0] * 300]},
            "workload": {"arrival_rate": 0.1, "num_requests": 10, "l_in": 20, "l_out": 128},
        }
    )
    spans = []
    for module in (fast, ref):
        sim = Simulator(scenario, 5)
        decider = module.PetalsDecider()
        decider.reset(scenario, sim.decider_rng)
        while (d := sim.next_decision()) is not None and d.kind == DecisionKind.PLACE:
            sim.apply(decider.place(sim.view, d.server))
        spans.append([(s.start, s.end, s.cache_capacity) for s in sim.servers])
    assert spans[0] == spans[1]
