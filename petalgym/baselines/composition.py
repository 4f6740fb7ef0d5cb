"""Server chain composition (arXiv 2604.14993, the paper's successor): GBP-CR placement, GCA capacity
allocation and dispatch of whole jobs from client-side queues (JFFC and the policies it is compared with).

Specification: peers.md section 1 (restated from the authors' summary of the MobiHoc'26 version and
their Python testbed code). Blocks are 0-based here; sizes bytes, times seconds.

* :func:`server_costs` -- tau_c[j] = tI_cj + (l_out - 1) t_cj and tau_p[j] = tauI_j(l_in) + (l_out - 1)
  tau_j at the workload's mean lengths (petalgym's hop costs: a chain's job time T_k is petalgym's T_c(p)
  without the initial delay), the per-block cache s_c at the workload's longest session and the slots;
* :func:`gbp_cr` -- Algorithm 1 (greedy block placement with cache reservation for ``c`` jobs);
* :func:`gca` -- Algorithm 2 (greedy cache allocation: fastest chain first, capacity = its bottleneck);
* :func:`choose_cache_jobs` -- the design parameter c* minimising Theorem 4's lower bound (the default of
  the authors' code) or the surrogate c K(c);
* :func:`select_chain` -- JFFC, JSQ, SA-JSQ, SED and JIQ as the experiment simulator defines them;
* :class:`ChainCompositionDecider` -- the whole plan as a decider (``gbp-cr-jffc``, ``gbp-cr-jsq``,
  ``gbp-cr-sed``, ``gbp-cr-sa-jsq``, ``gbp-cr-jiq``, and ``jffc-only``: the whole model on every server
  that holds it, the successor's "JFFC only" ablation).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import networkx as nx
import numpy as np

from petalgym.deciders import Decider, Enqueue, Route, checked_number, whole_number
from petalgym.design import arrival_rate, workload_lengths
from petalgym.errors import DeciderError, SolverError
from petalgym.perfmodel import (
    Chain,
    Hop,
    Placement,
    TimeModel,
    cache_slots,
    route_key,
    session_capacity,
    shortest_chain,
)
from petalgym.queueing import chain_response_bounds
from petalgym.scenario import Scenario
from petalgym.swarm import Request, ServerStatus, SwarmView

__all__ = [
    "DISPATCH_POLICIES",
    "ChainCompositionDecider",
    "ComposedChain",
    "GBPCRResult",
    "ServerCosts",
    "choose_cache_jobs",
    "gbp_cr",
    "gca",
    "jffc",
    "jffc_only",
    "jiq",
    "jsq",
    "sa_jsq",
    "sed",
    "select_chain",
    "server_costs",
]

#: Dispatch policies: JFFC queues centrally; the others bind a job to one chain's FCFS queue on arrival.
DISPATCH_POLICIES = ("jffc", "jsq", "sa-jsq", "sed", "jiq")


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerCosts:
    """What GBP-CR and GCA read from a scenario, per server j.

    ``memory`` M_j (B); ``max_blocks`` the GPU's block cap (L if none); ``comm`` tau_c[j] (s per job);
    ``compute`` tau_p[j] (s per block per job); ``block_bytes`` s_m; ``cache_bytes`` s_c (B per block per
    job, at the longest session); ``num_blocks`` L.
    """

    memory: tuple[int, ...]
    max_blocks: tuple[int, ...]
    comm: tuple[float, ...]
    compute: tuple[float, ...]
    block_bytes: int
    cache_bytes: int
    num_blocks: int

    @property
    def num_servers(self) -> int:
        return len(self.memory)

    @functools.cached_property
    def comm_array(self) -> np.ndarray:
        """tau_c as an array (s per job)."""
        return np.array(self.comm, dtype=float)

    @functools.cached_property
    def compute_array(self) -> np.ndarray:
        """tau_p as an array (s per block per job)."""
        return np.array(self.compute, dtype=float)

    @functools.cached_property
    def _memory_and_caps(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.memory, dtype=np.int64), np.array(self.max_blocks, dtype=np.int64)

    def block_counts(self, cache_jobs: int) -> np.ndarray:
        """m_j(c) = min(floor(M_j / (s_m + s_c c)), cap_j) for every server (int array): CG-BPRR's
        :func:`~petalgym.perfmodel.conservative_num_blocks` with |R| = c, vectorised over servers because
        the search for c* evaluates it for every c up to c_max (thousands)."""
        memory, caps = self._memory_and_caps
        return np.minimum(memory // (self.block_bytes + self.cache_bytes * int(cache_jobs)), caps)

    def slots(self, server: int, num_blocks: int) -> int:
        """Mtilde_j = floor((M_j - s_m m_j) / s_c): block-job cache slots left after ``num_blocks``."""
        return cache_slots(self.memory[server], num_blocks, self.block_bytes, self.cache_bytes)


def server_costs(scenario: Scenario, client: int | None = None) -> ServerCosts:
    """The scenario's :class:`ServerCosts` at the workload's mean lengths; tau_c for ``client``, or the
    client-weighted mean over clients when None (the source has one orchestrator; several clients are an
    adaptation)."""
    l_in, l_out = workload_lengths(scenario)
    tm = scenario.memo("TimeModel", lambda: TimeModel(scenario))
    clients = range(scenario.num_clients) if client is None else [client]
    weights = np.array([scenario.clients[c].weight for c in clients], dtype=float)
    fixed = np.array([tm.hop_costs(c, l_in, l_out)[0] for c in clients])
    comm = weights @ fixed / weights.sum()
    compute = tm.hop_costs(0, l_in, l_out)[1]
    model = scenario.model
    L = model.num_blocks
    return ServerCosts(
        memory=tuple(int(s.profile.memory_bytes) for s in scenario.servers),
        max_blocks=tuple(
            L if s.profile.max_blocks is None else min(L, int(s.profile.max_blocks)) for s in scenario.servers
        ),
        comm=tuple(float(x) for x in comm),
        compute=tuple(float(x) for x in compute),
        block_bytes=int(model.block_bytes),
        cache_bytes=int(model.kv_bytes_per_block(scenario.workload.max_tokens)),
        num_blocks=L,
    )


# --------------------------------------------------------------------------------------------------
# Algorithm 1: GBP-CR
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GBPCRResult:
    """A GBP-CR placement for cache reservation ``cache_jobs`` (c).

    ``num_blocks`` m_j(c) per server (0: dropped); ``starts`` first block (0-based) of each placed server,
    None if it gets no blocks; ``order`` the servers by amortised time; ``chains`` the complete chains
    (server ids in block order) and ``chain_times`` their job times T (s); ``rate`` nu = sum 1 / T (1/s).
    """

    cache_jobs: int
    num_blocks: tuple[int, ...]
    starts: tuple[int | None, ...]
    order: tuple[int, ...]
    chains: tuple[tuple[int, ...], ...]
    chain_times: tuple[float, ...]
    rate: float

    @property
    def placed(self) -> tuple[int, ...]:
        """Servers that hold blocks (complete chains and the trailing incomplete one)."""
        return tuple(j for j, a in enumerate(self.starts) if a is not None)


def gbp_cr(costs: ServerCosts, cache_jobs: int, arrival_rate: float, target_load: float = 0.7) -> GBPCRResult:
    """Algorithm 1: m_j(c) = min(floor(M_j / (s_m + s_c c)), L, cap_j); servers by t_j / m_j increasing
    (t_j = tau_c[j] + tau_p[j] m_j, stable); chains filled in that order from block 0, the last server of
    a chain shifted back to keep all its blocks; stop once nu >= lambda / (target_load c). Servers left
    over get no blocks; the servers of a trailing incomplete chain keep their ranges.

    Args:
        costs: the servers (:func:`server_costs`).
        cache_jobs: c, the jobs each hosted block reserves cache for (>= 1).
        arrival_rate: lambda (requests/s).
        target_load: rho_bar, the load the chains are sized for (0.7 in the source).

    Raises SolverError if not even one complete chain can be formed.
    """
    c = int(cache_jobs)
    L = costs.num_blocks
    m_arr = costs.block_counts(c)
    usable = np.flatnonzero(m_arr > 0)
    t_arr = costs.comm_array + costs.compute_array * m_arr
    order = usable[np.argsort(t_arr[usable] / m_arr[usable], kind="stable")].tolist()
    m, t = m_arr.tolist(), t_arr.tolist()
    starts: list[int | None] = [None] * costs.num_servers
    chains: list[tuple[int, ...]] = []
    times: list[float] = []
    rate = 0.0
    a, total, current = 0, 0.0, []
    goal = arrival_rate / (target_load * c)
    for j in order:
        starts[j] = min(a, L - m[j])
        total += t[j]
        current.append(j)
        a = min(a + m[j], L)
        if a >= L:
            chains.append(tuple(current))
            times.append(total)
            rate += 1.0 / total
            if rate >= goal:
                break
            a, total, current = 0, 0.0, []
    if not chains:
        have = int(m_arr.sum())
        raise SolverError(
            f"GBP-CR infeasible for c={c}: the servers hold {have} blocks reserving cache for {c} jobs, "
            f"fewer than one chain of L={L}"
        )
    return GBPCRResult(
        c, tuple(int(x) for x in m), tuple(starts), tuple(order), tuple(chains), tuple(times), rate
    )


# --------------------------------------------------------------------------------------------------
# Algorithm 2: GCA
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComposedChain:
    """A chain of the plan: its ``hops`` (petalgym hops, blocks [start, end) processed per server), its
    ``capacity`` c_k (concurrent jobs) and ``time`` T_k (s per job)."""

    hops: Chain
    capacity: int
    time: float

    @property
    def rate(self) -> float:
        """mu_k = 1 / T_k (jobs/s per concurrent job)."""
        return 1.0 / self.time

    @property
    def servers(self) -> tuple[int, ...]:
        return tuple(h.server for h in self.hops)


def gca(
    costs: ServerCosts, starts: tuple[int | None, ...], num_blocks: tuple[int, ...]
) -> list[ComposedChain]:
    """Algorithm 2 on a placement: hops i -> j wherever j hosts block e_i (the block after i's range),
    weighted tau_c[j] + tau_p[j] m_ij; repeatedly take the shortest source-sink path (Dijkstra), give it
    capacity min_j floor(Mtilde_j / m_ij), charge m_ij c_k slots on each of its servers and drop the hops
    that no longer fit. Chains come out fastest first.

    Args:
        costs: the servers (:func:`server_costs`).
        starts: first block of each server, None for servers without blocks.
        num_blocks: blocks m_j of each server.
    """
    L = costs.num_blocks
    placed = [j for j, a in enumerate(starts) if a is not None]
    span = {j: (int(starts[j]), int(starts[j]) + int(num_blocks[j])) for j in placed}  # type: ignore[arg-type]
    slots = {j: costs.slots(j, num_blocks[j]) for j in placed}
    graph = nx.DiGraph()
    source, sink = "source", "sink"
    graph.add_node(source)
    graph.add_node(sink)

    def cost(j: int, blocks: int) -> float:
        return costs.comm[j] + costs.compute[j] * blocks

    for j in placed:
        a, e = span[j]
        if a == 0 and slots[j] >= e:
            graph.add_edge(source, j, weight=cost(j, e), blocks=e)
        if e == L:
            graph.add_edge(j, sink, weight=0.0, blocks=0)
    for i in placed:
        entry = span[i][1]
        if entry >= L:
            continue
        for j in placed:
            a, e = span[j]
            if a <= entry < e and slots[j] >= e - entry:
                graph.add_edge(i, j, weight=cost(j, e - entry), blocks=e - entry)
    chains: list[ComposedChain] = []
    while True:
        try:
            length, path = nx.single_source_dijkstra(graph, source, sink, weight="weight")
        except nx.NetworkXNoPath:
            break
        hops = []
        for u, v in itertools.pairwise(path[:-1]):
            blocks = graph.edges[u, v]["blocks"]
            end = span[v][1]
            hops.append(Hop(v, end - blocks, end))
        capacity = min(slots[h.server] // h.blocks for h in hops)
        for h in hops:
            slots[h.server] -= h.blocks * capacity
            for u in list(graph.predecessors(h.server)):
                if graph.edges[u, h.server]["blocks"] > slots[h.server]:
                    graph.remove_edge(u, h.server)
        chains.append(ComposedChain(tuple(hops), int(capacity), float(length)))
    return chains


# --------------------------------------------------------------------------------------------------
# The design parameter c
# --------------------------------------------------------------------------------------------------
def choose_cache_jobs(
    costs: ServerCosts, arrival_rate: float, target_load: float = 0.7, method: str = "theorem4-lower"
) -> tuple[int, GBPCRResult, list[ComposedChain]]:
    """c* over 1..c_max (c_max = floor((max M_j - s_m) / s_c)) and its plan: the c whose GBP-CR + GCA
    chains minimise Theorem 4's lower bound on the mean response time (``"theorem4-lower"``, the source
    code's default), or c K(c) (``"surrogate"``, Eq. 9). A c at which GBP-CR is infeasible, or the chains
    cannot carry lambda, is skipped; ties go to the smaller c.

    Raises SolverError if no c is feasible.
    """
    if method not in ("theorem4-lower", "surrogate"):
        raise DeciderError(f"cache_jobs_method must be 'theorem4-lower' or 'surrogate', got {method!r}")
    c_max = (max(costs.memory) - costs.block_bytes) // costs.cache_bytes
    best: tuple[float, int, GBPCRResult, list[ComposedChain]] | None = None
    seen: dict[tuple, tuple[list[ComposedChain], float]] = {}
    for c in range(1, int(c_max) + 1):
        if int(costs.block_counts(c).sum()) < costs.num_blocks:
            break  # m_j(c) only shrinks as c grows: no chain at any larger c either
        try:
            plan = gbp_cr(costs, c, arrival_rate, target_load)
        except SolverError:
            continue
        # GCA and the bound depend on the placement only (the slots do not depend on c), and long runs
        # of c give the same placement: each is allocated and scored once
        key = tuple((j, plan.starts[j], plan.num_blocks[j]) for j in plan.placed)
        if key not in seen:
            chains = gca(costs, plan.starts, plan.num_blocks)
            bound = math.inf
            if chains:
                bound = (
                    min(ch.time for ch in chains)
                    if arrival_rate <= 0
                    else chain_response_bounds(
                        [ch.rate for ch in chains], [ch.capacity for ch in chains], arrival_rate
                    )[0]
                )
            seen[key] = (chains, bound)
        chains, bound = seen[key]
        if not chains:
            continue
        score = float(c * len(plan.chains)) if method == "surrogate" else bound
        if not math.isfinite(score):
            continue
        if best is None or score < best[0]:
            best = (score, c, plan, chains)
    if best is None:
        raise SolverError(
            f"no cache reservation c in 1..{c_max} gives GBP-CR chains that carry lambda = "
            f"{arrival_rate:.4g} requests/s"
        )
    return best[1], best[2], best[3]


# --------------------------------------------------------------------------------------------------
# Dispatch (Algorithm 3 and the policies compared with it)
# --------------------------------------------------------------------------------------------------
def select_chain(
    policy: str,
    running: list[int],
    queued: list[int],
    capacity: list[int],
    rate: list[float],
    rng: np.random.Generator | None = None,
    active: list[bool] | None = None,
) -> tuple[int | None, bool]:
    """The chain a new job joins and whether it starts now: (k, True) start on chain k; (k, False) join
    chain k's FCFS queue; (None, False) join the central queue (JFFC, no chain free).

    ``running`` Z_k (jobs in service), ``queued`` jobs in chain k's own queue, ``capacity`` c_k, ``rate``
    mu_k; ``active`` False for chains that lost a server. As the experiment simulator defines them:
    JFFC the fastest free chain (ties: lower index); JSQ argmin max(0, Z_k - c_k + 1) / c_k (Z_k counting
    its queue) with a uniformly random tie; SA-JSQ the same, ties to the fastest; SED argmin 1 / mu_k +
    max(0, Z_k - c_k + 1) / (mu_k c_k), ties to the lower index; JIQ uniformly among free chains, else
    among all.
    """
    ks = [k for k in range(len(capacity)) if active is None or active[k]]
    if not ks:
        return None, False
    if policy == "jffc":
        free = [k for k in ks if running[k] < capacity[k]]
        if not free:
            return None, False
        return min(free, key=lambda k: (-rate[k], k)), True
    load = {k: running[k] + queued[k] for k in ks}
    if policy in ("jsq", "sa-jsq"):
        backlog = {k: max(0, load[k] - capacity[k] + 1) / capacity[k] for k in ks}
        low = min(backlog.values())
        tied = [k for k in ks if backlog[k] == low]
        if policy == "jsq":
            k = tied[int(rng.integers(len(tied)))] if len(tied) > 1 and rng is not None else tied[0]
        else:
            k = min(tied, key=lambda k: (-rate[k], k))
    elif policy == "sed":
        k = min(
            ks, key=lambda k: (1.0 / rate[k] + max(0, load[k] - capacity[k] + 1) / (rate[k] * capacity[k]), k)
        )
    elif policy == "jiq":
        free = [k for k in ks if load[k] < capacity[k]]
        pool = free or ks
        k = pool[int(rng.integers(len(pool)))] if len(pool) > 1 and rng is not None else pool[0]
    else:
        raise DeciderError(f"dispatch must be one of {', '.join(DISPATCH_POLICIES)}, got {policy!r}")
    return k, queued[k] == 0 and running[k] < capacity[k]


# --------------------------------------------------------------------------------------------------
# The decider
# --------------------------------------------------------------------------------------------------
class ChainCompositionDecider(Decider):
    """GBP-CR placement + GCA chains with capacities + a dispatcher over those chains (peers.md section 1).

    Follows the source: Algorithms 1-3 as specified, c* from Theorem 4's lower bound, rho_bar 0.7, the
    whole plan computed at reset() from the scenario (jobs are sized at the workload's mean lengths,
    cache at its longest session), place() answering from the plan; JFFC keeps one FIFO queue at the
    client and hands the head to a chain when one of its c_k places frees (the simulator's central-queue
    dispatch, :class:`~petalgym.deciders.Enqueue`); the other policies bind a job to one chain's FCFS
    queue on arrival.

    Adapted to petalgym, and why:

    * a request holds its real cache (``kv_bytes``, never more than the s_c the capacities assume), and
      the simulator still checks memory: a dispatched chain that lacks cache (only possible when
      recoveries or late sessions under contention hold some) waits for it by reservation;
    * servers GBP-CR leaves out still must host one block in petalgym: each is parked on block 0 and
      never routed through;
    * several clients (the source has one orchestrator): the plan uses the client-weighted mean tau_c,
      and JFFC/SA-JSQ/SED rank chains by the request's own client's job time;
    * churn (beyond the source): a chain with a server that is not online with its planned blocks is
      dropped until the server is back (a rejoining server takes its planned blocks); jobs bound to a
      dropped chain are bound again when offered; with no chain left a request stalls. An interrupted
      job's recovery is routed on its fastest suffix chain over the plan's online servers (waiting for
      cache if needed) and counts on no chain.

    Args:
        dispatch: ``"jffc"``, ``"jsq"``, ``"sa-jsq"``, ``"sed"`` or ``"jiq"``.
        cache_jobs: the design parameter c (jobs each hosted block reserves cache for); None chooses c*
            by ``cache_jobs_method``.
        cache_jobs_method: ``"theorem4-lower"`` (the source code's default) or ``"surrogate"`` (c K(c)).
        target_load: rho_bar, the load GBP-CR sizes its chains for (0 < rho_bar <= 1; 0.7).
        whole_model: the successor's "JFFC only" ablation: every server that holds all L blocks hosts
            them and is a one-server chain of capacity floor((M_j - s_m L) / (s_c L)); no GBP-CR or GCA.
    """

    name = "gbp-cr-jffc"

    def __init__(
        self,
        dispatch: str = "jffc",
        cache_jobs: int | None = None,
        cache_jobs_method: str = "theorem4-lower",
        target_load: float = 0.7,
        whole_model: bool = False,
    ):
        if dispatch not in DISPATCH_POLICIES:
            raise DeciderError(f"dispatch must be one of {', '.join(DISPATCH_POLICIES)}, got {dispatch!r}")
        self.name = "jffc-only" if whole_model else f"gbp-cr-{dispatch}"
        self.cache_jobs = whole_number(self.name, "cache_jobs", cache_jobs, optional=True)
        if cache_jobs_method not in ("theorem4-lower", "surrogate"):
            raise DeciderError(
                f"cache_jobs_method must be 'theorem4-lower' or 'surrogate', got {cache_jobs_method!r}"
            )
        self.target_load = checked_number(self.name, "target_load", target_load, high=1.0, high_open=False)
        self.dispatch = dispatch
        self.cache_jobs_method = cache_jobs_method
        self.whole_model = bool(whole_model)
        self.cache_jobs_used: int | None = None
        self.chains: list[ComposedChain] = []

    # planning ----------------------------------------------------------------------------------------
    def reset(self, scenario: Scenario, rng: np.random.Generator) -> None:
        """Plan placement and chains from the scenario; forget every job."""
        super().reset(scenario, rng)
        c, placements, chains = self.planned(scenario)
        self.cache_jobs_used = c
        self._placements = placements
        self.chains = chains
        self._used = frozenset(j for ch in chains for j in ch.servers)
        self._chain_hops = [ch.hops for ch in chains]
        self._capacity = [ch.capacity for ch in chains]
        # job time of each chain for each client at the mean lengths: T_c(p) without the initial delay
        l_in, l_out = workload_lengths(scenario)
        tm = scenario.memo("TimeModel", lambda: TimeModel(scenario))
        self._rates = [
            [1.0 / (tm.request_time(ch.hops, client, l_in, l_out) - tm.initial_delay) for ch in chains]
            for client in range(scenario.num_clients)
        ]
        self._running = [0] * len(chains)
        self._queued = [0] * len(chains)
        self._on: dict[int, int] = {}  # request id -> chain it was dispatched on
        self._bound: dict[int, int | None] = {}  # queued request id -> its chain queue (None: central)
        self._central = 0  # requests in the central queue
        self._active_version = -1
        self._active: list[bool] = []
        self._suffix: dict[tuple[int, int, int, bool, int], Chain | None] = {}
        self.note = ""

    def _plan(self, scenario: Scenario) -> tuple[int, list[Placement], list[ComposedChain]]:
        costs = server_costs(scenario)
        L = costs.num_blocks
        if self.whole_model:
            chains = []
            for j in range(costs.num_servers):
                if costs.max_blocks[j] >= L:
                    cap = session_capacity(costs.memory[j], L, costs.block_bytes, costs.cache_bytes)
                    if cap >= 1:
                        chains.append(
                            ComposedChain((Hop(j, 0, L),), int(cap), costs.comm[j] + costs.compute[j] * L)
                        )
            if not chains:
                raise SolverError("no server holds all L blocks with cache for one job")
            chains.sort(key=lambda ch: ch.time)
            starts: tuple[int | None, ...] = tuple(
                0 if any(ch.servers == (j,) for ch in chains) else None for j in range(costs.num_servers)
            )
            blocks = tuple(L if a is not None else 1 for a in starts)
            c = 0
        else:
            lam = arrival_rate(scenario)
            if not math.isfinite(lam):
                raise SolverError("the workload's arrival rate is infinite (every request at once)")
            if self.cache_jobs is None:
                c, plan, chains = choose_cache_jobs(costs, lam, self.target_load, self.cache_jobs_method)
            else:
                c = self.cache_jobs
                plan = gbp_cr(costs, c, lam, self.target_load)
                chains = gca(costs, plan.starts, plan.num_blocks)
                if not chains:
                    raise SolverError(f"GCA finds no chain with cache on the GBP-CR placement for c={c}")
            starts, blocks = plan.starts, plan.num_blocks
        placements = [
            Placement(int(a), int(blocks[j])) if a is not None else Placement(0, 1)
            for j, a in enumerate(starts)
        ]
        return c, placements, chains

    def planned(self, scenario: Scenario) -> tuple[int, list[Placement], list[ComposedChain]]:
        """(c, placements, chains) of ``scenario`` (computed once per scenario object). Raises SolverError
        (one line naming the reason) if no plan exists, e.g. no server holds the whole model for
        ``jffc-only``, or no c gives chains that carry the arrival rate."""
        key = (
            "composition.plan",
            self.whole_model,
            self.cache_jobs,
            self.cache_jobs_method,
            self.target_load,
        )
        try:
            return scenario.memo(key, lambda: self._plan(scenario))
        except SolverError as exc:
            raise SolverError(f"{self.name} on {scenario.name}: {exc}") from None

    def check_scenario(self, scenario: Scenario) -> None:
        """Raise SolverError if this decider cannot plan ``scenario`` (see :meth:`planned`)."""
        self.planned(scenario)

    def place(self, view: SwarmView, server: int) -> Placement:
        """The server's planned blocks (the same when it rejoins); a server the plan leaves out is parked
        on one block and never routed through."""
        return self._placements[server]

    # dispatch -----------------------------------------------------------------------------------------
    def _actives(self, view: SwarmView) -> list[bool]:
        """Per chain: every server online with its planned blocks (cached per placement version)."""
        if self._active_version != view.placement_version:
            servers = view.servers
            self._active = [
                all(
                    servers[h.server].status == ServerStatus.ONLINE
                    and servers[h.server].start == self._placements[h.server].start
                    and servers[h.server].end == self._placements[h.server].end
                    for h in hops
                )
                for hops in self._chain_hops
            ]
            self._active_version = view.placement_version
        return self._active

    def route(self, view: SwarmView, request: Request) -> Route | Enqueue | None:
        if request.route_from > 0 or request.kept or request.tokens_done > 0:
            return self._recovery(view, request)
        active = self._actives(view)
        if not any(active):
            self._unbind(request.id)
            return None
        rid = request.id
        rates = self._rates[request.client]
        if rid in self._bound:  # offered from its queue
            k = self._bound[rid]
            if k is None:  # central queue (JFFC): the fastest free chain, if any
                k, _ = select_chain("jffc", self._running, self._queued, self._capacity, rates, None, active)
                if k is None:
                    return Enqueue("central")
            elif not active[k]:  # its chain lost a server: bound again, at the tail of another queue
                self._unbind(rid)
                return self._arrive(request, rates, active)
            elif self._running[k] >= self._capacity[k]:
                return Enqueue(k)
            self._unbind(rid)
            return self._dispatch(rid, k)
        return self._arrive(request, rates, active)

    def _arrive(self, request: Request, rates: list[float], active: list[bool]) -> Route | Enqueue:
        """A new job (or one whose chain was dropped): the policy picks its chain or its queue."""
        rid = request.id
        if self.dispatch == "jffc":
            k, now = (
                (None, False)
                if self._central
                else select_chain("jffc", self._running, self._queued, self._capacity, rates, None, active)
            )
        else:
            k, now = select_chain(
                self.dispatch, self._running, self._queued, self._capacity, rates, self.rng, active
            )
        if now:
            return self._dispatch(rid, k)  # type: ignore[arg-type]
        self._bound[rid] = k
        if k is None:
            self._central += 1
        else:
            self._queued[k] += 1
        return Enqueue("central" if k is None else k)

    def _dispatch(self, rid: int, k: int) -> Route:
        self._on[rid] = k
        self._running[k] += 1
        return Route(self._chain_hops[k], wait=True)

    def _unbind(self, rid: int) -> None:
        if rid in self._bound:
            k = self._bound.pop(rid)
            if k is None:
                self._central -= 1
            else:
                self._queued[k] -= 1

    def route_ended(self, view: SwarmView, request: Request) -> None:
        """A job left its chain (or its queue, failing): free its place."""
        k = self._on.pop(request.id, None)
        if k is not None:
            self._running[k] -= 1
        self._unbind(request.id)

    def _recovery(self, view: SwarmView, request: Request) -> Route | None:
        """An interrupted job: its fastest suffix chain over the plan's online servers (no capacity)."""
        key = route_key(request)
        if self._active_version != view.placement_version or key not in self._suffix:
            if self._active_version != view.placement_version:
                self._suffix.clear()
                self._actives(view)
            spans = [s for s in view.spans() if s[0] in self._used]
            fixed, per_block = view.time_model.route_costs(request)
            _, chain = shortest_chain(spans, fixed, per_block, view.num_blocks, request.route_from)
            self._suffix[key] = chain or None
        chain = self._suffix[key]
        return None if chain is None else Route(chain, wait=True)

    def describe(self) -> str:
        total = sum(self._capacity) if self.chains else 0
        if self.whole_model:
            return f"{self.name} ({len(self.chains)} one-server chains, {total} jobs)"
        return f"{self.name} (c={self.cache_jobs_used}, {len(self.chains)} chains, {total} jobs)"


def jffc(
    cache_jobs: int | None = None, cache_jobs_method: str = "theorem4-lower", target_load: float = 0.7
) -> ChainCompositionDecider:
    """``gbp-cr-jffc``: GBP-CR + GCA + JFFC from a central queue (the successor's proposed method)."""
    return ChainCompositionDecider("jffc", cache_jobs, cache_jobs_method, target_load)


def jsq(
    cache_jobs: int | None = None, cache_jobs_method: str = "theorem4-lower", target_load: float = 0.7
) -> ChainCompositionDecider:
    """``gbp-cr-jsq``: GBP-CR + GCA + join the shortest (normalised) queue, random ties."""
    return ChainCompositionDecider("jsq", cache_jobs, cache_jobs_method, target_load)


def sa_jsq(
    cache_jobs: int | None = None, cache_jobs_method: str = "theorem4-lower", target_load: float = 0.7
) -> ChainCompositionDecider:
    """``gbp-cr-sa-jsq``: GBP-CR + GCA + speed-aware JSQ (ties to the fastest chain)."""
    return ChainCompositionDecider("sa-jsq", cache_jobs, cache_jobs_method, target_load)


def sed(
    cache_jobs: int | None = None, cache_jobs_method: str = "theorem4-lower", target_load: float = 0.7
) -> ChainCompositionDecider:
    """``gbp-cr-sed``: GBP-CR + GCA + smallest expected delay."""
    return ChainCompositionDecider("sed", cache_jobs, cache_jobs_method, target_load)


def jiq(
    cache_jobs: int | None = None, cache_jobs_method: str = "theorem4-lower", target_load: float = 0.7
) -> ChainCompositionDecider:
    """``gbp-cr-jiq``: GBP-CR + GCA + join the idle (free) queue, random."""
    return ChainCompositionDecider("jiq", cache_jobs, cache_jobs_method, target_load)


def jffc_only() -> ChainCompositionDecider:
    """``jffc-only``: the whole model on every server that holds it, JFFC over those one-server chains
    (the successor's ablation)."""
    return ChainCompositionDecider("jffc", whole_model=True)
