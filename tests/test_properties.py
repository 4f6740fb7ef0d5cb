"""Property tests over random small scenarios (with and without churn and rebalancing, both wait modes):
memory is never exceeded, running chains are feasible, requests are conserved at every stop point and
none is lost, no cache slot leaks, times follow the model, and an episode is a function of its seed."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import RandomFeasibleDecider, check_server_memory, scenario_dicts, small_scenarios

from petalgym.deciders import Route
from petalgym.perfmodel import chain_errors, shortest_chain
from petalgym.scenario import Scenario, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.swarm import Request, RequestStatus, ServerState, ServerStatus, SwarmView, earliest_start
from petalgym.timeline import ReleaseTimeline, Timeline

FINAL = (RequestStatus.COMPLETED, RequestStatus.FAILED)
seeds = st.integers(0, 2**32 - 1)
wait_modes = st.sampled_from([None, True, False])
periods = st.sampled_from([None, None, 2.0, 15.0])


class StallTracker(RandomFeasibleDecider):
    """RandomFeasibleDecider that remembers which requests it ever left without a chain."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.stalled: set[int] = set()

    def route(self, view: SwarmView, request: Request) -> Route | None:
        answer = super().route(view, request)
        if answer is None:
            self.stalled.add(request.id)
        return answer


def run(sc: Scenario, seed: int, wait: bool | None, period: float | None) -> tuple[Simulator, StallTracker]:
    dec = StallTracker(wait=wait, rebalance_period_s=period)
    sim = Simulator(sc, seed, rebalance_period_s=period, check_invariants=True)
    sim.run(dec)
    return sim, dec


def assert_running_chains_feasible(sim: Simulator) -> None:
    """Every running request is on a feasible chain of live servers, each holding its cache."""
    spans = {
        s.id: (s.start, s.end)
        for s in sim.servers
        if s.status in (ServerStatus.ONLINE, ServerStatus.DRAINING)
    }
    for r in sim.requests:
        if r.status == RequestStatus.RUNNING:
            assert chain_errors(r.chain, spans, sim.scenario.num_blocks) is None
            for h in r.chain:
                assert sim.servers[h.server].sessions[r.id][0] == h.blocks * r.kv_bytes


def assert_conserved(sim: Simulator) -> None:
    """arrivals == completed + failed + in flight, counted from the requests themselves."""
    done = sum(r.status in FINAL for r in sim.requests)
    live = sum(r.status not in FINAL for r in sim.requests)
    assert len(sim.requests) == done + sim.in_flight
    assert live == sim.in_flight and len(sim.finished) == done


@settings(max_examples=40)
@given(sc=small_scenarios(), seed=seeds, wait=wait_modes, period=periods)
def test_episode_invariants(sc, seed, wait, period):
    sim, dec = run(sc, seed, wait, period)
    assert dec.checks > 0  # the decider checked every server's memory at each of its decisions
    check_server_memory(sim.view)
    # nothing lost: every request that arrived ended, and says why if it failed
    assert len(sim.requests) == sim.num_arrivals_planned and sim.in_flight == 0
    assert_conserved(sim)
    tm = sim.time_model
    max_wait = sc.workload.max_wait_s
    for r in sim.requests:
        assert r.status in FINAL
        assert r.wait_s >= 0.0 and r.wait_s <= r.finish - r.arrival + 1e-9
        if r.status == RequestStatus.FAILED:
            assert r.failure_reason in ("no_chain", "wait_timeout", "exceeds_capacity")
            assert r.finish >= r.arrival
            continue
        assert r.failure_reason == ""
        assert r.arrival <= r.start <= r.first_token <= r.finish
        if r.recoveries == 0:  # one segment: exactly the performance model after the wait
            assert math.isclose(r.wait_s, r.start - r.arrival, abs_tol=1e-9)
            expected = tm.request_time(r.first_chain, r.client, r.l_in, r.l_out)
            ttft = tm.initial_delay + tm.prefill_time(r.first_chain, r.client, r.l_in)
            if sc.contention.enabled:  # queueing behind other steps only delays
                assert r.finish - r.start >= expected - 1e-9 * (1.0 + expected)
                assert r.first_token - r.start >= ttft - 1e-9 * (1.0 + ttft)
            else:
                assert math.isclose(r.finish - r.start, expected, rel_tol=1e-9, abs_tol=1e-9)
                assert math.isclose(r.first_token - r.start, ttft, rel_tol=1e-9, abs_tol=1e-9)
        if max_wait is not None and r.id not in dec.stalled:  # waiting for cache respects the budget
            assert r.wait_s <= max_wait + 1e-6
    # no slot leak
    for s in sim.servers:
        assert s.used_bytes == 0 and not s.sessions and not s.reservations


