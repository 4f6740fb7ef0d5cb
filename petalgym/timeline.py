"""Integer amounts at points in time with prefix-sum searches: the structure behind the cache timelines.

A server's planned cache use is a step function of time: it drops when a session ends and rises when a
reservation starts. :class:`Timeline` stores such a function as net amounts (bytes) at distinct times and
answers, in O(log n) for n distinct times, the questions the admission rule and WS-RR ask: the sum of
the amounts up to a time, and the first time after a given one where that running sum goes above (or
back to at most) a limit. Under overload a server holds thousands of sessions and reservations, so a scan
of them per question would make a simulation quadratic in its number of requests.

Layout: the times are kept sorted in chunks of at most ``2 * LOAD`` entries (like ``sortedcontainers``);
each chunk knows its sum and the largest and smallest of its running sums, and a segment tree over the
chunks combines them, so a search skips whole chunks whose running sums cannot cross the limit. Chunk
summaries are recomputed lazily, when a question follows a change; a chunk that empties stays in place
(it sums to nothing) until empty chunks are half of all, so that sessions ending in time order do not
rebuild the tree each time a chunk runs dry.

:class:`ReleaseTimeline` is the special case of non-negative amounts (the bytes a server releases at
each time): its prefix sum never decreases, so a Fenwick tree of chunk sums answers its only question.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate
from operator import add

_INF = float("inf")


class _Chunks:
    """Net integer amounts at distinct sorted times, in chunks of at most ``2 * LOAD`` entries; subclasses
    keep per-chunk summaries (:meth:`_summary_lists`) and recompute them for the chunks in ``_dirty``
    (all of them, with the layout, after ``_reshaped``)."""

    LOAD = 32

    __slots__ = ("_dirty", "_empty", "_heads", "_keys", "_reshaped", "_vals")

    def __init__(self) -> None:
        self._keys: list[list[float]] = []
        self._vals: list[list[int]] = []
        self._heads: list[float] = []  # first time of each chunk (an empty chunk keeps its last one)
        self._dirty: set[int] = set()
        self._empty = 0  # chunks without entries
        self._reshaped = True  # chunks were added or removed since the last summary

    def _summary_lists(self) -> tuple[list, ...]:
        """The per-chunk summary lists (one entry per chunk), kept aligned with the chunks."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------
    # Changes
    # ----------------------------------------------------------------------------------------------
    def add(self, t: float, amount: int) -> None:
        """Add ``amount`` at time ``t``."""
        if not amount:
            return
        heads = self._heads
        if not heads:
            self._keys.append([t])
            self._vals.append([amount])
            heads.append(t)
            for lst in self._summary_lists():
                lst.append(0)
            self._dirty.add(0)
            self._reshaped = True
            return
        c = bisect_right(heads, t) - 1
        if c < 0:
            c = 0
        keys = self._keys[c]
        vals = self._vals[c]
        i = bisect_left(keys, t)
        if i < len(keys) and keys[i] == t:
            v = vals[i] + amount
            if v:
                vals[i] = v
            else:
                del keys[i]
                del vals[i]
                if not keys:
                    self._empty += 1
                    if self._empty > 2 and 2 * self._empty > len(heads):
                        self._compact()
                        return
                elif i == 0:
                    heads[c] = keys[0]
        else:
            if not keys:
                self._empty -= 1
            keys.insert(i, t)
            vals.insert(i, amount)
            if i == 0:
                heads[c] = t
            if len(keys) > 2 * self.LOAD:
                self._split(c)
                return
        self._dirty.add(c)

    def _split(self, c: int) -> None:
        keys, vals = self._keys[c], self._vals[c]
        half = len(keys) // 2
        self._keys[c : c + 1] = [keys[:half], keys[half:]]
        self._vals[c : c + 1] = [vals[:half], vals[half:]]
        self._heads[c : c + 1] = [keys[0], keys[half]]
        for lst in self._summary_lists():
            lst[c : c + 1] = [0, 0]
        self._dirty = {d if d < c else d + 1 for d in self._dirty if d != c} | {c, c + 1}
        self._reshaped = True

    def _compact(self) -> None:
        """Drop the empty chunks (every summary is recomputed at the next question)."""
        keep = [c for c, keys in enumerate(self._keys) if keys]
        self._keys = [self._keys[c] for c in keep]
        self._vals = [self._vals[c] for c in keep]
        self._heads = [self._heads[c] for c in keep]
        n = len(keep)
        for lst in self._summary_lists():
            lst[:] = [0] * n
        self._dirty = set(range(n))
        self._empty = 0
        self._reshaped = True

    # ----------------------------------------------------------------------------------------------
    # Contents
    # ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

    def __bool__(self) -> bool:
        return len(self._heads) > self._empty

    def items(self) -> list[tuple[float, int]]:
        """All (time, net amount) pairs in time order."""
        return [
            (t, v)
            for keys, vals in zip(self._keys, self._vals, strict=True)
            for t, v in zip(keys, vals, strict=True)
        ]

    @property
    def total(self) -> int:
        """Sum of all amounts."""
        return sum(sum(v) for v in self._vals)


