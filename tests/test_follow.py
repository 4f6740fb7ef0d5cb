"""cg-bp-ws-rr-follow: two CG-BP designs, servers moving between them as the arrival rate crosses a
threshold (petalgym.baselines.cg.CGFollowDecider)."""

from __future__ import annotations

import numpy as np
import pytest

from petalgym.deciders import make_decider
from petalgym.errors import DeciderError
from petalgym.scenario import load_scenario
from petalgym.simulator import simulate
from petalgym.swarm import RequestStatus


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"low_sessions": 0}, "low_sessions"),
        ({"low_sessions": 64, "high_sessions": 64}, "high_sessions"),
        ({"busy_rate": 0.0}, "busy_rate"),
        ({"busy_rate": True}, "busy_rate"),
        ({"calm_fraction": 1.5}, "calm_fraction"),
        ({"rate_window_s": -1.0}, "rate_window_s"),
        ({"check_period_s": float("inf")}, "check_period_s"),
    ],
)
def test_bad_parameters_are_named(kwargs, field):
    with pytest.raises(DeciderError, match=f"cg-bp-ws-rr-follow: {field}"):
        make_decider("cg-bp-ws-rr-follow", **kwargs)


def swinging(horizon_s: float, period_s: float, rate: float = 4.5):
    """The re-placing world shortened to ``horizon_s`` with a ``period_s`` cycle (amplitude 0.8)."""
    return load_scenario(
        "llama70b-int8-diurnal-12",
        {
            "workload.horizon_s": horizon_s,
            "workload.warmup_s": 0.0,
            "workload.rate_profile.period_s": period_s,
            "workload.arrival_rate": rate,
        },
    )


def test_the_trough_design_has_longer_windows_than_the_peak_design():
    sc = swinging(1200.0, 600.0)
    decider = make_decider("cg-bp-ws-rr-follow")
    decider.reset(sc, np.random.default_rng(0))
    low, high = decider._designs[False], decider._designs[True]
    assert sum(p.num_blocks for p in low) > sum(p.num_blocks for p in high)
    assert all(p.num_blocks == sc.num_blocks for p in low)  # a whole-model replica on every server


@pytest.mark.slow
def test_servers_follow_the_load_and_every_request_completes():
    sc = swinging(1200.0, 600.0)
    decider = make_decider("cg-bp-ws-rr-follow", busy_rate=5.0, check_period_s=20.0, rate_window_s=60.0)
    result = simulate(sc, decider, seed=0)
    assert decider.moves >= sc.num_servers
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests)
    assert result.summary()["recoveries"] > 0  # moving a busy server interrupts its sessions


@pytest.mark.slow
def test_moves_keep_the_simulator_invariants():
    sc = swinging(240.0, 120.0, rate=6.0)
    decider = make_decider("cg-bp-ws-rr-follow", busy_rate=5.0, check_period_s=5.0, rate_window_s=20.0)
    result = simulate(sc, decider, seed=0, check_invariants=True)
    assert decider.moves >= 1
    assert all(r.status == RequestStatus.COMPLETED for r in result.requests)


@pytest.mark.slow
def test_a_constant_light_load_never_moves():
    sc = load_scenario(
        "llama70b-int8-diurnal-12",
        {"workload.horizon_s": 1200.0, "workload.warmup_s": 0.0, "workload.arrival_rate": 1.0,
         "workload.rate_profile": None},
    )  # fmt: skip
    decider = make_decider("cg-bp-ws-rr-follow", busy_rate=5.0, check_period_s=30.0)
    result = simulate(sc, decider, seed=1)
    assert decider.moves == 0
    assert result.summary()["recoveries"] == 0
    static = simulate(sc, make_decider("cg-bp-ws-rr", num_sessions=decider.low_sessions), seed=1)
    assert result.summary()["per_token_s"] == pytest.approx(static.summary()["per_token_s"], rel=1e-9)
