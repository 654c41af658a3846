"""Starting an incident's IncidentWorkflow: the pinned playbook (each step at least as risky as its agent), the
flags every new run gets, its search attributes; a repeated start is success, a start that finds another
database's history is a conflict. Opening (services/incidents/open.py) and reopening (lifecycle.py) start runs
through here.
"""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.registry import known_agents
from core.agents import AgentSpec
from core.collaboration import IncidentTemplate
from core.db import on_pool
from core.errors import Conflict
from core.marketplace import InstalledAgent
from core.payloads import (
    INCIDENT_WORKFLOW,
    IncidentContext,
    IncidentWorkflowInput,
    incident_search_attributes,
)
from core.playbook import Playbook, with_agent_defaults
from core.playbook_store import BUILTIN_VERSION, load_playbook
from core.services import Service, ServiceBase
from core.settings import Settings
from core.tables import Incident
from core.webhook_agents import WebhookAgent
from services.incidents.run_config import RunConfig, agents_from


def installed_agent_specs(session: Session) -> dict[str, AgentSpec]:
    """Every agent a playbook may name: built-in, plugins, enabled webhook agents and agents installed from the
    marketplace (which never shadow those)."""
    return agents_of(session)[0]


def agents_of(session: Session) -> tuple[dict[str, AgentSpec], list[str]]:
    """Every agent a playbook may name (installed_agent_specs), and the enabled webhook agents a step runs as
    `webhook_agent` (never one named like a built-in or a plugin), from one read of the webhook agents."""
    webhooks = session.exec(select(WebhookAgent).where(col(WebhookAgent.enabled)).order_by(col(WebhookAgent.id)))
    # Python agents installed from the marketplace: their spec as read from their wheel when it was installed (web
    # processes never import plugin code; workers load it from PLUGIN_DIR, services/agent_packages.py).
    installed = session.exec(select(InstalledAgent).where(InstalledAgent.kind == "python"))
    return agents_from([row.spec() for row in webhooks], [row.agent_spec() for row in installed])


CLOCK_SKEW = timedelta(seconds=2)
# How long a workflow's start may wait for Temporal's answer: a paused or unreachable Temporal is an RPCError the
# caller reports instead of a request held for ever. The row is stored first, and a start that went through unseen
# is found again ("already started") when the caller retries.
START_WORKFLOW_TIMEOUT = timedelta(seconds=10)


class WorkflowConflict(Conflict):
    """A new incident's workflow id already exists in Temporal (history from another database)."""


def start_failure(err: RPCError) -> str:
    """Why an incident's workflow did not start, for people: Temporal's message, or the timeout it ran into."""
    # The SDK reports its own rpc_timeout as CANCELLED "Timeout expired"; the server, one it passed on, as
    # DEADLINE_EXCEEDED.
    timed_out = err.status == RPCStatusCode.CANCELLED and "timeout" in err.message.lower()
    if timed_out or err.status == RPCStatusCode.DEADLINE_EXCEEDED:
        return f"Temporal did not answer within {START_WORKFLOW_TIMEOUT.total_seconds():g}s"
    return err.message


async def start_incident_workflow(
    *,
    temporal: Client,
    engine: Engine,
    incident: Incident,
    settings: Settings,
    fresh: bool,
    pinned: Pinned | None = None,
) -> None:
    """Start IncidentWorkflow `incident-<id>`; for a repeated request, already started is success. Raises RPCError
    when Temporal does not answer, WorkflowConflict when the id belongs to another database's history."""
    assert incident.id is not None and incident.workflow_id is not None
    context = IncidentContext(
        incident_id=incident.id,
        title=incident.title,
        service=incident.service,
        severity=incident.severity,
        incident_type=incident.incident_type,
        service_url=incident.service_url,
    )
    if pinned is None:
        pinned = await on_pool(engine, partial(_pinned_playbook, engine, settings, incident))
    playbook, webhooks, risks, escalation = pinned
    try:
        await temporal.start_workflow(
            INCIDENT_WORKFLOW,
            IncidentWorkflowInput(
                incident=context,
                playbook=playbook.model_dump(mode="json"),
                known_agents=sorted(known_agents() | set(webhooks)),
                webhook_agents=webhooks,
                retry_window_seconds=settings.retry_window_seconds,
                approval_timeout_seconds=settings.approval_timeout_seconds,
                agents_open_projection=settings.agents_open_projection,
                approvals_outlive_abort=True,
                agent_risks=risks,
                guard_changes=True,
                unapproved_fails=True,
                escalation=escalation,
                waits_for_infrastructure=True,
                infrastructure_wait_seconds=settings.infrastructure_wait_seconds,
            ),
            id=incident.workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=incident_search_attributes(context, incident.playbook_id),
            static_summary=f"{incident.severity} {incident.service}: {incident.title}"[:200],
            rpc_timeout=START_WORKFLOW_TIMEOUT,
        )
    except WorkflowAlreadyStartedError:
        if fresh and await _started_before(temporal, incident):
            raise WorkflowConflict(
                f"incident {incident.id} is new but workflow {incident.workflow_id} already exists in "
                "Temporal: this database and the Temporal history do not belong together "
                "(set WORKFLOW_ID_PREFIX to share a namespace between deployments)"
            ) from None


