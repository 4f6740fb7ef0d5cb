"""Every registered baseline runs under the simulator's invariant checks, with and without churn."""

from __future__ import annotations

import pytest

from petalgym.baselines import BASELINES
from petalgym.deciders import (
    ArrivalWindow,
    ShortestChainDecider,
    checked_number,
    decider_names,
    make_decider,
    positive_number,
    whole_number,
)
from petalgym.errors import DeciderError, SolverError
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


def test_checked_number_keeps_each_end_open_or_closed():
    # (0, 1]: 1 is in, 0 is out
    assert checked_number("d", "share", 1, high=1.0, high_open=False) == 1.0
    with pytest.raises(DeciderError, match=r"^d: share must be a number in \(0, 1\], got 0$"):
        checked_number("d", "share", 0, high=1.0, high_open=False)
    # [0, 1): 0 is in, 1 is out
    assert checked_number("d", "gap", 0, high=1.0, low_open=False) == 0.0
    with pytest.raises(DeciderError, match=r"^d: gap must be a number in \[0, 1\), got 1$"):
        checked_number("d", "gap", 1, high=1.0, low_open=False)
    # >= 0, infinity never
    assert checked_number("d", "delay", 0, low_open=False) == 0.0
    with pytest.raises(DeciderError, match=r"^d: delay must be a number >= 0, got inf$"):
        checked_number("d", "delay", float("inf"), low_open=False)
    # [0, inf]: infinity in only when the high end is closed
    assert checked_number("d", "threshold", float("inf"), low_open=False, high_open=False) == float("inf")
    with pytest.raises(DeciderError, match=r"^d: threshold must be a number >= 0 or inf, got nan$"):
        checked_number("d", "threshold", float("nan"), low_open=False, high_open=False)


def test_optional_numbers_take_none_and_name_it():
    assert checked_number("d", "period", None, optional=True) is None
    assert whole_number("d", "jobs", None, optional=True) is None
    with pytest.raises(DeciderError, match=r"^d: period must be a number > 0, got None$"):
        checked_number("d", "period", None)
    with pytest.raises(DeciderError, match=r"must be an integer >= 1 or None, got 0"):
        whole_number("d", "jobs", 0, optional=True)
    with pytest.raises(SolverError, match=r"^s: links must be an integer >= 1, got 0$"):
        whole_number("s", "links", 0, error=SolverError)
