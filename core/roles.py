"""Roles and their order: each role can do everything the ones before it can (approvers also respond, admins
also approve). Pure, so the workflow's approval rules can use it."""

from __future__ import annotations

from typing import Literal

Role = Literal["viewer", "responder", "approver", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "responder", "approver", "admin")
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}