@settings(max_examples=30)
@given(
    sc=small_scenarios(),
    seed=seeds,
    wait=wait_modes,
    period=periods,
    stops=st.lists(st.integers(1, 60), min_size=1, max_size=4),
)
def test_conservation_at_random_stop_points(sc, seed, wait, period, stops):
    dec = RandomFeasibleDecider(wait=wait, rebalance_period_s=period)
    sim = Simulator(sc, seed, rebalance_period_s=period, check_invariants=True)
    dec.reset(sc, sim.decider_rng)
    marks = set(itertools.accumulate(stops))
    n = 0
    while (d := sim.next_decision()) is not None:
        sim.apply(d.ask(dec, sim.view))
        n += 1
        if n in marks:
            assert_conserved(sim)
            assert_running_chains_feasible(sim)
            check_server_memory(sim.view)
            summary = sim.result().summary()
            assert summary["arrived"] == summary["completed"] + summary["failed"] + summary["in_flight"]
            assert summary["in_flight"] == sim.in_flight
    assert_conserved(sim)
    assert sim.in_flight == 0 and sim.done


@settings(max_examples=25)
@given(sc=small_scenarios(), seed=seeds, wait=wait_modes, period=periods)
def test_same_seed_same_episode(sc, seed, wait, period):
    a, _ = run(sc, seed, wait, period)
    b, _ = run(sc, seed, wait, period)
    ra, rb = a.result().records(), b.result().records()
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            u, v = x[key], y[key]
            assert u == v or (isinstance(u, float) and math.isnan(u) and math.isnan(v)), (key, u, v)
    assert a.now == b.now and a.events == b.events and a.interruptions == b.interruptions


@settings(max_examples=30)
@given(sc=small_scenarios(churn=False, contention=False), seed=seeds)
def test_reservations_start_exactly_when_cache_frees(sc, seed):
    """Without churn or moves, a request that waited (wait=True) starts at the very moment another
    request finished: the simulator's earliest start is exact, not polled."""
    sim, dec = run(sc, seed, True, None)
    finishes = {r.finish for r in sim.requests if r.status == RequestStatus.COMPLETED}
    for r in sim.requests:
        if r.status == RequestStatus.COMPLETED and r.start > r.arrival and r.id not in dec.stalled:
            assert r.start in finishes, (r.id, r.start)


@settings(max_examples=30)
@given(sc=small_scenarios(churn=False, contention=True), seed=seeds)
def test_fifo_reservations_start_when_cache_frees_or_was_planned_to(sc, seed):
    """Under fifo contention a session's end is a forecast until it comes: a waiting request starts when
    another request finished or at a planned end it was planned on (a session's forecast, an overrun's
    new one, or a reservation's end) -- never at a polled or arbitrary time."""
    planned: set[float] = set()
    original = Simulator._push

    def spy(self: Simulator, t: float, kind: int, target: Any, version: Any, order: Any = None) -> None:
        if kind == 0:  # a (planned) completion
            planned.add(t)
        original(self, t, kind, target, version, order)

    reserve = ServerState.reserve

    def spy_reserve(self: ServerState, rid: int, start: float, end: float, nbytes: int) -> None:
        planned.add(end)  # a reservation's planned end (others may be planned on it)
        reserve(self, rid, start, end, nbytes)

    Simulator._push = spy  # type: ignore[method-assign]
    ServerState.reserve = spy_reserve  # type: ignore[method-assign]
    try:
        sim, dec = run(sc, seed, True, None)
    finally:
        Simulator._push = original  # type: ignore[method-assign]
        ServerState.reserve = reserve  # type: ignore[method-assign]
    finishes = {r.finish for r in sim.requests if r.status == RequestStatus.COMPLETED}
    for r in sim.requests:
        if r.status == RequestStatus.COMPLETED and r.start > r.arrival and r.id not in dec.stalled:
            assert r.start in finishes or r.start in planned, (r.id, r.start)