class Timeline(_Chunks):
    """Net integer amounts at distinct times (seconds), with prefix sums and first-crossing searches.

    ``add(t, x)`` adds ``x`` at time ``t`` (amounts at equal times merge; a time whose net amount becomes
    0 is dropped). ``prefix(t)`` is the sum of the amounts at times <= t. ``first_above(after, limit)``
    and ``first_at_most(after, limit)`` return the first stored time after ``after`` at which the prefix
    sum is > ``limit`` (resp. <= ``limit``), or None.
    """

    __slots__ = ("_cmax", "_cmin", "_csum", "_run", "_size", "_tmax", "_tmin", "_tsum")

    def __init__(self) -> None:
        super().__init__()
        self._run: list[list[int]] = []  # running sums inside each chunk (valid unless dirty)
        self._csum: list[int] = []
        self._cmax: list[float] = []
        self._cmin: list[float] = []
        self._size = 1
        self._tsum: list[float] = [0, 0]
        self._tmax: list[float] = [-_INF, -_INF]
        self._tmin: list[float] = [_INF, _INF]

    def _summary_lists(self) -> tuple[list, ...]:
        return self._run, self._csum, self._cmax, self._cmin

    # ----------------------------------------------------------------------------------------------
    # Summaries
    # ----------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        """Recompute the summaries of changed chunks and the tree above them."""
        dirty = self._dirty
        if not dirty and not self._reshaped:
            return
        run, csum, cmax, cmin, vals = self._run, self._csum, self._cmax, self._cmin, self._vals
        for c in dirty:
            if vals[c]:
                running = run[c] = list(accumulate(vals[c]))
                csum[c] = running[-1]
                cmax[c] = max(running)
                cmin[c] = min(running)
            else:
                run[c], csum[c], cmax[c], cmin[c] = [], 0, -_INF, _INF
        if self._reshaped:
            self._rebuild()
        else:
            size, tsum, tmax, tmin = self._size, self._tsum, self._tmax, self._tmin
            for c in dirty:
                node = size + c
                tsum[node], tmax[node], tmin[node] = csum[c], cmax[c], cmin[c]
                while node > 1:
                    left = node & ~1
                    node >>= 1
                    s = tsum[left]
                    tsum[node] = s + tsum[left + 1]
                    hi, lo = tmax[left], tmin[left]
                    x = s + tmax[left + 1]
                    tmax[node] = x if x > hi else hi
                    x = s + tmin[left + 1]
                    tmin[node] = x if x < lo else lo
        dirty.clear()

    def _rebuild(self) -> None:
        """The whole tree from the chunk summaries, one level at a time."""
        n = len(self._csum)
        size = 1
        while size < n:
            size *= 2
        pad = size - n
        sums = self._csum + [0] * pad
        maxs = self._cmax + [-_INF] * pad
        mins = self._cmin + [_INF] * pad
        levels = [(sums, maxs, mins)]
        while len(sums) > 1:
            left_sums = sums[0::2]
            shifted_max = list(map(add, left_sums, maxs[1::2]))
            shifted_min = list(map(add, left_sums, mins[1::2]))
            sums = list(map(add, left_sums, sums[1::2]))
            maxs = list(map(max, maxs[0::2], shifted_max))
            mins = list(map(min, mins[0::2], shifted_min))
            levels.append((sums, maxs, mins))
        tsum, tmax, tmin = [0], [-_INF], [_INF]  # index 0 unused; then the root, ..., the leaves
        for sums, maxs, mins in reversed(levels):
            tsum += sums
            tmax += maxs
            tmin += mins
        self._size, self._tsum, self._tmax, self._tmin = size, tsum, tmax, tmin
        self._reshaped = False

    def _chunks_before(self, c: int) -> int:
        """Sum of the amounts of chunks 0..c-1 (summaries flushed)."""
        total = 0
        lo, hi = self._size, self._size + c
        tsum = self._tsum
        while lo < hi:
            if lo & 1:
                total += tsum[lo]
                lo += 1
            if hi & 1:
                hi -= 1
                total += tsum[hi]
            lo >>= 1
            hi >>= 1
        return total

    # ----------------------------------------------------------------------------------------------
    # Questions
    # ----------------------------------------------------------------------------------------------
    def prefix(self, t: float) -> int:
        """Sum of the amounts at times <= ``t``."""
        heads = self._heads
        c = bisect_right(heads, t) - 1
        if c < 0:
            return 0
        self._flush()
        i = bisect_right(self._keys[c], t)
        base = self._chunks_before(c)
        return base + self._run[c][i - 1] if i else base

    def next_crossing(self, after: float, limit: float) -> tuple[bool, float | None]:
        """(prefix(after) > limit, the first time > ``after`` at which that comparison flips, or None)."""
        heads = self._heads
        if not heads:
            return limit < 0, None
        self._flush()
        c = bisect_right(heads, after) - 1
        if c < 0:
            over = limit < 0
            return over, self._search_from(0, 0, 0, limit, not over)
        i = bisect_right(self._keys[c], after)
        base = self._chunks_before(c)
        over = (base + self._run[c][i - 1] if i else base) > limit
        return over, self._search_from(c, i, base, limit, not over)

    def first_above(self, after: float, limit: float, strict: bool = True) -> float | None:
        """The first time > ``after`` (>= if not ``strict``) whose prefix sum is > ``limit``, or None."""
        return self._search(after, limit, strict, True)

    def first_at_most(self, after: float, limit: float, strict: bool = True) -> float | None:
        """The first time > ``after`` (>= if not ``strict``) whose prefix sum is <= ``limit``, or None."""
        return self._search(after, limit, strict, False)

    def _search(self, after: float, limit: float, strict: bool, above: bool) -> float | None:
        heads = self._heads
        if not heads:
            return None
        self._flush()
        c = bisect_right(heads, after) - 1
        if c < 0:
            return self._search_from(0, 0, 0, limit, above)
        keys = self._keys[c]
        i = bisect_right(keys, after) if strict else bisect_left(keys, after)
        return self._search_from(c, i, self._chunks_before(c), limit, above)

    def _search_from(self, c: int, i: int, base: int, limit: float, above: bool) -> float | None:
        """The first time from entry ``i`` of chunk ``c`` on (``base``: the sum before chunk c) whose prefix
        sum is > ``limit`` (``above``) or <= ``limit``; None if none."""
        if i == 0:  # the whole chunk: let the tree decide
            d, acc = self._descend(c, base, limit, above)
        else:
            run = self._run[c]
            if i < len(run):
                k = _first_crossing(run[i:], limit - base, above)
                if k >= 0:
                    return self._keys[c][i + k]
            d, acc = self._descend(c + 1, base + self._csum[c], limit, above)
        if d < 0:
            return None
        return self._keys[d][_first_crossing(self._run[d], limit - acc, above)]

    def _descend(self, first: int, acc: float, limit: float, above: bool) -> tuple[int, float]:
        """(chunk, prefix before it) of the first chunk >= ``first`` whose running sums, after ``acc``,
        cross ``limit``; (-1, acc) if none."""
        n = len(self._heads)
        if first >= n:
            return -1, acc
        size, tsum = self._size, self._tsum
        bound = self._tmax if above else self._tmin
        lo, hi = first + size, n + size
        left: list[int] = []
        right: list[int] = []
        while lo < hi:
            if lo & 1:
                left.append(lo)
                lo += 1
            if hi & 1:
                hi -= 1
                right.append(hi)
            lo >>= 1
            hi >>= 1
        right.reverse()
        for node in left + right:
            edge = acc + bound[node]
            if (edge > limit) if above else (edge <= limit):
                while node < size:
                    node *= 2
                    edge = acc + bound[node]
                    if not ((edge > limit) if above else (edge <= limit)):
                        acc += tsum[node]
                        node += 1
                return node - size, acc
            acc += tsum[node]
        return -1, acc


