"""The discrete-event swarm simulator (plain Python, no Gymnasium).

The engine runs ask/tell: :meth:`Simulator.next_decision` advances simulated time until somebody must
decide (a server joins: PLACE; a request must be routed: ROUTE; a server may rebalance: REBALANCE), and
:meth:`Simulator.apply` takes the answer. :meth:`Simulator.run` plays a whole episode with one
:class:`~petalgym.deciders.Decider`; the Gymnasium environments drive the same loop step by step.

Mechanics (see the README's "Simulator" section):

* arrivals, lengths and clients come from the scenario's workload (Poisson or trace), pre-drawn per seed;
* a request holds ``k * s_c`` bytes of cache on every server of its chain (k = blocks processed there)
  from its start to its completion; time follows the performance model (no processor sharing);
* if its chain lacks cache now, a request either waits for the exact earliest time the whole chain fits
  (a reservation that later requests may not delay) or, PETALS-style, retries after 1, 2, 4, ... s
  (capped at ``petals.backoff_cap_s``), routed again each time;
* with churn, each server alternates lifetime / downtime; a failure interrupts its sessions at once, a
  departure stops new sessions and interrupts what is left after ``drain_timeout_s``; interrupted sessions
  keep their upstream hops, are re-routed from the lost hop's first block, and replay a prefill over the
  l_in + generated tokens on the new hops (the interrupted token is redone: its step on the kept hops,
  then the replay); the back-off of a new wait starts again at 1 s; a request with no chain for
  ``no_chain_timeout_s`` fails;
* a rejoining (or rebalancing) server reloads its blocks at ``load_s_per_gb``.

Every random stream derives from the seed (``numpy.random.SeedSequence``): the workload, the initial join
order, each server's churn and the rebalance clock use separate streams, so different deciders see the
same arrivals, churn and join order for the same seed (common random numbers).
"""

from __future__ import annotations

import csv
import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from petalgym.errors import DeciderError
from petalgym.perfmodel import Chain, Hop, Placement, TimeModel, chain_errors
from petalgym.scenario import Scenario, max_blocks_on
from petalgym.swarm import (
    Request,
    RequestStatus,
    ServerState,
    ServerStatus,
    SwarmView,
    earliest_start,
    max_usage,
)

if TYPE_CHECKING:
    from petalgym.deciders import Decider

# event kinds, in the order they are processed when simultaneous
_COMPLETE, _START, _JOIN_READY, _LEAVE, _DRAIN_END, _REJOIN, _ARRIVAL, _RETRY, _TIMEOUT, _REBALANCE = range(
    10
)

_WAIT_EPS = 1e-9  # s: a back-off retry this close to the end of max_wait_s counts as at the end

_RUNNING, _WAITING, _ROUTING, _STALLED = (
    RequestStatus.RUNNING,
    RequestStatus.WAITING,
    RequestStatus.ROUTING,
    RequestStatus.STALLED,
)
_ONLINE, _OFFLINE, _LOADING, _DRAINING = (
    ServerStatus.ONLINE,
    ServerStatus.OFFLINE,
    ServerStatus.LOADING,
    ServerStatus.DRAINING,
)


class DecisionKind(IntEnum):
    """What the pending decision is about."""

    PLACE = 0
    ROUTE = 1
    REBALANCE = 2


@dataclass
class Decision:
    """A pending decision: PLACE or REBALANCE ``server``, or ROUTE ``request``, at simulated ``time``."""

    kind: DecisionKind
    time: float
    server: int = -1
    request: Request | None = None
    initial: bool = False  # PLACE during the initial deployment at t=0

    def ask(self, decider: Decider, view: SwarmView) -> Any:
        """``decider``'s answer to this decision: its route, place or rebalance, as the simulator asks."""
        if self.kind == DecisionKind.ROUTE:
            return decider.route(view, self.request)  # type: ignore[arg-type]
        if self.kind == DecisionKind.PLACE:
            return decider.place(view, self.server)
        return decider.rebalance(view, self.server)