# --------------------------------------------------------------------------------------------------
# The admission rule alone: earliest_start against brute force
# --------------------------------------------------------------------------------------------------
SPEC = scenario_from_dict(
    {
        "servers": [{"profile": "a100", "count": 2}],
        "network": {"kind": "matrix", "rtt_ms": [[1, 1]]},
        "workload": {"arrival_rate": 1.0, "num_requests": 1},
    }
).servers[0]
halves = st.integers(0, 40).map(lambda k: k / 2)  # times on a 0.5 s grid: exact comparisons


@st.composite
def cache_timelines(draw: st.DrawFn):
    """1-3 servers with random capacities, running sessions (bytes, planned finish) and reservations
    (start, end, bytes) after ``now``; random needs per server and a duration."""
    now = draw(halves)
    servers = []
    for j in range(draw(st.integers(1, 3))):
        s = ServerState(SPEC)
        s.id = j
        s.cache_capacity = draw(st.integers(0, 12))
        for rid in range(draw(st.integers(0, 4))):
            s.hold(rid, draw(st.integers(1, 5)), now + 0.5 + draw(halves))
        for rid in range(10, 10 + draw(st.integers(0, 3))):
            r0 = now + draw(halves)
            s.reserve(rid, r0, r0 + 0.5 + draw(halves), draw(st.integers(1, 5)))
        servers.append(s)
    needs = {j: draw(st.integers(1, 8)) for j in range(len(servers)) if draw(st.booleans()) or j == 0}
    return servers, needs, now, 0.5 + draw(halves)


def usage(s: ServerState, t: float) -> int:
    return sum(b for b, f in s.sessions.values() if f > t) + sum(
        b for r0, r1, b in s.reservations.values() if r0 <= t < r1
    )


def brute_earliest(servers: list[ServerState], needs: dict[int, int], now: float, duration: float) -> float:
    """The earliest change point t >= now at which every need fits at every change point of [t, t + d)."""
    points = {now}
    for j in needs:
        s = servers[j]
        points |= {f for _, f in s.sessions.values()}
        points |= {x for r0, r1, _ in s.reservations.values() for x in (r0, r1)}
    for t in sorted(p for p in points if p >= now):
        inside = [t] + [p for p in points if t < p < t + duration]
        if all(
            usage(servers[j], tau) + b <= servers[j].cache_capacity
            for j, b in needs.items()
            for tau in inside
        ):
            return t
    return math.inf


@settings(max_examples=300)
@given(cache_timelines())
def test_earliest_start_matches_brute_force(case):
    servers, needs, now, duration = case
    expected = brute_earliest(servers, needs, now, duration)
    assert earliest_start(servers, needs, now, duration) == expected


# --------------------------------------------------------------------------------------------------
# Skipped back-off retries: the same episode, fewer events
# --------------------------------------------------------------------------------------------------
class PureBackOff(RandomFeasibleDecider):
    """Random placements and moves; routes (purely: no draws, no state) on the fastest chain with a
    penalty on servers that lack cache for their whole span, and backs off when it does not fit."""

    pure_route = True

    def route(self, view: SwarmView, request: Request) -> Route | None:
        kv = request.kv_bytes
        fixed, per_block = view.time_model.token_costs(request.client)
        for s in view.servers:
            if s.start >= 0 and s.cache_capacity - s.used_bytes < (s.end - s.start) * kv:
                fixed[s.id] += 10.0
        _, chain = shortest_chain(view.spans(), fixed, per_block, view.num_blocks, request.route_from)
        return Route(chain, wait=False) if chain else None


def outcomes(sim: Simulator) -> list[tuple]:
    return [
        (r.id, r.status, r.start, r.first_token, r.finish, r.wait_s, r.recoveries, r.attempts,
         r.failure_reason, r.first_chain, r.chain)
        for r in sim.requests
    ]  # fmt: skip


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(data=scenario_dicts(max_requests=40), cap=st.sampled_from([0.5, 2.0, 5.0]), seed=seeds, period=periods)
def test_skipped_retries_give_the_same_episode(data, cap, seed, period):
    data = {**data, "simulation": {"backoff_cap_s": cap}}
    sc = scenario_from_dict(data, source="hypothesis")
    runs = []
    for skip in (True, False):
        dec = PureBackOff(rebalance_period_s=period)
        sim = Simulator(sc, seed, rebalance_period_s=period, check_invariants=skip, skip_retries=skip)
        sim.run(dec)
        runs.append(sim)
    assert outcomes(runs[0]) == outcomes(runs[1])


