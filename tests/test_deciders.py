"""Every registered baseline runs under the simulator's invariant checks, with and without churn."""

from __future__ import annotations

import pytest

from petalgym.baselines import BASELINES
from petalgym.deciders import (
    ArrivalWindow,
    ShortestChainDecider,
    decider_names,
    make_decider,
    positive_number,
    whole_number,
)
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario
from petalgym.simulator import simulate
from petalgym.swarm import Request, RequestStatus

NAMES = [*sorted(BASELINES), "shortest"]
#: Deciders that model only some worlds run on one they can plan (jffc-only needs servers that hold the
#: whole model).
WHOLE_MODEL = {"jffc-only"}
SMALL_MODEL = "llama7b-mig-ripe"


def test_every_baseline_is_registered():
    assert set(NAMES) <= set(decider_names())
    with pytest.raises(DeciderError, match="unknown decider 'nope'"):
        make_decider("nope")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_chains_feasible_and_requests_conserved(name):
    scenario = load_scenario("clustered-9", {"workload.num_requests": 40, "workload.arrival_rate": 0.3})
    if name in WHOLE_MODEL:
        scenario = load_scenario(SMALL_MODEL, {"workload.trace.duration_s": 20.0})
    result = simulate(scenario, make_decider(name), seed=3, check_invariants=True)
    assert len(result.requests) == (40 if name not in WHOLE_MODEL else len(result.requests)) > 0
    assert all(r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED) for r in result.requests)
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests), "no churn: nothing may fail"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n != "round-robin"])
def test_under_churn_every_request_ends_with_a_reason(name):
    scenario = load_scenario("bellcanada-26-churn", {"workload.horizon_s": 900.0})
    if name in WHOLE_MODEL:
        scenario = load_scenario(
            SMALL_MODEL,
            {
                "workload.trace.duration_s": 120.0,
                "churn": {"enabled": True, "lifetime_s": 60.0, "downtime_s": 30.0, "failure_fraction": 0.5},
            },
        )
    result = simulate(scenario, make_decider(name), seed=1, check_invariants=True)
    failed = [r for r in result.requests if r.status == RequestStatus.FAILED]
    assert all(r.failure_reason for r in failed)
    assert sum(r.status == RequestStatus.COMPLETED for r in result.requests) + len(failed) == len(
        result.requests
    )
    assert result.extra["leaves"], "the churn scenario must make servers leave"


def test_shortest_rejects_bad_parameter():
    with pytest.raises(DeciderError, match="cache_share"):
        ShortestChainDecider(cache_share=1.5)


def test_arrival_window_counts_each_request_once_and_forgets_old_arrivals():
    window = ArrivalWindow(10.0)
    first, second = Request(0, 0, 1.0, 8, 8, 1), Request(1, 0, 5.0, 8, 8, 1)
    for request in (first, first, second, first):  # a request routed again (a recovery) counts once
        window.note(request)
    assert window.count(6.0) == 2
    assert window.count(11.0) == 2  # 1.0 is still inside [1.0, 11.0]
    assert window.count(11.5) == 1
    assert window.count(16.0) == 0


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan"), True, "2"])
def test_positive_number_names_the_argument(value):
    with pytest.raises(DeciderError, match=r"^d: rate must be a number > 0"):
        positive_number("d", "rate", value)


@pytest.mark.parametrize("value", [0, 1.5, True, "3"])
def test_whole_number_names_the_argument(value):
    with pytest.raises(DeciderError, match=r"^d: sessions must be an integer >= 1"):
        whole_number("d", "sessions", value)
    assert whole_number("d", "sessions", 3) == 3
