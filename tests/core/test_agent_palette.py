"""Agent colours: readable (WCAG AA) and stable, and never the only way to tell agents apart."""

from __future__ import annotations

import re
import subprocess
import sys

from core.agent_palette import BUILT_IN_SLOTS, PALETTE, agent_style, palette_css
from web.templating import STATIC_DIR


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(colour[i : i + 2], 16) / 255) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_every_colour_passes_wcag_aa_on_white_and_on_its_tint():
    for ink, tint in PALETTE:
        assert contrast(ink, "#ffffff") >= 4.5, ink
        assert contrast(ink, tint) >= 4.5, (ink, tint)


def test_built_in_investigators_never_share_a_colour_and_every_agent_has_a_badge():
    investigators = ["investigate_logs", "investigate_metrics", "investigate_dependencies"]
    assert len({agent_style(a).slot for a in investigators}) == 3
    assert len(set(BUILT_IN_SLOTS.values()) & set(range(len(PALETTE)))) >= 8
    assert agent_style("investigate_logs").badge == "IL"
    assert agent_style("verify").badge == "Ve"
    assert agent_style("").badge == "—"
    assert all(agent_style(name).badge for name in ["x", "my-plugin.agent", "9", "__"])


def test_a_plugin_agent_gets_the_same_colour_in_every_process():
    here = agent_style("acme_disk_probe").slot
    code = "from core.agent_palette import agent_style; print(agent_style('acme_disk_probe').slot)"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "7"}
    )
    assert int(other.stdout) == here


def test_the_stylesheet_has_the_palette():
    css = (STATIC_DIR / "app.css").read_text()
    assert palette_css() in css
    assert re.search(r"\.agent-badge \{[^}]*var\(--agent-tint", css)
