"""Playbook `when` conditions in CEL (Common Expression Language): side-effect free, no eval, no I/O.

The activation is `{"steps": {step_id: {"status", "output"}}, "incident": {...}, "vars": {...}}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import celpy

from core.errors import Invalid


class ConditionError(Invalid):
    """The condition does not parse, or cannot be evaluated on this data."""


_env = celpy.Environment()


@lru_cache(maxsize=512)
def _program(expression: str) -> Any:
    try:
        return _env.program(_env.compile(expression))
    except Exception as err:  # celpy raises its own parse error types
        message = str(err).strip().splitlines()
        raise ConditionError(f"does not parse: {' '.join(line.strip() for line in message)[:300]}") from None


def check(expression: str) -> None:
    """Raise ConditionError if the expression does not parse."""
    _program(expression)


def evaluate(expression: str, activation: dict[str, Any]) -> bool:
    """The condition's value; it must be a boolean."""
    program = _program(expression)
    try:
        value = program.evaluate(celpy.json_to_cel(activation))
    except Exception as err:
        raise ConditionError(f"cannot be evaluated: {err}"[:300]) from None
    if isinstance(value, celpy.CELEvalError):
        raise ConditionError(f"cannot be evaluated: {value.args[0] if value.args else value}"[:300])
    if not isinstance(value, celpy.celtypes.BoolType | bool):
        raise ConditionError(f"must be true or false, got {type(value).__name__}")
    return bool(value)
