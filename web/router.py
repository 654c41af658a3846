"""The pages as one router (web/pages/): server-rendered HTML, forms that work without JavaScript."""

from __future__ import annotations

from fastapi import APIRouter

from web.pages import (
    account,
    admin,
    approval_email,
    approvals,
    auth,
    conversations,
    dry_runs,
    incident_email,
    incident_forms,
    incidents,
    marketplace,
    marketplace_actions,
    overview,
    playbook_editor,
    playbook_tools,
    playbook_versions,
    playbooks,
    run_view,
    services,
    status_page,
    workflow_control,
)

router = APIRouter()
for part in (
    auth.router,
    incident_email.router,  # before the incident pages: /incidents/email/… is not an id
    incident_forms.router,  # before incidents: /incidents/new is not an incident id
    conversations.router,  # before incidents: /incidents/{id}/conversation… are its pages
    incidents.router,
    workflow_control.router,
    dry_runs.router,  # /dry-runs/{id}: a playbook's dry run
    run_view.router,  # the run graph: /incidents/{id}/run…, /incidents/{id}/runs/compare
    overview.router,
    approval_email.router,  # before approvals: /approvals/email/… is not an id
    approvals.router,
    admin.router,
    account.router,
    services.router,
    status_page.router,
    playbook_editor.router,  # before playbooks: /playbooks/_new and /playbooks/_draft/… are not ids
    playbook_versions.router,
    playbook_tools.router,  # before playbooks: /playbooks/_import is not an id
    playbooks.router,  # the playbook list and view (issue 23)
    marketplace.router,  # the agent marketplace and templates (issue 24)
    marketplace_actions.router,  # admins install, update and remove there
):
    router.include_router(part)
