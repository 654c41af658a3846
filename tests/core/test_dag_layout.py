"""core/dag_layout.py: layers, no overlaps, parallel branches side by side, cycles, escaping, determinism."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from core.dag_layout import Box, CycleError, Edge, TextLine, crossings, layout, longest_path_layers, render_svg


def boxes(*ids: str, lines: int = 2) -> list[Box]:
    return [Box(i, tuple(TextLine(f"{i} line {k}") for k in range(lines))) for i in ids]


def edges(*pairs: str) -> list[Edge]:
    return [Edge(*pair.split(">")) for pair in pairs]


def overlaps(result) -> list[tuple[str, str]]:
    real = [p for p in result.nodes.values() if not p.virtual]
    found = []
    for i, a in enumerate(real):
        for b in real[i + 1 :]:
            if a.x < b.x + b.width and b.x < a.x + a.width and a.y < b.y + b.height and b.y < a.y + a.height:
                found.append((a.id, b.id))
    return found


FAN = edges("start>a", "start>b", "start>c", "a>join", "b>join", "c>join", "join>end")


def test_layers_are_longest_paths_and_parallel_branches_share_a_layer():
    result = layout(boxes("start", "a", "b", "c", "join", "end"), FAN)
    assert result.layers == [["start"], ["a", "b", "c"], ["join"], ["end"]]
    ys = {n: result.nodes[n].y for n in ("a", "b", "c")}
    assert len(set(ys.values())) == 1  # side by side
    xs = [result.nodes[n].x for n in ("a", "b", "c")]
    assert xs == sorted(xs) and len(set(xs)) == 3
    # A step sits below its deepest dependency, not its shallowest.
    assert longest_path_layers(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")]) == {"a": 0, "b": 1, "c": 2}


def test_the_fan_is_centred_under_its_source():
    result = layout(boxes("start", "a", "b", "c", "join", "end"), FAN)
    assert result.nodes["b"].cx == pytest.approx(result.nodes["start"].cx)
    assert result.nodes["join"].cx == pytest.approx(result.nodes["b"].cx)


def test_no_boxes_overlap_and_everything_is_inside_the_drawing():
    rng = random.Random(7)
    ids = [f"s{i}" for i in range(40)]
    pairs = [(ids[j], ids[i]) for i in range(1, 40) for j in rng.sample(range(i), k=min(i, rng.randint(1, 3)))]
    result = layout(boxes(*ids, lines=rng.randint(1, 5)), [Edge(a, b) for a, b in pairs])
    assert overlaps(result) == []
    for placed in result.nodes.values():
        assert 0 <= placed.x and placed.x + placed.width <= result.width
        assert 0 <= placed.y and placed.y + placed.height <= result.height
    for a, b in pairs:  # every edge points down
        assert result.nodes[a].layer < result.nodes[b].layer


def test_a_long_edge_passes_between_boxes_not_through_them():
    result = layout(boxes("a", "b", "c", "d"), edges("a>b", "b>c", "c>d", "a>d"))
    long_route = next(r for r in result.routes if (r.edge.source, r.edge.target) == ("a", "d"))
    assert len(long_route.points) == 6  # a, two points per virtual layer (b's and c's), d
    for x, _ in long_route.points[1:-1]:
        for other in ("b", "c"):
            box = result.nodes[other]
            assert not box.x <= x <= box.x + box.width


def test_ordering_removes_avoidable_crossings():
    # Two chains whose second layers are listed crosswise: the sweeps untangle them.
    ids = ["a", "b", "b2", "a2"]
    result = layout(boxes(*ids), edges("a>a2", "b>b2"))
    assert crossings(result) == 0
    assert result.layers[1] == ["a2", "b2"]


def test_cycles_are_refused_by_default_and_drawn_turned_round_when_asked():
    with pytest.raises(CycleError, match="cycle"):
        layout(boxes("a", "b", "c"), edges("a>b", "b>c", "c>a"))
    with pytest.raises(CycleError):
        layout(boxes("a"), edges("a>a"))
    drawn = layout(boxes("a", "b", "c"), edges("a>b", "b>c", "c>a"), on_cycle="break")
    assert [r.reversed for r in drawn.routes] == [False, False, True]
    svg = render_svg(boxes("a", "b", "c"), edges("a>b", "b>c", "c>a"), label="draft", on_cycle="break")
    assert "dag-edge-reversed" in svg


def test_unknown_nodes_and_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="does not exist"):
        layout(boxes("a"), edges("a>ghost"))
    with pytest.raises(ValueError, match="unique"):
        layout(boxes("a", "a"), [])


def test_the_same_input_gives_the_same_bytes():
    ids = [f"n{i}" for i in range(25)]
    rng = random.Random(3)
    pairs = [Edge(ids[rng.randrange(i)], ids[i]) for i in range(1, 25) for _ in range(2)]
    pairs = list(dict.fromkeys(pairs))
    first = render_svg(boxes(*ids), pairs, label="g")
    assert all(render_svg(boxes(*ids), pairs, label="g") == first for _ in range(3))


def test_svg_is_well_formed_escapes_text_and_has_no_style_attribute():
    hostile = '<script>alert(1)</script> & "quotes"'
    nodes = [
        Box("a", (TextLine(hostile, "rg-title"),), href="/x?a=1&b=<2>", classes="k", title=hostile, badge="<b>"),
        Box("b", (TextLine("plain"),)),
    ]
    svg = render_svg(nodes, [Edge("a", "b", 'x" onload="y')], label=hostile, id_prefix="t")
    root = ET.fromstring(svg)  # well-formed XML: nothing unescaped broke out
    assert "<script>" not in svg and "style=" not in svg and 'onload="' not in svg
    ns = {"s": "http://www.w3.org/2000/svg"}
    link = root.find(".//s:a", ns)
    assert link is not None and link.get("href") == "/x?a=1&b=<2>"
    texts = [t.text for t in root.iterfind(".//s:text", ns)]
    assert "<b>" in texts  # the badge, as text
    assert root.get("aria-label") == hostile


def test_long_text_is_cut_to_the_box_and_kept_whole_in_the_tooltip():
    long = "x" * 300
    svg = render_svg([Box("a", (TextLine(long),), width=150)], [], label="g")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    (text,) = [t.text for t in root.iterfind(".//s:text", ns)]
    assert text.endswith("…") and len(text) < 30
    assert root.find(".//s:g/s:title", ns).text == long
