"""Decisions <-> discrete actions: the action layout, masks, candidates and observations of one decision.

:class:`DecisionCodec` is shared by the Gymnasium env (:mod:`petalgym.envs.petal_alloc`) and by
:class:`~petalgym.envs.adapter.PolicyDecider` (a policy run inside :func:`petalgym.simulator.simulate`), so
both offer the same actions, masks and observations for the same swarm state.

Action layout (one ``Discrete(n)`` space):

* PLACE part, ``num_levels * L`` actions (controls ``joint`` and ``placement``): action ``level * L +
  start`` places the joining server's blocks ``[start, start + m_level)`` with the level's cache budget.
  Masked: starts whose window would run past L, levels that do not fit the server (or duplicate an
  earlier level);
* ROUTE part, ``K`` actions (controls ``joint`` and ``routing``), after the PLACE part: action
  ``offset + i`` takes candidate chain i (0 = the built-in decider's). Masked: padding when fewer than K
  distinct chains exist.

* KEEP, 1 action (only with ``rebalance=True``: the agent also takes REBALANCE decisions, the periodic
  chance of an ONLINE server to move): the last action keeps the server as it is. A REBALANCE decision
  offers KEEP and the PLACE part (its builtin level is the built-in decider's move, or the server's
  current placement when the built-in decider keeps it); a move reloads the server.

``placement_starts="gaps"`` masks every start except the two aligned with the first coverage gap (the
leftmost maximal run of least-covered blocks, counting ONLINE and LOADING servers): the window starting at
its first block and the window ending at its end (both clamped into 0..L - m); and, while blocks are
uncovered, every level too small to leave them coverable by the servers not yet placed (OFFLINE, at their
largest level) -- unless no level is large enough, then the largest. So every valid placement fills a gap
and keeps full coverage reachable, and random valid placements cover the model wherever the servers'
blocks suffice. The default action is the built-in placement when it is one of them, else the valid
placement nearest to it (closest number of blocks, then start): the built-in decider is then not
reproduced exactly.

In ``joint`` control the mask enables only the part of the pending decision's kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from petalgym.deciders import Decider, Enqueue, Route
from petalgym.design import design_num_sessions, workload_lengths
from petalgym.envs.candidates import (
    CANDIDATE_SETS,
    DEFAULT_LEVEL_MULTIPLIERS,
    ChainGenerator,
    Level,
    RouteCandidates,
    builtin_level,
    fixed_levels,
    level_names,
)
from petalgym.envs.features import FEATURE_SETS, ObservationBuilder
from petalgym.errors import DeciderError, PetalgymError, SolverError
from petalgym.perfmodel import Chain, Hop
from petalgym.scenario import Scenario
from petalgym.simulator import Decision, DecisionKind
from petalgym.swarm import ServerStatus, SwarmView

#: How PLACE / REBALANCE starts are masked: ``"any"`` (every start that fits) or ``"gaps"`` (the two
#: starts aligned with the first coverage gap; module docstring).
PLACEMENT_STARTS = ("any", "gaps")

#: Control modes: which decision kinds the agent takes (the built-in decider takes the others).
CONTROLS: dict[str, frozenset[DecisionKind]] = {
    "joint": frozenset({DecisionKind.PLACE, DecisionKind.ROUTE}),
    "placement": frozenset({DecisionKind.PLACE}),
    "routing": frozenset({DecisionKind.ROUTE}),
}


class EnvConfigError(PetalgymError, ValueError):
    """An environment (or PolicyDecider) argument is invalid; the message names it and the bad value."""


class InvalidActionError(PetalgymError, ValueError):
    """An action is out of range or masked out for the pending decision."""


@dataclass
class Pending:
    """One decision offered to the agent.

    ``answer``: the built-in decider's raw answer; ``mask``: int8 (n_actions,); ``default_action``: the
    action expressing ``answer``. PLACE: ``levels`` of the joining server (the last is ``builtin``) and
    ``builtin_level`` (the level of ``answer``). ROUTE: ``candidates``.
    """

    decision: Decision
    answer: Any
    mask: np.ndarray
    default_action: int
    levels: list[Level] | None = None
    builtin_level: int = -1
    candidates: RouteCandidates | None = None
    free: list[int] | None = None  # free cache bytes per server when the decision was prepared


def normalise_chain(answer: Any) -> tuple[Chain, bool | None]:
    """(chain as a tuple of Hops, wait flag or None if not given) of a route answer (Route or hops)."""
    wait = None
    chain = answer
    if hasattr(answer, "chain") and hasattr(answer, "wait"):
        chain, wait = answer.chain, bool(answer.wait)
    if type(chain) is tuple and all(type(h) is Hop for h in chain):
        return chain, wait  # already normalised (the common case)
    return tuple(Hop(int(h[0]), int(h[1]), int(h[2])) for h in chain), wait


def design_sessions_for(scenario: Scenario) -> int:
    """CG-BP's design |R| (:func:`petalgym.design.design_num_sessions`), 1 if CG-BP cannot run."""
    try:
        return design_num_sessions(scenario)
    except SolverError:
        return 1


