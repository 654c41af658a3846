"""The pure rules of playbook sharing (core/playbook_access.py) and of per-playbook approvers
(core/approval_rules.approvers_for), and where an approval finds its pinned playbook's approvers (issue 23)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlmodel import Session

from core.approval_rules import ApproverSpec, approvers_for, may_decide
from core.playbook_access import can_create, can_edit, can_view
from core.playbook_store import pinned_approvers
from core.tables import PlaybookVersion, WorkflowRun
from tests.api.incident_rows import insert_incident

SRE, DBA = 1, 2


@dataclass(frozen=True)
class Who:
    role: str


@dataclass(frozen=True)
class Shared:
    owner_team_id: int | None
    visibility: str


ROLES = ("viewer", "responder", "approver", "admin")


@pytest.mark.parametrize("role", ROLES)
def test_without_sharing_everyone_sees_and_only_admins_edit(role):
    assert can_view(Who(role), None, {SRE}) is True
    assert can_edit(Who(role), None, {SRE}) is (role == "admin")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("teams", [set(), {SRE}, {DBA}])
def test_a_team_playbook_is_seen_by_its_members_and_edited_by_its_responders(role, teams):
    private, public = Shared(SRE, "team"), Shared(SRE, "everyone")
    member, admin = SRE in teams, role == "admin"
    assert can_view(Who(role), private, teams) is (member or admin)
    assert can_view(Who(role), public, teams) is True
    for sharing in (private, public):
        assert can_edit(Who(role), sharing, teams) is (admin or (member and role != "viewer"))


def test_no_owner_team_means_admins_only_and_a_private_one_is_hidden_from_all_but_admins():
    orphan = Shared(None, "team")
    assert [can_view(Who(r), orphan, {SRE}) for r in ROLES] == [False, False, False, True]
    assert [can_edit(Who(r), Shared(None, "everyone"), {SRE}) for r in ROLES] == [False, False, False, True]


@pytest.mark.parametrize("role", ROLES)
def test_who_may_create(role):
    assert can_create(Who(role), None, {SRE}) is (role == "admin")
    assert can_create(Who(role), SRE, {SRE}) is (role != "viewer")
    assert can_create(Who(role), DBA, {SRE}) is (role == "admin")


POLICY = {"users": ["pat"], "teams": [], "role": "approver"}


def test_a_steps_own_approvers_win_then_the_playbooks_then_the_policys():
    step, playbook = {"users": ["sam"], "teams": []}, {"users": [], "teams": ["sre"]}
    assert approvers_for(POLICY, step, playbook) == {"users": ["sam"], "teams": [], "role": "approver"}
    assert approvers_for(POLICY, None, playbook) == {"users": [], "teams": ["sre"], "role": "approver"}
    assert approvers_for(POLICY, {"users": [], "teams": []}, playbook)["teams"] == ["sre"]  # empty: not set
    assert approvers_for(POLICY, None, None) == POLICY
    assert approvers_for({}, None, {}) == {}


def test_a_playbook_restriction_decides_who_may_approve():
    approvers = approvers_for({"users": [], "teams": [], "role": "approver"}, None, {"teams": ["sre"]})
    assert may_decide(approvers, actor="alice", role="approver", teams=["dba"]) is False  # the role is not enough
    assert may_decide(approvers, actor="rosa", role="responder", teams=["sre"]) is True
    assert may_decide(approvers, actor="root", role="admin", teams=[]) is True


def test_approver_spec_refuses_unknown_keys():
    assert ApproverSpec.model_validate({"teams": ["sre"]}).users == []
    with pytest.raises(ValueError, match="role"):
        ApproverSpec.model_validate({"role": "viewer"})


def test_an_approval_finds_the_approvers_of_the_version_its_run_is_pinned_to(engine):
    steps = [
        {"id": "fix", "agent": "noop", "approvers": {"users": ["sam"], "teams": []}},
        {"id": "other", "agent": "noop"},
    ]
    with Session(engine) as session:
        for version, team in ((1, "sre"), (2, "dba")):
            definition = {"id": "gated", "steps": steps, "approvers": {"teams": [team]}}
            session.add(
                PlaybookVersion(
                    playbook_id="gated", version=version, name="g", incident_type="t", definition=definition
                )
            )
        session.commit()
    incident_id = insert_incident(engine, playbook_id="gated", playbook_version=1)
    with Session(engine) as session:
        # Before the run's projection row exists: the incident's pinned version.
        found = pinned_approvers(session=session, workflow_id="wf-1", incident_id=incident_id, step_id="fix")
        assert found == ({"users": ["sam"], "teams": []}, {"teams": ["sre"]})
        assert pinned_approvers(session=session, workflow_id="wf-1", incident_id=incident_id, step_id="other") == (
            None,
            {"teams": ["sre"]},
        )
        # A run (a reopen) pinned to version 2: its own version.
        session.add(WorkflowRun(workflow_id="wf-2", incident_id=incident_id, playbook_id="gated", playbook_version=2))
        session.commit()
        found = pinned_approvers(session=session, workflow_id="wf-2", incident_id=incident_id, step_id="added_later")
        assert found == (None, {"teams": ["dba"]})
    # The built-in default (never stored) names nobody.
    builtin = insert_incident(engine)
    with Session(engine) as session:
        assert pinned_approvers(session=session, workflow_id="wf-3", incident_id=builtin, step_id="fix") == (None, None)
