"""Fuzzing the scenario loader from YAML files: whatever the file holds, ``load_scenario`` returns a
Scenario or raises a one-line :class:`ScenarioError` that starts with the file and names the field --
never another exception type.

Extends ``test_scenario.py`` (one junk value or deletion in a random small scenario, validated from a
dict): here the files are the SHIPPED scenarios (all network kinds, churn, topologies), written as YAML
and loaded from disk, with several mutations at once of more kinds (huge, negative and non-finite
numbers, wrong types, wrong nesting, moved and renamed subtrees, unknown keys), random edits of the YAML
text itself (including bytes that are not UTF-8), random dotted-path overrides, and the external files a
scenario names (trace CSV, topology .graph). The deterministic cases at the end are the crashes this
fuzzing found.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import scenario_dicts

from petalgym.errors import ScenarioError
from petalgym.scenario import Scenario, _scenario_dir, list_scenarios, load_scenario, scenario_from_dict

SHIPPED = list_scenarios()
TEXTS: dict[str, str] = {name: (_scenario_dir() / f"{name}.yaml").read_text() for name in SHIPPED}
BASES: dict[str, dict[str, Any]] = {name: yaml.safe_load(text) for name, text in TEXTS.items()}
WORK = Path(tempfile.mkdtemp(prefix="petalgym-fuzz-"))
GRAPH_IDS = itertools.count()

#: Field names of every section (for renames, unknown keys and override paths).
FIELDS = sorted(
    {
        "name", "description", "model", "gpu_profiles", "servers", "clients", "network", "workload", "churn",
        "overheads", "petals", "num_blocks", "block_gb", "block_bytes", "d_model", "kv_groups", "dtype_bytes",
        "base", "memory_gb", "tau_ms", "prefill_tau_ms", "per_token", "max_blocks", "profile", "count",
        "location", "weight", "kind", "rtt_ms", "intra_rtt_ms", "inter_rtt_ms", "cluster_rtt_ms", "topology",
        "seed", "low_degree", "arrival_rate", "num_requests", "horizon_s", "l_in", "l_out", "trace",
        "max_wait_s", "enabled", "lifetime_s", "downtime_s", "failure_fraction", "drain_timeout_s",
        "no_chain_timeout_s", "load_s_per_gb", "dist", "mean", "low", "high", "value", "values", "probs",
        "sigma", "min", "max", "attn_cache_tokens", "balance_quality",
    }
)  # fmt: skip

#: How every error message starts after the file name: a top-level field (``servers[0].count``, ...), a
#: whole-file problem (``top level``, not UTF-8), a YAML syntax error (``line 3``) or an override
#: (``override 'a.b'``).
LOCATORS = (
    *("name", "description", "model", "gpu_profiles", "servers", "clients", "network", "workload"),
    *("churn", "overheads", "petals", "simulation", "contention"),
    *("top level", "line ", "invalid YAML", "override "),
    *("not a UTF-8 text", "cannot be read"),
)

numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63), 10**12 + 1, 10**30, 10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, -0.0, 1e12, 1.5e12, 1e300, -1e300, 0.5]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=6),
    st.sampled_from(["auto", "a100", "mig-1g", "bloom-176b", "uniform", "clusters", "yes", "1e3", ""]),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=3), st.integers(-2, 3)), inner,
                        max_size=3),
    ),
    max_leaves=6,
)  # fmt: skip


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) inside ``node``, parents before children."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def get(node: Any, path: tuple) -> Any:
    for k in path:
        node = node[k]
    return node


MUTATIONS = ("set", "delete", "wrap_list", "wrap_dict", "unwrap", "move", "rename", "add_unknown")


def mutate(data: dict[str, Any], kind: str, path: tuple, value: Any, other: tuple, key: str) -> None:
    """Apply one mutation of ``kind`` at ``path`` (``other`` is a second path, ``key`` a field name)."""
    parent, last = get(data, path[:-1]), path[-1]
    current = parent[last]
    if kind == "set":
        parent[last] = value
    elif kind == "delete":
        del parent[last]
    elif kind == "wrap_list":
        parent[last] = [current]
    elif kind == "wrap_dict":
        parent[last] = {key: current}
    elif kind == "unwrap":
        children = list(current.values()) if isinstance(current, dict) else current
        parent[last] = children[0] if isinstance(children, list) and children else value
    elif kind == "move":
        try:
            parent[last] = copy.deepcopy(get(data, other))
        except (KeyError, IndexError, TypeError):  # ``other`` vanished in an earlier mutation
            parent[last] = value
    elif kind == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    elif isinstance(current, dict):  # add_unknown (or rename inside a list)
        current[f"{key}_x"] = value
    else:
        parent[last] = value


@st.composite
def mutated_documents(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> tuple[dict, list]:
    """A document (from ``base``) after 1-4 random mutations; returns it and the mutations made."""
    data = copy.deepcopy(draw(base))
    done = []
    for _ in range(draw(st.integers(1, 4))):
        options = paths(data)
        if not options:
            break
        path = draw(st.sampled_from(options))
        kind = draw(st.sampled_from(MUTATIONS))
        other = draw(st.sampled_from(options))
        value = draw(junk)
        key = draw(st.sampled_from(FIELDS))
        mutate(data, kind, path, value, other, key)
        done.append((kind, path))
    return data, done


shipped = st.sampled_from(SHIPPED).map(lambda n: BASES[n])


def write(name: str, content: str | bytes) -> Path:
    path = WORK / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def load_cleanly(path: Path | str, overrides: dict[str, Any] | None = None) -> tuple[Scenario | None, str]:
    """Load; on a ScenarioError check it is one line starting with the file name. Returns (scenario or
    None, message). Any other exception propagates and fails the test."""
    try:
        return load_scenario(path, overrides), ""
    except ScenarioError as exc:
        msg = str(exc)
        source = f"{path}.yaml" if isinstance(path, str) and path in SHIPPED else str(path)
        assert "\n" not in msg and "\r" not in msg, msg
        assert msg.startswith(f"{source}:"), msg
        assert 0 < len(msg) < 2000, msg
        assert "Traceback" not in msg
        rest = msg[len(source) + 1 :].lstrip(": ")
        assert rest.startswith(LOCATORS), f"the message does not start with a field: {msg!r}"
        return None, msg


def field_names(path: tuple) -> set[str]:
    """How an error may name a field on ``path``: a key (``memory_gb``) or an item (``servers[0]``)."""
    names = {k for k in path if isinstance(k, str)}
    names |= {f"{a}[{b}]" for a, b in itertools.pairwise(path) if isinstance(a, str) and isinstance(b, int)}
    return names


# --------------------------------------------------------------------------------------------------
# Structured mutations of the shipped scenarios
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=250)
@given(case=mutated_documents(shipped))
def test_mutated_shipped_scenarios_load_or_fail_cleanly(case):
    data, _ = case
    load_cleanly(write("mutated.yaml", yaml.safe_dump(data, allow_unicode=True)))


@pytest.mark.slow
@settings(max_examples=100)
@given(case=mutated_documents(scenario_dicts(churn=None)))
def test_many_mutations_of_small_scenarios_load_or_fail_cleanly(case):
    data, _ = case
    load_cleanly(write("mutated-small.yaml", yaml.safe_dump(data, allow_unicode=True)))


@pytest.mark.slow
@settings(max_examples=200)
@given(name=st.sampled_from(SHIPPED), data=st.data())
def test_one_bad_value_is_named(name, data):
    """A single wrong-typed, negative, non-finite or huge value: if the loader rejects it, the message
    names a field on the mutated path (its key, or its list item)."""
    doc = copy.deepcopy(BASES[name])
    leaves = [p for p in paths(doc) if not isinstance(get(doc, p), (dict, list))]
    path = data.draw(st.sampled_from(leaves))
    value = data.draw(
        st.one_of(
            st.sampled_from(["lots", -1, -0.5, 10**400, 1e300, math.inf, -math.inf, math.nan, True]),
            st.lists(st.integers(), min_size=1, max_size=2),
            st.dictionaries(st.sampled_from(["x", "y"]), st.integers(), min_size=1, max_size=1),
        )
    )
    get(doc, path[:-1])[path[-1]] = value
    sc, msg = load_cleanly(write("one.yaml", yaml.safe_dump(doc)))
    if sc is None:
        assert any(n in msg for n in field_names(path)), (path, value, msg)


#: Errors that a deletion causes elsewhere: the workload then has no size, or the default client (deleting
#: ``clients``) has no cluster.
CONSEQUENCES = (
    "give num_requests or horizon_s",
    "needs a 'location' (cluster index) on every server and client",
)


@pytest.mark.slow
@settings(max_examples=150)
@given(name=st.sampled_from(SHIPPED), data=st.data())
def test_missing_field_is_named(name, data):
    """Deleting a field either keeps a valid scenario (the field has a default) or the message names it
    (or its section)."""
    doc = copy.deepcopy(BASES[name])
    keyed = [p for p in paths(doc) if isinstance(p[-1], str)]
    path = data.draw(st.sampled_from(keyed))
    del get(doc, path[:-1])[path[-1]]
    sc, msg = load_cleanly(write("missing.yaml", yaml.safe_dump(doc)))
    if sc is None:
        named = any(n in msg for n in field_names(path))
        assert named or any(c in msg for c in CONSEQUENCES), (path, msg)


# --------------------------------------------------------------------------------------------------
# The YAML text itself
# --------------------------------------------------------------------------------------------------
edits = st.lists(
    st.tuples(
        st.floats(0.0, 1.0),
        st.sampled_from(["insert", "delete", "replace"]),
        st.one_of(
            st.sampled_from(
                [":", "-", "[", "]", "{", "}", "&a", "*a", "!!", "\t", "  ", "\n", "#", "'", '"', "|", ">",
                 "%", "\x00", "\ufeff", "1e999", "!!python/object/apply:os.system ['true']", "---\n",
                 "<<: *a", "9" * 5000, "[" * 2000]
            ),
            st.text(max_size=4),
        ),
    ),
    min_size=1,
    max_size=5,
)  # fmt: skip


@pytest.mark.slow
@settings(max_examples=250)
@given(name=st.sampled_from(SHIPPED), edits=edits, truncate=st.floats(0.0, 1.0), cut=st.booleans())
def test_edited_yaml_text_loads_or_fails_cleanly(name, edits, truncate, cut):
    text = TEXTS[name]
    for where, op, piece in edits:
        i = int(where * len(text))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + len(piece) :]
        else:
            text = text[:i] + piece + text[i + len(piece) :]
    if cut:
        text = text[: int(truncate * len(text))]
    load_cleanly(write("edited.yaml", text))


@settings(max_examples=60)
@given(name=st.sampled_from(SHIPPED), garbage=st.binary(min_size=1, max_size=40), where=st.floats(0.0, 1.0))
def test_bytes_that_are_not_utf8_fail_cleanly(name, garbage, where):
    raw = TEXTS[name].encode()
    i = int(where * len(raw))
    load_cleanly(write("binary.yaml", raw[:i] + garbage + raw[i:]))


@settings(max_examples=80)
@given(doc=junk)
def test_any_yaml_document_loads_or_fails_cleanly(doc):
    """Random documents (scalars, lists, mappings with field names, int keys, nulls) at the top level."""
    load_cleanly(write("random.yaml", yaml.safe_dump(doc, allow_unicode=True)))


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------
@st.composite
def override_sets(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(SHIPPED))
    existing = [".".join(str(k) for k in p) for p in paths(BASES[name])]
    keys = st.one_of(
        st.sampled_from(existing),
        st.lists(st.one_of(st.sampled_from(FIELDS), st.sampled_from(["0", "1", "9", "-1", "x", ""])),
                 min_size=1, max_size=4).map(".".join),
    )  # fmt: skip
    return name, draw(st.dictionaries(keys, junk, min_size=1, max_size=3))


@pytest.mark.slow
@settings(max_examples=200)
@given(case=override_sets())
def test_random_overrides_load_or_fail_cleanly(case):
    name, overrides = case
    load_cleanly(name, overrides)


# --------------------------------------------------------------------------------------------------
# Files a scenario names
# --------------------------------------------------------------------------------------------------
TRACE_BASE = {
    "name": "traced",
    "servers": [{"profile": "a100", "count": 2}],
    "clients": [{"name": "a"}, {"name": "b"}],
    "network": {"kind": "matrix", "rtt_ms": [[10, 20], [30, 40]]},
    "workload": {"trace": "fuzz-trace.csv"},
}
trace_cells = st.one_of(
    st.integers(-3, 300).map(str),
    st.sampled_from(["", "x", "1e999", "nan", "-inf", "1.5", "9" * 5000, "\x00", '"', ",", "\n"]),
)


@settings(max_examples=120)
@given(
    header=st.sampled_from(
        ["arrival_s,l_in,l_out", "arrival_s,l_in,l_out,client", "l_in,arrival_s,l_out", "arrival_s,l_in"]
    ),
    rows=st.lists(st.lists(trace_cells, min_size=0, max_size=5), max_size=5),
    tail=st.binary(max_size=6),
)
def test_random_trace_files_load_or_fail_cleanly(header, rows, tail):
    text = header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    write("fuzz-trace.csv", text.encode("utf-8", "surrogatepass") + tail)
    path = write("traced.yaml", yaml.safe_dump(TRACE_BASE))
    sc, msg = load_cleanly(path)
    if sc is None:
        assert "workload.trace" in msg, msg
    else:
        tr = sc.workload.trace
        assert len(tr.arrival_s) >= 1 and tr.l_in.min() >= 1 and tr.l_out.min() >= 1
        assert set(tr.client.tolist()) <= {0, 1}


@settings(max_examples=80)
@given(
    lines=st.lists(
        st.one_of(
            st.sampled_from(["NODES 3", "label x y", "a 0 0", "b 1 1", "c 2 2", "EDGES 2",
                             "label src dest weight bw delay", "e0 0 1 1 1 500", "e1 1 2 1 1 700",
                             "e2 2 9 1 1 5", "e3 0 2 1 1 -4", "NODES x", "EDGES"]),
            st.text(max_size=12),
        ),
        max_size=10,
    ),
    tail=st.binary(max_size=4),
)  # fmt: skip
def test_random_topology_files_load_or_fail_cleanly(lines, tail):
    name = f"fuzz-{next(GRAPH_IDS)}.graph"  # topologies are cached by path: a new path per example
    write(name, "\n".join(lines).encode("utf-8", "surrogatepass") + tail)
    doc = {
        "servers": [{"profile": "a100", "count": 2}],
        "network": {"kind": "topology", "topology": name},
        "workload": {"arrival_rate": 1.0, "num_requests": 3},
    }
    sc, msg = load_cleanly(write("topo.yaml", yaml.safe_dump(doc)))
    if sc is None:
        assert "network" in msg, msg


# --------------------------------------------------------------------------------------------------
# Crashes this fuzzing found (each used to raise something other than a ScenarioError)
# --------------------------------------------------------------------------------------------------
def minimal(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASES["clustered-9"])
    for dotted, value in changes.items():
        keys = dotted.split("__")
        node = get(doc, tuple(int(k) if k.isdigit() else k for k in keys[:-1]))
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("changes", "needles"),
    [
        ({"workload__arrival_rate": 10**400}, ["workload.arrival_rate", "must be <= 1e+06"]),
        ({"servers__0__count": 10**400}, ["servers[0].count", "must be <="]),
        ({"workload__l_in": 10**400}, ["workload.l_in", "finite number"]),
        ({"workload__l_out": {"dist": "uniform", "low": 1, "high": 10**400}}, ["workload.l_out.high"]),
        ({"servers__0__location": 10**400}, ["servers[0].location", "must be <="]),
        ({"clients__0__location": 10**12}, ["clients[0].location", "must be <="]),
        ({"model": {"base": "bloom-176b", "name": [1]}}, ["model.name", "expected a string"]),
        ({"workload": {"arrival_rate": 1e6, "horizon_s": 1e12}}, ["workload", "expected requests"]),
    ],
    ids=["huge-int-rate", "huge-int-count", "huge-int-length", "huge-int-dist", "huge-int-location",
         "huge-cluster-index", "model-name-list", "endless-workload"],
)  # fmt: skip
def test_found_crashes_are_scenario_errors(changes, needles):
    _, msg = load_cleanly(write("found.yaml", yaml.safe_dump(minimal(**changes))))
    assert msg, "expected a ScenarioError"
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_large_cluster_indices_are_cheap():
    """Cluster indices are labels: the RTTs of a 'clusters' network no longer build a (n x n) matrix."""
    doc = minimal(servers__0__location=999_999, clients__0__location=999_999)
    sc = load_scenario(write("far.yaml", yaml.safe_dump(doc)))
    a100 = [s.id for s in sc.servers if s.profile.name == "a100"]
    assert all(sc.network.rtt_s[0, j] == pytest.approx(0.005) for j in a100)  # same cluster: intra RTT
    assert all(sc.network.rtt_s[0, j] == pytest.approx(0.1) for j in range(sc.num_servers) if j not in a100)


@pytest.mark.parametrize("target", ["scenario", "trace", "topology"])
def test_binary_files_are_scenario_errors(target):
    binary = bytes(range(128, 256)) * 4
    doc = minimal()
    if target == "trace":
        write("bin-trace.csv", binary)
        doc["workload"] = {"trace": "bin-trace.csv"}
    elif target == "topology":
        write("bin.graph", binary)
        doc["network"] = {"kind": "topology", "topology": "bin.graph"}
        for s in doc["servers"]:
            s.pop("location")
        doc["clients"][0].pop("location")
    path = write("bin.yaml", binary) if target == "scenario" else write("ok.yaml", yaml.safe_dump(doc))
    _, msg = load_cleanly(path)
    assert msg and "UTF-8" in msg, msg


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nservers: " + "[" * 1200 + "]" * 1200 + "\n", "nested too deeply"),
        ("name: x\nworkload: {num_requests: " + "9" * 5000 + "}\n", "invalid YAML"),
    ],
    ids=["deep-nesting", "5000-digit-integer"],
)
def test_pathological_yaml_is_a_scenario_error(text, needle):
    _, msg = load_cleanly(write("patho.yaml", text))
    assert needle in msg, msg


def test_values_without_a_repr_are_reported():
    """An int beyond Python's 4300-digit str limit (possible in a dict, not in YAML) in a message."""
    doc = minimal()
    doc["description"] = 10**5000
    with pytest.raises(
        ScenarioError, match="description: expected a string, got an integer of more than 4300"
    ):
        scenario_from_dict(doc, source="big.yaml")
    doc = minimal(workload__l_in=-(10**5000))
    with pytest.raises(
        ScenarioError, match=r"workload\.l_in: expected a finite number, got an integer of more"
    ):
        scenario_from_dict(doc, source="big.yaml")


@pytest.mark.parametrize("target", ["trace", "topology", "scenario"])
def test_names_too_long_for_the_file_system_are_scenario_errors(target):
    """pathlib's is_file() raises OSError (ENAMETOOLONG) for such names instead of returning False."""
    long = "9" * 5000
    if target == "scenario":
        with pytest.raises(ScenarioError, match="no such file, and not a built-in scenario") as info:
            load_scenario(str(WORK / long))
        assert "\n" not in str(info.value) and len(str(info.value)) < 1000
        return
    doc = minimal()
    if target == "trace":
        doc["workload"] = {"trace": long}
    else:
        doc["network"] = {"kind": "topology", "topology": long}
    _, msg = load_cleanly(write("long.yaml", yaml.safe_dump(doc)))
    assert "no such file" in msg or "does not exist" in msg, msg