class ReleaseTimeline(_Chunks):
    """Non-negative net amounts at distinct times (e.g. the bytes a server releases then), so the prefix
    sum never decreases; ``first_above(limit)`` is the first stored time at which it exceeds ``limit``.

    The chunk sums sit in a Fenwick tree: a question after changes re-sums the changed chunks and updates
    the tree (O(log n) each), then walks it down to the chunk where the sum passes ``limit`` and bisects
    that chunk's running sums. Callers keep every net amount >= 0 (they remove only what they added at
    the same time)."""

    __slots__ = ("_csum", "_fenwick")

    def __init__(self) -> None:
        super().__init__()
        self._csum: list[int] = []
        self._fenwick: list[int] = [0]  # 1-based Fenwick tree over the chunk sums

    def _summary_lists(self) -> tuple[list, ...]:
        return (self._csum,)

    def _update(self) -> None:
        csum, vals, tree = self._csum, self._vals, self._fenwick
        if self._reshaped:  # the chunks that changed are dirty; the others' sums moved with them
            for c in self._dirty:
                csum[c] = sum(vals[c])
            # node i sums the chunks (i & (i - 1), i]: a difference of prefix sums
            prefix = [0, *accumulate(csum)]
            self._fenwick = [0] + [prefix[i] - prefix[i & (i - 1)] for i in range(1, len(prefix))]
            self._reshaped = False
        else:
            n = len(csum)
            for c in self._dirty:
                new = sum(vals[c])
                delta = new - csum[c]
                if delta:
                    csum[c] = new
                    i = c + 1
                    while i <= n:
                        tree[i] += delta
                        i += i & -i
        self._dirty.clear()

    def first_above(self, limit: float) -> float | None:
        """The first time whose prefix sum is > ``limit``, or None."""
        if not self._heads:
            return None
        if self._dirty or self._reshaped:
            self._update()
        keys = self._keys
        if limit < 0:  # the first stored time (every prefix sum is >= 0)
            return next((k[0] for k in keys if k), None)
        tree = self._fenwick
        n = len(tree) - 1
        pos, rest = 0, limit  # chunks < pos sum to limit - rest <= limit
        step = 1 << (n.bit_length() - 1)
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= rest:
                pos, rest = nxt, rest - tree[nxt]
            step >>= 1
        if pos >= n:
            return None
        return keys[pos][bisect_right(list(accumulate(self._vals[pos])), rest)]


def _first_crossing(running: list[int], limit: float, above: bool) -> int:
    """Index of the first value > ``limit`` (``above``) or <= ``limit`` in ``running``; -1 if none."""
    if above:
        if max(running) <= limit:
            return -1
        for k, x in enumerate(running):
            if x > limit:
                return k
    else:
        if min(running) > limit:
            return -1
        for k, x in enumerate(running):
            if x <= limit:
                return k
    return -1  # pragma: no cover


__all__ = ["Timeline"]
