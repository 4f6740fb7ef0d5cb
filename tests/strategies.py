"""Shared hypothesis strategies and helpers: random small scenarios and a random feasible test decider.

``scenario_dicts()`` draws a valid scenario mapping (as read from YAML): a tiny model (L <= 8 blocks of
1 GB), 2-6 servers of 1-2 random GPU profiles whose cache holds only a few sessions (so requests wait),
1-2 clients, a ``matrix`` or ``clusters`` network, a Poisson workload of a few dozen short requests and
optional churn. ``small_scenarios()`` validates it into a :class:`~petalgym.scenario.Scenario`.

``RandomFeasibleDecider`` places servers on random windows (covering gaps first), routes on the shortest
chain under random per-server costs with a random wait mode, optionally moves servers on rebalance
ticks, and checks the memory invariants of every server independently at every decision it is asked.

Import from any test file as ``from strategies import small_scenarios, RandomFeasibleDecider`` (conftest.py
puts ``tests/`` on the path).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

from petalgym.deciders import Decider, Route
from petalgym.perfmodel import Hop, Placement, shortest_chain
from petalgym.scenario import ModelSpec, Scenario, max_blocks_on, scenario_from_dict
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import Request, ServerStatus, SwarmView

BLOCK_GB = 1.0
MAX_BLOCKS_TOTAL = 8


def gpu_profile(memory_gb: float = 20.0, forward_rps: float = 3000.0, inference_rps: float = 300.0) -> dict:
    """A GPU profile for hand-made scenarios (tau 5 ms per block, PETALS throughputs as given)."""
    return {
        "memory_gb": memory_gb,
        "tau_ms": 5.0,
        "prefill_tau_ms": {"per_token": 0.1, "base": 10.0},
        "inference_rps": inference_rps,
        "forward_rps": forward_rps,
        "network_rps": 1e6,
    }


@st.composite
def scenario_dicts(
    draw: st.DrawFn,
    churn: bool | None = None,
    network: str | None = None,
    max_wait: bool | None = None,
    min_requests: int = 3,
    max_requests: int = 40,
    contention: bool | None = None,
) -> dict[str, Any]:
    """A valid small scenario mapping; ``churn``/``network``/``max_wait``/``contention`` = None lets
    hypothesis choose (contention: fifo with a random alpha and prefill mode, or none)."""
    d_model = draw(st.integers(200_000, 2_000_000))
    l_in_low = draw(st.integers(1, 20))
    l_in_high = draw(st.integers(l_in_low, 30))
    l_out_low = draw(st.integers(1, 12))
    l_out_high = draw(st.integers(l_out_low, 24))
    spec = ModelSpec("tiny", MAX_BLOCKS_TOTAL, round(BLOCK_GB * 1e9), d_model, 1, 2)
    per_block = spec.block_bytes + spec.kv_bytes_per_block(l_in_high + l_out_high)

    n_profiles = draw(st.integers(1, 2))
    profiles: dict[str, Any] = {}
    for p in range(n_profiles):
        # memory for 1..4 blocks with one full-length session each, plus 0..3 blocks' worth of spare cache
        blocks = draw(st.integers(1, 4))
        spare = draw(st.floats(0.0, 3.0, allow_nan=False))
        memory_gb = math.ceil((blocks * per_block + spare * spec.kv_bytes_per_block(50)) / 1e6) / 1e3
        profiles[f"g{p}"] = {
            "memory_gb": memory_gb,
            "tau_ms": draw(st.floats(0.5, 30.0)),
            "prefill_tau_ms": {"per_token": draw(st.floats(0.0, 0.5)), "base": draw(st.floats(1.0, 200.0))},
            "max_blocks": draw(st.sampled_from([None, 1, 2, 3])),
        }
    n_servers = draw(st.integers(2, 6))
    server_profiles = [f"g{draw(st.integers(0, n_profiles - 1))}" for _ in range(n_servers)]
    n_clients = draw(st.integers(1, 2))
    kind = network or draw(st.sampled_from(["matrix", "clusters"]))

    # cap L by what the servers can host (the loader rejects a model they cannot cover)
    caps = []
    for name in server_profiles:
        prof = profiles[name]
        cap = int(round(prof["memory_gb"] * 1e9) // per_block)
        if prof["max_blocks"] is not None:
            cap = min(cap, prof["max_blocks"])
        caps.append(cap)
    num_blocks = draw(st.integers(1, min(MAX_BLOCKS_TOTAL, sum(caps))))

    servers: list[dict[str, Any]] = []
    clients: list[dict[str, Any]] = [{"name": f"c{c}"} for c in range(n_clients)]
    if kind == "matrix":
        servers = [{"profile": name} for name in server_profiles]
        rtt = draw(
            st.lists(
                st.lists(st.floats(0.0, 200.0), min_size=n_servers, max_size=n_servers),
                min_size=n_clients,
                max_size=n_clients,
            )
        )
        net: dict[str, Any] = {"kind": "matrix", "rtt_ms": rtt}
    else:
        n_clusters = draw(st.integers(1, 3))
        servers = [
            {"profile": name, "location": draw(st.integers(0, n_clusters - 1))} for name in server_profiles
        ]
        for c in clients:
            c["location"] = draw(st.integers(0, n_clusters - 1))
        net = {"kind": "clusters", "intra_rtt_ms": draw(st.floats(0.0, 20.0)), "inter_rtt_ms": 100.0}
    if n_clients > 1:
        for c in clients:
            c["weight"] = draw(st.floats(0.5, 2.0))

    workload: dict[str, Any] = {
        "arrival_rate": draw(st.floats(0.2, 5.0)),
        "num_requests": draw(st.integers(min_requests, max_requests)),
        "l_in": {"dist": "uniform", "low": l_in_low, "high": l_in_high},
        "l_out": {"dist": "uniform", "low": l_out_low, "high": l_out_high},
    }
    if max_wait if max_wait is not None else draw(st.booleans()):
        workload["max_wait_s"] = draw(st.floats(0.5, 30.0))
    data: dict[str, Any] = {
        "name": "random-small",
        "model": {"name": "tiny", "num_blocks": num_blocks, "block_gb": BLOCK_GB, "d_model": d_model},
        "gpu_profiles": profiles,
        "servers": servers,
        "clients": clients,
        "network": net,
        "workload": workload,
    }
    if churn if churn is not None else draw(st.booleans()):
        data["churn"] = {
            "enabled": True,
            "lifetime_s": {"dist": "exponential", "mean": draw(st.floats(5.0, 60.0))},
            "downtime_s": {"dist": "exponential", "mean": draw(st.floats(0.5, 20.0))},
            "failure_fraction": draw(st.floats(0.0, 1.0)),
            "drain_timeout_s": draw(st.floats(0.0, 10.0)),
            "no_chain_timeout_s": draw(st.floats(1.0, 30.0)),
            "load_s_per_gb": draw(st.floats(0.0, 2.0)),
        }
        if draw(st.booleans()):  # correlated failures: shocks take down groups of servers
            last = f"{server_profiles[-1]}-{n_servers - 1}"  # servers are named <profile>-<index>
            groups = "location" if kind == "clusters" else [[f"{server_profiles[0]}-0", last]]
            data["churn"]["shocks"] = {
                "rate_per_day": draw(st.floats(500.0, 20000.0)),
                "probability": draw(st.floats(0.1, 1.0)),
                "groups": groups,
            }
    if contention if contention is not None else draw(st.booleans()):
        data["contention"] = {
            "mode": "fifo",
            "alpha": draw(st.floats(0.0, 1.0)),
            "prefill": draw(st.sampled_from(["per_block", "merged"])),
        }
    return data


def all_chains(spans, L: int, start: int = 0) -> list[tuple[Hop, ...]]:
    """Brute force, independent of the DPs under test: every chain from block ``start`` to L over the
    (server, first block, end) ``spans``, each hop running to the end of its server's span; in the order
    of ``spans`` at every hop."""
    if start == L:
        return [()]
    out = []
    for j, a, e in spans:
        if a <= start < e:
            out += [(Hop(j, start, e), *rest) for rest in all_chains(spans, L, e)]
    return out


def small_scenarios(**kwargs: Any) -> st.SearchStrategy[Scenario]:
    """Validated random small scenarios (see :func:`scenario_dicts` for the keyword arguments)."""
    return scenario_dicts(**kwargs).map(lambda d: scenario_from_dict(d, source="hypothesis"))


def check_server_memory(view: SwarmView) -> None:
    """Assert, independently of the simulator's own checks, that no server exceeds its memory now."""
    block_bytes = view.scenario.model.block_bytes
    for s in view.servers:
        held = sum(b for b, _ in s.sessions.values())
        assert held == s.used_bytes, f"server {s.id}: sessions hold {held} B, used_bytes {s.used_bytes}"
        assert 0 <= s.used_bytes <= s.cache_capacity, (
            f"server {s.id}: cache {s.used_bytes}/{s.cache_capacity}"
        )
        if s.status != ServerStatus.OFFLINE:
            assert s.num_blocks * block_bytes + s.cache_capacity <= s.memory_bytes, f"server {s.id}: memory"
        else:
            assert not s.sessions and not s.reservations, f"offline server {s.id} holds cache"


