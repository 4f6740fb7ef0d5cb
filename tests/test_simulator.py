"""The discrete-event simulator on hand-made tiny scenarios: exact request times, waiting (reservations and
PETALS-style back-off), max_wait_s, churn (failure, drain, recovery with replay), rebalancing with kept
upstream hops, stalls, decider errors, determinism, common random numbers and CSV output."""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from strategies import RandomFeasibleDecider

from petalgym.deciders import Decider, Route, ShortestChainDecider
from petalgym.errors import DeciderError
from petalgym.perfmodel import Hop, Placement, TimeModel, shortest_chain
from petalgym.scenario import Scenario, Trace, load_scenario, scenario_from_dict, with_workload
from petalgym.simulator import Simulator, simulate
from petalgym.swarm import Request, RequestStatus, SwarmView

PROFILES = {
    "p": {"memory_gb": 10.0, "tau_ms": 3.0, "prefill_tau_ms": {"per_token": 0.1, "base": 20.0}},
    "q": {"memory_gb": 10.0, "tau_ms": 7.0, "prefill_tau_ms": {"per_token": 0.2, "base": 50.0}},
}


def tiny(
    num_blocks: int,
    profiles: list[str],
    rtt_ms: list[float],
    requests: list[tuple[float, int, int]],
    churn: dict[str, Any] | None = None,
    **workload: Any,
) -> Scenario:
    """A tiny scenario: 1 GB blocks, small KV caches, one client, ``requests`` = (arrival, l_in, l_out)."""
    data: dict[str, Any] = {
        "name": "tiny",
        "model": {"name": "tiny", "num_blocks": num_blocks, "block_gb": 1.0, "d_model": 1000},
        "gpu_profiles": PROFILES,
        "servers": [{"profile": p} for p in profiles],
        "network": {"kind": "matrix", "rtt_ms": [rtt_ms]},
        "workload": {"arrival_rate": 1.0, "num_requests": 1, "l_in": 10, "l_out": 100, **workload},
    }
    if churn is not None:
        data["churn"] = churn
    sc = scenario_from_dict(data, source="tiny")
    arr = np.array(requests, dtype=float)
    trace = Trace(arr[:, 0], arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64), np.zeros(len(arr), int))
    return with_workload(sc, trace=trace, num_requests=None)


class Scripted(Decider):
    """Fixed placements; routes on ``chain`` (or the zero-wait shortest chain when None) with ``wait``;
    optional ``move(view, server) -> Placement | None`` on rebalance ticks. Logs every call."""

    name = "scripted"

    def __init__(
        self,
        placements: dict[int, Placement],
        chain: tuple[Hop, ...] | None = None,
        wait: bool = True,
        move: Callable[[SwarmView, int], Placement | None] | None = None,
        rebalance_period_s: float | None = None,
    ):
        self.placements = placements
        self.chain = chain
        self.wait = wait
        self.move = move
        self.rebalance_period_s = rebalance_period_s
        self.log: list[tuple[str, float, Any]] = []

    def place(self, view: SwarmView, server: int) -> Placement:
        self.log.append(("place", view.now, server))
        return self.placements[server]

    def route(self, view: SwarmView, request: Request) -> Route | None:
        self.log.append(("route", view.now, (request.id, request.route_from, request.kept)))
        chain = self.chain
        if chain is None:
            n = view.num_servers
            cost, chain = shortest_chain(
                view.spans(), [0.0] * n, [1.0] * n, view.num_blocks, request.route_from
            )
            if cost == math.inf:
                return None
        return Route(chain, self.wait)

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        answer = self.move(view, server) if self.move is not None else None
        if answer is not None:
            self.log.append(("move", view.now, server))
        return answer

    def times(self, kind: str) -> list[float]:
        return [t for k, t, _ in self.log if k == kind]


def run(sc: Scenario, decider: Decider, seed: int = 0) -> tuple[Simulator, list[Request]]:
    sim = Simulator(sc, seed, rebalance_period_s=decider.rebalance_period_s, check_invariants=True)
    res = sim.run(decider)
    return sim, res.requests