class DecisionCodec:
    """Action layout, masks, candidates and observations of the decisions of one scenario.

    Args:
        scenario: the world.
        control: ``"joint"``, ``"placement"`` or ``"routing"``.
        builtin: the built-in decider (answers every decision; its answer is the default action).
        num_candidates: K candidate chains per ROUTE decision.
        max_servers: rows of the per-server observation (>= the scenario's servers).
        level_multipliers: |R| multipliers of the extra CG-BP levels.
        design_sessions: CG-BP's design |R| (default: the paper's design rule for the scenario).
        feature_set: the observation's feature set (:data:`petalgym.envs.features.FEATURE_SETS`).
        candidate_set: how ROUTE candidates are chosen (:data:`petalgym.envs.candidates.CANDIDATE_SETS`).
        rebalance: the agent also takes REBALANCE decisions (needs a control with PLACE; adds KEEP).
        placement_starts: :data:`PLACEMENT_STARTS`.
    """

    def __init__(
        self,
        scenario: Scenario,
        control: str,
        builtin: Decider,
        num_candidates: int = 4,
        max_servers: int | None = None,
        level_multipliers: Sequence[float] = DEFAULT_LEVEL_MULTIPLIERS,
        design_sessions: int | None = None,
        feature_set: str = "v0",
        candidate_set: str = "ws-rr",
        rebalance: bool = False,
        placement_starts: str = "any",
    ):
        if control not in CONTROLS:
            raise EnvConfigError(f"unknown control mode {control!r} (known: {', '.join(CONTROLS)})")
        if feature_set not in FEATURE_SETS:
            raise EnvConfigError(f"unknown feature_set {feature_set!r} (known: {', '.join(FEATURE_SETS)})")
        if placement_starts not in PLACEMENT_STARTS:
            raise EnvConfigError(
                f"unknown placement_starts {placement_starts!r} (known: {', '.join(PLACEMENT_STARTS)})"
            )
        if not isinstance(rebalance, (bool, np.bool_)):
            raise EnvConfigError(f"rebalance must be True or False, got {rebalance!r}")
        if rebalance and DecisionKind.PLACE not in CONTROLS[control]:
            raise EnvConfigError(
                f"rebalance control needs placement (control 'joint' or 'placement'), not {control!r}"
            )
        if candidate_set not in CANDIDATE_SETS:
            raise EnvConfigError(
                f"unknown candidate_set {candidate_set!r} (known: {', '.join(CANDIDATE_SETS)})"
            )
        if isinstance(num_candidates, bool) or not isinstance(num_candidates, (int, np.integer)):
            raise EnvConfigError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
        if num_candidates < 1:
            raise EnvConfigError(f"num_candidates must be an integer >= 1, got {num_candidates!r}")
        S = scenario.num_servers
        if max_servers is None:
            max_servers = S
        if isinstance(max_servers, bool) or not isinstance(max_servers, (int, np.integer)) or max_servers < S:
            raise EnvConfigError(
                f"max_servers must be an integer >= the scenario's {S} servers (or None), got {max_servers!r}"
            )
        mults = tuple(level_multipliers)
        for f in mults:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1e6:
                raise EnvConfigError(f"level_multipliers must be positive numbers, got {level_multipliers!r}")
        self.scenario = scenario
        self.control = control
        self.controlled = CONTROLS[control] | ({DecisionKind.REBALANCE} if rebalance else set())
        self.rebalance = bool(rebalance)
        self.placement_starts = placement_starts
        self.builtin = builtin
        self.num_candidates = int(num_candidates)
        self.max_servers = int(max_servers)
        self.num_blocks = L = scenario.num_blocks
        self.design_sessions = (
            design_sessions_for(scenario) if design_sessions is None else int(design_sessions)
        )
        self.place_session_bytes = scenario.model.session_bytes(*workload_lengths(scenario))
        self.level_names = level_names(mults)
        self.num_levels = len(self.level_names)
        self._fixed = [
            fixed_levels(scenario, j, self.design_sessions, self.place_session_bytes, mults) for j in range(S)
        ]
        self._max_blocks = [max((lv.num_blocks for lv in f if lv.valid), default=0) for f in self._fixed]
        self.n_place = self.num_levels * L if DecisionKind.PLACE in self.controlled else 0
        self.n_route = self.num_candidates if DecisionKind.ROUTE in self.controlled else 0
        self.route_offset = self.n_place
        self.keep_action = self.n_place + self.n_route if rebalance else -1
        self.n_actions = self.n_place + self.n_route + (1 if rebalance else 0)
        self.chains = ChainGenerator(scenario, self.num_candidates, candidate_set)
        self.candidate_set = candidate_set
        self.features = ObservationBuilder(
            scenario,
            control,
            self.max_servers,
            self.num_candidates,
            self.num_levels,
            self.design_sessions,
            self.place_session_bytes,
            feature_set,
        )
        self.feature_set = feature_set

    # ----------------------------------------------------------------------------------------------
    def controls(self, kind: DecisionKind) -> bool:
        """Whether the agent takes decisions of this kind."""
        return kind in self.controlled

    def reset(self) -> None:
        """A new episode (a new simulator): drop cached candidates and placement features."""
        self.chains.reset()
        self.features.reset()

    def ask_builtin(self, view: SwarmView, decision: Decision) -> Any:
        """The built-in decider's answer to ``decision`` (exactly what Simulator.run would ask)."""
        return decision.ask(self.builtin, view)

    def prepare(self, view: SwarmView, decision: Decision, answer: Any) -> Pending | None:
        """The :class:`Pending` decision offered to the agent, given the built-in ``answer``; None if there
        is nothing to choose (a ROUTE the built-in decider answers with None: no chain exists; or with
        :class:`~petalgym.deciders.Enqueue`: the request joins a client-side queue, and the agent routes it
        when the queue offers it again)."""
        if decision.kind != DecisionKind.ROUTE:
            return self._prepare_place(view, decision, answer)
        if answer is None or isinstance(answer, Enqueue):
            return None
        try:
            chain, wait = normalise_chain(answer)
        except (TypeError, ValueError, IndexError):
            raise DeciderError(
                f"{self.builtin.name}: route for request {decision.request.id} at t={view.now:.3f}s: "
                f"expected a Route or a sequence of (server, start, end) hops, got {answer!r}"
            ) from None
        free = [s.cache_capacity - s.used_bytes for s in view.servers]
        cands = self.chains.candidates(view, decision.request, chain, True if wait is None else wait, free)
        mask = np.zeros(self.n_actions, dtype=np.int8)
        off = self.route_offset
        mask[off : off + len(cands.chains)] = 1
        return Pending(decision, answer, mask, off, candidates=cands, free=free)

    def _prepare_place(self, view: SwarmView, decision: Decision, answer: Any) -> Pending:
        """A PLACE or REBALANCE pending decision (REBALANCE: KEEP is valid and a None answer is KEEP)."""
        j = decision.server
        L = self.num_blocks
        fixed = self._fixed[j]
        rebalance = decision.kind == DecisionKind.REBALANCE
        what = "rebalance" if rebalance else "placement"
        where = f"{self.builtin.name}: {what} for server {j} at t={view.now:.3f}s"
        keep = rebalance and answer is None
        if keep:  # the server's current placement is the builtin level (moving it elsewhere is an action)
            s = view.servers[j]
            answer_level = (s.start, s.end - s.start, s.cache_capacity)
        else:
            answer_level = answer
        if not isinstance(answer_level, tuple) or len(answer_level) not in (2, 3):
            raise DeciderError(
                f"{where}: expected Placement(start, num_blocks[, cache_bytes]), got {answer!r}"
            )
        try:
            levels = [*fixed, builtin_level(self.scenario, j, answer_level, fixed)]
        except (TypeError, ValueError):
            raise DeciderError(f"{where}: expected integer fields, got {answer!r}") from None
        mask = np.zeros(self.n_actions, dtype=np.int8)
        gap = None
        smallest = 0  # the fewest blocks a level may have
        if self.placement_starts == "gaps":
            gap, uncovered = self._first_gap(view, j)
            if uncovered:
                offline = ServerStatus.OFFLINE
                spare = sum(self._max_blocks[s.id] for s in view.servers if s.id != j and s.status == offline)
                largest = max((lv.num_blocks for lv in levels if lv.valid), default=0)
                smallest = min(uncovered - spare, largest)
        for i, lv in enumerate(levels):
            if not lv.valid or lv.num_blocks < smallest:
                continue
            m = lv.num_blocks
            if gap is None:
                mask[i * L : i * L + L - m + 1] = 1
            else:
                for start in (gap[0], gap[1] - m):
                    mask[i * L + min(max(start, 0), L - m)] = 1
        if rebalance:
            mask[self.keep_action] = 1
        pending = Pending(decision, answer, mask, -1, levels=levels)
        try:
            default = self.keep_action if keep else self.encode(pending, answer)
        except InvalidActionError as exc:
            raise DeciderError(f"{where}: {exc}") from None
        if not mask[default]:  # "gaps": the built-in placement is not one of them; offer the nearest
            default = self._nearest(mask, levels, default)
            pending.answer = levels[default // L].placement(default % L)
        pending.default_action = default
        pending.builtin_level = len(levels) - 1 if keep else default // L
        return pending

    def _nearest(self, mask: np.ndarray, levels: list[Level], action: int) -> int:
        """The valid PLACE action nearest to ``action``: the closest number of blocks, then start."""
        L = self.num_blocks
        m, start = levels[action // L].num_blocks, action % L
        valid = np.flatnonzero(mask[: self.n_place])
        return int(min(valid, key=lambda a: (abs(levels[a // L].num_blocks - m), abs(a % L - start), a)))

    @staticmethod
    def _first_gap(view: SwarmView, server: int) -> tuple[tuple[int, int], int]:
        """([first, end) of the leftmost maximal run of least-covered blocks, the number of uncovered
        blocks), counting ONLINE and LOADING servers other than ``server``."""
        L = view.num_blocks
        cover = [0] * (L + 1)
        for s in view.servers:
            if s.id != server and s.start >= 0 and s.status in (ServerStatus.ONLINE, ServerStatus.LOADING):
                cover[s.start] += 1
                cover[s.end] -= 1
        running, counts = 0, []
        for b in range(L):
            running += cover[b]
            counts.append(running)
        low = min(counts)
        first = counts.index(low)
        end = first
        while end < L and counts[end] == low:
            end += 1
        return (first, end), counts.count(0)

    # ----------------------------------------------------------------------------------------------
    def observe(self, view: SwarmView, pending: Pending) -> np.ndarray:
        """The flat observation of ``pending`` (float32, shape (features.size,))."""
        return self.features.build(
            view, pending.decision, pending.levels, pending.builtin_level, pending.candidates, pending.free
        )

    def check(self, pending: Pending, action: int) -> str | None:
        """Why ``action`` cannot be taken for ``pending`` (out of range or masked), or None if it can."""
        n = self.n_actions
        if not 0 <= action < n:
            return f"is out of range: the action space is Discrete({n})"
        if not pending.mask[action]:
            kind = pending.decision.kind.name
            return f"is masked out for this {kind} decision ({self.describe(pending, action)})"
        return None

    def decode(self, pending: Pending, action: int) -> Any:
        """The answer (Placement or Route) for a valid ``action`` (the built-in answer for the default)."""
        if action == pending.default_action:
            return pending.answer
        if action == self.keep_action:
            return None
        if pending.decision.kind != DecisionKind.ROUTE:
            level, start = divmod(action, self.num_blocks)
            return pending.levels[level].placement(start)
        cands = pending.candidates
        i = action - self.route_offset
        return Route(cands.chains[i], cands.waits[i])

    def encode(self, pending: Pending, answer: Any) -> int:
        """The action expressing ``answer`` (a Placement for PLACE, a Route or chain for ROUTE); raises
        InvalidActionError if no valid action expresses it."""
        L = self.num_blocks
        kind = pending.decision.kind
        if kind == DecisionKind.REBALANCE and answer is None:
            if not self.rebalance:
                raise InvalidActionError("KEEP is an action only with rebalance control")
            return self.keep_action
        if kind != DecisionKind.ROUTE:
            if DecisionKind.PLACE not in self.controlled:
                raise InvalidActionError(f"control {self.control!r} has no PLACE actions")
            if not isinstance(answer, tuple) or len(answer) not in (2, 3):
                raise InvalidActionError(
                    f"expected Placement(start, num_blocks[, cache_bytes]), got {answer!r}"
                )
            j = pending.decision.server
            start, m = int(answer[0]), int(answer[1])
            cache = answer[2] if len(answer) > 2 else None
            if cache is None:
                cache = self.scenario.servers[j].profile.memory_bytes - m * self.scenario.model.block_bytes
            for i, lv in enumerate(pending.levels):
                if lv.valid and lv.num_blocks == m and lv.cache_bytes == int(cache):
                    if not 0 <= start <= L - m:
                        raise InvalidActionError(
                            f"placement {tuple(answer)}: start {start} puts blocks [{start}, {start + m}) "
                            f"outside 0..{L - 1}"
                        )
                    return i * L + start
            raise InvalidActionError(
                f"placement {tuple(answer)} (num_blocks {m}, cache {int(cache)} B) matches no placement level"
            )
        if DecisionKind.ROUTE not in self.controlled:
            raise InvalidActionError(f"control {self.control!r} has no ROUTE actions")
        if answer is None:
            raise InvalidActionError("a route answer of None (no chain) is not an action")
        try:
            chain, _ = normalise_chain(answer)
        except (TypeError, ValueError, IndexError):
            raise InvalidActionError(f"expected a Route or a sequence of hops, got {answer!r}") from None
        chains = pending.candidates.chains
        if chain in chains:
            return self.route_offset + chains.index(chain)
        raise InvalidActionError(
            f"chain {format_chain(chain)} is not among the {len(chains)} candidates "
            f"({'; '.join(format_chain(c) for c in chains)})"
        )

    def describe(self, pending: Pending | None, action: int) -> str:
        """Human-readable meaning of ``action`` for ``pending`` (e.g. for error messages and rendering)."""
        L = self.num_blocks
        if 0 <= action < self.n_place:
            level, start = divmod(action, L)
            name = self.level_names[level]
            if pending is not None and pending.levels is not None:
                lv = pending.levels[level]
                return (
                    f"PLACE level {level} {name!r}: blocks [{start}, {start + lv.num_blocks}), "
                    f"cache {lv.cache_bytes / 1e9:.3g} GB{'' if lv.valid else ', level unavailable'}"
                )
            return f"PLACE level {level} {name!r} at start {start}"
        if action == self.keep_action:
            return "KEEP: the server stays as it is"
        if self.n_place <= action < self.n_place + self.n_route:
            i = action - self.route_offset
            if pending is not None and pending.candidates is not None:
                cands = pending.candidates
                if i < len(cands.chains):
                    return f"ROUTE candidate {i} ({cands.sources[i]}): {format_chain(cands.chains[i])}"
                return f"ROUTE candidate {i} (padding: only {len(cands.chains)} distinct chains exist)"
            return f"ROUTE candidate {i}"
        return f"action {action} (out of range)"


def format_chain(chain: Chain) -> str:
    """``"3[0:53]>5[53:70]"``: server[first block:end] per hop."""
    return ">".join(f"{h.server}[{h.start}:{h.end}]" for h in chain) or "(empty)"


__all__ = [
    "CONTROLS",
    "PLACEMENT_STARTS",
    "DecisionCodec",
    "EnvConfigError",
    "InvalidActionError",
    "Pending",
    "design_sessions_for",
    "format_chain",
    "normalise_chain",
]
