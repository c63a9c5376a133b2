"""Who may call the service (docs/api.md, "Roles"): the role a bearer token is bound to, or
`public` for a call without one."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # logs, producer keys, tokens
    SUBMITTER = "submitter"  # submits events: bound to logs, producer keys and runs
    AUDITOR = "auditor"  # reads payloads: bound to logs and runs
    PUBLIC = "public"  # no token: reads what the log publishes


TOKEN_ROLES = (Role.ADMIN, Role.SUBMITTER, Role.AUDITOR)  # the roles a token can be minted with
