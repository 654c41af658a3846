"""What the alert webhooks accept: Alertmanager's webhook (version 4), Grafana's unified alerting webhook, and our
own generic format; each converts to core.alerts.ReceivedAlert. Unknown fields are allowed (senders add some)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.alerts import SOURCE_NAME, AlertStatus, ReceivedAlert, fingerprint_of, moment
from core.tables import URL_MAX

ALERTS_MAX = 1_000  # per request (Alertmanager: set max_alerts on the webhook to stay below it)
NO_NUL = r"^[^\x00]*$"  # Postgres text cannot hold NUL
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]
LabelValue = Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=200)]
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
Url = Annotated[str, StringConstraints(max_length=URL_MAX, pattern=NO_NUL)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class WebhookAlert(_Open):
    """One alert of an Alertmanager or Grafana notification."""

    status: AlertStatus
    labels: Labels = Field(min_length=1)
    annotations: Labels = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: Url = Field(default="", alias="generatorURL")
    fingerprint: Fingerprint | None = None

    def received(self, source: str, value: str = "") -> ReceivedAlert:
        return ReceivedAlert(
            source=source,
            fingerprint=self.fingerprint or fingerprint_of(self.labels),
            status=self.status,
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            starts_at=moment(self.starts_at),
            ends_at=moment(self.ends_at),
            generator_url=self.generator_url or None,
            value=value,
        )


class _Notification(_Open):
    """The fields Alertmanager's and Grafana's notifications share."""

    status: AlertStatus
    receiver: Annotated[str, StringConstraints(max_length=1_000)] = ""
    group_key: Annotated[str, StringConstraints(max_length=10_000)] = Field(default="", alias="groupKey")
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Url = Field(default="", alias="externalURL")
    truncated_alerts: int = Field(default=0, ge=0, alias="truncatedAlerts")


class AlertmanagerWebhook(_Notification):
    """Alertmanager's webhook_config body (version 4)."""

    version: Literal["4"]
    group_key: Annotated[str, StringConstraints(max_length=10_000)] = Field(alias="groupKey")
    receiver: Annotated[str, StringConstraints(max_length=1_000)]
    alerts: list[WebhookAlert] = Field(min_length=1, max_length=ALERTS_MAX)

    def received(self) -> list[ReceivedAlert]:
        return [alert.received("alertmanager") for alert in self.alerts]


class GrafanaAlert(WebhookAlert):
    value_string: Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)] = Field(
        default="", alias="valueString"
    )


class GrafanaWebhook(_Notification):
    """Grafana unified alerting's webhook contact point body."""

    version: Annotated[str, StringConstraints(max_length=20)] = "1"
    org_id: int | None = Field(default=None, alias="orgId")
    title: Annotated[str, StringConstraints(max_length=10_000)] = ""
    state: Annotated[str, StringConstraints(max_length=100)] = ""
    message: str = ""
    alerts: list[GrafanaAlert] = Field(min_length=1, max_length=ALERTS_MAX)

    def received(self) -> list[ReceivedAlert]:
        return [alert.received("grafana", alert.value_string) for alert in self.alerts]


class GenericAlert(_Open):
    status: AlertStatus
    fingerprint: Fingerprint | None = Field(default=None, description="default: a hash of the sorted labels")
    labels: Labels = Field(min_length=1)
    annotations: Labels = Field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: Url = ""


class GenericAlerts(_Open):
    """Our own format, for monitors without an Alertmanager-style webhook (docs/alerts.md)."""

    source: str = Field(pattern=SOURCE_NAME, description="who sends them; alerts dedupe per source")
    alerts: list[GenericAlert] = Field(min_length=1, max_length=ALERTS_MAX)

    def received(self) -> list[ReceivedAlert]:
        return [
            ReceivedAlert(
                source=self.source,
                fingerprint=alert.fingerprint or fingerprint_of(alert.labels),
                status=alert.status,
                labels=dict(alert.labels),
                annotations=dict(alert.annotations),
                starts_at=moment(alert.starts_at),
                ends_at=moment(alert.ends_at),
                generator_url=alert.generator_url or None,
            )
            for alert in self.alerts
        ]


class AlertOutcome(BaseModel):
    incident_id: int | None
    fingerprint: str
    action: Literal["opened", "attached", "resolved", "ignored", "dropped"]


class AlertsAccepted(BaseModel):
    """What happened to each alert, in the order they came."""

    incidents: list[AlertOutcome]
