"""One timing rule: what the env's candidates and WS-RR predict for a chain is what the simulator then does.

:meth:`petalgym.perfmodel.TimeModel.segment_times` times a (re)started request and
:meth:`petalgym.swarm.SwarmView.admission` adds the admission rule's start; the simulator, the env's
candidates and features, and WS-RR's costs all use them. Here a decider answers every ROUTE decision with a
random one of the env's candidate chains and records the candidate's prediction; every request whose last
route led straight to its completion must finish exactly when predicted, fresh requests and recoveries
alike (the env once double-counted a recovery's token time: 1.2949 s predicted, 1.1372 s realised)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from petalgym.deciders import Decider, make_decider
from petalgym.envs.candidates import ChainGenerator
from petalgym.perfmodel import shortest_chain
from petalgym.scenario import Scenario, load_scenario
from petalgym.simulator import Simulator
from petalgym.swarm import Request, RequestStatus, SwarmView


class CandidatePicker(Decider):
    """CG-BP + WS-RR placement; routes on a random env candidate, recording its predicted finish."""

    name = "candidate-picker"

    def __init__(self, scenario: Scenario, seed: int):
        self.inner = make_decider("cg-bp-ws-rr")
        self.chains = ChainGenerator(scenario, 4)
        self.pick = np.random.default_rng(seed)
        self.predicted: dict[int, tuple[int, float, float]] = {}  # id -> (recoveries, start, finish)
        self.recovery_predictions = 0

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        super().reset(scenario, rng)
        self.inner.reset(scenario, rng)
        self.chains.reset()

    def place(self, view: SwarmView, server: int):
        return self.inner.place(view, server)

    def route(self, view: SwarmView, request: Request):
        answer = self.inner.route(view, request)
        if answer is None:
            return None
        cands = self.chains.candidates(view, request, answer.chain, answer.wait)
        i = int(self.pick.integers(len(cands.chains)))
        start = cands.starts[i]
        if start < math.inf:
            finish = max(start, view.now) + cands.durations[i]
            self.predicted[request.id] = (request.recoveries, start, finish)
            self.recovery_predictions += request.is_recovery
        return type(answer)(cands.chains[i], answer.wait)


@pytest.mark.parametrize(
    ("name", "overrides", "seed"),
    [
        ("bellcanada-26-churn", {"churn.lifetime_s.mean": 400.0, "workload.horizon_s": 1500.0}, 0),
        ("bellcanada-26-churn", {"churn.lifetime_s.mean": 400.0, "workload.horizon_s": 1500.0}, 1),
        ("clustered-9", {"workload.arrival_rate": 1.0, "workload.num_requests": 150}, 2),
    ],
)
def test_every_candidates_predicted_finish_is_the_realised_one(name, overrides, seed):
    sc = load_scenario(name, overrides)
    dec = CandidatePicker(sc, seed)
    sim = Simulator(sc, seed, check_invariants=False)
    res = sim.run(dec)
    checked = recovered = 0
    for r in res.requests:
        if r.status != RequestStatus.COMPLETED or r.id not in dec.predicted:
            continue
        recoveries, start, finish = dec.predicted[r.id]
        if recoveries != r.recoveries:  # interrupted after its last route: not a prediction of its end
            continue
        assert r.finish == finish, (r.id, r.finish, finish, start)
        checked += 1
        recovered += recoveries > 0
    assert checked > 100
    if sc.churn.enabled:
        assert recovered > 0 and dec.recovery_predictions > 0  # recoveries are predicted too


def test_ws_rr_cost_is_the_simulated_duration_up_to_a_constant():
    """For a recovery, WS-RR prices the new hops with the replay (floored by the decode step) and
    l_out - tokens_done - 1 decode steps (it once priced one decode step per hop more): cost + kept hops'
    token time x tokens left = duration."""
    sc = load_scenario("bellcanada-26-churn", {"churn.lifetime_s.mean": 300.0, "workload.horizon_s": 1200.0})
    seen = 0

    class Check(Decider):
        name = "check"

        def __init__(self):
            self.inner = make_decider("cg-bp-ws-rr")

        def reset(self, scenario, rng):
            super().reset(scenario, rng)
            self.inner.reset(scenario, rng)

        def place(self, view, server):
            return self.inner.place(view, server)

        def route(self, view, request):
            nonlocal seen
            answer = self.inner.route(view, request)
            if answer is not None and request.is_recovery:
                tm = view.time_model
                fixed, per_block = tm.route_costs(request)
                cost, chain = shortest_chain(
                    self.inner.routable_spans(view), fixed, per_block, view.num_blocks, request.route_from
                )
                _, _, duration = tm.segment_times(request, chain)
                left = request.l_out - request.tokens_done
                kept = tm.token_time(request.kept, request.client) if request.kept else 0.0
                assert cost + left * kept == pytest.approx(duration, rel=1e-12)
                seen += 1
            return answer

    Simulator(sc, 0).run(Check())
    assert seen > 5
