"""Our data converter speaks the SDK default's `json/plain`: payloads cross between the two both ways, and a
payload that does not fit its type is refused with the field named."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from core.converter import DATA_CONVERTER
from core.payloads import (
    AgentInput,
    AgentResult,
    DecideApprovalInput,
    IncidentContext,
    StepRecord,
    StepState,
    WorkflowState,
)
from core.playbook import Playbook, StepSpec

AGENT_INPUT = AgentInput(
    incident=IncidentContext(7, "api is down", "api", "P1", service_url="http://api.internal"),
    workflow_id="incident-7",
    step_id="investigate",
    previous_agent_output={"ok": True, "data": {"codes": [502, 503]}, "summary": "5xx"},
    dependency_outputs={"monitor": {"ok": True}},
    params={"lines": 200, "paths": ["/var/log/api.log"], "ratio": 0.5, "nested": {"a": None}},
    record=StepRecord(7, "logs", 1, 1, "2026-12-01T10:00:00+00:00", 1001),
)
STATE = WorkflowState(
    workflow_id="incident-7",
    incident_id=7,
    playbook_id="default",
    playbook_version=3,
    status="in_progress",
    current_steps=["investigate"],
    steps=[StepState(step_id="investigate", agent="logs", position=1, status="running", params={"lines": 200})],
)


def payload(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


@pytest.mark.parametrize("value", [AGENT_INPUT, STATE, AgentResult(ok=False, summary="é ✓ \u2028")])
async def test_payloads_cross_with_the_sdk_default_both_ways(value):
    ours = await DATA_CONVERTER.encode([value])
    sdk = await DataConverter.default.encode([value])
    assert ours[0].metadata["encoding"] == sdk[0].metadata["encoding"] == b"json/plain"
    assert (await DataConverter.default.decode(ours, [type(value)]))[0] == value
    assert (await DATA_CONVERTER.decode(sdk, [type(value)]))[0] == value


async def test_cli_json_decodes_into_the_update_input_with_defaults():
    """What `temporal workflow update execute --input '{…}'` sends: only some fields, others default."""
    [decided] = await DATA_CONVERTER.decode(
        [payload(b'{"decision": "approve", "actor": "alice"}')], [DecideApprovalInput]
    )
    assert decided == DecideApprovalInput(decision="approve", actor="alice")


async def test_unknown_fields_are_ignored_as_the_sdk_does():
    data = b'{"decision": "reject", "actor": "bob", "from_a_newer_version": 1}'
    [decided] = await DATA_CONVERTER.decode([payload(data)], [DecideApprovalInput])
    assert decided.decision == "reject"


async def test_a_wrong_type_is_refused_naming_the_field():
    with pytest.raises(TypeError, match=r"incident_id"):
        await DATA_CONVERTER.decode([payload(b'{"incident": {"incident_id": "seven"}}')], [AgentInput])


async def test_a_missing_required_field_is_refused():
    with pytest.raises(TypeError, match=r"decision"):
        await DATA_CONVERTER.decode([payload(b'{"actor": "alice"}')], [DecideApprovalInput])


async def test_values_json_lacks_are_encoded_as_the_sdk_encodes_them():
    when = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    playbook = Playbook(id="p", name="p", steps=[StepSpec(id="a", agent="noop")])
    ours = await DATA_CONVERTER.encode([when, {"only"}, playbook])
    [decoded_when, items, dumped] = await DATA_CONVERTER.decode(ours, [datetime, list[str], dict])
    assert decoded_when == when
    assert items == ["only"]
    assert dumped == playbook.model_dump(mode="json")
    with pytest.raises(TypeError):
        await DATA_CONVERTER.encode([object()])


async def test_an_untyped_payload_decodes_as_plain_json():
    [value] = await DATA_CONVERTER.decode([payload(b'{"a": [1, 2.5, null]}')], None)
    assert value == {"a": [1, 2.5, None]}


async def test_numbers_as_a_cli_user_types_them_fit_int_fields():
    [decided] = await DATA_CONVERTER.decode(
        [payload(b'{"decision": "approve", "approval_id": 3.0}')], [DecideApprovalInput]
    )
    assert decided.approval_id == 3
    [decided] = await DATA_CONVERTER.decode(
        [payload(b'{"decision": "approve", "approval_id": "4"}')], [DecideApprovalInput]
    )
    assert decided.approval_id == 4


async def test_a_pydantic_model_is_built_the_sdk_way():
    playbook = Playbook(id="p", name="p", steps=[StepSpec(id="a", agent="noop")])
    [decoded] = await DATA_CONVERTER.decode(await DATA_CONVERTER.encode([playbook]), [Playbook])
    assert decoded == playbook
