"""A small force-directed layout (Fruchterman-Reingold) for the agent topology.

Each node's x is pinned to its layer's column (orchestrator left, data sources right), so
the graph reads left to right; the forces order the nodes within each column in y (linked
nodes pull together, heavier edges harder, all nodes push apart), and each column is then
spread evenly in that order, so labels do not overlap. Deterministic, and warm-started from
the previous positions so a refresh moves nodes little.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def spring_layout(nodes: Sequence[str], edges: Sequence[tuple[str, str, float]], *, layers: Mapping[str, int],
                  previous: Mapping[str, tuple[float, float]] | None = None,
                  iterations: int = 150, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Positions in [0, 1] x [0, 1] for ``nodes``."""
    n = len(nodes)
    if n == 0:
        return {}
    index = {name: i for i, name in enumerate(nodes)}
    depth = max(1, max(layers.values(), default=1))
    column = np.array([layers.get(v, 0) / depth for v in nodes])
    rng = np.random.default_rng(seed)
    pos = np.column_stack([column, rng.random(n)])
    for name, (_, prev_y) in (previous or {}).items():
        if name in index:
            pos[index[name], 1] = prev_y
    pairs = [(index[a], index[b], w) for a, b, w in edges if a in index and b in index]
    src = np.array([a for a, _, _ in pairs], dtype=int)
    dst = np.array([b for _, b, _ in pairs], dtype=int)
    weight = np.log1p(np.array([w for _, _, w in pairs], dtype=float))
    weight = weight / weight.max() if len(weight) and weight.max() > 0 else weight
    k = 1.0 / np.sqrt(n)
    temperature = 0.1
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=2), 1e-3)
        disp = (delta * (k * k / dist ** 2)[:, :, None]).sum(axis=1)
        if len(src):
            d = pos[src] - pos[dst]
            length = np.maximum(np.linalg.norm(d, axis=1), 1e-3)
            pull = d * ((length / k) * (0.3 + weight))[:, None]
            np.add.at(disp, src, -pull)
            np.add.at(disp, dst, pull)
        step = np.abs(disp[:, 1])
        pos[:, 1] += np.sign(disp[:, 1]) * np.minimum(step, temperature)
        temperature *= 0.97
    # spread each column evenly in the order the forces found (few crossings, no overlaps), and
    # stagger crowded columns so their labels do not sit on top of each other
    x, y = column.copy(), np.zeros(n)
    for layer in {layers.get(v, 0) for v in nodes}:
        members = sorted((i for i, v in enumerate(nodes) if layers.get(v, 0) == layer), key=lambda i: pos[i, 1])
        for rank, i in enumerate(members):
            y[i] = (rank + 0.5) / len(members)
            if len(members) > 6:
                x[i] += 0.04 * (1 if rank % 2 else -1)
    return {name: (float(x[i]), float(y[i])) for name, i in index.items()}
