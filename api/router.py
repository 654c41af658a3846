"""The JSON API as one router: every resource's routes (api/routes/), and the live event stream."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.routing import Route

from api import live
from api.routes import (
    agents,
    alerts,
    approvals,
    audit,
    conversations,
    dry_runs,
    health,
    incident_collab,
    incident_templates,
    incidents,
    maintenance,
    marketplace,
    playbook_io,
    playbooks,
    public_updates,
    services,
    slack,
    uptime,
    users,
    webhook_agents,
    workflows,
)

router = APIRouter()
for part in (
    health.router,
    maintenance.router,
    incidents.router,
    incident_collab.router,
    public_updates.router,
    incident_templates.router,
    users.router,
    playbook_io.router,  # before playbooks: /api/playbooks/export, /preview and /import are not playbook ids
    playbooks.router,
    dry_runs.router,  # /api/playbooks/{id}/dry-runs, /api/dry-runs/{id}
    workflows.router,
    conversations.router,
    webhook_agents.router,  # before agents: /api/agents/webhooks is not an agent name
    agents.router,
    marketplace.router,
    services.router,
    uptime.router,
    alerts.router,
    alerts.routes,
    approvals.router,
    approvals.policies,
    slack.router,
    audit.router,
):
    router.include_router(part)
# A plain ASGI endpoint: no FastAPI dependency stack kept for hours per connection (api/live.py).
router.routes.append(Route("/api/events/stream", live.LiveStream(), methods=["GET"]))
