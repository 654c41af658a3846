"""Which agents a playbook may name in this installation: built-in, plugins and enabled webhook agents (a webhook
agent never shadows a built-in or a plugin)."""

from __future__ import annotations

from services.incidents.start import installed_agent_specs as all_agent_specs

__all__ = ["all_agent_specs"]
