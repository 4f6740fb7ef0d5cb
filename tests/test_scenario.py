"""Scenarios: shipped files, overrides, topology sampling and RTTs, trace workloads, and bad input (every
error a one-line ScenarioError naming the file, the field and the bad value)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scenario_dicts

from petalgym.distributions import parse_distribution
from petalgym.errors import InfeasibleScenarioError, ScenarioError
from petalgym.scenario import list_scenarios, load_scenario, scenario_from_dict
from petalgym.simulator import Simulator
from petalgym.topology import load_topology

SHIPPED = ["abovenet", "bellcanada-26", "bellcanada-26-churn", "clustered-9", "gtsce"]
GRAPH_FILES = Path(__file__).resolve().parents[1] / "petalgym" / "data" / "topologies"


def test_list_scenarios_names_the_shipped_files():
    names = list_scenarios()
    assert names == sorted(names)
    assert set(SHIPPED) <= set(names)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_scenario_loads(name):
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.num_blocks == 70 and sc.model.name == "bloom-176b"
    assert sc.network.rtt_s.shape == (sc.num_clients, sc.num_servers)
    assert np.all(np.isfinite(sc.network.rtt_s)) and np.all(sc.network.rtt_s >= 0)
    assert str(sc.num_servers) in sc.summary()


def test_clustered9_is_the_papers_testbed(clustered9):
    names = [s.profile.name for s in clustered9.servers]
    assert names.count("a100") == 2 and names.count("mig-1g") == 7
    # client in cluster 0: every server is one inter-cluster hop away (100 ms)
    assert np.allclose(clustered9.network.rtt_s, 0.1)
    w = clustered9.workload
    assert (w.arrival_rate, w.num_requests, w.l_in.mean, w.l_out.mean) == (0.1, 100, 20, 128)


def test_bellcanada26_mix():
    sc = load_scenario("bellcanada-26")
    names = [s.profile.name for s in sc.servers]
    assert names.count("a100") == 5 and names.count("mig-1g") == 21


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------
def test_overrides_apply_and_revalidate(clustered9):
    sc = load_scenario("clustered-9", {"workload.arrival_rate": 0.5, "clients.0.location": 2})
    assert sc.workload.arrival_rate == 0.5
    # client now in the MIG cluster: 5 ms to the MIG slices, 100 ms to the A100s
    rtt = {s.profile.name: sc.network.rtt_s[0, s.id] for s in sc.servers}
    assert rtt["mig-1g"] == pytest.approx(0.005) and rtt["a100"] == pytest.approx(0.1)
    again = clustered9.with_overrides({"workload.arrival_rate": 0.5, "clients.0.location": 2})
    assert np.array_equal(again.network.rtt_s, sc.network.rtt_s)
    assert clustered9.workload.arrival_rate == 0.1  # the original is untouched


def test_override_with_a_bad_value_names_the_field():
    with pytest.raises(
        ScenarioError, match=r"clustered-9\.yaml: workload\.arrival_rate: must be > 0, got -1"
    ):
        load_scenario("clustered-9", {"workload.arrival_rate": -1})


def test_override_of_a_missing_list_item():
    with pytest.raises(ScenarioError, match=r"servers\.7\.count.*no list item '7'"):
        load_scenario("clustered-9", {"servers.7.count": 3})


def test_with_overrides_keeps_relative_paths(tmp_path, monkeypatch):
    (tmp_path / "trace.csv").write_text("arrival_s,l_in,l_out\n0.5,10,20\n")
    path = write_yaml(tmp_path / "s.yaml", minimal({"workload": {"trace": "trace.csv"}}))
    monkeypatch.chdir(GRAPH_FILES)  # anywhere but tmp_path
    sc = load_scenario(path)
    assert sc.with_overrides({"workload.max_wait_s": 5.0}).workload.max_wait_s == 5.0


# --------------------------------------------------------------------------------------------------
# Topologies
# --------------------------------------------------------------------------------------------------
def read_graph(path: Path) -> nx.Graph:
    """An independent reader of the REPETITA .graph format (delays in microseconds, converted to s)."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    n = int(lines[0][1])
    e = int(lines[n + 2][1])
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for parts in lines[n + 4 : n + 4 + e]:
        u, v, d = int(parts[1]), int(parts[2]), float(parts[5]) * 1e-6
        if not g.has_edge(u, v) or g[u][v]["d"] > d:
            g.add_edge(u, v, d=d)
    return g