def hand_times(sc: Scenario, chain: list[tuple[int, int]], l_in: int) -> tuple[float, float]:
    """(prefill, per-token time) of a chain given as (server, blocks processed), by hand from the inputs."""
    o = sc.overheads
    rtt = sc.network.rtt_s[0]
    prefill = 0.0
    token = 0.0
    for j, k in chain:
        prof = sc.servers[j].profile
        prefill += rtt[j] + o.prefill_per_token_s * l_in + o.prefill_overhead_s
        prefill += k * (prof.prefill_per_token_s * l_in + prof.prefill_base_s)
        token += rtt[j] + o.token_overhead_s + k * prof.tau_s
    return prefill, token


def hand_replay(sc: Scenario, chain: list[tuple[int, int]], tokens: int) -> float:
    """A recovery's first step on new hops (server, blocks processed) replaying ``tokens``, by hand: per hop
    the prefill's overhead and per-block work, each at least the decode step's."""
    o = sc.overheads
    rtt = sc.network.rtt_s[0]
    step = 0.0
    for j, k in chain:
        prof = sc.servers[j].profile
        overhead = max(
            rtt[j] + o.prefill_per_token_s * tokens + o.prefill_overhead_s, rtt[j] + o.token_overhead_s
        )
        step += overhead + k * max(prof.prefill_per_token_s * tokens + prof.prefill_base_s, prof.tau_s)
    return step


# --------------------------------------------------------------------------------------------------
# Exact times of one request
# --------------------------------------------------------------------------------------------------
def test_one_request_times_equal_the_formula():
    sc = tiny(4, ["p", "q"], [10.0, 40.0], [(1.5, 10, 20)])
    chain = (Hop(0, 0, 2), Hop(1, 2, 4))  # server 1 hosts [1, 4) but processes 2 blocks
    dec = Scripted({0: Placement(0, 2), 1: Placement(1, 3)}, chain)
    _, (r,) = run(sc, dec)
    prefill, token = hand_times(sc, [(0, 2), (1, 2)], 10)
    ttft = sc.overheads.initial_delay_s + prefill
    assert r.status == RequestStatus.COMPLETED
    assert r.first_chain == chain and r.wait_s == 0.0 and r.attempts == 1
    assert r.start == 1.5
    assert r.first_token == pytest.approx(1.5 + ttft, abs=1e-12)
    assert r.finish == pytest.approx(1.5 + ttft + 19 * token, abs=1e-12)
    assert r.ttft == pytest.approx(ttft, abs=1e-12)
    assert r.later_token == pytest.approx(token, abs=1e-12)
    assert r.per_token == pytest.approx((ttft + 19 * token) / 20, abs=1e-12)
    assert r.latency == pytest.approx(TimeModel(sc).request_time(chain, 0, 10, 20), abs=1e-12)


