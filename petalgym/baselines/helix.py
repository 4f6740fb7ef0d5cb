"""Helix (ASPLOS'25, arXiv 2406.01566) adapted to petalgym: a max-flow placement MILP and IWRR scheduling.

Specification: ``docs/peers.md`` section 2 (2.1 the MILP, 2.2 the scheduler, 2.3 the adaptation, 2.5 an
example). Blocks are 0-based, spans ``[start, end)``; sizes are bytes; flows and capacities are counts of
concurrent sessions (not tokens/s, see below).

* :func:`session_capacity_tables` -- f_j(k) = floor((M_j - s_m k) / (s_c k)) for k = 1..K_j, with s_c
  one block's KV cache at the workload's longest session and K_j = max{k <= min(L, cap_j): f_j(k) >= 1};
* :func:`placement_max_flow` -- the max flow (networkx) of a placement over exact-boundary links, each
  server split into in -> out with capacity f_j(m_j): a :class:`FlowGraph`;
* :func:`solve_helix_milp` -- the placement MILP on capacity tables (constraints 1-6, max-flow
  objective), solved with PuLP + HiGHS (highspy) or CBC: a :class:`HelixPlan`;
* :func:`helix_placement` -- the same for a scenario, with a warm start;
* :class:`IWRR` -- interleaved weighted round robin over a node's out-links;
* :class:`HelixDecider` (``"helix"``).

The MILP (peers.md 2.1, with T_i(k) -> f_j(k)), for servers j, links u -> v and L blocks:

* s_j integer in [0, L - 1]; b_{j,k} binary, k = 1..K_j; e_j = s_j + sum_k k b_{j,k} (a variable here,
  defined by an equality, so each link row has 4 terms, not K_i + 3); f_uv >= 0; d_uv binary;
* (1) sum_k b_{j,k} = 1; (2) e_j <= L; (3) inflow_j = outflow_j; (4) inflow_j <= sum_k f_j(k) b_{j,k};
* (5) source -> j only if s_j = 0: s_j <= L (1 - d); j -> sink only if e_j = L: L d <= e_j; i -> j only
  if e_i = s_j: L d <= L + s_j - e_i and L d <= L - s_j + e_i;
* (6) f_uv <= U d_uv with U = sum_j max_k f_j(k) = sum_j f_j(1) (a big M: petalgym's links, relayed by
  the client, have no bandwidth);
* objective: maximise sum_j f_{source,j} (solved as minimising its negative, so that both solvers
  report a lower bound of a minimisation, as in :mod:`petalgym.baselines.milp`).

Solver practice. The solver stops at ``gap_rel`` (0.005, Helix's "0.995 x UB" rule only roughly) or at
``time_limit_s``, keeping its incumbent. It is warm-started (HiGHS ``setSolution``, CBC ``warmStart``)
from PETALS' placement, as Helix does, or from :func:`greedy_pipelines` when that carries more flow:
PETALS' spans seldom meet at exact block boundaries, so in petalgym its flow is often 0. The faithful
model's LP bound is very weak (the big M and the one-hot b let the relaxation give every server
f_j(1)), so beyond ~10 servers the solver rarely proves anything or improves on a good start within a
minute (``benchmarks/helix_milp.py``); ``cuts=True`` adds two valid inequalities (tighter link caps,
Helix's UB as a row), which bound the gap by Helix's own UB without changing the optimum.
``max_out_links`` prunes candidate links (:func:`prune_links`), Helix's answer to model size.

Solver failures raise :class:`~petalgym.errors.SolverError` with one line, never a PuLP traceback.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pulp

from petalgym.baselines.milp import SOLVERS, SolverOptions, run_solver
from petalgym.deciders import Decider, Route, checked_number, whole_number
from petalgym.errors import DeciderError, PetalgymError, SolverError
from petalgym.perfmodel import Chain, Hop, Placement, remaining_lengths, session_capacity
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import Request, SwarmView

__all__ = [
    "IWRR",
    "MASK_SHARE",
    "SINK",
    "SOLVERS",
    "SOURCE",
    "FlowGraph",
    "HelixDecider",
    "HelixPlan",
    "greedy_pipelines",
    "helix_placement",
    "placement_max_flow",
    "prune_links",
    "session_capacity_tables",
    "solve_helix_milp",
]

#: Node ids of the flow graph's source (the coordinator, i.e. every client) and sink.
SOURCE: int = -1
SINK: int = -2
#: Helix's small-link rule: an out-link carrying less than this share of its node's out-flow is masked.
MASK_SHARE: float = 0.05


# --------------------------------------------------------------------------------------------------
# Capacities and max flow
# --------------------------------------------------------------------------------------------------
def session_capacity_tables(scenario: Scenario) -> list[list[int]]:
    """Per server j, ``[f_j(1), ..., f_j(K_j)]``: sessions j can hold when each passes all of its k blocks,
    f_j(k) = floor((M_j - s_m k) / (s_c k)) with s_c = one block's KV cache at the workload's longest
    session (``workload.max_tokens``); K_j = max{k <= min(L, max_blocks_j): f_j(k) >= 1} (= the
    scenario's :func:`~petalgym.scenario.max_blocks_on`). A table may be empty (K_j = 0)."""
    model = scenario.model
    tokens = scenario.workload.max_tokens
    s_c = model.kv_bytes_per_block(tokens)
    if s_c <= 0:
        raise SolverError(
            f"helix: the model's KV cache per block is {s_c} B at {tokens} tokens, so session capacities "
            "f_j(k) are unbounded"
        )
    tables = []
    for spec in scenario.servers:
        table = []
        for k in range(1, max_blocks_on(scenario, spec, tokens) + 1):
            f = session_capacity(spec.profile.memory_bytes, k, model.block_bytes, s_c)
            if f < 1:
                break
            table.append(int(f))
        tables.append(table)
    return tables


@dataclass(frozen=True)
class FlowGraph:
    """A max flow over a placement, from block position ``start`` to L.

    ``value``: the flow (sessions); ``out``: node -> ((target, flow), ...) of its out-links with positive
    flow, targets in ascending server order (:data:`SINK` for the sink); nodes are :data:`SOURCE` and
    server ids. ``spans``: {server: (start, end)} of the servers in the graph; ``capacity``: their node
    capacities f_j(m_j)."""

    value: float
    out: dict[int, tuple[tuple[int, float], ...]]
    spans: dict[int, tuple[int, int]]
    capacity: dict[int, int]
    start: int = 0

    def link_flows(self) -> dict[tuple[int, int], float]:
        """{(u, v): flow} of every link with positive flow."""
        return {(u, v): f for u, links in self.out.items() for v, f in links}


def placement_max_flow(
    spans: Mapping[int, tuple[int, int]],
    capacity: Mapping[int, int],
    num_blocks: int,
    start: int = 0,
    links: Callable[[int, int], bool] | None = None,
) -> FlowGraph:
    """Max flow (networkx) of a placement: ``spans`` {server: (start, end)}, node capacities ``capacity``
    {server: sessions} (each server split into in -> out).

    Links: source -> j if j hosts block ``start`` (``start = 0``: j starts at 0, Helix's rule; a larger
    ``start`` is a recovery's suffix graph), i -> j if i ends exactly where j starts (exact-boundary links
    only, optionally filtered by ``links(i, j)``), j -> sink if j ends at L. Links have no capacity."""
    g = nx.DiGraph()
    g.add_node("S")
    g.add_node("T")
    servers = sorted(j for j, (_, e) in spans.items() if e > start and capacity.get(j, 0) > 0)
    by_start: dict[int, list[int]] = {}
    for j in servers:
        by_start.setdefault(spans[j][0], []).append(j)
    for j in servers:
        a, e = spans[j]
        g.add_edge(("in", j), ("out", j), capacity=int(capacity[j]))
        if a <= start < e:
            g.add_edge("S", ("in", j))
        if e == num_blocks:
            g.add_edge(("out", j), "T")
        for k in by_start.get(e, ()):
            if k != j and (links is None or links(j, k)):
                g.add_edge(("out", j), ("in", k))
    value, flow = nx.maximum_flow(g, "S", "T")
    out: dict[int, tuple[tuple[int, float], ...]] = {}
    if value > 0:
        for u, targets in flow.items():
            if u == "T" or (u != "S" and u[0] != "out"):
                continue
            node = SOURCE if u == "S" else u[1]
            pos = [(SINK if v == "T" else v[1], f) for v, f in targets.items() if f > 0]
            if pos:
                pos.sort(key=lambda t: (t[0] == SINK, t[0]))
                out[node] = tuple(pos)
    sub = {j: (int(spans[j][0]), int(spans[j][1])) for j in servers}
    return FlowGraph(value, out, sub, {j: int(capacity[j]) for j in servers}, start)


# --------------------------------------------------------------------------------------------------
# The placement MILP
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HelixPlan:
    """A solved placement MILP.

    ``placements``: one per server (all memory left is cache); ``flow``: the max flow of that placement
    by :func:`placement_max_flow` (sessions, the MILP's own links); ``objective``: the solver's incumbent
    value; ``bound``: its upper bound (None if unknown); ``gap``: (bound - objective) / bound;
    ``status``: "optimal" (within ``gap_rel``), "time-limit" (incumbent at the time limit) or "feasible";
    ``build_s`` / ``solve_s``: model build and solver wall seconds; ``variables`` / ``constraints`` /
    ``links``: model size (links: server -> server candidates); ``start_flow``: the warm start's flow
    (None: no start); ``info``: solver status, nodes, start method."""

    placements: tuple[Placement, ...]
    flow: float
    objective: float
    bound: float | None
    gap: float | None
    status: str
    solver: str
    build_s: float
    solve_s: float
    variables: int
    constraints: int
    links: int
    start_flow: float | None = None
    info: dict[str, object] = field(default_factory=dict)

    def spans(self) -> dict[int, tuple[int, int]]:
        """{server: (start, end)} of the plan."""
        return {j: (p.start, p.end) for j, p in enumerate(self.placements)}


def prune_links(
    capacities: Sequence[Sequence[int]], max_out_links: int, seed: int = 0
) -> set[tuple[int, int]]:
    """Helix's link pruning ("keep each node's N fastest links") with petalgym's links, which have no
    bandwidth: a link i -> j can carry at most min(f_i(1), f_j(1)) sessions, so each server keeps its
    ``max_out_links`` out-links of largest such capacity, ties broken by a random order (``seed``)."""
    n = len(capacities)
    top = [table[0] if table else 0 for table in capacities]
    tie = np.random.default_rng(seed).permutation(n)
    kept: set[tuple[int, int]] = set()
    for i in range(n):
        others = sorted((j for j in range(n) if j != i), key=lambda j: (-min(top[i], top[j]), tie[j]))
        kept.update((i, j) for j in others[:max_out_links])
    return kept


def _check_tables(capacities: Sequence[Sequence[int]], num_blocks: int) -> None:
    if num_blocks < 1 or not capacities:
        raise SolverError(f"helix: need >= 1 block and >= 1 server, got {num_blocks} and {len(capacities)}")
    for j, table in enumerate(capacities):
        if not table or any(int(f) < 1 for f in table):
            raise SolverError(
                f"helix: server {j} cannot hold one block with one session (f_j(k) = {list(table)}), but "
                "every server must hold >= 1 block (constraint 1)"
            )
        if any(int(b) > int(a) for a, b in itertools.pairwise(table)):
            raise SolverError(f"helix: server {j}: f_j(k) must not grow with k, got {list(table)}")
    total = sum(min(len(t), num_blocks) for t in capacities)
    if total < num_blocks:
        raise SolverError(
            f"helix: no placement carries any flow: the {len(capacities)} servers hold at most {total} of "
            f"the {num_blocks} blocks with one max-length session each (sum of K_j), so no chain covers "
            f"block {total}"
        )


def _start_values(
    capacities: Sequence[Sequence[int]],
    num_blocks: int,
    start: Sequence[tuple[int, int]],
    keep: Callable[[int, int], bool],
) -> tuple[dict[str, float], float]:
    """Values of every MILP variable for the placement ``start`` ((first block, blocks) per server) and
    its max flow, and that flow."""
    L = num_blocks
    spans = {j: (a, a + k) for j, (a, k) in enumerate(start)}
    cap = {j: int(capacities[j][k - 1]) for j, (_, k) in enumerate(start)}
    graph = placement_max_flow(spans, cap, L, 0, keep)
    flows = graph.link_flows()
    n = len(capacities)
    values: dict[str, float] = {}
    for j, (a, k) in enumerate(start):
        values[f"s_{j}"] = a
        values[f"e_{j}"] = a + k
        for kk in range(1, len(capacities[j]) + 1):
            values[f"b_{j}_{kk}"] = 1.0 if kk == k else 0.0
        values[f"f_S_{j}"] = flows.get((SOURCE, j), 0.0)
        values[f"d_S_{j}"] = 1.0 if a == 0 else 0.0
        values[f"f_{j}_T"] = flows.get((j, SINK), 0.0)
        values[f"d_{j}_T"] = 1.0 if a + k == L else 0.0
    for i in range(n):
        for j in range(n):
            if i != j and keep(i, j):
                values[f"f_{i}_{j}"] = flows.get((i, j), 0.0)
                values[f"d_{i}_{j}"] = 1.0 if spans[i][1] == spans[j][0] else 0.0
    return values, float(graph.value)


def solve_helix_milp(
    capacities: Sequence[Sequence[int]],
    num_blocks: int,
    *,
    time_limit_s: float = 60.0,
    gap_rel: float = 0.005,
    solver: str = "highs",
    start: Sequence[tuple[int, int]] | None = None,
    max_out_links: int | None = None,
    prune_seed: int = 0,
    threads: int = 1,
    presolve: bool | None = None,
    msg: bool = False,
    cuts: bool = False,
) -> HelixPlan:
    """Solve Helix's placement MILP (module docstring) for servers with session-capacity tables
    ``capacities[j] = [f_j(1), ..., f_j(K_j)]`` and ``num_blocks`` blocks.

    Args:
        capacities: per server, f_j(k) for k = 1..K_j (integers >= 1, non-increasing).
        num_blocks: L.
        time_limit_s: solver wall-clock limit in seconds (not counting the model build).
        gap_rel: relative optimality gap at which the solver stops (0.005 ~ Helix's "0.995 UB" rule).
        solver: "highs" (HiGHS through highspy) or "cbc" (PuLP's CBC).
        start: a warm start, (first block, blocks) per server; its max flow fills the flow variables.
        max_out_links: None: every ordered server pair is a candidate link; N: only each server's N
            best out-links (:func:`prune_links`), plus the links the warm start uses.
        prune_seed: tie-breaking seed of the pruning.
        threads: solver threads.
        presolve: the solver's presolve (None: its default).
        msg: print the solver's log.
        cuts: add two valid inequalities that cut off no placement and leave the optimum unchanged, but
            tighten the LP bound: link caps min(f_i(1), f_j(1)) instead of U, and Helix's upper bound
            L x flow <= sum_j sum_k k f_j(k) b_{j,k} (each session passes L blocks; server j offers at
            most k_j f_j(k_j) block-sessions). False: the faithful model.

    Returns a :class:`HelixPlan`. Raises :class:`SolverError` (one line) for an infeasible input (a server
    that cannot hold one block, or servers that cannot cover the L blocks), an unknown or missing solver,
    a time limit without incumbent, or a solution that carries no flow.
    """
    t0 = time.perf_counter()
    name = str(solver).lower()
    if name not in SOLVERS:
        raise SolverError(f"helix: unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
    tl = checked_number("helix", "time_limit_s", time_limit_s, error=SolverError)
    checked_number("helix", "gap_rel", gap_rel, high=1.0, low_open=False, error=SolverError)
    _check_tables(capacities, num_blocks)
    L, n = int(num_blocks), len(capacities)
    tables = [[int(f) for f in t[: min(len(t), L)]] for t in capacities]
    if max_out_links is None:
        keep: Callable[[int, int], bool] = lambda i, j: True  # noqa: E731
    else:
        whole_number("helix", "max_out_links", max_out_links, error=SolverError)
        kept = prune_links(tables, int(max_out_links), prune_seed)
        if start is not None:  # the warm start's own links stay, so that it keeps its flow
            ends: dict[int, list[int]] = {}
            for i, (a, k) in enumerate(start):
                ends.setdefault(int(a) + int(k), []).append(i)
            for j, (a, _) in enumerate(start):
                kept.update((i, j) for i in ends.get(int(a), ()) if i != j)
        keep = lambda i, j: (i, j) in kept  # noqa: E731

    big_u = sum(t[0] for t in tables)
    prob = pulp.LpProblem("helix", pulp.LpMinimize)
    add = prob.add_variable
    s = [add(f"s_{j}", 0, L - 1, pulp.LpInteger) for j in range(n)]
    e = [add(f"e_{j}", 1, L, pulp.LpContinuous) for j in range(n)]  # integral through its equality
    b = [[add(f"b_{j}_{k}", 0, 1, pulp.LpBinary) for k in range(1, len(tables[j]) + 1)] for j in range(n)]
    f_src = [add(f"f_S_{j}", 0, None, pulp.LpContinuous) for j in range(n)]
    d_src = [add(f"d_S_{j}", 0, 1, pulp.LpBinary) for j in range(n)]
    f_snk = [add(f"f_{j}_T", 0, None, pulp.LpContinuous) for j in range(n)]
    d_snk = [add(f"d_{j}_T", 0, 1, pulp.LpBinary) for j in range(n)]
    f_in: list[list[pulp.LpVariable]] = [[] for _ in range(n)]
    f_out: list[list[pulp.LpVariable]] = [[] for _ in range(n)]
    rows: list[tuple[list, int, str, float]] = []
    num_links = 0
    for i in range(n):
        for j in range(n):
            if i == j or not keep(i, j):
                continue
            num_links += 1
            fv = add(f"f_{i}_{j}", 0, None, pulp.LpContinuous)
            dv = add(f"d_{i}_{j}", 0, 1, pulp.LpBinary)
            f_out[i].append(fv)
            f_in[j].append(fv)
            # (5) L d <= L + s_j - e_i and L d <= L - s_j + e_i; (6) f <= U d
            rows.append(([(dv, L), (s[j], -1), (e[i], 1)], pulp.LpConstraintLE, f"va_{i}_{j}", L))
            rows.append(([(dv, L), (s[j], 1), (e[i], -1)], pulp.LpConstraintLE, f"vb_{i}_{j}", L))
            cap_ij = min(tables[i][0], tables[j][0]) if cuts else big_u
            rows.append(([(fv, 1), (dv, -cap_ij)], pulp.LpConstraintLE, f"link_{i}_{j}", 0))
    for j in range(n):
        ks = range(1, len(tables[j]) + 1)
        rows.append(([(v, 1) for v in b[j]], pulp.LpConstraintEQ, f"one_{j}", 1))  # (1)
        # e_j = s_j + sum_k k b_jk; (2) e_j <= L is its upper bound
        rows.append(
            (
                [(e[j], 1), (s[j], -1)] + [(v, -k) for v, k in zip(b[j], ks, strict=True)],
                pulp.LpConstraintEQ,
                f"end_{j}",
                0,
            )
        )
        inflow = [(f_src[j], 1)] + [(v, 1) for v in f_in[j]]
        outflow = [(f_snk[j], -1)] + [(v, -1) for v in f_out[j]]
        rows.append((inflow + outflow, pulp.LpConstraintEQ, f"flow_{j}", 0))  # (3)
        cap = [(v, -f) for v, f in zip(b[j], tables[j], strict=True)]
        rows.append((inflow + cap, pulp.LpConstraintLE, f"cap_{j}", 0))  # (4)
        rows.append(([(s[j], 1), (d_src[j], L)], pulp.LpConstraintLE, f"vs_{j}", L))  # (5) source
        rows.append(([(d_snk[j], L), (e[j], -1)], pulp.LpConstraintLE, f"vt_{j}", 0))  # (5) sink
        rows.append(([(f_src[j], 1), (d_src[j], -big_u)], pulp.LpConstraintLE, f"link_S_{j}", 0))  # (6)
        rows.append(([(f_snk[j], 1), (d_snk[j], -big_u)], pulp.LpConstraintLE, f"link_{j}_T", 0))
    if cuts:
        ub_terms = [(v, L) for v in f_src]
        for j in range(n):
            ub_terms += [(v, -k * f) for k, (v, f) in enumerate(zip(b[j], tables[j], strict=True), 1)]
        rows.append((ub_terms, pulp.LpConstraintLE, "ub", 0))
    for terms, sense, label, rhs in rows:
        prob += pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, label, rhs)
    prob += pulp.LpAffineExpression([(v, -1) for v in f_src])
    t1 = time.perf_counter()
    start_values, start_flow = None, None
    if start is not None:
        if len(start) != n or any(
            not (1 <= k <= len(tables[j]) and 0 <= a <= L - k) for j, (a, k) in enumerate(start)
        ):
            raise SolverError(f"helix: the warm start {list(start)!r} is not a placement of these servers")
        start_values, start_flow = _start_values(tables, L, [(int(a), int(k)) for a, k in start], keep)
    t2 = time.perf_counter()
    opts = SolverOptions(name, float(tl), msg, threads, float(gap_rel), 1e-6, presolve, start_values)
    try:
        out = run_solver(prob, opts)
    except SolverError as exc:
        raise SolverError(str(exc).replace("milp:", "helix:", 1)) from None
    t3 = time.perf_counter()
    status = out.detail.get("model_status")
    if not out.solved:
        if out.infeasible:
            raise SolverError(f"helix: the placement MILP is infeasible ({name}, status {status})")
        if out.time_limit_hit:
            raise SolverError(f"helix: {name} found no placement within {tl:g} s ({n} servers)")
        raise SolverError(f"helix: {name} returned no placement (status {status})")
    placements = []
    for j in range(n):
        chosen = [k for k, v in enumerate(b[j], 1) if (v.varValue or 0.0) > 0.5]
        a = s[j].varValue
        if len(chosen) != 1 or a is None:
            raise SolverError(f"helix: server {j} got {len(chosen)} block counts from {name}, expected 1")
        a = round(a)
        k = chosen[0]
        if not 0 <= a <= L - k:
            raise SolverError(f"helix: server {j} got the span [{a}, {a + k}) from {name}, outside 0..{L}")
        placements.append(Placement(int(a), int(k)))
    spans = {j: (p.start, p.end) for j, p in enumerate(placements)}
    caps = {j: tables[j][p.num_blocks - 1] for j, p in enumerate(placements)}
    value = placement_max_flow(spans, caps, L, 0, keep).value
    objective = -float(out.objective) if out.objective is not None else float(value)
    if objective > value + 1e-6 * max(1.0, value):
        raise SolverError(
            f"helix: {name} reports a flow of {objective:g} sessions, but its placement carries {value:g}"
        )
    if value <= 0:
        hint = "" if max_out_links is None else f"; max_out_links={max_out_links} may prune too many links"
        raise SolverError(
            f"helix: no placement carries any flow: {name} returned a placement with max flow 0 "
            f"(status {status}{hint})"
        )
    bound = None if out.bound is None else max(-float(out.bound), float(value))
    gap = None if bound is None or bound <= 0 else max(0.0, (bound - float(value)) / bound)
    plan_status = "optimal" if out.optimal else ("time-limit" if out.time_limit_hit else "feasible")
    return HelixPlan(
        placements=tuple(placements),
        flow=float(value),
        objective=objective,
        bound=bound,
        gap=gap,
        status=plan_status,
        solver=name,
        build_s=t1 - t0,
        solve_s=t3 - t2,
        variables=len(prob.variables()),
        constraints=prob.numConstraints(),
        links=num_links,
        start_flow=start_flow,
        info={"model_status": status, "nodes": out.detail.get("nodes"), "start_s": t2 - t1},
    )


def greedy_pipelines(capacities: Sequence[Sequence[int]], num_blocks: int) -> list[tuple[int, int]]:
    """A simple placement ((first block, blocks) per server) for the warm start: one pipeline of stages,
    each stage one server, for the largest target flow F such that the servers, each taking the most
    blocks k with f_j(k) >= F, cover the L blocks (bisection on F); the stages are laid end to end from
    block 0 (the last one cut at L). Each server left over then joins, on the same span, the stage of
    least capacity it can hold (so links stay at exact boundaries); a server that fits no stage holds
    block 0 alone. The pipeline carries the least stage capacity."""
    L = num_blocks
    n = len(capacities)

    def lengths(target: int) -> list[int]:
        return [sum(1 for f in t[:L] if f >= target) for t in capacities]

    lo, hi = 1, max(t[0] for t in capacities)
    if sum(lengths(lo)) < L:
        return [(0, 1)] * n
    while lo < hi:  # the largest F with sum_j len_j(F) >= L
        mid = (lo + hi + 1) // 2
        if sum(lengths(mid)) >= L:
            lo = mid
        else:
            hi = mid - 1
    ell = lengths(lo)
    out: list[tuple[int, int] | None] = [None] * n
    stages: list[tuple[int, int, list[int]]] = []  # (start, blocks, servers)
    pos = 0
    for j in sorted(range(n), key=lambda j: (-ell[j], j)):
        if pos >= L or ell[j] == 0:
            break
        k = min(ell[j], L - pos)
        stages.append((pos, k, [j]))
        out[j] = (pos, k)
        pos += k
    for j in range(n):
        if out[j] is not None:
            continue
        fit = [st for st in stages if st[1] <= len(capacities[j])]
        if not fit:
            out[j] = (0, 1)
            continue
        a, k, members = min(fit, key=lambda st: (sum(capacities[m][st[1] - 1] for m in st[2]), st[0]))
        members.append(j)
        out[j] = (a, k)
    return [p if p is not None else (0, 1) for p in out]


def _petals_start(scenario: Scenario, tables: Sequence[Sequence[int]]) -> list[tuple[int, int]] | None:
    """PETALS' placement (every server joining in seed 0's order, :mod:`petalgym.baselines.petals`), each
    span cut to K_j blocks; None if PETALS cannot place some server."""
    from petalgym.baselines.offline_solve import petals_offline_placement

    try:
        servers = petals_offline_placement(scenario, 0)
    except PetalgymError:
        return None
    L = scenario.num_blocks
    out = []
    for j, st in enumerate(servers):
        k = max(1, min(st.num_blocks, len(tables[j])))
        out.append((min(max(st.start, 0), L - k), k))
    return out


def helix_placement(
    scenario: Scenario,
    *,
    time_limit_s: float = 60.0,
    gap_rel: float = 0.005,
    solver: str = "highs",
    warm_start: bool = True,
    max_out_links: int | None = None,
    threads: int = 1,
    presolve: bool | None = None,
    msg: bool = False,
    cuts: bool = False,
) -> HelixPlan:
    """Helix's placement MILP for ``scenario`` (:func:`solve_helix_milp` on
    :func:`session_capacity_tables`). ``warm_start``: start from PETALS' placement (spans cut to K_j
    blocks), or from :func:`greedy_pipelines` if that carries more flow (``info["start"]`` says which).
    Other arguments as in :func:`solve_helix_milp`."""
    tables = session_capacity_tables(scenario)
    L = scenario.num_blocks
    _check_tables(tables, L)
    start, method = None, None
    if warm_start:

        def flow_of(p: Sequence[tuple[int, int]]) -> float:  # (pruning keeps the start's links)
            spans = {j: (a, a + k) for j, (a, k) in enumerate(p)}
            return placement_max_flow(spans, {j: tables[j][k - 1] for j, (_, k) in enumerate(p)}, L).value

        candidates = [("petals", _petals_start(scenario, tables)), ("greedy", greedy_pipelines(tables, L))]
        best = -1.0
        for label, p in candidates:
            if p is not None and (v := flow_of(p)) > best:
                start, method, best = p, label, v
    plan = solve_helix_milp(
        tables,
        L,
        time_limit_s=time_limit_s,
        gap_rel=gap_rel,
        solver=solver,
        start=start,
        max_out_links=max_out_links,
        threads=threads,
        presolve=presolve,
        msg=msg,
        cuts=cuts,
    )
    plan.info["start"] = method
    return plan


# --------------------------------------------------------------------------------------------------
# IWRR
# --------------------------------------------------------------------------------------------------
class IWRR:
    """Helix's interleaved weighted round robin over one node's out-links.

    ``targets`` (ascending) with flows ``flows`` (> 0) as capacities; loads start at 0. :meth:`choose`
    returns the index minimising load + w / flow over the unmasked links (a strict < keeps the lower
    index on ties); :meth:`charge` adds w / flow to a load. Links with flow < ``share`` x the node's total
    out-flow are always masked (Helix's 5 % rule)."""

    __slots__ = ("flows", "loads", "small", "targets")

    def __init__(self, targets: Sequence[int], flows: Sequence[float], share: float = MASK_SHARE):
        self.targets = tuple(targets)
        self.flows = tuple(float(f) for f in flows)
        total = sum(self.flows)
        self.small = tuple(f < share * total for f in self.flows)
        self.loads = [0.0] * len(self.targets)

    def choose(self, w: float, allowed: Callable[[int], bool] | None = None) -> int | None:
        """Index of the link a request of workload ``w`` takes (loads unchanged); None if every link is
        masked (by the share rule or by ``allowed(target)``)."""
        best, best_value = None, math.inf
        for i, t in enumerate(self.targets):
            if self.small[i] or (allowed is not None and not allowed(t)):
                continue
            value = self.loads[i] + w / self.flows[i]
            if value < best_value:
                best, best_value = i, value
        return best

    def charge(self, index: int, w: float) -> None:
        """Add a request of workload ``w`` to link ``index``."""
        self.loads[index] += w / self.flows[index]

    def choose_one(self, w: float, allowed: Callable[[int], bool] | None = None) -> int | None:
        """:meth:`choose`, then :meth:`charge` the chosen link (Helix's choose_one); returns its target."""
        i = self.choose(w, allowed)
        if i is None:
            return None
        self.charge(i, w)
        return self.targets[i]


class _Scheduler:
    """A :class:`FlowGraph` and one :class:`IWRR` per node with out-flow."""

    __slots__ = ("graph", "iwrr")

    def __init__(self, graph: FlowGraph, share: float):
        self.graph = graph
        self.iwrr = {
            node: IWRR([t for t, _ in links], [f for _, f in links], share)
            for node, links in graph.out.items()
        }


# --------------------------------------------------------------------------------------------------
# Decider
# --------------------------------------------------------------------------------------------------
class HelixDecider(Decider):
    """Helix: placement by the max-flow MILP, per-request scheduling by IWRR over a max flow of the
    actual placement (peers.md section 2).

    Follows the source in: constraints 1-6 and the max-flow objective of the placement MILP, links only
    at exact block boundaries, warm start from PETALS' placement, stop at ``gap_rel`` (0.005) or the time
    limit; at routing time a networkx max flow of the actual placement with each server split into
    in -> out (capacity = its MILP throughput), one IWRR per node (the source included) with argmin
    load + w / f, strict < on ties, loads that only grow, the 5 % small-link mask and a KV-cache mask.

    Adapts to petalgym (peers.md 2.3):

    * capacity unit: concurrent sessions, not tokens/s (petalgym has no processor sharing; only KV
      memory limits concurrency): T_i(k) -> f_j(k) = floor((M_j - s_m k) / (s_c k)), s_c at the
      workload's longest session, K_j = max{k <= min(L, max_blocks_j): f_j(k) >= 1};
    * links: petalgym's client relays every hop, so every ordered server pair is a candidate link with
      a big-M capacity U = sum_j f_j(1), and source / sink links to every server; RTT is ignored, as in
      Helix's objective (no latency tie-break). ``max_out_links`` prunes candidate links by their
      session capacity, since petalgym links have no bandwidth (:func:`prune_links`); routing always
      uses every exact-boundary link of the actual placement;
    * one source for all clients (Helix's coordinator);
    * workload w = l_in + l_out (a recovery: the history to replay + the tokens left), charged once at
      routing: petalgym gives deciders no per-token events (Helix charges l_in, then 1 per token);
    * KV mask: the next hop must fit now (free cache >= its blocks x the request's s_c, counting
      reservations; Helix's high-water mark = 1), not Helix's expected-length rule;
    * a dead end (every candidate masked at some node): the walk charges nothing and the answer is the
      IWRR chain under the 5 % mask only, with ``wait=False``: the simulator backs off and asks again
      (Helix's "retry later"); that chain is charged only if it fits now;
    * churn, beyond Helix (its graph is static): the max flow and the IWRR loads are rebuilt on the
      ONLINE servers whenever the placement changes (``view.placement_version``); a rejoining server
      gets its planned span back; no rebalancing. A max-flow placement keeps no spare coverage (often
      one pipeline of single-server stages), so one departed server can cut every chain until it
      returns;
    * recoveries (``route_from`` = r > 0, kept hops upstream): a walk over the max flow of the suffix
      graph from block r (source -> every ONLINE server hosting block r, then exact-boundary links),
      with its own IWRR loads, cached per (placement version, r);
    * no chain in the flow graph (max flow 0, e.g. a coverage gap after churn): None, the request stalls.

    The plan is kept with the scenario (:meth:`~petalgym.scenario.Scenario.memo`, keyed by the arguments),
    so the seeds of one evaluation solve the MILP once.

    Args:
        solver: MILP solver, "highs" (HiGHS through highspy) or "cbc" (PuLP's bundled CBC).
        time_limit_s: solver wall-clock limit per MILP solve, seconds (> 0); the incumbent is used if it
            is reached (``self.plan.status == "time-limit"``, said by :meth:`describe`). Default 10 s:
            on 9-1000 servers (``benchmarks/helix_milp.py``) HiGHS did not improve on the warm start
            between 10 and 60 s, nor prove anything, so a longer default only costs time per scenario.
        gap_rel: relative optimality gap at which the solver stops, in [0, 1) (0.005 ~ Helix's stop at
            0.995 x the upper bound).
        warm_start: start the solver from PETALS' placement (or a greedy pipeline layout if that carries
            more flow).
        max_out_links: None (default): every ordered server pair is a candidate link; N >= 1: each
            server keeps its N out-links of largest session capacity (Helix's AE keeps 12).
        mask_share: the small-link mask: an out-link with flow < ``mask_share`` x its node's out-flow
            is never chosen (Helix: 0.05).
        cuts: add two valid inequalities to the MILP (tighter link caps, Helix's upper bound as a
            constraint): same optimum, a much tighter solver bound (:func:`solve_helix_milp`); False
            (default): the faithful model.
        threads: solver threads.
    """

    name = "helix"

    def __init__(
        self,
        solver: str = "highs",
        time_limit_s: float = 10.0,
        gap_rel: float = 0.005,
        *,
        warm_start: bool = True,
        max_out_links: int | None = None,
        mask_share: float = MASK_SHARE,
        cuts: bool = False,
        threads: int = 1,
    ):
        if str(solver).lower() not in SOLVERS:
            raise DeciderError(f"helix: unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
        tl = checked_number("helix", "time_limit_s", time_limit_s)
        checked_number("helix", "gap_rel", gap_rel, high=1.0, low_open=False)
        for label, flag in (("warm_start", warm_start), ("cuts", cuts)):
            if not isinstance(flag, bool):
                raise DeciderError(f"helix: {label} must be True or False, got {flag!r}")
        whole_number("helix", "max_out_links", max_out_links, optional=True)
        checked_number("helix", "mask_share", mask_share, high=1.0, low_open=False)
        whole_number("helix", "threads", threads)
        self.solver = str(solver).lower()
        self.time_limit_s = float(tl)
        self.gap_rel = float(gap_rel)
        self.warm_start = warm_start
        self.max_out_links = None if max_out_links is None else int(max_out_links)
        self.mask_share = float(mask_share)
        self.cuts = cuts
        self.threads = int(threads)
        self.plan: HelixPlan | None = None
        self._s_c = 0
        self._schedulers: dict[int, _Scheduler] = {}
        self._version = -1
        #: Routes answered, and how many of them hit a dead end (answered with the flow-only chain).
        self.routed = 0
        self.dead_ends = 0

    def check_scenario(self, scenario: Scenario) -> None:
        """Raise SolverError (one line naming the reason) if the MILP has no feasible placement on
        ``scenario`` (a server that holds no block with one session's cache, or fewer blocks in all than
        L), without solving it."""
        _check_tables(session_capacity_tables(scenario), scenario.num_blocks)

    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Solve (or fetch from the scenario's memo) the placement MILP; forget the flow graphs."""
        super().reset(scenario, rng)
        key = (
            "helix.plan",
            self.solver,
            self.time_limit_s,
            self.gap_rel,
            self.warm_start,
            self.max_out_links,
            self.cuts,
            self.threads,
        )
        self.plan = scenario.memo(
            key,
            lambda: helix_placement(
                scenario,
                time_limit_s=self.time_limit_s,
                gap_rel=self.gap_rel,
                solver=self.solver,
                warm_start=self.warm_start,
                max_out_links=self.max_out_links,
                cuts=self.cuts,
                threads=self.threads,
            ),
        )
        self._s_c = scenario.model.kv_bytes_per_block(scenario.workload.max_tokens)
        self._schedulers = {}
        self._version = -1
        self.routed = self.dead_ends = 0
        p = self.plan
        bound = "unknown" if p.bound is None else f"{p.bound:.6g}"
        self.note = (
            ""
            if p.status == "optimal"
            else f"helix MILP {p.status}: flow {p.flow:g} sessions, solver bound {bound}"
        )

    def place(self, view: SwarmView, server: int) -> Placement:
        """The server's planned span (the same one when it rejoins); all memory left is cache."""
        if self.plan is None:
            raise DeciderError("helix: place() called before reset()")
        return self.plan.placements[server]

    def scheduler(self, view: SwarmView, start: int = 0) -> _Scheduler:
        """The max flow and IWRR state from block ``start`` on the ONLINE servers (rebuilt when the
        placement changes)."""
        if self._version != view.placement_version:
            self._schedulers.clear()
            self._version = view.placement_version
        sched = self._schedulers.get(start)
        if sched is None:
            spans = view.span_map()
            s_c = self._s_c
            cap = {}
            for j, (a, e) in spans.items():
                cap[j] = view.servers[j].cache_capacity // (s_c * (e - a))
            graph = placement_max_flow(spans, cap, view.num_blocks, start)
            sched = self._schedulers[start] = _Scheduler(graph, self.mask_share)
        return sched

    def _walk(
        self, sched: _Scheduler, view: SwarmView, w: float, kv: int, masked: bool
    ) -> tuple[Chain | None, list[tuple[IWRR, int]]]:
        """The IWRR walk from the source to the sink (no load charged): (hops, picks), or (None, picks) at
        a dead end. ``masked``: also mask a next hop that does not fit now."""
        graph = sched.graph
        servers = view.servers
        pos = graph.start
        node = SOURCE
        hops: list[Hop] = []
        picks: list[tuple[IWRR, int]] = []

        def fits(t: int) -> bool:
            if t == SINK:
                return True
            return servers[t].unreserved_bytes >= (graph.spans[t][1] - pos) * kv

        while True:
            iw = sched.iwrr.get(node)
            if iw is None:
                return None, picks
            i = iw.choose(w, fits if masked else None)
            if i is None:
                return None, picks
            picks.append((iw, i))
            t = iw.targets[i]
            if t == SINK:
                return tuple(hops), picks
            end = graph.spans[t][1]
            hops.append(Hop(t, pos, end))
            pos, node = end, t

    def route(self, view: SwarmView, request: Request) -> Route | None:
        if self.plan is None:
            raise DeciderError("helix: route() called before reset()")
        sched = self.scheduler(view, request.route_from)
        if sched.graph.value <= 0:
            return None
        l_in, l_out = remaining_lengths(request)
        w = float(l_in + l_out)
        kv = request.kv_bytes
        self.routed += 1
        hops, picks = self._walk(sched, view, w, kv, masked=True)
        if hops is None:
            self.dead_ends += 1
            hops, picks = self._walk(sched, view, w, kv, masked=False)
            if hops is None:  # cannot happen: every node with in-flow has an unmasked out-link
                return None
            servers = view.servers
            if any(servers[h.server].unreserved_bytes < h.blocks * kv for h in hops):
                return Route(hops, wait=False)
        for iw, i in picks:
            iw.charge(i, w)
        return Route(hops, wait=False)

    def describe(self) -> str:
        text = f"helix (solver={self.solver}, time limit {self.time_limit_s:g} s, gap {self.gap_rel:g})"
        return f"{text}: {self.note}" if self.note else text