def test_skipping_happens_under_overload():
    from petalgym.deciders import make_decider
    from petalgym.scenario import load_scenario

    sc = load_scenario("clustered-9", {"workload.arrival_rate": 1.0, "workload.num_requests": 300})
    fast, full = Simulator(sc, 0), Simulator(sc, 0, skip_retries=False)
    fast.run(make_decider("petals"))
    full.run(make_decider("petals"))
    assert outcomes(fast) == outcomes(full)
    assert fast.skipped_retries > 1000 and fast.events < full.events / 2


# --------------------------------------------------------------------------------------------------
# The cache timelines against their definitions
# --------------------------------------------------------------------------------------------------
@st.composite
def timeline_ops(draw: st.DrawFn, nonnegative: bool):
    """A sequence of (time, amount) additions on a 0.5 s grid; with ``nonnegative``, every removal takes
    back part of what an earlier addition put at the same time (net amounts stay >= 0)."""
    ops: list[tuple[float, int]] = []
    net: dict[float, int] = {}
    for _ in range(draw(st.integers(0, 120))):
        if nonnegative and net and draw(st.booleans()):
            t = draw(st.sampled_from(sorted(net)))
            x = -draw(st.integers(1, net[t]))
        else:
            t = draw(halves)
            x = draw(st.integers(1, 6) if nonnegative else st.integers(-6, 6))
        ops.append((t, x))
        net[t] = net.get(t, 0) + x
        if net[t] == 0:
            del net[t]
    return ops


def _net(ops: list[tuple[float, int]]) -> list[tuple[float, int]]:
    net: dict[float, int] = {}
    for t, x in ops:
        net[t] = net.get(t, 0) + x
    return sorted((t, x) for t, x in net.items() if x)


@pytest.mark.slow
@settings(max_examples=200)
@given(
    ops=timeline_ops(nonnegative=False),
    after=halves,
    limit=st.integers(-8, 12),
    load=st.sampled_from([1, 2, 32]),
)
def test_timeline_answers_as_its_definition(ops, after, limit, load):
    """prefix / first_above / first_at_most / next_crossing equal a scan of the net amounts, with
    questions between the changes (lazy summaries) and tiny chunks (splits, empty chunks, compaction)."""
    Timeline.LOAD = load
    try:
        tl = Timeline()
        for k, (t, x) in enumerate(ops):
            tl.add(t, x)
            if k % 7 == 0:
                tl.prefix(after)
        items = _net(ops)
        assert tl.items() == items
        running, acc = [], 0
        for t, x in items:
            acc += x
            running.append((t, acc))
        assert tl.prefix(after) == sum(x for t, x in items if t <= after)
        above = next((t for t, v in running if t > after and v > limit), None)
        at_most = next((t for t, v in running if t > after and v <= limit), None)
        assert tl.first_above(after, limit) == above
        assert tl.first_at_most(after, limit) == at_most
        assert tl.first_above(after, limit, strict=False) == next(
            (t for t, v in running if t >= after and v > limit), None
        )
        over = tl.prefix(after) > limit
        assert tl.next_crossing(after, limit) == (over, at_most if over else above)
    finally:
        Timeline.LOAD = 32


@pytest.mark.slow
@settings(max_examples=200)
@given(ops=timeline_ops(nonnegative=True), limit=st.integers(-2, 40), load=st.sampled_from([1, 2, 32]))
def test_release_timeline_answers_as_its_definition(ops, limit, load):
    ReleaseTimeline.LOAD = load
    try:
        tl = ReleaseTimeline()
        for k, (t, x) in enumerate(ops):
            tl.add(t, x)
            if k % 5 == 0:
                tl.first_above(limit)
        acc, expected = 0, None
        for t, x in _net(ops):
            acc += x
            if acc > limit:
                expected = t
                break
        assert tl.items() == _net(ops)
        assert tl.first_above(limit) == expected
    finally:
        ReleaseTimeline.LOAD = 32