class RandomFeasibleDecider(Decider):
    """A test decider: random placements, random shortest chains, random wait mode, random moves.

    ``wait`` fixes the wait mode (None: a coin flip per route). ``move_prob`` is the chance of moving on a
    rebalance tick. Every decision first checks the memory of every server (``checks`` counts them).
    """

    name = "random-feasible"

    def __init__(
        self, wait: bool | None = None, move_prob: float = 0.3, rebalance_period_s: float | None = None
    ):
        self.wait = wait
        self.move_prob = move_prob
        self.rebalance_period_s = rebalance_period_s
        self.checks = 0

    def _check(self, view: SwarmView) -> None:
        check_server_memory(view)
        self.checks += 1

    def _placement(self, view: SwarmView, server: int) -> Placement:
        sc = view.scenario
        spec = sc.servers[server]
        rng = self.rng
        m = int(rng.integers(1, max_blocks_on(sc, spec) + 1))
        cov = view.coverage()
        gaps = [b for b in range(sc.num_blocks) if cov[b] == 0]
        if gaps and rng.random() < 0.8:
            start = min(gaps[0], sc.num_blocks - m)
        else:
            start = int(rng.integers(0, sc.num_blocks - m + 1))
        left = spec.profile.memory_bytes - m * sc.model.block_bytes
        need = m * sc.model.kv_bytes_per_block(sc.workload.max_tokens)
        roll = rng.random()
        if roll < 0.5:
            return Placement(start, m)
        if roll < 0.75:
            return Placement(start, m, left)
        return Placement(start, m, int(rng.integers(need, left + 1)))

    def place(self, view: SwarmView, server: int) -> Placement:
        self._check(view)
        return self._placement(view, server)

    def route(self, view: SwarmView, request: Request) -> Route | None:
        self._check(view)
        n = view.num_servers
        fixed = self.rng.uniform(0.0, 1.0, size=n).tolist()
        per_block = self.rng.uniform(0.0, 1.0, size=n).tolist()
        cost, chain = shortest_chain(view.spans(), fixed, per_block, view.num_blocks, request.route_from)
        if cost == math.inf:
            return None
        wait = bool(self.rng.random() < 0.5) if self.wait is None else self.wait
        return Route(chain, wait)

    def rebalance(self, view: SwarmView, server: int) -> Placement | None:
        self._check(view)
        if self.rng.random() < self.move_prob:
            return self._placement(view, server)
        return None


def placed_simulator(sc: Scenario, decider: Decider, seed: int = 0) -> Simulator:
    """A simulator whose initial servers are placed by ``decider``; stops at the first ROUTE decision."""
    sim = Simulator(sc, seed)
    decider.reset(sc, sim.decider_rng)
    while (d := sim.next_decision()) is not None and d.kind == DecisionKind.PLACE:
        sim.apply(decider.place(sim.view, d.server))
    return sim
