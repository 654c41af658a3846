"""What opening an incident reads before its run starts, in one statement: its type's template, the playbook it runs,
its service's configuration (a declared remediation) and the agents a playbook may name.

Five ORM reads did this before, each a round trip and about 0.2 ms of the web's CPU (an incident's create was the
costliest request of `bench.load`); read here in the opener's transaction, the answer is the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from activities.registry import agent_specs
from core.agents import AgentSpec
from core.collaboration import IncidentTemplate
from core.marketplace import installed_agent_spec
from core.playbook import Playbook
from core.playbook_store import PlaybookNotFound, builtin_default
from core.settings import Settings
from core.webhook_agents import webhook_agent_spec

# The playbook: the one named (by the caller, else by the type's template), its latest version; else the type's
# latest version; else (None) the built-in default. Webhook agents enabled, Python agents installed from the
# marketplace: the columns their specs are made of.
_READ = text(
    """
WITH template AS (
    SELECT incident_type, default_severity, description, playbook_id, on_reopen, escalation, updated_by, updated_at
    FROM incident_templates WHERE incident_type = :incident_type
), chosen AS (
    SELECT COALESCE(CAST(:playbook_id AS varchar), NULLIF((SELECT playbook_id FROM template), '')) AS playbook_id
)
SELECT
    (SELECT to_jsonb(t) FROM template AS t) AS template,
    (SELECT playbook_id FROM chosen) AS named,
    (SELECT v.definition FROM playbooks AS v
     WHERE v.playbook_id = (SELECT playbook_id FROM chosen) ORDER BY v.version DESC LIMIT 1) AS named_playbook,
    (SELECT v.definition FROM playbooks AS v
     WHERE (SELECT playbook_id FROM chosen) IS NULL AND v.incident_type = :incident_type
     ORDER BY v.created_at DESC, v.version DESC LIMIT 1) AS type_playbook,
    (SELECT s.config FROM services AS s WHERE s.name = :service LIMIT 1) AS service_config,
    (SELECT COALESCE(jsonb_agg(jsonb_build_object(
                'name', w.name, 'version', w.version, 'description', w.description, 'capabilities', w.capabilities,
                'params_schema', w.params_schema, 'default_risk', w.default_risk) ORDER BY w.id), '[]'::jsonb)
     FROM webhook_agents AS w WHERE w.enabled) AS webhooks,
    (SELECT COALESCE(jsonb_agg(a.spec ORDER BY a.name), '[]'::jsonb)
     FROM installed_agents AS a WHERE a.kind = 'python') AS installed
"""
)


@dataclass(frozen=True)
class RunConfig:
    template: IncidentTemplate | None
    playbook: Playbook  # the latest version of the one chosen, or the built-in default
    service_config: dict[str, Any] | None  # the incident's service, when it is registered
    agents: dict[str, AgentSpec]  # every agent a playbook may name (services.incidents.start.agents_of)
    webhooks: list[str]  # the enabled webhook agents a step runs as `webhook_agent`


def read_run_config(
    session: Session, settings: Settings, *, incident_type: str, playbook_id: str | None, service: str
) -> RunConfig:
    """In the session's transaction. Raises PlaybookNotFound for a named playbook that is not stored (as
    load_playbook does)."""
    row = (
        session.connection()
        .execute(_READ, {"incident_type": incident_type, "playbook_id": playbook_id or None, "service": service})
        .one()
    )
    template = IncidentTemplate.model_validate(row.template) if row.template is not None else None
    if row.named is not None:
        if row.named_playbook is not None:
            playbook = Playbook.model_validate(row.named_playbook)
        elif row.named == "default":
            playbook = builtin_default(settings)
        else:
            raise PlaybookNotFound(f"playbook {row.named} does not exist")
    elif row.type_playbook is not None:
        playbook = Playbook.model_validate(row.type_playbook)
    else:
        playbook = builtin_default(settings)
    agents, webhooks = agents_from(
        (webhook_agent_spec(w) for w in row.webhooks), (installed_agent_spec(spec) for spec in row.installed)
    )
    return RunConfig(template, playbook, row.service_config, agents, webhooks)


def agents_from(
    webhooks: Iterable[AgentSpec], installed: Iterable[AgentSpec]
) -> tuple[dict[str, AgentSpec], list[str]]:
    """Built-in and plugin agents, then the webhook agents (never one named like those), then the Python agents
    installed from the marketplace (which never shadow any of them); and the webhook agents' names, sorted."""
    specs = agent_specs()
    names = []
    for spec in webhooks:
        if spec.name not in specs:
            names.append(spec.name)
            specs[spec.name] = spec
    for spec in installed:
        specs.setdefault(spec.name, spec)
    return specs, sorted(names)
