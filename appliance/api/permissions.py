"""The role matrix as data: which permissions each role holds.

A route declares exactly one permission (deps.require); a role may call it when the permission is in
its set here. Permission names are shared with the other components' routes: keep them stable.
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["agent", "supervisor", "admin", "auditor"]
ROLES: tuple[Role, ...] = get_args(Role)

PERMISSIONS: dict[str, str] = {
    "users.read": "list and read users",
    "users.write": "create, change, disable and unlock users; set their passwords",
    "tokens.own": "one's own session, password and API tokens",
    "tokens.all": "list and revoke every user's tokens",
    "audit.read": "read the audit log",
    "config.read": "read skills, queues, dispositions, agents' profiles and the routing policy",
    "config.write": "change skills, queues, dispositions, agents' profiles and the routing policy",
    "agent.self": "one's own agent status, offers and wrap-up",
    "agents.state.write": "set other agents' status",
    "live.read": "live queue and agent figures",
    "reports.read": "reports",
    "calls.read": "every call record",
    "calls.own.read": "the records of one's own calls",
    "numbers.full": "callers' numbers unmasked",
    "callbacks.read": "the callback list",
    "callbacks.write": "change a callback's status",
    "contacts.write": "create and change contacts",
    "ops.read": "the operations page: the site's dashboards from Prometheus, and the runbook",
    "tickets.read": "tickets, their history and SLA figures",
    "tickets.write": "create tickets, change, comment on, confirm and close them",
    "notifications.own": "one's own notifications (SLA warnings and breaches of tickets): read, mark read",
    "kb.read": "search the knowledge base; read its published articles (internal and public) and categories",
    "kb.drafts.read": "read the knowledge base's drafts, archived articles and every article's versions",
    "conversations.read": "conversations on every channel, their messages, customers' histories",
    "conversations.write": "reply in, take and resolve conversations nobody else holds",
    "conversations.assign": "assign conversations to anyone; reply in and resolve those others hold",
    "kb.write": "create, edit, publish and archive knowledge-base articles; create and rename categories",
    "retention.read": "the retention of personal data: the period and the purge runs",
    "retention.run": "start a retention purge now",
    "channels.read": "messages a channel (WeCom, the WeChat official account) could not deliver after its "
    "retries: the dead letters",
}

_AGENT = frozenset(
    {"tokens.own", "agent.self", "live.read", "calls.own.read", "config.read"}
    | {"tickets.read", "tickets.write", "kb.read"}
    # Not the auditor's: it works no tickets, so no escalation notifies it.
    | {"notifications.own"}
    | {"conversations.read", "conversations.write"}
)
_SUPERVISOR = _AGENT | {
    "users.read",
    "agents.state.write",
    "reports.read",
    "calls.read",
    "callbacks.read",
    "callbacks.write",
    # Knowledge managers are usually supervisors: they write and publish articles.
    "kb.drafts.read",
    "kb.write",
    # Supervisors hand chats over and step into them; an agent works only its own and unheld ones.
    "conversations.assign",
}
# The auditor reads everything an admin reads (the audit log included) and changes nothing but its own
# tokens and password.
_AUDITOR = frozenset(p for p in PERMISSIONS if p.endswith(".read")) | {"tokens.own"}

ROLE_PERMISSIONS: dict[Role, frozenset[str]] = {
    "agent": _AGENT,
    "supervisor": frozenset(_SUPERVISOR),
    "admin": frozenset(PERMISSIONS),
    "auditor": _AUDITOR,
}


_BY_NAME: dict[str, frozenset[str]] = {str(role): perms for role, perms in ROLE_PERMISSIONS.items()}


def role_can(role: str, permission: str) -> bool:
    """True when `role` holds `permission`; unknown roles hold nothing."""
    return permission in _BY_NAME.get(role, frozenset())
