"""Internet topologies (Topology Zoo via REPETITA ``.graph`` files) and round-trip times over them.

The raw round-trip time between two nodes is 2 x the shortest-path one-way delay (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import networkx as nx
import numpy as np

from petalgym.errors import ScenarioError

#: Names of the topologies shipped with petalgym, mapped to their file names.
BUILTIN_TOPOLOGIES: dict[str, str] = {
    "abovenet": "Abvt.graph",
    "bellcanada": "Bellcanada.graph",
    "gtsce": "GtsCe.graph",
}


@dataclass(frozen=True, eq=False)
class Topology:
    """An undirected network whose edges carry one-way delays in seconds."""

    name: str
    graph: nx.Graph
    labels: tuple[str, ...]

    @property
    def num_nodes(self) -> int:
        return self.graph.number_of_nodes()

    def degree(self, node: int) -> int:
        return int(self.graph.degree[node])

    def largest_component(self) -> list[int]:
        """Nodes of the largest connected component, sorted."""
        return sorted(max(nx.connected_components(self.graph), key=len))

    def rtt_matrix(self, sources: list[int], targets: list[int]) -> np.ndarray:
        """Raw RTT in seconds, shape (len(sources), len(targets)): 2 x shortest-path delay."""
        out = np.empty((len(sources), len(targets)))
        for i, s in enumerate(sources):
            dist = nx.single_source_dijkstra_path_length(self.graph, s, weight="delay")
            for k, t in enumerate(targets):
                if t not in dist:
                    raise ScenarioError(f"topology {self.name}: node {t} is unreachable from node {s}")
                out[i, k] = 2.0 * dist[t]
        return out


def parse_graph(text: str, name: str) -> Topology:
    """Parse the REPETITA ``.graph`` format (delays in microseconds) into a :class:`Topology`."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    try:
        i = 0
        if not lines[i].startswith("NODES"):
            raise ValueError("expected a 'NODES n' line first")
        n = int(lines[i].split()[1])
        i += 2  # skip the "label x y" header
        labels = [lines[i + k].split()[0] for k in range(n)]
        i += n
        if not lines[i].startswith("EDGES"):
            raise ValueError(f"expected an 'EDGES e' line after {n} nodes")
        e = int(lines[i].split()[1])
        i += 2  # skip the "label src dest weight bw delay" header
        graph = nx.Graph()
        graph.add_nodes_from(range(n))
        for k in range(e):
            parts = lines[i + k].split()
            src, dst, delay_us = int(parts[1]), int(parts[2]), float(parts[5])
            if not (0 <= src < n and 0 <= dst < n):
                raise ValueError(f"edge {parts[0]} names a node outside 0..{n - 1}")
            if delay_us < 0:
                raise ValueError(f"edge {parts[0]} has a negative delay {delay_us}")
            delay = delay_us * 1e-6
            if graph.has_edge(src, dst):
                delay = min(delay, graph[src][dst]["delay"])
            graph.add_edge(src, dst, delay=delay)
    except (IndexError, ValueError) as exc:
        raise ScenarioError(f"topology {name}: malformed .graph file ({exc})") from None
    return Topology(name=name, graph=graph, labels=tuple(labels))


def is_file(path: Path) -> bool:
    """``path.is_file()``, False instead of an OSError (a name too long for the file system, ...)."""
    try:
        return path.is_file()
    except OSError:
        return False


@lru_cache(maxsize=16)
def load_topology(name_or_path: str) -> Topology:
    """Load a built-in topology by name (``abovenet``, ``bellcanada``, ``gtsce``) or a ``.graph`` path."""
    key = name_or_path.lower()
    if key in BUILTIN_TOPOLOGIES:
        ref = Path(__file__).parent / "data" / "topologies" / BUILTIN_TOPOLOGIES[key]
        return parse_graph(ref.read_text(), key)
    path = Path(name_or_path)
    if not is_file(path):
        shown = repr(name_or_path) if len(name_or_path) <= 300 else f"{name_or_path[:280]!r}..."
        raise ScenarioError(f"topology {shown}: no such file, and not one of {sorted(BUILTIN_TOPOLOGIES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            f"topology {path.stem}: not a UTF-8 text (.graph) file (byte {exc.start})"
        ) from None
    except OSError as exc:
        raise ScenarioError(f"topology {path.stem}: cannot be read ({exc.strerror or exc})") from None
    return parse_graph(text, path.stem)