@pytest.mark.parametrize(("name", "file"), [("abovenet", "Abvt"), ("bellcanada-26", "Bellcanada")])
def test_rtt_is_twice_the_shortest_path_delay(name, file):
    sc = load_scenario(name)
    g = read_graph(GRAPH_FILES / f"{file}.graph")
    client = sc.clients[0].location
    for s in sc.servers:
        expected = 2.0 * nx.dijkstra_path_length(g, client, s.location, weight="d")
        assert sc.network.rtt_s[0, s.id] == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["abovenet", "bellcanada-26", "gtsce"])
def test_topology_sampling(name):
    sc = load_scenario(name)
    topo = load_topology(sc.network.topology)
    nodes = [s.location for s in sc.servers]
    assert len(set(nodes)) == len(nodes)  # servers on distinct nodes
    client = sc.clients[0].location
    assert client not in nodes
    assert topo.degree(client) <= 2  # a low-degree node (network.low_degree defaults to 2)
    # deterministic per network.seed
    again = load_scenario(name)
    assert [s.location for s in again.servers] == nodes and again.clients[0].location == client
    assert np.array_equal(again.network.rtt_s, sc.network.rtt_s)
    others = [load_scenario(name, {"network.seed": k}) for k in (1, 2, 3)]
    assert any([s.location for s in o.servers] != nodes for o in others)


PATH_GRAPH = """NODES 4
label x y
0_a 0 0
1_b 0 0
2_c 0 0
3_d 0 0

EDGES 6
label src dest weight bw delay
edge_0 0 1 1 100 1000
edge_1 1 0 1 100 1000
edge_2 1 2 1 100 2500
edge_3 2 1 1 100 2500
edge_4 2 3 1 100 500
edge_5 3 2 1 100 500
"""


def test_custom_topology_file_relative_to_the_scenario(tmp_path):
    (tmp_path / "path.graph").write_text(PATH_GRAPH)  # 0 -1ms- 1 -2.5ms- 2 -0.5ms- 3
    data = minimal({"network": {"kind": "topology", "topology": "path.graph"}})
    data["servers"] = [{"profile": "a100", "count": 2, "location": [1, 3]}]
    data["clients"] = [{"name": "c", "location": 0}]
    sc = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    assert sc.network.topology == "path"
    assert sc.network.rtt_s[0].tolist() == pytest.approx([2 * 1e-3, 2 * (1e-3 + 2.5e-3 + 0.5e-3)])
    net = {**data["network"], "low_degree": 1}
    for seed in range(4):
        auto = load_scenario(write_yaml(tmp_path / "s.yaml", minimal({"network": {**net, "seed": seed}})))
        used = {s.location for s in auto.servers}
        free_leaves = {0, 3} - used
        assert auto.clients[0].location in (free_leaves or {0, 1, 2, 3} - used)


def test_malformed_topology_file(tmp_path):
    (tmp_path / "bad.graph").write_text(
        "NODES 2\nlabel x y\n0_a 0 0\n1_b 0 0\nEDGES 1\nlabel\nedge_0 0 5 1 1 10\n"
    )
    data = minimal({"network": {"kind": "topology", "topology": "bad.graph"}})
    with pytest.raises(
        ScenarioError, match=r"network\.topology: topology bad: malformed .graph file \(edge edge_0"
    ):
        load_scenario(write_yaml(tmp_path / "s.yaml", data))


def test_low_degree_falls_back_to_the_least_connected_nodes():
    sc = load_scenario("abovenet", {"network.low_degree": 1})
    topo = load_topology("abovenet")
    used = {s.location for s in sc.servers}
    pool = [v for v in topo.largest_component() if v not in used]
    low = [v for v in pool if topo.degree(v) <= 1]
    if not low:  # no leaf left: the least connected nodes
        dmin = min(topo.degree(v) for v in pool)
        low = [v for v in pool if topo.degree(v) == dmin]
    assert sc.clients[0].location in low


