"""The agents every worker provides, by name. Playbooks are validated against this list."""

from __future__ import annotations

BUILTIN_AGENTS: dict[str, str] = {
    "monitor": "HTTP GET of the incident's service URL: status, latency",
    "investigate": "Diagnosis of what the dependencies observed",
    "remediate": "Records that no remediation is configured (real actions arrive with the agents issue)",
    "verify": "Re-check of the service URL; negative when still down",
    "noop": "Does nothing; returns ok (or params.ok) — a placeholder or a join point",
    "sleep": "Waits params.seconds, heartbeating; cancellable — a delay step",
}


def known_agents() -> set[str]:
    return set(BUILTIN_AGENTS)