# What a run is started with: the playbook (each step at least as risky as its agent: versions stored before that
# rule may say less), the webhook agents, each agent's risk, and the incident type's escalation policy.
Pinned = tuple[Playbook, list[str], dict[str, str], list[dict[str, Any]]]


def _pinned_playbook(engine: Engine, settings: Settings, incident: Incident) -> Pinned:
    with Session(engine) as session:
        return pin(session, settings, incident)


def pin(session: Session, settings: Settings, incident: Incident, config: RunConfig | None = None) -> Pinned:
    """The incident's pinned playbook version as a run is started with. `config`: what opening the incident read
    (services/incidents/run_config.py), so its playbook, service, agents and type's template are not read again."""
    playbook = config.playbook if config is not None else None
    if playbook is None or (playbook.id, playbook.version) != (incident.playbook_id, incident.playbook_version):
        playbook = load_playbook(
            session=session, settings=settings, playbook_id=incident.playbook_id, version=incident.playbook_version
        )
    if playbook.id == "default" and playbook.version == BUILTIN_VERSION:
        if config is None:
            playbook = with_declared_remediation(session, playbook, incident.service)
        else:
            playbook = declared_remediation(playbook, incident.service, config.service_config)
    specs, webhooks = agents_of(session) if config is None else (config.agents, config.webhooks)
    risks: dict[str, str] = {name: spec.default_risk for name, spec in specs.items()}
    template = config.template if config is not None else session.get(IncidentTemplate, incident.incident_type)
    return with_agent_defaults(playbook, specs), webhooks, risks, escalation_of(template)


def escalation_of(template: IncidentTemplate | None) -> list[dict[str, Any]]:
    return list(template.escalation) if template is not None else []


def with_declared_remediation(session: Session, playbook: Playbook, service_name: str) -> Playbook:
    """The built-in default playbook for a registered service that declares its remediation: its `remediate` step
    runs that (remediate_command or remediate_webhook: high risk, so approved first), unless the diagnosis says the
    service is healthy. Without a declaration it records "no action", as before."""
    service = session.exec(select(Service).where(Service.name == service_name)).first()
    return declared_remediation(playbook, service_name, service.config if service is not None else None)


def declared_remediation(playbook: Playbook, service_name: str, config: dict[str, Any] | None) -> Playbook:
    """with_declared_remediation, given the service's stored configuration (None: not registered)."""
    remediation = ServiceBase.model_validate(config).remediation if config is not None else None
    if remediation is None:
        return playbook
    params: dict[str, Any]
    if remediation.command is not None:
        agent, params = "remediate_command", {"argv": list(remediation.command)}
    else:
        agent, params = "remediate_webhook", {"url": remediation.webhook}
    steps = [
        step.model_copy(update={
            "agent": agent, "params": params, "risk": "high",
            "instructions": f"run {service_name}'s declared remediation ({agent})",
            "when": "!(steps.investigate.output.data.healthy == true)",
        }) if step.id == "remediate" else step
        for step in playbook.steps
    ]  # fmt: skip
    return playbook.model_copy(update={"steps": steps})


async def _started_before(temporal: Client, incident: Incident) -> bool:
    """Whether the existing workflow predates this incident row (so it belongs to another database).

    A workflow started after the row by a concurrent duplicate request of the same incident is ours.
    """
    assert incident.workflow_id is not None
    description = await temporal.get_workflow_handle(incident.workflow_id).describe(rpc_timeout=START_WORKFLOW_TIMEOUT)
    return description.start_time < incident.created_at - CLOCK_SKEW
