"""Observation features of the PetalAlloc environments: fixed-size, padded, normalised, finite.

An observation is a set of named parts (:data:`PART_FEATURES` lists the features of each); the ``flat``
observation is their concatenation (in :attr:`ObservationBuilder.parts` order, row-major), the ``dict``
observation keeps them apart. Every value is clipped to [0, :data:`OBS_CLIP`] after NaN -> 0 and
inf -> OBS_CLIP, so observations are never NaN or inf.

Normalisers (all static per scenario): L blocks; S_max = ``max_servers`` rows (padding rows are all zero,
``present`` = 0); |R| = CG-BP's design number of concurrent sessions (>= 1); the largest memory, tau and
RTT of the scenario; the episode's time scale (planned requests / arrival rate, or the horizon); a
session's KV cache s_c (the request's own for ROUTE, the workload's mean lengths for PLACE); T = the
workload's largest l_in + l_out. Times that can be large go through log1p (seconds).

Only the view, the pending decision and its candidates are read, so :class:`~petalgym.envs.adapter.
PolicyDecider` (inside :func:`petalgym.simulator.simulate`) builds exactly the observations the env does.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from petalgym.envs.candidates import Level, RouteCandidates
from petalgym.scenario import Scenario
from petalgym.simulator import Decision, DecisionKind
from petalgym.swarm import Request, ServerStatus, SwarmView

#: Upper bound of every observation value (values are clipped into [0, OBS_CLIP]).
OBS_CLIP = 10.0

#: Feature sets: ``"v0"`` (the shipped agents') and ``"v1"``: v0 + the ``context`` part (decision kind and
#: request load; and ``candidate_rules`` with ROUTE candidates), and every count over |R| (sessions, free
#: sessions and slots, reservations, coverage) passed through log1p, so that none sits at OBS_CLIP (v0's
#: ``free_slots_per_R`` is clipped in almost every decision of the paper's settings).
FEATURE_SETS = ("v0", "v1")

#: Column of each candidate rule in the ``candidate_rules`` part.
_RULE_COLUMN = {"free-now": 0, "least-loaded": 1, "fewest-hops": 2, "ws-rr": 3}

#: Features that ``"v1"`` passes through log1p (part -> names).
LOG_SCALED: dict[str, tuple[str, ...]] = {
    "decision": ("sessions_per_R",),
    "levels": ("sessions_per_R",),
    "servers": ("free_sessions_per_R", "sessions_per_R", "reservations_per_R"),
    "blocks": ("coverage", "loading_coverage", "free_slots_per_R"),
    "candidates": ("tightest_free_sessions_per_R",),
}

#: Observation layouts: ``flat`` (one Box), ``dict`` (one Box per part + ``action_mask``) and ``rllib``
#: (``{"observations": flat, "action_mask": mask}``, what RLlib's action-masking RLModule expects).
OBS_MODES = ("flat", "dict", "rllib")

_ONLINE, _LOADING = ServerStatus.ONLINE, ServerStatus.LOADING
_LOG_HOUR = math.log1p(3600.0)
_ZEROS8 = (0.0,) * 8
_ZEROS5 = (0.0,) * 5

#: Features of each part (the last axis), in order.
PART_FEATURES: dict[str, tuple[str, ...]] = {
    "decision": (
        "is_place",
        "is_route",
        "initial_deployment",
        "time_fraction",  # now / episode time scale
        "sessions_per_R",  # sessions held over all servers (one per hop of a running request) / |R|
        "online_fraction",  # ONLINE servers / servers
        "loading_fraction",
        "uncovered_fraction",  # blocks no ONLINE server hosts / L
    ),
    "request": (
        "l_in_per_T",
        "l_out_per_T",
        "recovery",
        "route_from_per_L",
        "client_index_fraction",  # client / (num_clients - 1), 0 with one client
        "tokens_done_fraction",
        "attempts_per_10",
        "log_time_in_system",  # log1p(now - arrival) / log1p(3600)
    ),
    "server": (
        "memory_per_max",
        "tau_per_max",
        "block_cap_per_L",  # the GPU's block cap (L if none) / L
        "mean_rtt_per_max",  # client-weighted RTT / largest RTT
        "placements_per_10",  # placements received before (rejoins, moves)
        "index_fraction",  # server index / (max_servers - 1)
    ),
    "levels": (
        "valid",
        "blocks_per_L",
        "cache_per_memory",
        "sessions_per_R",  # sessions through all its blocks the cache holds: cache / (m s_c) / |R|
        "is_builtin_answer",
    ),
    "servers": (
        "present",
        "memory_per_max",
        "tau_per_max",
        "offline",
        "loading",
        "online",
        "draining",
        "start_per_L",
        "blocks_per_L",
        "rtt_per_max",  # RTT to the request's client (ROUTE) or client-weighted (PLACE)
        "is_joining",  # the server being placed (PLACE)
        "on_builtin_chain",  # on the built-in decider's chain (ROUTE)
        "free_cache_fraction",  # free / cache budget (0 without budget)
        "free_sessions_per_R",  # full-span sessions that fit now: free / (m s_c) / |R|
        "sessions_per_R",
        "reservations_per_R",
    ),
    "blocks": (
        "coverage",  # ONLINE servers hosting the block / expected coverage
        "loading_coverage",  # LOADING servers that will host it / expected coverage
        "free_slots_per_R",  # sum over ONLINE hosts of free cache / s_c, / |R|
    ),
    "candidates": (
        "valid",
        "is_builtin",
        "is_petals",  # equals the PETALS min-latency chain
        "log_per_token",  # log1p(predicted (wait + remaining time) / l_out) in s
        "decode_token_s",  # predicted per-token decode time (s)
        "log_wait",  # log1p(predicted wait s) / log1p(3600)
        "hops_per_8",
        "tightest_free_sessions_per_R",  # min over its hops of free cache / (blocks s_c), / |R|
    ),
    "context": (  # feature set v1: the decision's context and the request load (counts through log1p)
        "is_rebalance",  # a REBALANCE tick (is_place is 1 too: the server part describes the server)
        "arrival_rate_per_mean",  # arrivals/s smoothed over 60 s (swarm.RequestLoad) / the workload's mean
        "in_flight_per_R",  # requests in the system / |R|
        "running_per_R",  # requests generating / |R|
        "waiting_per_R",  # requests in the system not generating (the queue) / |R|
        "reservations_per_R",  # reservations held over all servers / |R|
    ),
    "candidate_rules": (  # feature set v1, with ROUTE candidates: the rule behind each candidate
        "is_free_now",
        "is_least_loaded",
        "is_fewest_hops",
        "is_ws_rr",
        "log_cache_load",  # log1p(sum over its hops of the server's cache in use (held + reserved) / budget)
    ),
}

#: Parts present in each control mode, in flat order.
CONTROL_PARTS: dict[str, tuple[str, ...]] = {
    "joint": ("decision", "request", "server", "levels", "servers", "blocks", "candidates"),
    "placement": ("decision", "server", "levels", "servers", "blocks"),
    "routing": ("decision", "request", "servers", "blocks", "candidates"),
}


class ObservationBuilder:
    """Builds observations for one scenario and configuration.

    Shapes: ``decision`` (8,), ``request`` (8,), ``server`` (6,), ``levels`` (num_levels, 5), ``servers``
    (max_servers, 16), ``blocks`` (L, 3), ``candidates`` (K, 8), ``context`` (6,); the parts present
    depend on ``control`` (:data:`CONTROL_PARTS`) and ``feature_set`` (``"v1"`` appends ``context``).
    """

    def __init__(
        self,
        scenario: Scenario,
        control: str,
        max_servers: int,
        num_candidates: int,
        num_levels: int,
        design_sessions: int,
        place_session_bytes: int,
        feature_set: str = "v0",
    ):
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"unknown feature set {feature_set!r} (known: {', '.join(FEATURE_SETS)})")
        self.scenario = scenario
        self.feature_set = feature_set
        extra = ()
        if feature_set == "v1":
            extra = ("context", "candidate_rules") if "candidates" in CONTROL_PARTS[control] else ("context",)
        self.parts = CONTROL_PARTS[control] + extra
        L = scenario.num_blocks
        S = scenario.num_servers
        self.max_servers = max_servers
        self.L = L
        self.R = float(max(design_sessions, 1))
        self.place_kv = place_session_bytes
        rows = {
            "levels": num_levels,
            "servers": max_servers,
            "blocks": L,
            "candidates": num_candidates,
            "candidate_rules": num_candidates,
        }
        self.shapes: dict[str, tuple[int, ...]] = {}
        for p in self.parts:
            n = len(PART_FEATURES[p])
            self.shapes[p] = (rows[p], n) if p in rows else (n,)
        self.slices: dict[str, slice] = {}
        off = 0
        for p in self.parts:
            size = int(np.prod(self.shapes[p]))
            self.slices[p] = slice(off, off + size)
            off += size
        self.size = off
        self._buf = np.zeros(off)  # float64 while filling; observations are float32 copies
        # v1: flat positions of the log1p-scaled features
        log_at: list[np.ndarray] = []
        if feature_set == "v1":
            for p, names in LOG_SCALED.items():
                if p in self.slices:
                    index = np.arange(self.slices[p].start, self.slices[p].stop).reshape(self.shapes[p])
                    cols = [PART_FEATURES[p].index(n) for n in names]
                    log_at.append(index[..., cols].ravel())
        self._log_at = np.sort(np.concatenate(log_at)) if log_at else None

        # static normalisers
        profiles = [s.profile for s in scenario.servers]
        self._mem = [p.memory_bytes for p in profiles]
        max_mem = max(self._mem)
        max_tau = max(p.tau_s for p in profiles)
        rtt = np.asarray(scenario.network.rtt_s, dtype=float)
        max_rtt = float(rtt.max()) if rtt.size and rtt.max() > 0 else 1.0
        weights = np.array([c.weight for c in scenario.clients], dtype=float)
        self._rtt_norm = (rtt / max_rtt).astype(np.float32)  # (C, S)
        self._rtt_mean = (weights @ rtt / weights.sum() / max_rtt).astype(np.float32)  # (S,)
        self._num_clients = scenario.num_clients
        w = scenario.workload
        self._max_tokens = float(max(w.max_tokens, 1))
        if w.trace is not None:
            scale = float(np.max(w.trace.arrival_s)) if len(w.trace.arrival_s) else 1.0
        elif w.num_requests is not None:
            scale = w.num_requests / w.arrival_rate
        else:
            scale = float(w.horizon_s)
        if w.horizon_s is not None:
            scale = min(scale, float(w.horizon_s))
        self._time_scale = max(scale, 1.0)
        # arrivals/s of the workload on average: the whole trace's, or the Poisson base rate
        if w.trace is not None and len(w.trace.arrival_s):
            rate = len(w.trace.arrival_s) / max(float(np.max(w.trace.arrival_s)), 1.0)
        else:
            rate = float(w.arrival_rate or 0.0)
        self._mean_rate = max(rate, 1e-9)
        self._num_servers = S
        caps = [p.max_blocks if p.max_blocks is not None else L for p in profiles]
        # expected coverage of a block when every server hosts its PETALS-like share
        self._cov_scale = max(1.0, sum(min(c, L) for c in caps) / L / 2.0)
        self._server_static = [
            [
                self._mem[j] / max_mem,
                profiles[j].tau_s / max_tau,
                min(caps[j], L) / L,
                float(self._rtt_mean[j]),
                0.0,
                j / max(max_servers - 1, 1),
            ]
            for j in range(S)
        ]
        self._mem_norm = np.array(self._mem, dtype=np.float32) / max_mem
        self._tau_norm = np.array([p.tau_s for p in profiles], dtype=np.float32) / max_tau
        self._version = -1
        self._cover = np.zeros((S, L))  # 1 where an ONLINE server hosts a block
        self._status_cols = np.zeros((S, 6), dtype=np.float32)  # offline..draining, start/L, blocks/L
        self._loading_cov = np.zeros(L, dtype=np.float32)
        self._num_candidates = num_candidates
        self._head_size = len(PART_FEATURES["decision"]) + (
            len(PART_FEATURES["request"]) if "request" in self.parts else 0
        )
        self._bind_views()
        if "servers" in self._views:
            srv = self._views["servers"]
            srv[:S, 0] = 1.0
            srv[:S, 1] = self._mem_norm
            srv[:S, 2] = self._tau_norm
        self.reset()

    def _bind_views(self) -> None:
        """The named views into the fill buffer (made again after a copy: a copied view would no longer
        look into the copied buffer, and the copy's observations would stop changing)."""
        buf, S = self._buf, self._num_servers
        self._views = {p: buf[self.slices[p]].reshape(self.shapes[p]) for p in self.parts}
        self._head = buf[: self._head_size]  # "decision" then "request" open every layout
        self._server_cols: dict[str, np.ndarray] = {}
        if "servers" in self._views:
            srv = self._views["servers"]
            self._server_cols = {
                "rtt": srv[:S, 9],
                "flags": srv[:S, 10:12],
                "joining": srv[:S, 10],
                "on_chain": srv[:S, 11],
                "dynamic": srv[:S, 12:16],  # free fraction, free sessions, sessions, reservations
            }
        if "blocks" in self._views:
            self._block_slots = self._views["blocks"][:, 2]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_views", "_head", "_server_cols", "_block_slots"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind_views()

    # spaces -----------------------------------------------------------------------------------------
    def part_spaces(self) -> dict[str, spaces.Box]:
        """One Box in [0, OBS_CLIP] per part, with the part's shape."""
        return {p: spaces.Box(0.0, OBS_CLIP, shape=self.shapes[p], dtype=np.float32) for p in self.parts}

    def flat_space(self) -> spaces.Box:
        """The flat observation: Box(0, OBS_CLIP, (size,), float32)."""
        return spaces.Box(0.0, OBS_CLIP, shape=(self.size,), dtype=np.float32)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The named parts of a flat observation (views, reshaped)."""
        return {p: flat[self.slices[p]].reshape(self.shapes[p]) for p in self.parts}

    def space(self, obs_mode: str, num_actions: int) -> spaces.Space:
        """The observation space of ``obs_mode`` (see :data:`OBS_MODES`)."""
        if obs_mode == "flat":
            return self.flat_space()
        mask = spaces.Box(0.0, 1.0, shape=(num_actions,), dtype=np.float32)
        if obs_mode == "dict":
            return spaces.Dict({**self.part_spaces(), "action_mask": mask})
        return spaces.Dict({"action_mask": mask, "observations": self.flat_space()})

    def format(self, flat: np.ndarray, mask: np.ndarray, obs_mode: str) -> np.ndarray | dict[str, np.ndarray]:
        """The observation of ``obs_mode`` from a flat one and the action mask."""
        if obs_mode == "flat":
            return flat
        if obs_mode == "dict":
            obs = self.split(flat)
            obs["action_mask"] = mask.astype(np.float32)
            return obs
        return {"action_mask": mask.astype(np.float32), "observations": flat}

    def zeros(self) -> np.ndarray:
        """The observation when no decision is pending (end of an episode)."""
        return np.zeros(self.size, dtype=np.float32)

    # building ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        """A new episode (a new simulator): forget the cached per-placement state."""
        self._version = -1
        self._last_client: int | None = None
        self._last_flags: tuple | None = None
        self._last_is_route: bool | None = None

    def _refresh_placement(self, view: SwarmView) -> None:
        """Per placement version: status one-hots, spans, cache budgets and coverage (written into the
        buffer once; the buffer keeps them until the next version)."""
        if self._version == view.placement_version:
            return
        self._version = view.placement_version
        L = self.L
        S = self._num_servers
        cover = self._cover
        cover[:] = 0.0
        cols = self._status_cols
        cols[:] = 0.0
        loading = self._loading_cov
        loading[:] = 0.0
        n_online = n_loading = 0
        cap = np.zeros(S)
        inv_cap = np.zeros(S)
        inv_m = np.zeros(S)
        for s in view.servers:
            j = s.id
            cols[j, int(s.status)] = 1.0
            if s.start >= 0:
                m = s.end - s.start
                cols[j, 4] = s.start / L
                cols[j, 5] = m / L
                inv_m[j] = 1.0 / m
                if s.status == _ONLINE:
                    cover[j, s.start : s.end] = 1.0
                    n_online += 1
                elif s.status == _LOADING:
                    loading[s.start : s.end] += 1.0
                    n_loading += 1
            cap[j] = s.cache_capacity
            if s.cache_capacity > 0:
                inv_cap[j] = 1.0 / s.cache_capacity
        self._caps = [s.cache_capacity for s in view.servers]
        # scales of the dynamic server columns: free / cap, free / m / |R| (then / s_c), sessions / |R|,
        # reservations / |R|; and the coverage matrix over |R| for per-block free slots (then / s_c)
        R = self.R
        self._dyn_scale = np.stack([inv_cap, inv_m / R, np.full(S, 1.0 / R), np.full(S, 1.0 / R)])
        self._cover_r = cover / R
        online_cov = cover.sum(axis=0)
        self._uncovered = float(np.count_nonzero(online_cov == 0)) / L
        self._loading_frac = n_loading / S
        self._online_frac = n_online / S
        v = self._views
        if "servers" in v:
            srv = v["servers"]
            srv[:S, 3:9] = cols
        if "blocks" in v:
            bl = v["blocks"]
            bl[:, 0] = online_cov / self._cov_scale
            bl[:, 1] = loading / self._cov_scale

    def build(
        self,
        view: SwarmView,
        decision: Decision,
        levels: list[Level] | None,
        builtin_level: int,
        candidates: RouteCandidates | None,
        free: list[int] | None = None,
    ) -> np.ndarray:
        """The flat observation (a new float32 array of shape (size,)) for the pending ``decision``.

        ``levels`` (PLACE) are the joining server's levels and ``builtin_level`` the index of the level the
        built-in decider chose; ``candidates`` (ROUTE) the candidate chains; ``free`` the free cache bytes
        of every server (cache budget - used), computed if not given.
        """
        self._refresh_placement(view)
        v = self._views
        servers = view.servers
        is_route = decision.kind == DecisionKind.ROUTE
        req = decision.request if is_route else None
        kv = req.kv_bytes if req is not None else self.place_kv
        R = self.R

        # per-server dynamic state, Python lists over the S servers
        if free is None:
            free = [c - s.used_bytes for c, s in zip(self._caps, servers, strict=True)]
        n_sessions: list[int] = []
        n_reserved: list[int] = []
        for s in servers:  # one pass (hot path)
            n_sessions.append(len(s.sessions))
            n_reserved.append(len(s.reservations))
        inv_kv = 1.0 / kv

        head = [
            0.0 if is_route else 1.0,
            1.0 if is_route else 0.0,
            1.0 if decision.initial else 0.0,
            view.now / self._time_scale,
            sum(n_sessions) / R,
            self._online_frac,
            self._loading_frac,
            self._uncovered,
        ]
        if "request" in v:
            head += self._request_features(req, view.now) if req is not None else _ZEROS8
        self._head[:] = head  # "decision" (+ "request"): contiguous at the start of the buffer
        if "server" in v:
            sv = v["server"]
            if not is_route:
                j = decision.server
                sv[:] = self._server_static[j]
                sv[4] = min(servers[j].placements, 10) / 10.0
            else:
                sv[:] = 0.0
        if "levels" in v:
            rows = [_ZEROS5] * len(v["levels"])
            if levels is not None:
                mem = self._mem[decision.server]
                L = self.L
                for i, level in enumerate(levels):
                    m = level.num_blocks
                    valid = level.valid
                    rows[i] = (
                        1.0 if valid else 0.0,
                        m / L if valid else 0.0,
                        level.cache_bytes / mem if valid else 0.0,
                        level.cache_bytes / (m * kv) / R if valid else 0.0,
                        1.0 if i == builtin_level else 0.0,
                    )
            v["levels"][:] = rows
        if "servers" in v:
            cols = self._server_cols
            client = req.client if req is not None else -1
            if client != self._last_client:
                cols["rtt"][:] = self._rtt_norm[client] if req is not None else self._rtt_mean
                self._last_client = client
            flags = (decision.server,) if not is_route else candidates.chains[0] if candidates else ()
            if flags != self._last_flags or is_route != self._last_is_route:
                cols["flags"][:] = 0.0
                if not is_route:
                    cols["joining"][decision.server] = 1.0
                else:
                    on_chain = cols["on_chain"]
                    for h in flags:
                        on_chain[h.server] = 1.0
                self._last_flags = flags
                self._last_is_route = is_route
            dyn = np.array((free, free, n_sessions, n_reserved), dtype=float)
            if "blocks" in v:
                self._block_slots[:] = (dyn[0] @ self._cover_r) * inv_kv
            dyn *= self._dyn_scale
            dyn[1] *= inv_kv
            cols["dynamic"][:] = dyn.T
        elif "blocks" in v:
            self._block_slots[:] = (np.array(free, dtype=float) @ self._cover_r) * inv_kv
        if "candidates" in v:
            if candidates is not None and req is not None:
                v["candidates"][:] = self._candidate_features(view, req, candidates, free)
            else:
                v["candidates"][:] = 0.0
        if "context" in v:
            load = view.load
            v["context"][:] = (
                1.0 if decision.kind == DecisionKind.REBALANCE else 0.0,
                math.log1p(load.arrival_rate(view.now) / self._mean_rate),
                math.log1p(load.in_flight / R),
                math.log1p(load.running / R),
                math.log1p(load.waiting / R),
                math.log1p(sum(n_reserved) / R),
            )

        if "candidate_rules" in v:
            rules = v["candidate_rules"]
            rules[:] = 0.0
            if candidates is not None and req is not None:
                for i, (source, hops) in enumerate(zip(candidates.sources, candidates.chains, strict=True)):
                    k = _RULE_COLUMN.get(source)
                    if k is not None:
                        rules[i, k] = 1.0
                    rules[i, 4] = math.log1p(sum(servers[h.server].cache_load for h in hops))

        buf = self._buf
        np.fmax(buf, 0.0, out=buf)  # NaN -> 0, -inf -> 0
        log_at = self._log_at
        # v1: log1p of the raw counts (the buffer keeps raw values: some persist across builds)
        logged = None if log_at is None else np.fmin(np.log1p(buf[log_at]), OBS_CLIP)
        np.fmin(buf, OBS_CLIP, out=buf)  # inf -> OBS_CLIP
        out = buf.astype(np.float32)
        if logged is not None:
            out[log_at] = logged
        return out

    def _request_features(self, req: Request, now: float) -> tuple[float, ...]:
        T = self._max_tokens
        return (
            req.l_in / T,
            req.l_out / T,
            1.0 if req.is_recovery else 0.0,
            req.route_from / self.L,
            req.client / (self._num_clients - 1) if self._num_clients > 1 else 0.0,
            req.tokens_done / req.l_out,
            min(req.attempts, 10) / 10.0,
            math.log1p(max(now - req.arrival, 0.0)) / _LOG_HOUR,
        )

    def _candidate_features(
        self, view: SwarmView, req: Request, cand: RouteCandidates, free: list[int]
    ) -> list[tuple]:
        """One row of candidate features per candidate slot (zeros for padding), shape (K, 8)."""
        rows: list[tuple] = [_ZEROS8] * self._num_candidates
        servers = view.servers
        kv = req.kv_bytes
        inv_r = 1.0 / self.R
        now = view.now
        for i, hops in enumerate(cand.chains):
            d, duration = cand.tokens[i], cand.durations[i]
            tight = math.inf
            for h in hops:
                t = servers[h.server].unreserved_bytes / ((h.end - h.start) * kv)
                if t < tight:
                    tight = t
            wait = cand.starts[i] - now  # the simulator's own admission rule (exact)
            if wait < math.inf:
                per_token = math.log1p((wait + duration) / req.l_out)
                log_wait = math.log1p(wait) / _LOG_HOUR
            else:
                per_token = log_wait = OBS_CLIP
            rows[i] = (
                1.0,
                1.0 if i == 0 else 0.0,
                1.0 if i == cand.petals_index else 0.0,
                per_token,
                d,
                log_wait,
                len(hops) / 8.0,
                max(tight, 0.0) * inv_r,
            )
        return rows


__all__ = [
    "CONTROL_PARTS",
    "FEATURE_SETS",
    "LOG_SCALED",
    "OBS_CLIP",
    "OBS_MODES",
    "PART_FEATURES",
    "ObservationBuilder",
]
