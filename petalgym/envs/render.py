"""Rendering of the swarm: text (``"ansi"``) and a picture (``"rgb_array"``) of the placement and load.

The picture is drawn directly with numpy (no matplotlib: ~100x faster, no figure state): one row per
server, one column band per block. A server's span is coloured by status (ONLINE blue, LOADING orange,
DRAINING grey); the band on the right shows its cache use (red = used, pale = free). The joining server
of a PLACE decision is outlined in yellow; the hops of the built-in chain of a ROUTE decision are drawn
in green over the spans. The bottom rows show per-block coverage (darker = more ONLINE hosts).
:func:`legend_strip` draws the key to these colours once (matplotlib's Agg canvas, no pyplot state); the
env appends it below every picture.
"""

from __future__ import annotations

import numpy as np

from petalgym.envs.codec import Pending, format_chain
from petalgym.simulator import DecisionKind, Simulator
from petalgym.swarm import ServerStatus

_STATUS_COLOUR = {
    ServerStatus.ONLINE: (66, 110, 200),
    ServerStatus.LOADING: (235, 150, 50),
    ServerStatus.DRAINING: (150, 150, 150),
}
_BG = (255, 255, 255)
_GRID = (225, 225, 225)
_CHAIN = (40, 170, 70)
_JOIN = (240, 200, 0)
_USED = (210, 60, 60)
_FREE = (245, 215, 215)

ROW_PX = 12  # height of one server row
GAP_PX = 2
LOAD_PX = 80  # width of the cache-use band
MARGIN = 6


