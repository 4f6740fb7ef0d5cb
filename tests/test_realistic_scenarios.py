"""The shipped realistic scenarios (issue 12): they combine the catalog, traces, churn and contention."""

from __future__ import annotations

import pytest

from petalgym.deciders import make_decider
from petalgym.scenario import load_scenario
from petalgym.simulator import Simulator

REALISTIC = ["llama70b-mixed-spot", "llama405b-zones-ripe"]


@pytest.mark.parametrize("name", REALISTIC)
def test_realistic_scenario_combines_the_extensions(name):
    sc = load_scenario(name)
    assert sc.contention.enabled and sc.churn.enabled
    assert sc.churn.preset is not None
    assert sc.workload.trace is not None and sc.workload.trace_random_start
    assert sc.workload.warmup_s > 0
    assert 3 <= sc.num_clients <= 5 and 36 <= sc.num_servers <= 60
    assert len({s.profile.name for s in sc.servers}) >= 5  # mixed GPUs
    assert any(s.profile.estimated for s in sc.servers)  # timed by the catalog rule, labelled so
    assert "Why:" in sc.description  # each carries its rationale
    # thousands of requests per episode: the window's requests
    w = sc.workload
    window = (w.trace.arrival_s >= 0) & (w.trace.arrival_s < w.trace_window_s)
    assert window.sum() > 2000


@pytest.mark.parametrize("name", REALISTIC)
@pytest.mark.parametrize("decider", ["cg-bp-ws-rr", "petals"])
def test_realistic_scenario_runs_short(name, decider):
    sc = load_scenario(name, {"workload.num_requests": 40, "workload.warmup_s": 0})
    sim = Simulator(sc, 1, check_invariants=True)
    s = sim.run(make_decider(decider)).summary()
    assert s["arrived"] == 40 == s["completed"] + s["failed"] + s["in_flight"]
    assert s["completed"] > 0 and sim.fifo is not None and sim.fifo.jobs > 0


def test_zone_shocks_scenario_groups_its_zones():
    sc = load_scenario("llama405b-zones-ripe")
    groups = sc.churn.shocks.groups
    assert sorted(i for g in groups for i in g) == list(range(sc.num_servers))
    for g in groups:  # a zone is one site: its servers share the name prefix
        assert len({sc.servers[i].name.split("-")[0] for i in g}) == 1