def test_summary_and_records(tmp_path):
    sc = tiny(4, ["p", "q"], [10.0, 40.0], [(0.5, 10, 20), (0.7, 12, 5)])
    dec = Scripted({0: Placement(0, 2), 1: Placement(2, 2)})
    res = Simulator(sc, 0).run(dec)
    summary = res.summary()
    assert summary["arrived"] == 2 and summary["completed"] == 2 and summary["failed"] == 0
    assert summary["per_token_s"] == pytest.approx(np.mean([r.per_token for r in res.requests]))
    path = res.to_csv(tmp_path / "out" / "requests.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    records = res.records()
    assert len(rows) == 2 and list(rows[0]) == list(records[0])
    for row, rec in zip(rows, records, strict=True):
        assert int(row["id"]) == rec["id"] and row["status"] == "completed"
        assert float(row["finish_s"]) == pytest.approx(rec["finish_s"], rel=1e-12)
        assert float(row["per_token_s"]) == pytest.approx(rec["per_token_s"], rel=1e-12)
        assert row["first_chain"] == "0[0:2]>1[2:4]"


# --------------------------------------------------------------------------------------------------
# Waiting for cache
# --------------------------------------------------------------------------------------------------
def one_slot(**workload: Any) -> tuple[Scenario, dict[int, Placement]]:
    """One server hosting both blocks with cache for exactly one session; requests at 1.0 and 1.5."""
    sc = tiny(2, ["p"], [10.0], [(1.0, 10, 40), (1.5, 10, 40)], **workload)
    s_c = sc.model.session_bytes(10, 40)
    return sc, {0: Placement(0, 2, 2 * s_c)}


def test_reservation_starts_exactly_when_the_first_request_ends():
    sc, placements = one_slot()
    dec = Scripted(placements, wait=True)
    _, (r1, r2) = run(sc, dec)
    assert r1.wait_s == 0.0 and r2.attempts == 1
    assert r2.start == r1.finish
    assert r2.wait_s == pytest.approx(r1.finish - 1.5, abs=1e-12)
    assert r2.finish - r2.start == pytest.approx(r1.finish - r1.start, abs=1e-12)


def expected_retries(arrival: float, free_at: float, cap: float = 60.0) -> list[float]:
    """Route times of a PETALS-style request: at arrival, then after 1, 2, 4, ... s (capped)."""
    times, t, k = [arrival], arrival, 0
    while t < free_at:
        t += min(2.0**k, cap)
        k += 1
        times.append(t)
    return times


@pytest.mark.parametrize("cap", [60.0, 2.0])
def test_backoff_retries_after_1_2_4_seconds(cap):
    sc, placements = one_slot()
    sc = sc.with_overrides({"simulation.backoff_cap_s": cap}) if cap != 60.0 else sc
    sc = with_workload(sc, trace=one_slot()[0].workload.trace, num_requests=None)
    dec = Scripted(placements, wait=False)
    _, (r1, r2) = run(sc, dec)
    times = expected_retries(1.5, r1.finish, cap)
    assert len(times) >= 3  # the test needs a few retries to mean something
    r2_routes = [t for k, t, info in dec.log if k == "route" and info[0] == 1]
    assert r2_routes == pytest.approx(times, abs=1e-12)
    assert r2.attempts == len(times)
    assert r2.start == pytest.approx(times[-1], abs=1e-12)
    assert r2.wait_s == pytest.approx(times[-1] - 1.5, abs=1e-12)


def test_backoff_restarts_at_1s_for_a_recovery():
    """r1 backs off on A until r0 is done, runs, is interrupted when A moves, then backs off on busy B:
    its new wait starts again at 1 s (PETALS restarts its retry delays for every failed step)."""
    sc = tiny(2, ["p", "p"], [10.0, 10.0], [(0.5, 10, 80), (1.0, 10, 100), (3.0, 10, 250)])
    slot_a = 2 * sc.model.session_bytes(10, 100)  # r0 or r1 on A, not both
    slot_b = 2 * sc.model.session_bytes(10, 250)  # r2 or r1 on B, not both
    state: dict[str, float] = {}

    class Steer(Scripted):
        def route(self, view: SwarmView, request: Request) -> Route:
            self.log.append(("route", view.now, (request.id, request.route_from, request.kept)))
            server = 1 if request.id == 2 or "moved" in state else 0
            return Route((Hop(server, 0, 2),), wait=False)

    def move(view: SwarmView, server: int) -> Placement | None:
        if server == 0 and 1 in view.servers[0].sessions and "moved" not in state:
            state["moved"] = view.now
            return Placement(0, 2, slot_a + 1)
        return None

    dec = Steer({0: Placement(0, 2, slot_a), 1: Placement(0, 2, slot_b)}, move=move, rebalance_period_s=0.5)
    _, (r0, r1, r2) = run(sc, dec)
    r1_routes = [t for k, t, info in dec.log if k == "route" and info[0] == 1]
    before = [t for t in r1_routes if t < state["moved"]]
    after = [t for t in r1_routes if t >= state["moved"]]
    assert before == pytest.approx(expected_retries(1.0, r0.finish))  # 1, 2, 4, 8 s after arrival
    assert len(before) >= 4 and len(after) >= 3 and after[0] == state["moved"]
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert gaps == pytest.approx([2.0**k for k in range(len(gaps))])
    assert r1.recoveries == 1 and r1.status == RequestStatus.COMPLETED
    assert r1.start == pytest.approx(before[-1]) and after[-1] >= r2.finish


def test_max_wait_fails_a_reservation_that_would_start_too_late():
    sc, placements = one_slot(max_wait_s=2.0)
    _, (r1, r2) = run(sc, Scripted(placements, wait=True))
    assert r1.finish - 1.5 > 2.0  # r2 would have to wait longer than allowed
    assert r2.status == RequestStatus.FAILED and r2.failure_reason == "wait_timeout"
    assert r2.finish == 1.5 and r2.wait_s == 0.0


def test_max_wait_admits_a_reservation_within_the_budget():
    sc, placements = one_slot(max_wait_s=100.0)
    _, (r1, r2) = run(sc, Scripted(placements, wait=True))
    assert r2.status == RequestStatus.COMPLETED and r2.start == r1.finish


def test_max_wait_with_backoff_gives_up_exactly_at_the_budget():
    sc, placements = one_slot(max_wait_s=2.5)
    dec = Scripted(placements, wait=False)
    _, (r1, r2) = run(sc, dec)
    assert r1.finish > 1.5 + 2.5  # the slot is still taken when the budget runs out
    r2_routes = [t for k, t, info in dec.log if k == "route" and info[0] == 1]
    assert r2_routes == pytest.approx([1.5, 2.5, 4.0])  # the last retry comes when the budget ends
    assert r2.status == RequestStatus.FAILED and r2.failure_reason == "wait_timeout"
    assert r2.finish == pytest.approx(4.0) and r2.wait_s == pytest.approx(2.5)


def test_no_chain_fails_after_the_timeout():
    sc = tiny(2, ["p"], [10.0], [(3.0, 10, 20)], churn={"no_chain_timeout_s": 7.0})
    dec = Scripted({0: Placement(0, 1)})  # block 1 is hosted nowhere
    _, (r,) = run(sc, dec)
    assert r.status == RequestStatus.FAILED and r.failure_reason == "no_chain"
    assert r.finish == pytest.approx(10.0) and r.wait_s == pytest.approx(7.0)
    assert math.isnan(r.start)


def test_exceeds_capacity_fails_at_once():
    sc = tiny(2, ["p"], [10.0], [(3.0, 10, 20)])
    s_c = sc.model.session_bytes(10, 20)
    _, (r,) = run(sc, Scripted({0: Placement(0, 2, 2 * s_c - 1)}))
    assert r.status == RequestStatus.FAILED and r.failure_reason == "exceeds_capacity" and r.finish == 3.0


# --------------------------------------------------------------------------------------------------
# Churn
# --------------------------------------------------------------------------------------------------
CHURN = {
    "enabled": True,
    "lifetime_s": 10.0,
    "downtime_s": 5.0,
    "failure_fraction": 1.0,
    "drain_timeout_s": 100.0,
    "no_chain_timeout_s": 100.0,
    "load_s_per_gb": 0.0,
}


def segment(sc: Scenario, arrival: float, l_in: int, l_out: int) -> tuple[float, float, float]:
    """(time of the first token, per-token time, finish) of an undisturbed request on server 0 [0, 2)."""
    prefill, d = hand_times(sc, [(0, 2)], l_in)
    t_first = arrival + sc.overheads.initial_delay_s + prefill
    return t_first, d, t_first + (l_out - 1) * d


def test_failure_interrupts_and_the_request_recovers_with_a_replay():
    sc = tiny(2, ["p"], [10.0], [(1.0, 10, 100)], churn=CHURN)
    dec = Scripted({0: Placement(0, 2)})
    sim, (r,) = run(sc, dec)
    t_first, d, undisturbed = segment(sc, 1.0, 10, 100)
    assert t_first < 10.0 < undisturbed  # the server fails (t=10) in the middle of decoding
    g = 1 + math.floor((10.0 - t_first) / d)  # tokens generated when it fails
    replay = hand_replay(sc, [(0, 2)], 10 + g)  # prefill over the prompt and the generated tokens
    expected = 15.0 + replay + (100 - g - 1) * d  # back at 10 + downtime; the replay yields token g + 1
    assert dec.times("place") == [0.0, 15.0]
    assert r.status == RequestStatus.COMPLETED and r.recoveries == 1
    assert r.first_token == pytest.approx(t_first, abs=1e-12)
    assert r.finish == pytest.approx(expected, abs=1e-9)
    assert r.finish > undisturbed
    assert r.wait_s == pytest.approx(5.0, abs=1e-12)  # stalled from the failure until the rejoin
    assert sim.interruptions == {"failure": 1} and sim.leaves == {"failure": 1}


def test_graceful_departure_drains_running_sessions():
    churn = {**CHURN, "failure_fraction": 0.0}
    sc = tiny(2, ["p"], [10.0], [(1.0, 10, 100), (10.5, 10, 20)], churn=churn)
    dec = Scripted({0: Placement(0, 2)})
    sim, (r1, r2) = run(sc, dec)
    _, _, undisturbed = segment(sc, 1.0, 10, 100)
    assert undisturbed > 10.5
    assert r1.recoveries == 0 and r1.finish == pytest.approx(undisturbed, abs=1e-9)
    # the draining server takes no new session: r2 waits until it is back, downtime after the drain
    assert r2.start == pytest.approx(undisturbed + 5.0, abs=1e-9)
    assert r2.wait_s == pytest.approx(undisturbed + 5.0 - 10.5, abs=1e-9)
    assert sim.interruptions == {} and sim.leaves == {"departure": 1}


def test_drain_timeout_interrupts_what_is_left():
    churn = {**CHURN, "failure_fraction": 0.0, "drain_timeout_s": 0.5}
    sc = tiny(2, ["p"], [10.0], [(1.0, 10, 100)], churn=churn)
    sim, (r,) = run(sc, Scripted({0: Placement(0, 2)}))
    t_first, d, _ = segment(sc, 1.0, 10, 100)
    g = 1 + math.floor((10.5 - t_first) / d)
    replay = hand_replay(sc, [(0, 2)], 10 + g)
    assert r.recoveries == 1
    assert r.finish == pytest.approx(15.5 + replay + (100 - g - 1) * d, abs=1e-9)
    assert sim.interruptions == {"departure": 1} and sim.leaves == {"departure": 1}


# --------------------------------------------------------------------------------------------------
# Rebalancing and kept upstream hops
# --------------------------------------------------------------------------------------------------
def kept_hop_case(move_upstream: bool) -> tuple[Scenario, Scripted, Request]:
    """A [0,1) -> B [1,3); B moves (reloads 2 GB at 2 s/GB) while the request decodes; with
    ``move_upstream`` A then moves too (reloads 1 GB) while the request waits for B."""
    sc = tiny(3, ["p", "p"], [10.0, 30.0], [(1.0, 10, 100)])
    left = int(10e9) - 2 * sc.model.block_bytes
    state: dict[str, float] = {}

    def move(view: SwarmView, server: int) -> Placement | None:
        if server == 1 and "b" not in state and view.servers[1].sessions and view.now > 5.0:
            state["b"] = view.now
            return Placement(1, 2, left - 1)  # same blocks, new cache budget: a move all the same
        if move_upstream and server == 0 and "b" in state and "a" not in state:
            state["a"] = view.now
            return Placement(0, 1, left)
        return None

    dec = Scripted({0: Placement(0, 1), 1: Placement(1, 2)}, move=move, rebalance_period_s=0.5)
    _, (r,) = run(sc, dec, seed=3)
    return sc, dec, r


def test_rebalance_interrupts_and_recovers_on_the_moved_hop_only():
    sc, dec, r = kept_hop_case(move_upstream=False)
    (t_b,) = dec.times("move")
    prefill, d = hand_times(sc, [(0, 1), (1, 2)], 10)
    t_first = 1.0 + sc.overheads.initial_delay_s + prefill
    assert t_first < t_b < t_first + 99 * d
    g = 1 + math.floor((t_b - t_first) / d)
    routes = [info for k, _, info in dec.log if k == "route"]
    assert routes[-1] == (0, 1, (Hop(0, 0, 1),))  # routed from block 1, keeping the hop on A
    replay_b = hand_replay(sc, [(1, 2)], 10 + g)  # only B replays the history
    _, step_a = hand_times(sc, [(0, 1)], 10)  # the interrupted token's step on the kept hop
    back = t_b + 2 * 2.0  # B reloads 2 blocks of 1 GB at 2 s/GB
    assert r.recoveries == 1 and r.status == RequestStatus.COMPLETED
    assert r.finish == pytest.approx(back + step_a + replay_b + (100 - g - 1) * d, abs=1e-9)
    assert r.chain == (Hop(0, 0, 1), Hop(1, 1, 3))


def test_a_kept_hop_whose_server_moved_is_dropped():
    sc, dec, r = kept_hop_case(move_upstream=True)
    t_b, t_a = dec.times("move")
    assert t_b < t_a < t_b + 2.0  # A is back (1 GB) before B (2 GB)
    prefill, d = hand_times(sc, [(0, 1), (1, 2)], 10)
    t_first = 1.0 + sc.overheads.initial_delay_s + prefill
    g = 1 + math.floor((t_b - t_first) / d)
    routes = [info for k, _, info in dec.log if k == "route"]
    assert routes[-1] == (0, 0, ())  # A lost its cache: routed from block 0 again
    replay = hand_replay(sc, [(0, 1), (1, 2)], 10 + g)  # both hops replay the history
    back = t_b + 4.0
    assert r.finish == pytest.approx(back + replay + (100 - g - 1) * d, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Decider errors
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chain", "needle"),
    [
        ((Hop(0, 0, 2),), "ends at block 2, not at the last block 4"),
        ((Hop(0, 0, 2), Hop(1, 3, 4)), "starts at block 3, expected 2"),
        ((Hop(0, 0, 2), Hop(1, 2, 3)), "ends at 3, but server 1 processes up to the end of its span 4"),
        ((Hop(0, 0, 2), Hop(5, 2, 4)), "server 5 hosts no blocks"),
        ("nonsense", "expected a Route or a sequence of (server, start, end) hops"),
    ],
)
def test_infeasible_chain_raises_decider_error(chain, needle):
    sc = tiny(4, ["p", "q"], [10.0, 40.0], [(1.0, 10, 20)])
    dec = Scripted({0: Placement(0, 2), 1: Placement(1, 3)}, chain)
    with pytest.raises(DeciderError) as info:
        Simulator(sc, 0).run(dec)
    msg = str(info.value)
    assert needle in msg and "scripted" in msg and "request 0" in msg


@pytest.mark.parametrize(
    ("placement", "needle"),
    [
        (Placement(0, 0), "num_blocks must be >= 1, got 0"),
        (Placement(3, 2), "blocks [3, 5) are outside the model's 0..3"),
        (Placement(-1, 2), "outside the model"),
        (Placement(0, 2, int(9e9)), "cache_bytes 9000000000 must be in [0, "),
        (Placement(0, 2, -1), "cache_bytes -1 must be in"),
        (Placement(0.0, 2), "start must be an integer, got 0.0"),
        ((0,), "expected Placement(start, num_blocks[, cache_bytes])"),
        (None, "expected Placement"),
    ],
)
def test_invalid_placement_raises_decider_error(placement, needle):
    sc = tiny(4, ["p", "q"], [10.0, 40.0], [(1.0, 10, 20)])
    dec = Scripted({0: placement, 1: Placement(1, 3)})
    with pytest.raises(DeciderError) as info:
        Simulator(sc, 0).run(dec)
    assert needle in str(info.value) and "server 0" in str(info.value)


def test_placement_beyond_memory_or_cap():
    sc = tiny(4, ["p", "q"], [10.0, 40.0], [(1.0, 10, 20)])
    sc = sc.with_overrides({"model.num_blocks": 11, "gpu_profiles.q.max_blocks": 2})
    sc = with_workload(sc, trace=tiny(4, ["p"], [1.0], [(1.0, 10, 20)]).workload.trace, num_requests=None)
    with pytest.raises(DeciderError, match="11 blocks need 11 GB > memory 10 GB"):
        Simulator(sc, 0).run(Scripted({0: Placement(0, 11), 1: Placement(0, 2)}))
    with pytest.raises(DeciderError, match="3 blocks exceed the q cap of 2"):
        Simulator(sc, 0).run(Scripted({0: Placement(0, 2), 1: Placement(0, 3)}))


# --------------------------------------------------------------------------------------------------
# Determinism and common random numbers
# --------------------------------------------------------------------------------------------------
def same_records(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Records equal field by field (nan equal to nan)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for key in x:
            u, v = x[key], y[key]
            if isinstance(u, float) and math.isnan(u):
                if not (isinstance(v, float) and math.isnan(v)):
                    return False
            elif u != v:
                return False
    return True


@pytest.fixture(scope="module")
def churny() -> Scenario:
    """clustered-9 with churn, two clients, varying lengths and 40 requests at 0.5/s."""
    return load_scenario(
        "clustered-9",
        {
            "workload.num_requests": 40,
            "workload.arrival_rate": 0.5,
            "workload.l_out": {"dist": "uniform", "low": 16, "high": 64},
            "clients": [{"name": "a", "location": 0}, {"name": "b", "location": 2, "weight": 2.0}],
            "churn": {"enabled": True, "lifetime_s": {"dist": "exponential", "mean": 60.0}},
        },
    )


def test_same_seed_same_records(churny):
    a = simulate(churny, RandomFeasibleDecider(), seed=5, check_invariants=True)
    b = simulate(churny, RandomFeasibleDecider(), seed=5)
    assert same_records(a.records(), b.records())
    assert a.end_time == b.end_time and a.events == b.events and a.extra == b.extra
    c = simulate(churny, RandomFeasibleDecider(), seed=6)
    assert not same_records(a.records(), c.records())


def test_common_random_numbers_across_deciders(churny):
    sims = [Simulator(churny, seed=11) for _ in range(2)]
    results = [sims[0].run(ShortestChainDecider()), sims[1].run(RandomFeasibleDecider(wait=False))]
    assert sims[0].join_order == sims[1].join_order
    first, second = ([(r.id, r.arrival, r.l_in, r.l_out, r.client) for r in res.requests] for res in results)
    assert first == second
    assert {c for *_, c in first} == {0, 1} and len({lo for *_, lo, _ in first}) > 1
    # the deciders did decide differently
    assert [r.first_chain for r in results[0].requests] != [r.first_chain for r in results[1].requests]


def test_decisions_are_counted(churny):
    sim = Simulator(churny, seed=2)
    res = sim.run(ShortestChainDecider())
    assert res.decisions["ROUTE"] == sum(r.attempts for r in res.requests)
    assert res.decisions["PLACE"] >= churny.num_servers
    assert sim.next_decision() is None and sim.done


def test_ask_tell_loop_matches_run(churny):
    """Driving next_decision/apply by hand gives the same episode as run()."""
    dec = ShortestChainDecider()
    sim = Simulator(churny, seed=4)
    dec.reset(churny, sim.decider_rng)
    while (d := sim.next_decision()) is not None:
        sim.apply(d.ask(dec, sim.view))
    by_hand = sim.result("shortest").records()
    assert same_records(by_hand, Simulator(churny, seed=4).run(ShortestChainDecider()).records())


# --------------------------------------------------------------------------------------------------
# Workload draws
# --------------------------------------------------------------------------------------------------
def test_poisson_workload_draws():
    sc = load_scenario(
        "clustered-9",
        {
            "workload.num_requests": 5000,
            "workload.arrival_rate": 2.0,
            "workload.l_out": {"dist": "uniform", "low": 16, "high": 64},
            "clients": [{"name": "a", "location": 0}, {"name": "b", "location": 1, "weight": 3.0}],
        },
    )
    sim = Simulator(sc, seed=1)
    times = np.array(sim._arr_t)
    assert len(times) == 5000 and np.all(np.diff(times) > 0)
    assert np.mean(np.diff(times, prepend=0.0)) == pytest.approx(0.5, rel=0.05)  # 1 / lambda
    assert set(sim._arr_in) == {20} and min(sim._arr_out) == 16 and max(sim._arr_out) == 64
    assert np.mean(sim._arr_client) == pytest.approx(0.75, abs=0.03)  # client b has weight 3 of 4


def test_horizon_workload():
    sc = load_scenario("clustered-9", {"workload.num_requests": None, "workload.horizon_s": 500.0})
    sim = Simulator(sc, seed=3)
    assert max(sim._arr_t) <= 500.0 and len(sim._arr_t) == len(sim._arr_out)
    assert sim.num_arrivals_planned == pytest.approx(50, abs=25)  # lambda = 0.1/s over 500 s
    empty = load_scenario("clustered-9", {"workload.num_requests": None, "workload.horizon_s": 1e-6})
    res = Simulator(empty, seed=3).run(ShortestChainDecider())
    assert res.requests == [] and res.decisions["ROUTE"] == 0


# --------------------------------------------------------------------------------------------------
# Recoveries keep their upstream cache; same-instant departures (issue 10, points 1 and 2)
# --------------------------------------------------------------------------------------------------
def test_recovery_keeps_its_upstream_cache_through_the_re_route():
    """The minimal case: A on S0 [0,2) > S1 [2,4); B arrives 1 s later and reserves S0, which has cache for
    one session, after A; S1 re-places at t >= 20 s. A keeps S0's cache, is routed first (to S2) and ends
    when it would have without the move plus its replay; B's reservation is re-planned after A. (Before:
    A's cache on S0 was released, B took it and A waited for B: A ended near 2 x its duration.)"""
    sc = tiny(4, ["p", "p", "p"], [10.0, 10.0, 10.0], [(0.0, 10, 100), (1.0, 10, 100)])
    one_session = 2 * sc.model.session_bytes(10, 100)  # S0: 2 blocks of cache for exactly one session
    state: dict[str, float] = {}

    class Steer(Scripted):
        def route(self, view: SwarmView, request: Request) -> Route:
            self.log.append(("route", view.now, (request.id, request.route_from, request.kept)))
            tail = Hop(2 if "moved" in state else 1, 2, 4)
            return Route((tail,) if request.route_from == 2 else (Hop(0, 0, 2), tail), wait=True)

    def move(view: SwarmView, server: int) -> Placement | None:
        if server == 1 and "moved" not in state and view.now >= 20.0:
            state["moved"] = view.now
            return Placement(2, 2, int(1e9))  # same blocks, another cache budget: it reloads
        return None

    placements = {0: Placement(0, 2, one_session), 1: Placement(2, 2), 2: Placement(2, 2)}
    dec = Steer(placements, move=move, rebalance_period_s=0.5)
    sim, (a, b) = run(sc, dec)
    t_move = state["moved"]
    prefill, d = hand_times(sc, [(0, 2), (1, 2)], 10)
    t_first = sc.overheads.initial_delay_s + prefill
    g = 1 + math.floor((t_move - t_first) / d)  # tokens A had when S1 left
    _, step_kept = hand_times(sc, [(0, 2)], 10)
    replay = hand_replay(sc, [(2, 2)], 10 + g)
    a_finish = t_move + step_kept + replay + (100 - g - 1) * d
    assert a.recoveries == 1 and a.finish == pytest.approx(a_finish, abs=1e-9)
    assert a.finish < 2 * t_first + 100 * d  # far from the 2x of losing the cache to B
    assert a.chain == (Hop(0, 0, 2), Hop(2, 2, 4))
    assert b.start == a.finish  # B re-planned to start when A frees S0
    assert b.finish == pytest.approx(b.start + t_first + 99 * d, abs=1e-9)
    assert sim.kept_released == {}  # no recovery lost its kept cache
    routes = [info[0] for k, _, info in dec.log if k == "route" and _ >= t_move]
    assert routes[:2] == [0, 1]  # the interrupted request is routed before the cancelled reservation


def test_same_instant_departures_are_applied_before_the_re_route():
    """Three full-model servers all fail at t = 10 s (constant lifetimes): the interrupted request is not
    re-routed onto a server that leaves at the same instant; it finds no chain, waits for a server to
    come back and counts one recovery. (Before: it was routed onto the next leaving server and counted
    two or three recoveries.)"""
    churn = {
        "enabled": True,
        "lifetime_s": 10.0,
        "downtime_s": 5.0,
        "failure_fraction": 1.0,
        "load_s_per_gb": 1.0,
    }
    sc = tiny(2, ["p", "p", "p"], [10.0, 10.0, 10.0], [(0.0, 10, 100)], churn=churn)
    dec = Scripted({j: Placement(0, 2) for j in range(3)})
    sim, (r,) = run(sc, dec)
    route_times = dec.times("route")
    assert route_times[:2] == [0.0, 10.0]  # routed at arrival, then once at 10 s: no chain
    assert r.recoveries == 1 and r.status == RequestStatus.COMPLETED
    assert sim.interruptions == {"failure": 1}
    assert r.start == 0.0 and r.chain[0].server in range(3)
    stalled = [t for k, t, info in dec.log if k == "route" and t > 10.0]
    assert stalled and stalled[0] == pytest.approx(10.0 + 5.0 + 2.0)  # back after its downtime and reload
