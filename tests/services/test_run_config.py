"""What opening an incident reads in one statement (services/incidents/run_config.py) is what the separate reads it
replaced give: the type's template, the playbook chosen (named by the caller or the template, else the type's
latest, else the built-in default), the service's declared remediation, and the agents a playbook may name."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from core.collaboration import IncidentTemplate
from core.marketplace import InstalledAgent
from core.playbook import Playbook, StepSpec
from core.playbook_store import BUILTIN_VERSION, PlaybookNotFound, choose_playbook
from core.services import HttpCheck, Remediation, Service, ServiceBase
from core.settings import Settings
from core.tables import PlaybookVersion, utcnow
from core.webhook_agents import WebhookAgent
from services.incidents.run_config import read_run_config
from services.incidents.start import agents_of, declared_remediation, with_declared_remediation


def _playbook(playbook_id: str, version: int, incident_type: str, agent: str = "noop") -> PlaybookVersion:
    definition = Playbook(id=playbook_id, version=version, name=playbook_id, incident_type=incident_type,
                          steps=[StepSpec(id="first", agent=agent)])  # fmt: skip
    return PlaybookVersion(
        playbook_id=playbook_id,
        version=version,
        name=playbook_id,
        incident_type=incident_type,
        definition=definition.model_dump(mode="json"),
        created_at=utcnow() + timedelta(seconds=version),
    )


@pytest.fixture
def stored(engine: Engine) -> Engine:
    """Templates, playbooks, a service that declares its remediation, webhook agents (enabled, disabled, one named
    like a built-in agent) and a Python agent installed from the marketplace."""
    escalation = [{"after_seconds": 600, "notify": ["ops"]}]
    remediation = Remediation(command=["systemctl", "restart", "shop"])
    shop = ServiceBase(check=HttpCheck(url="http://127.0.0.1:9/health"), remediation=remediation)
    hook = {"capabilities": ["investigation"], "secret": "whsec_x"}
    installed = {"name": "restart_pod", "version": "1.1.0", "default_risk": "high", "capabilities": ["remediation"]}
    with Session(engine) as session:
        session.add(IncidentTemplate(incident_type="database", default_severity="P1", description="db down",
                                     playbook_id="db-recovery", escalation=escalation))  # fmt: skip
        session.add(IncidentTemplate(incident_type="broken", default_severity="P2", playbook_id="gone"))
        session.add_all([_playbook("db-recovery", 1, "other"), _playbook("db-recovery", 2, "other", agent="logs")])
        session.add_all([_playbook("net-a", 1, "network"), _playbook("net-b", 3, "network", agent="metrics")])
        session.add(Service(name="shop", config=shop.model_dump(mode="json"), created_by="test"))
        session.add(WebhookAgent(name="pager", url="https://hooks.example/pager", default_risk="medium", **hook))
        session.add(WebhookAgent(name="retired", url="https://hooks.example/old", enabled=False, **hook))
        session.add(WebhookAgent(name="noop", url="https://hooks.example/noop", **hook))
        session.add(InstalledAgent(name="restart_pod", kind="python", version="1.1.0", spec=installed))
        session.commit()
    return engine


@pytest.mark.parametrize(
    ("incident_type", "playbook_id", "service"),
    [
        ("default", None, "checkout"),  # nothing stored: the built-in default, an unregistered service
        ("default", None, "shop"),  # the built-in default for a service that declares its remediation
        ("database", None, "shop"),  # the template names its playbook: its latest version
        ("database", "net-a", "shop"),  # the caller's playbook before the template's
        ("network", None, "shop"),  # no template: the type's latest playbook
        ("network", "default", "shop"),  # the built-in default by name
    ],
)
def test_one_read_gives_what_the_separate_reads_gave(
    stored: Engine, database_url: str, incident_type: str, playbook_id: str | None, service: str
) -> None:
    settings = Settings(_env_file=None, database_url=SecretStr(database_url))  # type: ignore[call-arg]
    with Session(stored) as session:
        config = read_run_config(
            session, settings, incident_type=incident_type, playbook_id=playbook_id, service=service
        )
        template = session.get(IncidentTemplate, incident_type)
        expected = choose_playbook(session=session, settings=settings, incident_type=incident_type,
                                   playbook_id=playbook_id or (template.playbook_id if template else None))  # fmt: skip
        assert config.playbook == expected
        assert (config.template.model_dump() if config.template else None) == (
            template.model_dump() if template else None
        )
        assert (config.agents, config.webhooks) == agents_of(session)
        assert declared_remediation(config.playbook, service, config.service_config) == with_declared_remediation(
            session, expected, service
        )
    if (incident_type, playbook_id) == ("database", None):
        assert (config.playbook.id, config.playbook.version, config.playbook.steps[0].agent) == (
            "db-recovery",
            2,
            "logs",
        )
        assert config.template is not None and config.template.escalation == [{"after_seconds": 600, "notify": ["ops"]}]
    if (incident_type, playbook_id) == ("network", None):
        assert (config.playbook.id, config.playbook.version) == ("net-b", 3)
    if playbook_id == "default" or incident_type == "default":
        assert (config.playbook.id, config.playbook.version) == ("default", BUILTIN_VERSION)
    if (incident_type, service) == ("default", "shop"):
        remediate = declared_remediation(config.playbook, service, config.service_config).step("remediate")
        assert (remediate.agent, remediate.params) == ("remediate_command", {"argv": ["systemctl", "restart", "shop"]})


def test_the_agents_a_playbook_may_name(stored: Engine, database_url: str) -> None:
    settings = Settings(_env_file=None, database_url=SecretStr(database_url))  # type: ignore[call-arg]
    with Session(stored) as session:
        config = read_run_config(session, settings, incident_type="default", playbook_id=None, service="shop")
        assert (config.agents, config.webhooks) == agents_of(session)
    assert config.webhooks == ["pager"]  # enabled, and not named like a built-in agent
    assert config.agents["pager"].source == "webhook" and config.agents["pager"].default_risk == "medium"
    assert "retired" not in config.agents
    assert config.agents["noop"].source == "builtin"
    assert config.agents["restart_pod"].source == "plugin" and config.agents["restart_pod"].default_risk == "high"


@pytest.mark.parametrize(("incident_type", "playbook_id"), [("default", "nowhere"), ("broken", None)])
def test_a_named_playbook_that_is_not_stored_is_refused(
    stored: Engine, database_url: str, incident_type: str, playbook_id: str | None
) -> None:
    settings = Settings(_env_file=None, database_url=SecretStr(database_url))  # type: ignore[call-arg]
    with Session(stored) as session, pytest.raises(PlaybookNotFound) as refused:
        read_run_config(session, settings, incident_type=incident_type, playbook_id=playbook_id, service="shop")
    assert str(refused.value) == f"playbook {playbook_id or 'gone'} does not exist"
