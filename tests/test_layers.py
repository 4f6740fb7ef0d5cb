"""The layers and homes of issue 10 (point 4): what imports what, where caches live, one override path.

* The core (petalgym/ outside envs and the composing modules) never imports baselines, agents or envs;
  the envs do not import baselines or agents at module level (they ask deciders through the registry).
* No module keeps a cache at module level: a cache is state and belongs to an instance.
* The simulator's own settings are not PETALS constants.
* ``with_workload`` and ``with_overrides`` compose (both go through the scenario's YAML).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import petalgym
from petalgym.errors import ScenarioError
from petalgym.scenario import PetalsConstants, SimulationSettings, Trace, load_scenario, with_workload

ROOT = Path(petalgym.__file__).parent
#: Modules that compose the layers (they may import baselines and agents).
COMPOSERS = {"cli.py", "reproduce.py", "distributed.py", "tasks.py", "bench.py", "__init__.py", "__main__.py"}
FORBIDDEN = ("petalgym.baselines", "petalgym.agents", "petalgym.envs")


def imports(tree: ast.AST, top_level_only: bool = False) -> list[str]:
    """Modules imported by ``tree`` (all of them, or only the statements at module level)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))  # type: ignore[attr-defined]
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def core_modules() -> list[Path]:
    return [p for p in ROOT.glob("*.py") if p.name not in COMPOSERS]


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.name)
def test_the_core_never_imports_baselines_agents_or_envs(path: Path) -> None:
    tree = ast.parse(path.read_text())
    bad = [m for m in imports(tree) if m.startswith(FORBIDDEN)]
    assert not bad, f"petalgym/{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "envs").glob("*.py")), ids=lambda p: p.name)
def test_the_envs_import_no_baselines_or_agents_at_module_level(path: Path) -> None:
    tree = ast.parse(path.read_text())
    bad = [m for m in imports(tree, top_level_only=True) if m.startswith(FORBIDDEN[:2])]
    assert not bad, f"petalgym/envs/{path.name} imports {bad} at module level"


def package_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))  # baselines/ and agents/ included (they live in the package)


@pytest.mark.slow
@pytest.mark.parametrize("path", package_modules(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_module_level_cache(path: Path) -> None:
    """A cache starts empty: no module-level name is bound to an empty dict, list or set (registries of
    decider and env names are filled by registration, not by caching, and are named as such)."""
    tree = ast.parse(path.read_text())
    allowed = {"_REGISTRY"}
    for node in tree.body:
        targets: list[ast.expr] = []
        value = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        empty = (isinstance(value, ast.Dict) and not value.keys) or (
            isinstance(value, (ast.List, ast.Set)) and not value.elts
        )
        empty = empty or (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id in {"dict", "set", "list"}
            and not value.args
        )
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        assert not (empty and set(names) - allowed), f"{path.name}: module-level cache {names}"


def test_petals_keeps_one_routing_and_one_rebalancing_implementation() -> None:
    from petalgym.baselines import petals

    for name in ("_min_latency_chain_dijkstra", "_should_choose_other_blocks_numpy", "_route_fast"):
        assert not hasattr(petals, name)
    # what only the literal fallbacks answered before is an error now
    with pytest.raises(petalgym.DeciderError, match="finite and >= 0"):
        petals.min_latency_chain([(0, 0, 4)], 4, [-1.0], [100.0], [False])
    with pytest.raises(petalgym.DeciderError, match="NaN"):
        petals.choose_best_start([1.0, float("nan")], 1)
    rng = np.random.default_rng(0)
    with pytest.raises(petalgym.DeciderError, match="finite throughputs"):
        petals.should_choose_other_blocks([(0, 0, 2, float("inf")), (1, 0, 2, 1.0)], 0, 2, 0.5, rng)
    # no block limit: a long model routes (the recursion of nested tie keys is gone)
    L = 1500
    spans = [(j, a, min(a + 40, L)) for j, a in enumerate(range(0, L, 30))]
    cost, chain = petals.min_latency_chain(spans, L, [0.01] * len(spans), [100.0] * len(spans), [False] * 50)
    assert chain and chain[-1].end == L and cost < float("inf")


def test_the_backoff_cap_is_the_simulators() -> None:
    assert "backoff_cap_s" not in PetalsConstants.__dataclass_fields__
    assert SimulationSettings().backoff_cap_s == 60.0
    sc = load_scenario("clustered-9", {"simulation.backoff_cap_s": 7.5})
    assert sc.simulation.backoff_cap_s == 7.5
    with pytest.raises(ScenarioError, match=r"petals\.backoff_cap_s: .*simulation\.backoff_cap_s"):
        load_scenario("clustered-9", {"petals.backoff_cap_s": 7.5})


def test_with_workload_and_with_overrides_compose() -> None:
    """(Before: with_overrides re-read the YAML and silently dropped a with_workload change.)"""
    sc = with_workload(load_scenario("clustered-9"), arrival_rate=0.5, num_requests=7)
    later = sc.with_overrides({"workload.l_out": 64})
    assert (later.workload.arrival_rate, later.workload.num_requests, later.workload.l_out.mean) == (
        0.5,
        7,
        64,
    )
    trace = Trace(np.array([0.0, 2.5]), np.array([10, 20]), np.array([30, 40]), np.array([0, 0]))
    traced = with_workload(load_scenario("clustered-9"), trace=trace, num_requests=None)
    again = traced.with_overrides({"workload.max_wait_s": 100.0})
    assert again.workload.trace is not None and again.workload.trace.l_out.tolist() == [30, 40]
    assert again.workload.num_requests is None and again.workload.max_wait_s == 100.0
    with pytest.raises(ScenarioError, match=r"workload\.trace\[1\]"):
        with_workload(traced, trace={"arrival_s": [0.0, -1.0], "l_in": [1, 1], "l_out": [1, 1]})
