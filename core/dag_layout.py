"""Layered drawing of a DAG as SVG, with no library and no JavaScript: the run graph (issue 22) and the playbook
editor (issue 23) both draw with it.

`layout()` places generic boxes: layers by longest path from the sources (a node sits one layer below its
deepest dependency, so parallel branches share a layer, side by side), edges that skip layers pass through
virtual points of their own, and a few barycentric sweeps order each layer to cut crossings. `render_svg()` draws
boxes and edges as SVG markup: every text is escaped here, classes carry the colours (the page's CSP allows no
style attribute), presentation attributes carry the geometry. Pure and deterministic: the same input gives the
same bytes (ties break on the input order, never on a hash).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

SWEEPS = 8  # down-and-up barycentric passes; more rarely helps a graph of a few dozen steps
LINE_HEIGHT = 16.0
PAD = 10.0
CHAR_WIDTH = 7.0  # of the 12-13 px sans text the classes set: truncation is by estimate, the tooltip is whole


class CycleError(ValueError):
    """The graph has a cycle: a DAG's layers do not exist. The message names the cycle."""


@dataclass(frozen=True)
class TextLine:
    text: str
    cls: str = ""  # CSS class of the line (rg-title, rg-muted, …)


@dataclass(frozen=True)
class Box:
    """A node to draw: an id, its lines of text, where it links to and its classes."""

    id: str
    lines: tuple[TextLine, ...] = ()
    href: str | None = None
    classes: str = ""
    title: str = ""  # the tooltip: the whole text, where a line had to be cut
    badge: str | None = None  # a short label in a chip at the top right (an agent's two letters)
    width: float = 200.0
    label: str = ""  # what a screen reader says for the link (default: the lines)

    @property
    def height(self) -> float:
        return 2 * PAD + max(1, len(self.lines)) * LINE_HEIGHT


@dataclass(frozen=True)
class Edge:
    source: str  # drawn from the source (a dependency) down to the target
    target: str
    classes: str = ""


@dataclass
class Placed:
    id: str
    layer: int
    order: int
    x: float  # left
    y: float  # top
    width: float
    height: float
    virtual: bool = False

    @property
    def cx(self) -> float:
        return self.x + self.width / 2


@dataclass
class Route:
    edge: Edge
    points: list[tuple[float, float]]
    reversed: bool = False  # an edge turned round to break a cycle (on_cycle="break")


@dataclass
class Layout:
    nodes: dict[str, Placed]
    routes: list[Route]
    width: float
    height: float
    layers: list[list[str]] = field(default_factory=list)  # real node ids per layer, in their drawn order


def _check(ids: Sequence[str], edges: Sequence[Edge]) -> None:
    known = set(ids)
    if len(known) != len(ids):
        raise ValueError("node ids must be unique")
    for edge in edges:
        if edge.source not in known or edge.target not in known:
            raise ValueError(f"edge {edge.source} → {edge.target} names a node that does not exist")


def _find_back_edges(ids: Sequence[str], edges: Sequence[Edge]) -> set[int]:
    """Indexes of the edges that close a cycle, found by a depth-first walk in input order."""
    out: dict[str, list[tuple[str, int]]] = {i: [] for i in ids}
    for index, edge in enumerate(edges):
        out[edge.source].append((edge.target, index))
    state: dict[str, int] = {}
    back: set[int] = set()
    for root in ids:
        if root in state:
            continue
        stack = [(root, iter(out[root]))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            step = next(children, None)
            if step is None:
                state[node] = 2
                stack.pop()
                continue
            child, index = step
            if state.get(child) == 1:
                back.add(index)
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out[child])))
    return back