# --------------------------------------------------------------------------------------------------
# Trace workloads
# --------------------------------------------------------------------------------------------------
def minimal(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A small valid scenario: BLOOM on two A100s, one client, an explicit RTT matrix."""
    data: dict[str, Any] = {
        "name": "mini",
        "servers": [{"profile": "a100", "count": 2}],
        "network": {"kind": "matrix", "rtt_ms": [[10, 20]]},
        "workload": {"arrival_rate": 0.1, "num_requests": 5},
    }
    for key, value in (extra or {}).items():
        data[key] = value
    return data


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_trace_workload(tmp_path):
    (tmp_path / "trace.csv").write_text(
        "arrival_s,l_in,l_out,client\n3.0,12,40,1\n0.5,20,128,0\n1.25,7,9,1\n"
    )
    data = minimal({"workload": {"trace": "trace.csv"}, "clients": [{"name": "a"}, {"name": "b"}]})
    data["network"]["rtt_ms"] = [[10, 20], [30, 40]]
    sc = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    tr = sc.workload.trace
    assert tr.arrival_s.tolist() == [0.5, 1.25, 3.0]  # sorted by arrival
    assert tr.l_in.tolist() == [20, 7, 12] and tr.l_out.tolist() == [128, 9, 40]
    assert tr.client.tolist() == [0, 1, 1]
    assert sc.workload.max_tokens == 148
    sim = Simulator(sc, seed=0)
    assert sim.num_arrivals_planned == 3
    assert sim._arr_t == [0.5, 1.25, 3.0] and sim._arr_out == [128, 9, 40] and sim._arr_client == [0, 1, 1]
    cut = load_scenario(write_yaml(tmp_path / "s.yaml", data), {"workload.num_requests": 2})
    assert Simulator(cut, seed=0).num_arrivals_planned == 2


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("arrival_s,l_in\n1,2\n", "needs columns"),
        ("arrival_s,l_in,l_out\n1,2,x\n", "line 2: bad value"),
        ("arrival_s,l_in,l_out\n1,2,3\n-1,2,3\n", "line 3: need arrival_s >= 0"),
        ("arrival_s,l_in,l_out,client\n1,2,3,4\n", "client in 0..0"),
        ("arrival_s,l_in,l_out\n", "has no requests"),
    ],
)
def test_bad_trace(tmp_path, text, needle):
    (tmp_path / "t.csv").write_text(text)
    path = write_yaml(tmp_path / "s.yaml", minimal({"workload": {"trace": "t.csv"}}))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert needle in msg and "s.yaml" in msg and "workload.trace" in msg and "t.csv" in msg


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------
def _set(path: str, value: Any):
    """A mutation setting the dotted ``path`` of a scenario mapping to ``value``."""

    def mutate(d: dict[str, Any]) -> None:
        keys = path.split(".")
        node: Any = d
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
        node[keys[-1]] = value

    return mutate


def _both(first, second):
    """Two mutations in a row."""

    def mutate(d: dict[str, Any]) -> None:
        first(d)
        second(d)

    return mutate


BAD = [
    (
        "negative memory",
        _set("gpu_profiles", {"a100": {"memory_gb": -5}}),
        ["gpu_profiles.a100.memory_gb", "-5"],
    ),
    ("memory not a number", _set("gpu_profiles", {"a100": {"memory_gb": "lots"}}), ["memory_gb", "'lots'"]),
    (
        "server cannot hold one block",
        _both(
            _set("gpu_profiles", {"tiny": {"base": "a100", "memory_gb": 1.0}}),
            _set("servers.0.profile", "tiny"),
        ),
        ["servers[0]", "profile tiny", "1 GB", "cannot hold one block"],
    ),
    ("unknown GPU profile", _set("servers.0.profile", "h100"), ["servers[0].profile", "'h100'"]),
    (
        "unknown base profile",
        _set("gpu_profiles", {"x": {"base": "v100"}}),
        ["gpu_profiles.x.base", "'v100'"],
    ),
    ("RTT matrix of the wrong shape", _set("network.rtt_ms", [[10, 20, 30]]), ["network.rtt_ms", "(1, 3)"]),
    ("RTT matrix ragged", _set("network.rtt_ms", [[10, [20]]]), ["network.rtt_ms", "[[10, [20]]]"]),
    ("negative RTT", _set("network.rtt_ms", [[10, -20]]), ["network.rtt_ms", "-20"]),
    (
        "topology file missing",
        _set("network", {"kind": "topology", "topology": "nowhere.graph"}),
        ["network.topology", "'nowhere.graph'"],
    ),
    ("unknown network kind", _set("network.kind", "mesh"), ["network.kind", "'mesh'"]),
    ("unknown top-level field", _set("colour", "blue"), ["top level", "unknown field 'colour'"]),
    ("unknown workload field", _set("workload.rate", 3), ["workload", "unknown field 'rate'"]),
    ("wrong type", _set("workload.arrival_rate", "fast"), ["workload.arrival_rate", "'fast'"]),
    ("bool for a number", _set("workload.num_requests", True), ["workload.num_requests", "True"]),
    ("fractional count", _set("servers.0.count", 1.5), ["servers[0].count", "1.5"]),
    ("zero blocks", _set("model", {"base": "bloom-176b", "num_blocks": 0}), ["model.num_blocks", "0"]),
    ("unknown model", _set("model", "gpt-9"), ["model", "'gpt-9'"]),
    ("no requests", _set("workload", {"arrival_rate": 1.0}), ["workload", "num_requests"]),
    (
        "bad distribution",
        _set("workload.l_out", {"dist": "uniform", "low": 9, "high": 2}),
        ["workload.l_out", "low (9) > high (2)"],
    ),
    (
        "unbounded lengths",
        _set("workload.l_out", {"dist": "exponential", "mean": 100}),
        ["workload.l_out", "inf"],
    ),
    ("unknown distribution", _set("workload.l_in", {"dist": "zipf"}), ["workload.l_in.dist", "'zipf'"]),
    ("bad churn", _set("churn", {"enabled": "yes"}), ["churn.enabled", "'yes'"]),
    ("servers not a list", _set("servers", "many"), ["servers", "'many'"]),
    (
        "servers cannot cover L",
        _set("servers", [{"profile": "mig-1g", "count": 2}]),
        ["8 blocks in total", "70 blocks"],
    ),
]


@pytest.mark.parametrize(("label", "mutate", "needles"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_one_line_scenario_error(tmp_path, label, mutate, needles):
    data = copy.deepcopy(minimal())
    mutate(data)
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for needle in needles:
        assert needle in msg, f"{label}: {needle!r} not in {msg!r}"


def test_uncoverable_model_is_infeasible_before_simulating(tmp_path):
    data = minimal({"servers": [{"profile": "mig-1g", "count": 2}]})
    with pytest.raises(InfeasibleScenarioError, match="model has 70 blocks"):
        scenario_from_dict(data, source="x.yaml")
    data = minimal({"gpu_profiles": {"tiny": {"base": "a100", "memory_gb": 1.0}}})
    data["servers"] = [{"profile": "tiny"}, {"profile": "a100"}]
    with pytest.raises(InfeasibleScenarioError, match=r"x\.yaml: servers\[0\]"):
        scenario_from_dict(data, source="x.yaml")


def test_malformed_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nservers: [\n  - a\n")
    with pytest.raises(ScenarioError, match=r"broken\.yaml: line 3: invalid YAML"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("text", "needle"), [("", "servers: missing required field"), ("- 1\n", "top level")]
)
def test_empty_or_non_mapping_yaml(tmp_path, text, needle):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=needle):
        load_scenario(path)


def test_missing_scenario_file():
    with pytest.raises(ScenarioError, match="no such file, and not a built-in scenario"):
        load_scenario("/nonexistent/scenario.yaml")


def test_override_inside_an_empty_yaml_section(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "churn:\n")  # an empty section is null in YAML
    assert not load_scenario(path).churn.enabled
    assert load_scenario(path, {"churn.enabled": True}).churn.enabled


# --------------------------------------------------------------------------------------------------
# Distributions
# --------------------------------------------------------------------------------------------------
DISTS = [
    7,
    {"dist": "uniform", "low": 3, "high": 9},
    {"dist": "exponential", "mean": 4.0},
    {"dist": "lognormal", "mean": 5.0, "sigma": 0.5, "max": 12},
    {"dist": "choice", "values": [2, 4, 8], "probs": [0.5, 0.25, 0.25]},
]


@pytest.mark.parametrize("spec", DISTS)
def test_distribution_sample_sizes_and_ranges(spec):
    dist = parse_distribution(spec, "x", integer=True)
    rng = np.random.default_rng(0)
    assert dist.sample(rng, 0).shape == (0,)
    many = dist.sample(rng, 4000)
    assert many.shape == (4000,) and many.dtype.kind == "i" and many.min() >= 1
    assert many.max() <= dist.maximum
    assert isinstance(dist.sample(rng), int)
    assert abs(many.mean() - dist.mean) < 0.1 * dist.mean + 0.5


# --------------------------------------------------------------------------------------------------
# Fuzzing: any mutation of a valid scenario either loads or raises a one-line ScenarioError
# --------------------------------------------------------------------------------------------------
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(
        st.sampled_from(["dist", "mean", "low", "high", "value", "x"]), st.integers(-3, 99), max_size=3
    ),
)


@settings(max_examples=150)
@given(data=scenario_dicts(), pick=st.randoms(use_true_random=False), value=junk, delete=st.booleans())
def test_mutated_scenarios_fail_cleanly(data, pick, value, delete):
    path = pick.choice(_paths(data))
    node: Any = data
    for k in path[:-1]:
        node = node[k]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    try:
        scenario_from_dict(data, source="fuzz.yaml")
    except ScenarioError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml: ") and "\n" not in msg