@dataclass
class SimulationResult:
    """Outcome of one episode: every request (with its record) and run statistics."""

    scenario: str
    decider: str
    seed: int
    requests: list[Request]
    end_time: float
    events: int
    decisions: dict[str, int]
    wall_s: float
    decide_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Aggregate metrics (see :func:`petalgym.metrics.summarise`)."""
        from petalgym.metrics import summarise

        out = summarise(self.requests)
        out["decide_s"] = self.decide_s
        out["events"] = float(self.events)
        out["wall_s"] = self.wall_s
        return out

    def records(self) -> list[dict[str, Any]]:
        """One dict per request (see :func:`petalgym.metrics.request_record`)."""
        from petalgym.metrics import request_record

        return [request_record(r) for r in self.requests]

    def to_csv(self, path: str | Path) -> Path:
        """Write the per-request records as CSV; returns the path."""
        rows = self.records()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            if rows:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return path


class Simulator:
    """Discrete-event simulator of one swarm episode (see the module docstring).

    Args:
        scenario: the world.
        seed: seeds every random stream of the episode.
        rebalance_period_s: if set, ONLINE servers are offered REBALANCE decisions at random intervals
            uniform in [0, 2 x period] (PETALS' balance check). :meth:`run` replaces it by its decider's
            ``rebalance_period_s`` (read after the decider's ``reset``).
        check_invariants: verify memory, chain and conservation invariants after every event (slow; tests).
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int = 0,
        *,
        rebalance_period_s: float | None = None,
        check_invariants: bool = False,
    ):
        self.scenario = scenario
        self.seed = int(seed)
        self.rebalance_period_s = rebalance_period_s
        self.check = check_invariants
        self.time_model = scenario.memo("TimeModel", lambda: TimeModel(scenario))
        model = scenario.model
        self.num_blocks = model.num_blocks
        self._block_bytes = model.block_bytes
        self._max_wait = scenario.workload.max_wait_s
        self._backoff_cap = scenario.petals.backoff_cap_s
        self._churn = scenario.churn
        ss = np.random.SeedSequence(self.seed)
        wl_ss, join_ss, churn_ss, rebal_ss, dec_ss = ss.spawn(5)
        self.decider_rng = np.random.default_rng(dec_ss)
        self._rebalance_rng = np.random.default_rng(rebal_ss)
        self._churn_rngs = [np.random.default_rng(s) for s in churn_ss.spawn(scenario.num_servers)]
        self.servers = [ServerState(spec) for spec in scenario.servers]
        self.view = SwarmView(scenario, self.time_model, self.servers)
        self.now = 0.0
        self.requests: list[Request] = []
        self.finished: list[Request] = []  # completed or failed, in order
        self.in_flight = 0
        self.events = 0
        self.decisions = {k.name: 0 for k in DecisionKind}
        self.interruptions: dict[str, int] = {}  # sessions interrupted, by cause
        self.leaves: dict[str, int] = {}  # servers gone offline, by cause
        self.moves = 0  # rebalancing moves
        self._heap: list[tuple] = []
        self._seq = 0
        self._pending: deque[Decision] = deque()
        self._stalled: dict[int, Request] = {}
        self._downtime = [0.0] * scenario.num_servers
        self._epoch = [0] * scenario.num_servers  # bumped when a server goes offline (churn cycle)
        self._leave_pending = [False] * scenario.num_servers
        self._valid_chains: dict[tuple[Chain, int], bool] = {}
        self._valid_version = -1
        self._draw_workload(np.random.default_rng(wl_ss))
        order = np.random.default_rng(join_ss).permutation(scenario.num_servers)
        self.join_order = [int(j) for j in order]
        for j in self.join_order:
            self._pending.append(Decision(DecisionKind.PLACE, 0.0, server=j, initial=True))
        self._schedule_next_arrival()

    # ----------------------------------------------------------------------------------------------
    # Workload
    # ----------------------------------------------------------------------------------------------
    def _draw_workload(self, rng: np.random.Generator) -> None:
        w = self.scenario.workload
        n_clients = self.scenario.num_clients
        if w.trace is not None:
            times, l_in, l_out, client = w.trace.arrival_s, w.trace.l_in, w.trace.l_out, w.trace.client
            if w.horizon_s is not None:
                keep = times <= w.horizon_s
                times, l_in, l_out, client = times[keep], l_in[keep], l_out[keep], client[keep]
            if w.num_requests is not None:
                times, l_in, l_out, client = (
                    times[: w.num_requests],
                    l_in[: w.num_requests],
                    l_out[: w.num_requests],
                    client[: w.num_requests],
                )
        else:
            if w.num_requests is not None:
                n = w.num_requests
                times = np.cumsum(rng.exponential(1.0 / w.arrival_rate, size=n))
            else:
                chunks = []
                t_end = 0.0
                while t_end <= w.horizon_s:
                    gaps = rng.exponential(1.0 / w.arrival_rate, size=4096)
                    c = t_end + np.cumsum(gaps)
                    chunks.append(c)
                    t_end = c[-1]
                times = np.concatenate(chunks)
            if w.horizon_s is not None:
                times = times[times <= w.horizon_s]
            n = len(times)
            l_in = w.l_in.sample(rng, n)
            l_out = w.l_out.sample(rng, n)
            if n_clients > 1:
                weights = np.array([c.weight for c in self.scenario.clients])
                client = rng.choice(n_clients, size=n, p=weights / weights.sum())
            else:
                client = np.zeros(n, dtype=np.int64)
        self._arr_t = [float(x) for x in times]
        self._arr_in = [int(x) for x in l_in]
        self._arr_out = [int(x) for x in l_out]
        self._arr_client = [int(x) for x in client]
        self._next_arrival = 0

    @property
    def num_arrivals_planned(self) -> int:
        """How many requests this episode will bring in total."""
        return len(self._arr_t)

    def _schedule_next_arrival(self) -> None:
        i = self._next_arrival
        if i < len(self._arr_t):
            self._push(self._arr_t[i], _ARRIVAL, i, 0)

    # ----------------------------------------------------------------------------------------------
    # Event queue
    # ----------------------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, target: Any, version: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, target, version))

    @property
    def done(self) -> bool:
        """True when every request has arrived and none is in flight (and no decision is pending)."""
        return not self._pending and self._next_arrival >= len(self._arr_t) and self.in_flight == 0

    def next_decision(self) -> Decision | None:
        """Advance until a decision is needed; return it (still pending) or None at the end of the episode."""
        pending = self._pending
        while not pending:
            if self._next_arrival >= len(self._arr_t) and self.in_flight == 0:
                return None
            if not self._heap:
                raise RuntimeError(
                    f"simulator stalled at t={self.now:.3f}s with {self.in_flight} request(s) in flight and "
                    "no "
                    "pending event (internal error)"
                )
            self._process(heapq.heappop(self._heap))
            if self.check:
                self.check_invariants()
        d = pending[0]
        if d.kind == DecisionKind.ROUTE:
            self._refresh_kept(d.request)
        return d

    def _process(self, ev: tuple) -> None:
        t, kind, _, target, version = ev
        self.now = t
        self.view.now = t
        self.events += 1
        if kind == _COMPLETE:
            if target.version == version and target.status == _RUNNING:
                self._complete(target)
        elif kind == _ARRIVAL:
            self._arrive(target)
        elif kind == _START:
            if target.version == version and target.status == _WAITING:
                self._start_reserved(target)
        elif kind == _RETRY:
            if target.version == version and target.status == _WAITING:
                target.status = _ROUTING
                self._pending.append(Decision(DecisionKind.ROUTE, t, request=target))
        elif kind == _TIMEOUT:
            if target.status == _STALLED and target.stalled_since == version:
                self._stalled.pop(target.id, None)
                self._fail(target, "no_chain")
        elif kind == _JOIN_READY:
            s = self.servers[target]
            if s.version == version and s.status == _LOADING:
                self._go_online(s)
        elif kind == _LEAVE:
            if self._epoch[target] == version:
                self._leave_pending[target] = False
                self._leave(self.servers[target])
        elif kind == _DRAIN_END:
            s = self.servers[target]
            if s.version == version and s.status == _DRAINING:
                self._go_offline(s, "departure")
        elif kind == _REJOIN:
            s = self.servers[target]
            if s.status == _OFFLINE:
                self._pending.append(Decision(DecisionKind.PLACE, t, server=target))
        elif kind == _REBALANCE:
            s = self.servers[target]
            if s.version == version and s.status == _ONLINE:
                self._pending.append(Decision(DecisionKind.REBALANCE, t, server=target))

    # ----------------------------------------------------------------------------------------------
    # Answers
    # ----------------------------------------------------------------------------------------------
    def apply(self, answer: Any, who: str = "decider") -> None:
        """Apply ``answer`` to the pending decision (a Placement, a Route/chain/None, or Placement/None)."""
        if not self._pending:
            raise RuntimeError("apply() called with no pending decision; call next_decision() first")
        d = self._pending[0]
        if d.kind == DecisionKind.ROUTE:
            self._apply_route(d.request, answer, who)
        elif d.kind == DecisionKind.PLACE:
            self._apply_place(d.server, answer, who, d.initial)
        else:
            self._apply_rebalance(d.server, answer, who)
        self._pending.popleft()
        self.decisions[d.kind.name] += 1
        if self.check:
            self.check_invariants()

    def run(self, decider: Decider) -> SimulationResult:
        """Play the whole episode with ``decider`` (reset with this episode's decider stream)."""
        t0 = time.perf_counter()
        decider.reset(self.scenario, self.decider_rng)
        decide = time.perf_counter() - t0  # offline deciders do their planning in reset()
        # the decider may set its balance-check period from the scenario in reset(); no check has been
        # scheduled yet (servers come online when the first PLACE decisions are applied below)
        self.rebalance_period_s = decider.rebalance_period_s
        view = self.view
        name = decider.name
        clock = time.perf_counter
        while (d := self.next_decision()) is not None:
            c0 = clock()
            ans = d.ask(decider, view)
            decide += clock() - c0
            self.apply(ans, name)
        return self.result(name, wall_s=time.perf_counter() - t0, decide_s=decide)

    def result(
        self, decider: str = "decider", wall_s: float = 0.0, decide_s: float = 0.0
    ) -> SimulationResult:
        """The episode's outcome so far."""
        extra = {"interruptions": dict(self.interruptions), "leaves": dict(self.leaves), "moves": self.moves}
        return SimulationResult(
            self.scenario.name,
            decider,
            self.seed,
            list(self.requests),
            self.now,
            self.events,
            dict(self.decisions),
            wall_s,
            decide_s,
            extra,
        )

    # PLACE -----------------------------------------------------------------------------------------
    def _validate_placement(self, server: ServerState, answer: Any, who: str) -> Placement:
        where = f"{who}: placement for server {server.id} ({server.spec.name}) at t={self.now:.3f}s"
        if not isinstance(answer, tuple) or len(answer) not in (2, 3):
            raise DeciderError(
                f"{where}: expected Placement(start, num_blocks[, cache_bytes]), got {answer!r}"
            )
        vals = []
        for name, v in zip(("start", "num_blocks", "cache_bytes"), answer, strict=False):
            if v is None and name == "cache_bytes":
                vals.append(None)
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise DeciderError(f"{where}: {name} must be an integer, got {v!r}")
            vals.append(int(v))
        start, m = vals[0], vals[1]
        cache = vals[2] if len(vals) == 3 else None
        L = self.num_blocks
        if m < 1:
            raise DeciderError(f"{where}: num_blocks must be >= 1, got {m}")
        if start < 0 or start + m > L:
            raise DeciderError(f"{where}: blocks [{start}, {start + m}) are outside the model's 0..{L - 1}")
        cap = server.spec.profile.max_blocks
        if cap is not None and m > cap:
            raise DeciderError(f"{where}: {m} blocks exceed the {server.spec.profile.name} cap of {cap}")
        left = server.memory_bytes - m * self._block_bytes
        if left < 0:
            raise DeciderError(
                f"{where}: {m} blocks need {m * self._block_bytes / 1e9:.4g} GB > memory "
                f"{server.memory_bytes / 1e9:.4g} GB"
            )
        if cache is None:
            cache = left
        elif cache < 0 or cache > left:
            raise DeciderError(
                f"{where}: cache_bytes {cache} must be in [0, {left}] (memory left after {m} blocks)"
            )
        return Placement(start, m, cache)

    def _apply_place(self, j: int, answer: Any, who: str, initial: bool) -> None:
        s = self.servers[j]
        p = self._validate_placement(s, answer, who)
        s.start, s.end, s.cache_capacity = p.start, p.end, p.cache_bytes
        s.placements += 1
        s.version += 1
        load = 0.0 if initial else p.num_blocks * self._block_bytes / 1e9 * self._churn.load_s_per_gb
        if load <= 0.0:
            self._go_online(s)
        else:
            s.status = _LOADING
            self.view.placement_version += 1
            self._push(self.now + load, _JOIN_READY, j, s.version)

    def _apply_rebalance(self, j: int, answer: Any, who: str) -> None:
        s = self.servers[j]
        if answer is None or s.status != _ONLINE:
            self._schedule_rebalance(s)
            return
        p = self._validate_placement(s, answer, who)
        if (p.start, p.end, p.cache_bytes) == (s.start, s.end, s.cache_capacity):
            self._schedule_rebalance(s)
            return
        self._cancel_reservations(s)
        self._interrupt_all(s, "rebalance")
        s.start, s.end, s.cache_capacity = p.start, p.end, p.cache_bytes
        self.moves += 1
        s.placements += 1
        s.version += 1
        s.status = _LOADING
        self.view.placement_version += 1
        load = p.num_blocks * self._block_bytes / 1e9 * self._churn.load_s_per_gb
        self._push(self.now + load, _JOIN_READY, j, s.version)

    # ROUTE -----------------------------------------------------------------------------------------
    def _refresh_kept(self, req: Request) -> None:
        """Drop kept upstream hops whose server is no longer ONLINE or has gone offline or moved since the
        hop was kept (its cache is gone, its span may differ); route from the first dropped one."""
        kept = req.kept
        if kept:
            servers = self.servers
            versions = req.kept_versions
            for i, h in enumerate(kept):
                s = servers[h.server]
                if s.status != _ONLINE or s.version != versions[i]:
                    req.kept = kept[:i]
                    req.kept_versions = versions[:i]
                    req.route_from = h.start
                    break

    def _normalise_chain(self, req: Request, answer: Any, who: str) -> tuple[Chain, bool] | None:
        if answer is None:
            return None
        wait = True
        if hasattr(answer, "chain") and hasattr(answer, "wait"):
            chain, wait = answer.chain, bool(answer.wait)
        else:
            chain = answer
        if isinstance(chain, tuple) and chain and type(chain[0]) is Hop:
            hops = chain
        else:
            try:
                hops = tuple(Hop(int(h[0]), int(h[1]), int(h[2])) for h in chain)
            except (TypeError, ValueError, IndexError):
                raise DeciderError(
                    f"{who}: route for request {req.id} at t={self.now:.3f}s: expected a Route or a "
                    "sequence of "
                    f"(server, start, end) hops, got {answer!r}"
                ) from None
        view = self.view
        if self._valid_version != view.placement_version:
            self._valid_chains.clear()
            self._valid_version = view.placement_version
        key = (hops, req.route_from)
        if key not in self._valid_chains:
            err = chain_errors(hops, view.span_map(), self.num_blocks, req.route_from)
            if err is not None:
                raise DeciderError(
                    f"{who}: infeasible chain for request {req.id} (client {req.client}, from block "
                    f"{req.route_from}) at t={self.now:.3f}s: {err}; chain={[tuple(h) for h in hops]}"
                )
            self._valid_chains[key] = True
        return hops, wait

    def _apply_route(self, req: Request, answer: Any, who: str) -> None:
        req.attempts += 1
        norm = self._normalise_chain(req, answer, who)
        if norm is None:
            self._stall(req)
            return
        hops, wait = norm
        if not math.isnan(req.stalled_since):
            req.stalled_since = math.nan
        tm = self.time_model
        recovery = req.tokens_done > 0 or req.route_from > 0
        chain = req.kept + hops if req.kept else hops
        d = tm.token_time(chain, req.client)
        if recovery:
            # The interrupted token is redone: its step through the kept upstream hops, then the replay over
            # the l_in + generated tokens on the new hops, whose last position IS that token's step (as in
            # PETALS' InferenceSession.step). Adding a whole token time d would count the new hops twice.
            replay = tm.prefill_time(hops, req.client, req.history_tokens)
            first = (tm.token_time(req.kept, req.client) if req.kept else 0.0) + replay
        else:
            first = tm.initial_delay + tm.prefill_time(chain, req.client, req.l_in)
        duration = first + (req.l_out - req.tokens_done - 1) * d
        kv = req.kv_bytes
        needs: dict[int, int] = {}
        for h in chain:
            needs[h.server] = (h.end - h.start) * kv
        now = self.now
        t_start = earliest_start(self.servers, needs, now, duration)
        if t_start == math.inf:
            self._fail(req, "exceeds_capacity")
            return
        if t_start <= now:
            self._begin(req, chain, hops, needs, now, first, d, duration)
            return
        # waiting budget max_wait_s: a reservation must start within it; a back-off retry is never scheduled
        # past it (the last retry comes when it runs out), and a retry that still cannot start then fails
        waited = req.wait_s + now - req.wait_since
        max_wait = self._max_wait
        if max_wait is not None and (
            waited + (t_start - now) > max_wait if wait else waited >= max_wait - _WAIT_EPS
        ):
            self._fail(req, "wait_timeout")
            return
        req.version += 1
        req.status = _WAITING
        req.chain = chain
        req.new_hops = hops
        if wait:
            t_end = t_start + duration
            servers = self.servers
            for j, b in needs.items():
                servers[j].reservations[req.id] = (t_start, t_end, b)
            req.plan = (first, d)
            self._push(t_start, _START, req, req.version)
        else:
            req.retries += 1
            backoff = min(2.0 ** (req.retries - 1), self._backoff_cap)
            if max_wait is not None:
                backoff = min(backoff, max_wait - waited)
            req.chain = ()
            self._push(now + backoff, _RETRY, req, req.version)

    def _begin(
        self,
        req: Request,
        chain: Chain,
        hops: Chain,
        needs: dict[int, int],
        t: float,
        first: float,
        d: float,
        duration: float,
    ) -> None:
        """Start (or restart) ``req`` on ``chain`` at time ``t``."""
        finish = t + duration
        servers = self.servers
        rid = req.id
        for j, b in needs.items():
            s = servers[j]
            s.sessions[rid] = (b, finish)
            s.used_bytes += b
        if math.isnan(req.start):
            req.start = t
            req.first_chain = chain
        req.wait_s += t - req.wait_since
        req.retries = 0  # this wait is over: a later one (a recovery) backs off from 1 s again, like PETALS
        req.chain = chain
        req.new_hops = hops
        req.kept = ()
        req.kept_versions = ()
        req.status = _RUNNING
        req.seg_start = t
        req.t_next = t + first
        req.token_time = d
        req.finish = finish
        req.version += 1
        self._push(finish, _COMPLETE, req, req.version)

    def _start_reserved(self, req: Request) -> None:
        servers = self.servers
        needs = {}
        for j in {h.server for h in req.chain}:
            s = servers[j]
            _, _, b = s.reservations.pop(req.id)
            needs[j] = b
            if s.used_bytes + b > s.cache_capacity:
                raise RuntimeError(
                    f"internal error: reservation of request {req.id} overflows server {j} "
                    f"at t={self.now:.3f}s"
                )
        first, d = req.plan
        duration = first + (req.l_out - req.tokens_done - 1) * d
        self._begin(req, req.chain, req.new_hops, needs, self.now, first, d, duration)

    def _stall(self, req: Request) -> None:
        req.status = _STALLED
        self._stalled[req.id] = req
        if math.isnan(req.stalled_since):
            req.stalled_since = self.now
            self._push(self.now + self._churn.no_chain_timeout_s, _TIMEOUT, req, req.stalled_since)

    # ----------------------------------------------------------------------------------------------
    # Request life cycle
    # ----------------------------------------------------------------------------------------------
    def _arrive(self, i: int) -> None:
        l_in, l_out = self._arr_in[i], self._arr_out[i]
        req = Request(
            i, self._arr_client[i], self.now, l_in, l_out, self.scenario.model.session_bytes(l_in, l_out)
        )
        self.requests.append(req)
        self.in_flight += 1
        self._next_arrival = i + 1
        self._schedule_next_arrival()
        self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    def _release(self, req: Request) -> None:
        """Free every session byte and reservation ``req`` holds."""
        servers = self.servers
        rid = req.id
        for h in req.chain:
            s = servers[h.server]
            held = s.sessions.pop(rid, None)
            if held is not None:
                s.used_bytes -= held[0]
                if s.status == _DRAINING and not s.sessions:
                    self._go_offline(s, "departure")
            s.reservations.pop(rid, None)

    def _complete(self, req: Request) -> None:
        self._release(req)
        req.status = RequestStatus.COMPLETED
        req.tokens_done = req.l_out
        if math.isnan(req.first_token):
            req.first_token = req.t_next
        self.in_flight -= 1
        self.finished.append(req)

    def _fail(self, req: Request, reason: str) -> None:
        self._release(req)
        if req.status in (_WAITING, _ROUTING, _STALLED):
            req.wait_s += self.now - req.wait_since
        req.status = RequestStatus.FAILED
        req.failure_reason = reason
        req.finish = self.now
        req.version += 1
        self.in_flight -= 1
        self.finished.append(req)

    def _interrupt(self, req: Request, server: int) -> None:
        """``server`` stopped under running ``req``: keep the upstream hops and re-route the rest."""
        now = self.now
        g = req.tokens_at(now)
        if g >= req.l_out:
            self._complete(req)
            return
        if g >= 1 and math.isnan(req.first_token):
            req.first_token = req.t_next
        self._release(req)
        chain = req.chain
        i = next(k for k, h in enumerate(chain) if h.server == server)
        req.kept = chain[:i]
        req.kept_versions = tuple(self.servers[h.server].version for h in req.kept)
        req.route_from = chain[i].start
        req.tokens_done = g
        req.history_tokens = req.l_in + g
        req.recoveries += 1
        req.chain = ()
        req.status = _ROUTING
        req.wait_since = now
        req.version += 1
        self._pending.append(Decision(DecisionKind.ROUTE, now, request=req))

    def _interrupt_all(self, s: ServerState, reason: str) -> None:
        requests = self.requests
        if s.sessions:
            self.interruptions[reason] = self.interruptions.get(reason, 0) + len(s.sessions)
        for rid in sorted(s.sessions):
            self._interrupt(requests[rid], s.id)

    def _cancel_reservations(self, s: ServerState) -> None:
        """Waiting requests planned through ``s`` lose their reservation and are routed again."""
        requests = self.requests
        for rid in sorted(s.reservations):
            req = requests[rid]
            self._release(req)
            req.chain = ()
            req.status = _ROUTING
            req.version += 1
            self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    # ----------------------------------------------------------------------------------------------
    # Server life cycle
    # ----------------------------------------------------------------------------------------------
    def _go_online(self, s: ServerState) -> None:
        s.status = _ONLINE
        self.view.placement_version += 1
        if self._churn.enabled and not self._leave_pending[s.id]:
            life = float(self._churn.lifetime_s.sample(self._churn_rngs[s.id]))
            self._leave_pending[s.id] = True
            self._push(self.now + life, _LEAVE, s.id, self._epoch[s.id])
        self._schedule_rebalance(s)
        if self._stalled:
            for rid in sorted(self._stalled):
                req = self._stalled.pop(rid)
                req.status = _ROUTING
                self._pending.append(Decision(DecisionKind.ROUTE, self.now, request=req))

    def _schedule_rebalance(self, s: ServerState) -> None:
        if self.rebalance_period_s is not None and s.status == _ONLINE:
            dt = float(self._rebalance_rng.uniform(0.0, 2.0 * self.rebalance_period_s))
            self._push(self.now + dt, _REBALANCE, s.id, s.version)

    def _leave(self, s: ServerState) -> None:
        rng = self._churn_rngs[s.id]
        failure = bool(rng.random() < self._churn.failure_fraction)
        self._downtime[s.id] = float(self._churn.downtime_s.sample(rng))
        if s.status == _LOADING:
            self._go_offline(s, "failure")
            return
        if s.status != _ONLINE:
            return
        self._cancel_reservations(s)
        if failure or not s.sessions:
            self._go_offline(s, "failure" if failure else "departure")
            return
        s.status = _DRAINING
        s.version += 1
        self.view.placement_version += 1
        self._push(self.now + self._churn.drain_timeout_s, _DRAIN_END, s.id, s.version)

    def _go_offline(self, s: ServerState, reason: str) -> None:
        s.status = _OFFLINE
        s.version += 1
        self._epoch[s.id] += 1
        self._leave_pending[s.id] = False
        self.view.placement_version += 1
        self._cancel_reservations(s)
        self._interrupt_all(s, reason)
        self.leaves[reason] = self.leaves.get(reason, 0) + 1
        s.start = s.end = -1
        s.cache_capacity = 0
        self._push(self.now + self._downtime[s.id], _REJOIN, s.id, s.version)

    # ----------------------------------------------------------------------------------------------
    # Invariants
    # ----------------------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if memory, chain or conservation invariants are broken."""
        L = self.num_blocks
        spans = {s.id: (s.start, s.end) for s in self.servers if s.status in (_ONLINE, _DRAINING)}
        for s in self.servers:
            used = sum(b for b, _ in s.sessions.values())
            assert used == s.used_bytes, f"server {s.id}: used_bytes {s.used_bytes} != sessions {used}"
            assert s.used_bytes <= s.cache_capacity, (
                f"server {s.id}: cache {s.used_bytes} > {s.cache_capacity}"
            )
            if s.status in (_ONLINE, _DRAINING, _LOADING):
                assert s.num_blocks * self._block_bytes + s.cache_capacity <= s.memory_bytes, (
                    f"server {s.id}: blocks + cache exceed memory"
                )
            if s.sessions:
                assert s.status in (_ONLINE, _DRAINING), f"server {s.id} {s.status.name} holds sessions"
            if s.reservations:
                assert s.status == _ONLINE, f"server {s.id} {s.status.name} holds reservations"
                times = [self.now] + [r0 for r0, _, _ in s.reservations.values()]
                for t in times:
                    u = max_usage(s, t, t + 1e-9)
                    assert u <= s.cache_capacity, (
                        f"server {s.id}: planned cache {u} > {s.cache_capacity} at {t}"
                    )
        done = 0
        for r in self.requests:
            if r.status == _RUNNING:
                err = chain_errors(r.chain, spans, L)
                assert err is None, f"request {r.id} runs on an infeasible chain: {err}"
                for h in r.chain:
                    held = self.servers[h.server].sessions.get(r.id)
                    assert held is not None and held[0] == h.blocks * r.kv_bytes, (
                        f"request {r.id}: server {h.server} does not hold its cache"
                    )
            elif r.status in (RequestStatus.COMPLETED, RequestStatus.FAILED):
                done += 1
        assert len(self.requests) == done + self.in_flight, "arrivals != completed + failed + in flight"
        assert done == len(self.finished)


def simulate(
    scenario: Scenario, decider: Decider, seed: int = 0, *, check_invariants: bool = False
) -> SimulationResult:
    """Run one episode of ``scenario`` with ``decider`` and return its result."""
    return Simulator(scenario, seed, check_invariants=check_invariants).run(decider)


__all__ = ["Decision", "DecisionKind", "SimulationResult", "Simulator", "max_blocks_on", "simulate"]
