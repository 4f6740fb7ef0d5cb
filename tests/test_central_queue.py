"""Central-queue dispatch (``Enqueue`` answers): FIFO offers at completions, waiting budgets, invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from petalgym.deciders import Decider, Enqueue, ShortestChainDecider, make_decider
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator
from petalgym.swarm import RequestStatus


class OneAtATime(ShortestChainDecider):
    """At most ``limit`` requests on the (one) shortest chain at once; the rest queue centrally."""

    name = "one-at-a-time"

    def __init__(self, limit: int = 1, key: object = "central"):
        super().__init__()
        self.limit = limit
        self.key = key
        self.running: set[int] = set()
        self.ended: list[int] = []

    def route(self, view, request):
        if len(self.running) >= self.limit:
            return Enqueue(self.key)
        self.running.add(request.id)
        return super().route(view, request)

    def route_ended(self, view, request):
        self.ended.append(request.id)
        self.running.discard(request.id)


def scenario(n: int = 12, **more):
    return load_scenario("clustered-9").with_overrides({"workload.num_requests": n, **more})


def test_queued_requests_start_one_after_another_in_arrival_order():
    decider = OneAtATime(limit=1)
    sim = Simulator(scenario(), 3, check_invariants=True)
    result = sim.run(decider)
    reqs = sorted(result.requests, key=lambda r: r.arrival)
    assert all(r.status == RequestStatus.COMPLETED for r in reqs)
    for before, after in itertools.pairwise(reqs):  # FIFO and never two at once
        assert after.start >= before.finish - 1e-9
        assert after.start == pytest.approx(max(after.arrival, before.finish))
    assert result.extra["enqueued"] > 0
    assert sorted(decider.ended) == [r.id for r in reqs]  # every route's end was told exactly once
    waited = [r for r in reqs if r.start > r.arrival + 1e-9]
    assert waited and all(r.wait_s == pytest.approx(r.start - r.arrival) for r in waited)


def test_two_at_a_time_keeps_at_most_two_running():
    result = Simulator(scenario(20), 1, check_invariants=True).run(OneAtATime(limit=2))
    events = sorted([(r.start, 1) for r in result.requests] + [(r.finish, -1) for r in result.requests])
    running, peak = 0, 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2


def test_waiting_budget_fails_queued_requests():
    result = Simulator(scenario(12, **{"workload.max_wait_s": 5.0}), 3, check_invariants=True).run(
        OneAtATime(limit=1)
    )
    failed = [r for r in result.requests if r.status == RequestStatus.FAILED]
    assert failed and all(r.failure_reason == "wait_timeout" for r in failed)
    assert all(r.wait_s == pytest.approx(5.0) for r in failed)


class AlwaysQueue(ShortestChainDecider):
    name = "always-queue"

    def route(self, view, request):
        return Enqueue()


def test_a_decider_that_never_dispatches_gets_one_clear_error():
    with pytest.raises(DeciderError, match="stay queued"):
        Simulator(scenario(3), 0).run(AlwaysQueue())


class BadKey(ShortestChainDecider):
    name = "bad-key"

    def route(self, view, request):
        return Enqueue(key=[1, 2])


def test_an_unhashable_queue_key_is_named():
    with pytest.raises(DeciderError, match="hashable"):
        Simulator(scenario(3), 0).run(BadKey())


class PerChainQueues(Decider):
    """Two keyed queues (by request parity), each served one at a time: one queue never blocks the
    other."""

    name = "per-key"

    def reset(self, scenario, rng):
        super().reset(scenario, rng)
        self.inner = ShortestChainDecider()
        self.inner.reset(scenario, rng)
        self.busy: dict[int, int | None] = {0: None, 1: None}

    def place(self, view, server):
        return self.inner.place(view, server)

    def route(self, view, request):
        key = request.id % 2
        if self.busy[key] is not None and self.busy[key] != request.id:
            return Enqueue(key)
        self.busy[key] = request.id
        return self.inner.route(view, request)

    def route_ended(self, view, request):
        key = request.id % 2
        if self.busy[key] == request.id:
            self.busy[key] = None


def test_keyed_queues_are_served_independently():
    result = Simulator(scenario(16), 2, check_invariants=True).run(PerChainQueues())
    for parity in (0, 1):
        reqs = sorted((r for r in result.requests if r.id % 2 == parity), key=lambda r: r.arrival)
        for before, after in itertools.pairwise(reqs):
            assert after.start == pytest.approx(max(after.arrival, before.finish))
    # the two queues overlap in time (neither waited for the other)
    evens = [r for r in result.requests if r.id % 2 == 0]
    odds = [r for r in result.requests if r.id % 2 == 1]
    assert any(o.start < e.finish and e.start < o.finish for e in evens for o in odds)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clustered-9", "bellcanada-26-churn"])
@pytest.mark.parametrize("contention", [None, "fifo"])
def test_jffc_never_exceeds_chain_capacities_and_serves_first_come_first(name, contention):
    overrides = {"workload.num_requests": 80, "workload.arrival_rate": 2.0}
    if contention:
        overrides["contention"] = contention
    sc = load_scenario(name).with_overrides(overrides)
    decider = make_decider("gbp-cr-jffc", cache_jobs=2)
    result = Simulator(sc, 4, check_invariants=True).run(decider)
    reqs = result.requests
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in reqs)
    assert result.extra["enqueued"] > 0  # c = 2 leaves too few places: the central queue fills
    assert decider._central == 0 and not decider._bound and not decider._on
    assert sum(decider._running) == 0
    fresh = [r for r in reqs if r.recoveries == 0 and r.status == RequestStatus.COMPLETED]
    for k, chain in enumerate(decider.chains):
        on_k = [r for r in fresh if r.first_chain == chain.hops]
        points = sorted(
            [(r.start, 1) for r in on_k] + [(r.finish, -1) for r in on_k], key=lambda x: (x[0], x[1])
        )
        running = 0
        for _, step in points:
            running += step
            assert running <= chain.capacity, f"chain {k} holds more than its {chain.capacity} jobs"
    if name == "clustered-9" and contention is None:  # no churn: strict FCFS starts
        starts = [r.start for r in sorted(reqs, key=lambda r: r.arrival)]
        assert starts == sorted(starts)
        assert not math.isnan(result.summary()["response_s"])
    np.testing.assert_equal(len(reqs), result.summary()["arrived"])
