"""Compute contention (``contention: fifo``): each server is one non-preemptive FIFO processor of steps.

A PETALS 2.2 server runs one compute thread that takes one task at a time, in order of submission
(realism.md section 1.1). In this mode every running session sends its tokens one step at a time:
token t goes through its hops in order; at hop h the step reaches the server ``alpha`` x the hop's
overhead after it was sent, waits in the server's queue, is computed (blocks x tau, or for a per-block
prefill one job per block, each re-queued at the tail as PETALS' handler does), and returns to the client
(1 - alpha) x the overhead after it ends; the client then sends the next hop or the next token.

The engine is exact and event-driven. Steps are handled in the order they reach their server; steps that
reach servers at the same time are handled in the order their segments started (a heap of arrival events
keyed by (time, segment rank)), so exact ties, common with zero overheads or dyadic times, resolve the same
way whatever produced them. A FIFO processor that sees its arrivals in that order knows each job's start
at its arrival (Lindley: start = max(arrival, processor free)), so one event per job suffices. With
no overlap on any server the times reduce to the paper's T_c(p) (plus its initial delay):
:meth:`petalgym.perfmodel.TimeModel.segment_steps` gives the steps, which sum to ``segment_times``.

KV cache, admission and waiting are the simulator's, unchanged; this module only times the steps.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

#: Prefill modes: one job per block re-queued at the tail (PETALS' multi-token steps), or one job.
PREFILL_MODES = ("per_block", "merged")


@dataclass(frozen=True)
class Contention:
    """The scenario's ``contention`` section.

    Args:
        mode: ``none`` (the paper's model: servers never slow down under load) or ``fifo``.
        alpha: share of a hop's overhead (network + handler) spent before the server sees the step.
        prefill: ``per_block`` (k jobs of one block each, as PETALS cuts multi-token steps) or ``merged``.
    """

    mode: str = "none"
    alpha: float = 0.5
    prefill: str = "per_block"

    @property
    def enabled(self) -> bool:
        return self.mode == "fifo"


class _Session:
    """One running segment of a request: its hop steps and where its current token is."""

    __slots__ = (
        "alive",
        "decode",
        "final_at",
        "hop",
        "jobs_left",
        "rank",
        "received",
        "recv_at",
        "request",
        "steps",
        "token",
        "tokens_left",
    )

    def __init__(self, request: Any, steps: list, tokens_left: int, rank: int, alpha: float):
        self.request = request
        self.rank = rank  # start order: at equal times, the segment started first goes first
        self.steps = steps
        # per hop, a decode step's (server, work, return after the work, send delay of the next step):
        # the products the engine would form at every token, formed once
        n = len(steps)
        self.decode = [
            (st[0], st[1] * st[5], (1.0 - alpha) * st[4], alpha * steps[(h + 1) % n][4])
            for h, st in enumerate(steps)
        ]
        self.tokens_left = tokens_left  # tokens of this segment not yet received
        self.token = 0  # index (in this segment) of the token in flight
        self.hop = 0
        self.jobs_left = 0
        self.alive = True
        self.received = 0  # tokens of this segment received up to ``recv_at`` (inclusive)
        self.recv_at = -math.inf  # when the last counted token was (or will be) received
        self.final_at = math.nan  # when the last token is received, once known


class FifoProcessors:
    """The servers' processors and the steps of every running session (times in seconds).

    Args:
        num_servers: servers in the swarm.
        contention: the scenario's contention settings (``alpha``, ``prefill``).
    """

    def __init__(self, num_servers: int, contention: Contention):
        self.alpha = contention.alpha
        self.per_block = contention.prefill == "per_block"
        self.free_at = [0.0] * num_servers  # when each processor has done every job it was given
        self.heap: list[tuple[float, int, _Session, int]] = []  # (time, segment rank, session, kind)
        self._started = 0  # segments started (the next one's rank)
        self._sessions: dict[int, _Session] = {}
        self.jobs = 0  # jobs processed (for run statistics)

    # sessions ----------------------------------------------------------------------------------------
    def start(self, request: Any, t: float, delay: float, steps: list, tokens_left: int) -> None:
        """``request`` starts a segment at ``t``: its first step is sent at ``t + delay``."""
        self.stop(request)
        sess = _Session(request, steps, tokens_left, self._started, self.alpha)
        self._started += 1
        self._sessions[request.id] = sess
        sess.jobs_left = steps[0][1] if self.per_block and steps[0][6] else 1
        heapq.heappush(self.heap, (t + delay + self.alpha * steps[0][2], sess.rank, sess, _ARRIVE))

    def stop(self, request: Any) -> None:
        """Forget ``request``'s segment (completed or interrupted); a job it already gave a processor
        still runs there (scheduling is non-preemptive)."""
        sess = self._sessions.pop(request.id, None)
        if sess is not None:
            sess.alive = False

    def tokens_received(self, request: Any, t: float) -> int:
        """Tokens of ``request``'s current segment received by the client at or before ``t``."""
        sess = self._sessions.get(request.id)
        if sess is None:
            return 0
        return sess.received if sess.recv_at <= t else sess.received - 1

    def forecast(self, request: Any, t: float, token_time: float) -> float:
        """When ``request``'s segment should end, seen at ``t`` (its planned end has come and it is still
        running): its last token's time once known; else ``t`` + the larger of (tokens left x its mean
        token time so far, at least ``token_time``) and half the time it has run. The second term doubles
        the horizon of a session that keeps running late, so it is extended O(log(actual / planned))
        times; one that then ends early moves the reservations behind it up."""
        sess = self._sessions[request.id]
        if not math.isnan(sess.final_at):
            return sess.final_at
        done = sess.received if sess.recv_at <= t else sess.received - 1
        elapsed = t - request.seg_start
        per_token = max(token_time, elapsed / done) if done >= 1 else token_time
        return t + max(max(sess.tokens_left, 1) * per_token, 0.5 * elapsed)

    def reset_server(self, server: int, t: float) -> None:
        """``server`` went offline or reloads: its processor drops its queue."""
        self.free_at[server] = t

    # events ----------------------------------------------------------------------------------------
    @property
    def next_time(self) -> float:
        """Time of the next step event (inf if none)."""
        return self.heap[0][0] if self.heap else math.inf

    def run_until(self, limit: float) -> tuple[float, Any] | None:
        """Process step events up to and including ``limit``; stop at the first session that receives its
        last token and return (that time, its request); None when no event is left before ``limit``.

        A handled step's next event goes through ``heappushpop`` (one sift; no heap change at all when it is
        the earliest, e.g. a session alone on its servers): the order is the same as pushing and popping,
        since (time, segment rank) keys are unique (a session has one event pending at a time)."""
        heap = self.heap
        pop, push, pushpop = heapq.heappop, heapq.heappush, heapq.heappushpop
        alpha, beta = self.alpha, 1.0 - self.alpha
        free = self.free_at
        per_block = self.per_block
        jobs = 0
        event = None  # the next event to handle, already off the heap
        while True:
            if event is None:
                if not heap or heap[0][0] > limit:
                    break
                event = pop(heap)
            t, _, sess, kind = event
            event = None
            if not sess.alive:
                continue
            if kind == _FINISH:
                self.jobs += jobs
                self._sessions.pop(sess.request.id, None)
                sess.alive = False
                return t, sess.request
            jobs += 1
            h = sess.hop
            if sess.token:  # a decode step (most events): its products are precomputed
                server, work, back, ahead = sess.decode[h]
                f = free[server]
                done = (t if f <= t else f) + work
                free[server] = done
                recv = done + back
                h += 1
                if h < len(sess.decode):  # the client sends the token to the next hop
                    sess.hop = h
                    nxt = (recv + ahead, sess.rank, sess, _ARRIVE)
                else:
                    nxt = _receive(sess, recv, ahead)
            else:  # the first token: a prefill, one job per block (per_block) or one job; or a redo step
                steps = sess.steps
                server, blocks, first_o, first_w, _, _, prefill = steps[h]
                f = free[server]
                done = (t if f <= t else f) + (first_w if per_block and prefill else blocks * first_w)
                free[server] = done
                if per_block and sess.jobs_left > 1:  # the next block joins the tail when this ends
                    sess.jobs_left -= 1
                    nxt = (done, sess.rank, sess, _ARRIVE)
                else:
                    recv = done + beta * first_o
                    h += 1
                    if h < len(steps):  # the client sends the same token to the next hop
                        sess.hop = h
                        sess.jobs_left = steps[h][1] if per_block and steps[h][6] else 1
                        nxt = (recv + alpha * steps[h][2], sess.rank, sess, _ARRIVE)
                    else:
                        nxt = _receive(sess, recv, alpha * steps[0][4])
            event = pushpop(heap, nxt)
            if event[0] > limit:
                push(heap, event)
                event = None
                break
        self.jobs += jobs
        return None


def _receive(sess: _Session, recv: float, ahead: float) -> tuple[float, int, _Session, int]:
    """The client receives ``sess``'s token at ``recv`` (s); returns the session's next event: its end,
    or the next token's first step, sent ``ahead`` seconds later to the first hop."""
    sess.tokens_left -= 1
    req = sess.request
    if sess.tokens_left == 0:
        planned = req.finish  # the simulator's planned end: rounding must not make it late
        if abs(recv - planned) <= _SNAP * (1.0 + abs(planned)):
            recv = planned
    sess.received += 1
    sess.recv_at = recv
    if req.first_token != req.first_token:  # nan: the request's first token
        req.first_token = recv
    if sess.tokens_left == 0:
        sess.final_at = recv
        return recv, sess.rank, sess, _FINISH
    sess.token += 1
    sess.hop = 0
    return recv + ahead, sess.rank, sess, _ARRIVE


_ARRIVE, _FINISH = 0, 1
_SNAP = 1e-9  # relative: a last token this close to its planned end ends at it (float rounding only)


__all__ = ["PREFILL_MODES", "Contention", "FifoProcessors"]