def longest_path_layers(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: 0 for a source, else one more than its deepest predecessor. CycleError on a cycle."""
    preds: dict[str, list[str]] = {i: [] for i in ids}
    succs: dict[str, list[str]] = {i: [] for i in ids}
    for source, target in edges:
        preds[target].append(source)
        succs[source].append(target)
    waiting = {i: len(preds[i]) for i in ids}
    ready = [i for i in ids if waiting[i] == 0]
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        layer[node] = max((layer[p] + 1 for p in preds[node]), default=0)
        for nxt in succs[node]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    if len(layer) != len(ids):
        stuck = [i for i in ids if i not in layer]
        raise CycleError(f"the graph has a cycle through {', '.join(stuck[:10])}")
    return layer


def _order(rows: list[list[str]], preds: dict[str, list[str]], succs: dict[str, list[str]]) -> list[list[str]]:
    """Barycentric sweeps (down, then up), keeping the ordering with the fewest crossings seen."""
    best = [list(r) for r in rows]
    best_crossings = _crossings(best, succs)
    current = [list(r) for r in rows]
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        indexes = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for li in indexes:
            ref = current[li - 1] if down else current[li + 1]
            position = {n: k for k, n in enumerate(ref)}
            neighbours = preds if down else succs
            here = {n: k for k, n in enumerate(current[li])}

            def key(
                node: str,
                position: dict[str, int] = position,
                here: dict[str, int] = here,
                neighbours: dict[str, list[str]] = neighbours,
            ) -> tuple[float, int]:
                linked = [position[n] for n in neighbours[node] if n in position]
                return (sum(linked) / len(linked) if linked else float(here[node]), here[node])

            current[li] = sorted(current[li], key=key)
        crossings = _crossings(current, succs)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in current], crossings
    return best


def _crossings(rows: list[list[str]], succs: dict[str, list[str]]) -> int:
    total = 0
    for upper, lower in zip(rows, rows[1:], strict=False):
        position = {n: k for k, n in enumerate(lower)}
        pairs = [(i, position[t]) for i, n in enumerate(upper) for t in succs[n] if t in position]
        total += sum(1 for a in pairs for b in pairs if a[0] < b[0] and a[1] > b[1])
    return total


def crossings(result: Layout) -> int:
    """Edge crossings between adjacent layers of a drawn layout (through virtual points too): for tests."""
    count = 0
    segments = [
        (a, b) for route in result.routes for a, b in zip(route.points, route.points[1:], strict=False) if a[1] < b[1]
    ]
    for i, (a1, b1) in enumerate(segments):
        for a2, b2 in segments[i + 1 :]:
            if a1[1] == a2[1] and b1[1] == b2[1] and (a1[0] - a2[0]) * (b1[0] - b2[0]) < 0:
                count += 1
    return count


def layout(  # noqa: C901 (one pass per stage of the layered drawing, in order)
    boxes: Sequence[Box],
    edges: Sequence[Edge],
    *,
    h_gap: float = 28.0,
    v_gap: float = 44.0,
    margin: float = 12.0,
    on_cycle: str = "raise",
) -> Layout:
    """Place the boxes top to bottom in layers. on_cycle "raise" (CycleError) or "break" (an editor drawing a draft:
    the edges closing cycles are drawn turned round and marked `reversed`)."""
    ids = [b.id for b in boxes]
    _check(ids, edges)
    flipped = _find_back_edges(ids, edges) if on_cycle == "break" else set()
    directed = [(e.target, e.source) if i in flipped else (e.source, e.target) for i, e in enumerate(edges)]
    # A step that depends on itself is a cycle of one: refused, or (break) drawn as a loop back into its own box.
    layer = longest_path_layers(ids, [(s, t) for s, t in directed if s != t or on_cycle != "break"])
    size = {b.id: (b.width, b.height) for b in boxes}

    # Virtual points for edges that skip layers, so their path runs between boxes, not through them.
    chains: list[list[str]] = []
    preds: dict[str, list[str]] = {i: [] for i in ids}
    succs: dict[str, list[str]] = {i: [] for i in ids}
    for index, (source, target) in enumerate(directed):
        chain = [source]
        for depth in range(layer[source] + 1, layer[target]):
            virtual = f"\x00{index}:{depth}"
            layer[virtual] = depth
            size[virtual] = (8.0, 0.0)
            preds[virtual], succs[virtual] = [], []
            chain.append(virtual)
        chain.append(target)
        for a, b in zip(chain, chain[1:], strict=False):
            succs[a].append(b)
            preds[b].append(a)
        chains.append(chain)
    rows: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for node in [*ids, *(n for n in layer if n.startswith("\x00"))]:  # input order, then virtual points
        rows[layer[node]].append(node)
    rows = _order(rows, preds, succs)

    # x: each row packed left to right, then nudged towards its parents' centres where there is room.
    x: dict[str, float] = {}
    for row in rows:
        left = 0.0
        for node in row:
            x[node] = left
            left += size[node][0] + h_gap
    for li in range(1, len(rows)):
        row = rows[li]
        wanted = []
        for node in row:
            parents = [x[p] + size[p][0] / 2 for p in preds[node]]
            wanted.append(sum(parents) / len(parents) - size[node][0] / 2 if parents else x[node])
        left = float("-inf")
        for k, node in enumerate(row):
            x[node] = max(wanted[k], left)
            left = x[node] + size[node][0] + h_gap
        # Pushing right only would lean a fan-out to the right of its parent: shift the row back, as a whole (its
        # gaps stay), by its mean distance from where it wanted to be.
        shift = sum(x[n] - w for n, w in zip(row, wanted, strict=True)) / len(row) if row else 0.0
        for node in row:
            x[node] -= shift
    least = min(x.values(), default=0.0)
    width = max((x[n] - least + size[n][0] for n in x), default=0.0) + 2 * margin

    placed: dict[str, Placed] = {}
    top = margin
    for li, row in enumerate(rows):
        height = max((size[n][1] for n in row), default=0.0)
        for order, node in enumerate(row):
            w, h = size[node]
            is_virtual = node.startswith("\x00")
            # A virtual point spans its layer's whole height: an edge runs straight past the boxes beside it.
            y, h = (top, height) if is_virtual else (top + (height - h) / 2, h)
            placed[node] = Placed(node, li, order, x[node] - least + margin, y, w, h, is_virtual)
        top += height + v_gap
    total_height = top - v_gap + margin if rows else 2 * margin

    routes = []
    for index, (edge, chain) in enumerate(zip(edges, chains, strict=True)):
        points = [(placed[chain[0]].cx, placed[chain[0]].y + placed[chain[0]].height)]
        for node in chain[1:-1]:
            points += [(placed[node].cx, placed[node].y), (placed[node].cx, placed[node].y + placed[node].height)]
        points.append((placed[chain[-1]].cx, placed[chain[-1]].y))
        routes.append(Route(edge, points, index in flipped))
    return Layout(
        nodes=placed,
        routes=routes,
        width=width,
        height=total_height,
        layers=[[n for n in row if not n.startswith("\x00")] for row in rows],
    )


def _fit(text: str, width: float) -> str:
    room = max(4, int((width - 2 * PAD) / CHAR_WIDTH))
    return text if len(text) <= room else text[: room - 1] + "…"


def _path(points: list[tuple[float, float]]) -> str:
    """A smooth vertical path through the points: a cubic curve per segment, tangents vertical at each point."""
    (x0, y0), rest = points[0], points[1:]
    parts = [f"M{x0:.1f},{y0:.1f}"]
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        parts.append(f"C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(parts)


def render_svg(
    boxes: Sequence[Box],
    edges: Sequence[Edge],
    *,
    label: str,
    id_prefix: str = "dag",
    classes: str = "dag",
    on_cycle: str = "raise",
) -> str:
    """The graph as an inline <svg> element (a string of escaped markup). `id_prefix` keeps the arrow marker's id
    unique when a page holds several graphs."""
    drawn = layout(boxes, edges, on_cycle=on_cycle)
    by_id = {b.id: b for b in boxes}
    marker = f"{escape(id_prefix)}-arrow"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(classes)}" role="img" '
        f'width="{drawn.width:.0f}" height="{drawn.height:.0f}" viewBox="0 0 {drawn.width:.0f} {drawn.height:.0f}" '
        f'aria-label="{escape(label)}">',
        f"<title>{escape(label)}</title>",
        f'<defs><marker id="{marker}" class="dag-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
        '<g class="dag-edges">',
    ]
    for route in drawn.routes:
        cls = " ".join(c for c in ("dag-edge", route.edge.classes, "dag-edge-reversed" if route.reversed else "") if c)
        end = "marker-start" if route.reversed else "marker-end"
        out.append(
            f'<path class="{escape(cls)}" d="{_path(route.points)}" {end}="url(#{marker})" '
            f'data-from="{escape(route.edge.source)}" data-to="{escape(route.edge.target)}"/>'
        )
    out.append('</g><g class="dag-nodes">')
    for node_id in [n for row in drawn.layers for n in row]:
        out.append(_node(by_id[node_id], drawn.nodes[node_id]))
    out.append("</g></svg>")
    return "".join(out)


def _node(box: Box, at: Placed) -> str:
    cls = " ".join(c for c in ("dag-node", box.classes) if c)
    tooltip = box.title or " · ".join(line.text for line in box.lines)
    parts = [f'<g class="{escape(cls)}" data-node="{escape(box.id)}">']
    if box.href:
        spoken = box.label or ", ".join(line.text for line in box.lines)
        parts.append(f'<a href="{escape(box.href)}" aria-label="{escape(spoken)}" data-node-link="{escape(box.id)}">')
    parts.append(f"<title>{escape(tooltip)}</title>")
    parts.append(
        f'<rect class="dag-box" x="{at.x:.1f}" y="{at.y:.1f}" width="{at.width:.1f}" height="{at.height:.1f}" rx="6"/>'
    )
    parts.append(f'<rect class="dag-band" x="{at.x:.1f}" y="{at.y:.1f}" width="5" height="{at.height:.1f}" rx="2"/>')
    badge_room = 0.0
    if box.badge:
        bw = 10 + CHAR_WIDTH * len(box.badge)
        bx, by = at.x + at.width - bw - 6, at.y + 6
        badge_room = bw + 6
        parts.append(f'<rect class="dag-badge" x="{bx:.1f}" y="{by:.1f}" width="{bw:.1f}" height="17" rx="3"/>')
        parts.append(
            f'<text class="dag-badge-text" x="{bx + bw / 2:.1f}" y="{by + 12.5:.1f}" text-anchor="middle">'
            f"{escape(box.badge)}</text>"
        )
    for k, line in enumerate(box.lines):
        room = at.width - (badge_room if k == 0 else 0)
        y = at.y + PAD + LINE_HEIGHT * (k + 1) - 4
        lcls = " ".join(c for c in ("dag-text", line.cls) if c)
        parts.append(
            f'<text class="{escape(lcls)}" x="{at.x + PAD + 2:.1f}" y="{y:.1f}">{escape(_fit(line.text, room))}</text>'
        )
    if box.href:
        parts.append("</a>")
    parts.append("</g>")
    return "".join(parts)