def render_text(sim: Simulator | None, pending: Pending | None, width: int = 70) -> str:
    """A multi-line text picture: the pending decision, one line per server, coverage, candidates."""
    if sim is None:
        return "PetalAlloc: not reset yet\n"
    view = sim.view
    L = view.num_blocks
    scale = max(1, -(-L // width))  # blocks per character
    cols = -(-L // scale)
    done = sum(1 for r in sim.finished if r.status.name == "COMPLETED")
    failed = len(sim.finished) - done
    lines = [
        f"t={sim.now:.2f}s  requests: {len(sim.requests)} arrived, {done} completed, {failed} failed, "
        f"{sim.load.in_flight} in flight"
    ]
    if pending is None:
        lines.append("decision: none (episode over)")
    elif pending.decision.kind == DecisionKind.PLACE:
        j = pending.decision.server
        lines.append(
            f"decision: PLACE server {j} ({view.scenario.servers[j].name}); built-in: {pending.answer}"
        )
    else:
        r = pending.decision.request
        lines.append(
            f"decision: ROUTE request {r.id} (client {r.client}, l_in={r.l_in}, l_out={r.l_out}, "
            f"from block {r.route_from})"
        )
    for s in view.servers:
        row = ["."] * cols
        if s.start >= 0 and s.status != ServerStatus.OFFLINE:
            ch = {ServerStatus.ONLINE: "#", ServerStatus.LOADING: "+", ServerStatus.DRAINING: "~"}[s.status]
            for b in range(s.start, s.end):
                row[b // scale] = ch
        cache = s.cache_capacity
        use = f"{100.0 * s.used_bytes / cache:5.1f}%" if cache > 0 else "    -"
        mark = "*" if pending is not None and pending.decision.server == s.id else " "
        lines.append(
            f"{mark}{s.id:3d} {s.spec.profile.name[:8]:8s} {s.status.name:8s} |{''.join(row)}| "
            f"cache {use} {len(s.sessions):3d} sess"
        )
    cov = view.coverage()
    glyphs = " 123456789"
    cov_row = "".join(
        glyphs[min(max(cov[b * scale : (b + 1) * scale]), 9)] if cov[b * scale : (b + 1) * scale] else " "
        for b in range(cols)
    )
    lines.append(f"{'coverage':22s}|{cov_row}|")
    if pending is not None and pending.candidates is not None:
        for i, (c, src) in enumerate(zip(pending.candidates.chains, pending.candidates.sources, strict=True)):
            lines.append(f"  candidate {i} ({src}): {format_chain(c)}")
    return "\n".join(lines) + "\n"


def render_rgb(
    sim: Simulator | None, pending: Pending | None, num_servers: int, num_blocks: int
) -> np.ndarray:
    """An RGB picture (uint8, shape (H, W, 3)) of the placement and load; blank before the first reset."""
    block_px = max(2, 480 // num_blocks)
    rows = num_servers + 2  # servers + a gap row + coverage
    h = 2 * MARGIN + rows * (ROW_PX + GAP_PX)
    w = 2 * MARGIN + num_blocks * block_px + GAP_PX * 4 + LOAD_PX
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = _BG
    x0 = MARGIN
    lx = MARGIN + num_blocks * block_px + 4 * GAP_PX
    for i in range(num_servers):  # grid rows
        y = MARGIN + i * (ROW_PX + GAP_PX)
        img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px] = _GRID
        img[y : y + ROW_PX, lx : lx + LOAD_PX] = _GRID
    if sim is None:
        return img
    view = sim.view
    chain_hops = {}
    if pending is not None and pending.candidates is not None:
        chain_hops = {hop.server: hop for hop in pending.candidates.chains[0]}
    joining = (
        pending.decision.server if pending is not None and pending.decision.kind == DecisionKind.PLACE else -1
    )
    for s in view.servers:
        y = MARGIN + s.id * (ROW_PX + GAP_PX)
        if s.id == joining:
            img[y - 1 : y + ROW_PX + 1, x0 - 2 : x0 + num_blocks * block_px + 2] = _JOIN
            img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px] = _GRID
        if s.start >= 0 and s.status in _STATUS_COLOUR:
            img[y : y + ROW_PX, x0 + s.start * block_px : x0 + s.end * block_px] = _STATUS_COLOUR[s.status]
            hop = chain_hops.get(s.id)
            if hop is not None:
                img[y + 3 : y + ROW_PX - 3, x0 + hop.start * block_px : x0 + hop.end * block_px] = _CHAIN
        if s.cache_capacity > 0:
            used = int(round(LOAD_PX * min(s.used_bytes / s.cache_capacity, 1.0)))
            img[y : y + ROW_PX, lx : lx + LOAD_PX] = _FREE
            img[y : y + ROW_PX, lx : lx + used] = _USED
    cov = np.asarray(view.coverage(), dtype=float)
    y = MARGIN + (num_servers + 1) * (ROW_PX + GAP_PX)
    top = max(float(cov.max()), 1.0)
    shade = (235 - 200 * cov / top).astype(np.uint8)
    band = np.repeat(shade, block_px)
    img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px, 0] = band
    img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px, 1] = band
    img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px, 2] = 255
    uncovered = np.repeat(cov == 0, block_px)
    img[y : y + ROW_PX, x0 : x0 + num_blocks * block_px][:, uncovered] = _USED
    return img


#: The picture's colours and what they mean, in legend order.
LEGEND: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("online span", _STATUS_COLOUR[ServerStatus.ONLINE]),
    ("loading", _STATUS_COLOUR[ServerStatus.LOADING]),
    ("draining", _STATUS_COLOUR[ServerStatus.DRAINING]),
    ("built-in chain's hops", _CHAIN),
    ("joining server", _JOIN),
    ("cache used / uncovered block", _USED),
    ("cache free", _FREE),
    ("coverage (darker: more hosts)", (35, 35, 255)),
)


def legend_strip(width: int) -> np.ndarray:
    """The key to :func:`render_rgb`'s colours as an RGB uint8 strip ``width`` pixels wide."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ncol = max(1, min(len(LEGEND), width // 150))
    rows = -(-len(LEGEND) // ncol)
    height = 12 + 15 * rows
    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(fig)
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="none", label=label) for label, c in LEGEND]
    fig.legend(handles=handles, loc="center", ncol=ncol, frameon=False, fontsize=7, handlelength=1.2)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[:height, :width, :3].copy()


__all__ = ["LEGEND", "legend_strip", "render_rgb", "render_text"]
