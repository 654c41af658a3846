"""A secret in a log line: shop's failing requests log a line holding a password, a GitHub token and a Slack token
(fresh ones each run, shaped as the real ones). The incident runs as any other, and afterwards none of the three is
shown in clear anywhere a person or a tool reads it: the incident's page and its parts, the approval's page, the
API's answers (incident, timeline, conversation, workflow steps, the contexts each step's agent received, the
approval) and the Temporal history of its run, payloads decoded."""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
from typing import Any

from tests.scenarios.harness import ScenarioStack
from tests.scenarios.outcome import Outcome
from tests.scenarios.response import respond, steady

ALNUM = string.ascii_letters + string.digits
LINE = "login to the upstream failed: password={password} github_token={github_token} slack_token={slack_token}"
SHOWN = 6  # characters in a row of a secret that count as showing it (a chance match among random text: ~1e-4)
PARTS = ("facts", "workflow", "approvals", "conversation", "comments", "attachments", "timeline", "links")


def fresh_secrets() -> dict[str, str]:
    """A password, a GitHub personal token and a Slack bot token, random (valid nowhere)."""

    def word(n: int, alphabet: str = ALNUM) -> str:
        return "".join(secrets.choice(alphabet) for _ in range(n))

    return {
        "password": f"{word(8)}-{word(8)}",
        "github_token": f"ghp_{word(36)}",
        "slack_token": f"xoxb-{word(12, string.digits)}-{word(13, string.digits)}-{word(24)}",
    }


def distinctive(name: str, secret: str) -> str:
    """The part of a secret that is its own (not the shape's prefix, nor the Slack token's numeric ids)."""
    if name == "github_token":
        return secret.removeprefix("ghp_")
    if name == "slack_token":
        return secret.rsplit("-", 1)[1]
    return secret


def shown(text: str, secret: str) -> list[str]:
    """The runs of SHOWN characters of the secret that the text holds."""
    return sorted({secret[i : i + SHOWN] for i in range(len(secret) - SHOWN + 1) if secret[i : i + SHOWN] in text})


def decoded_history(history: dict[str, Any]) -> str:
    """A workflow history (its JSON form) with every payload's bytes decoded: what `temporal workflow show` or the
    UI would let anyone with Temporal access read."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and isinstance(node.get("metadata"), dict):
                return {
                    "metadata": {k: base64.b64decode(v).decode(errors="replace") for k, v in node["metadata"].items()},
                    "data": base64.b64decode(node["data"]).decode(errors="replace"),
                }
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return json.dumps(walk(history), ensure_ascii=False)


async def exposure(stack: ScenarioStack, incident_id: int, workflow_id: str, approval_id: int) -> dict[str, str]:
    """Everything a person or a tool can read about the incident, by where it comes from."""
    admin = stack.admin
    places: dict[str, str] = {}

    async def get(place: str, path: str, **params: Any) -> Any:
        answer = await admin.get(path, params=params)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text[:200]}"
        places[place] = answer.text
        return answer.json() if "json" in answer.headers.get("content-type", "") else None

    await get("incident page", f"/incidents/{incident_id}")
    for part in PARTS:
        await get(f"incident page: {part}", f"/incidents/{incident_id}/partials/{part}")
    await get("approval page", f"/approvals/{approval_id}")
    await get("GET /api/incidents/{id}", f"/api/incidents/{incident_id}")
    await get("GET /api/incidents/{id}/timeline", f"/api/incidents/{incident_id}/timeline", limit=500)
    await get("GET /api/conversations?incident=", "/api/conversations", incident=incident_id, limit=200)
    await get("GET /api/approvals/{id}", f"/api/approvals/{approval_id}")
    state = await get("GET /api/workflows/{id}", f"/api/workflows/{workflow_id}")
    for step in state["steps"]:
        contexts = f"/api/workflows/{workflow_id}/steps/{step['step_id']}/contexts"
        for snapshot in await get(f"contexts of {step['step_id']}", contexts):
            await get(f"context {step['step_id']} v{snapshot['version']}", f"{contexts}/{snapshot['version']}")
    history = await stack.temporal.get_workflow_handle(workflow_id).fetch_history()
    places["Temporal history"] = decoded_history(json.loads(history.to_json()))
    return places


async def secret_in_log(stack: ScenarioStack) -> Outcome:
    """Every request to shop fails with an ERROR line holding three secrets (and its ticker logs one more each
    second) until a restart clears it; the incident is investigated, restarted after approval and verified as
    any other, and then searched for the secrets everywhere it can be read."""
    leaked = fresh_secrets()
    shop, starts = await steady(stack, "shop")
    fault_at = time.time()
    await shop.fault("secret", clear_on_restart=True, **leaked)
    await shop.fault("errors", clear_on_restart=True, message=f"ERROR {LINE.format(**leaked)}")
    outcome = Outcome("secret in a log line", "500s + ERROR lines holding a password and 2 tokens")
    await respond(stack, shop, outcome, fault_at, starts, [("logs", "login to the upstream failed")])
    (incident,) = await stack.incidents(shop.name)
    approval = (outcome.steps["restart"].get("approval") or {})["approval_id"]
    places = await exposure(stack, incident["id"], incident["workflow_id"], approval)
    found = {
        place: {name: runs for name, secret in leaked.items() if (runs := shown(text, distinctive(name, secret)))}
        for place, text in places.items()
    }
    outcome.facts.update(
        searched={place: len(text) for place, text in places.items()},
        found={place: names for place, names in found.items() if names},
        # Where the line itself got to (redacted): the search looked at text that carries it, decoded.
        carried=sorted(place for place, text in places.items() if "login to the upstream failed" in text),
        log_holds=all(secret in shop.log.read_text() for secret in leaked.values()),
        masked=places["GET /api/workflows/{id}"].count("[REDACTED]"),
    )
    where = ", ".join(outcome.facts["found"]) or "nowhere"
    outcome.notes.append(f"secrets in clear: {where} ({len(places)} places searched)")
    return outcome
