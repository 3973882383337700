"""The bot's create_ticket tool opens a real appliance ticket (aicc.tickets, with its created event and
the default SLA policy), linked to the call and the caller's phone, so the case the caller described
is in the agents' ticket list (and the desktop) the moment the bot says its number. A connector
checks what the ticket refers to (the caller's own order or card) and hands the rest to open_ticket."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from aicc.appliance.connectors.phone import e164
from aicc.appliance.tickets import store
from aicc.models.engines.base import Language

# Tickets the bot opens are the callers' own words: normal priority, triaged by staff.
BOT_PRIORITY = "normal"
BOT_SLA_POLICY = "default"


@dataclass(frozen=True)
class ToolContext:
    """Who a tool acts for: the caller's number (the From user), the call (its SIP Call-ID, the key of
    the call record) or the text conversation (web chat), and the language the bot speaks with them."""

    caller: str
    call_id: str = ""
    language: Language = "en"
    conversation_id: str = ""


async def open_ticket(
    conn: Any,
    ctx: ToolContext,
    *,
    summary: str,
    category: str,
    refs: dict[str, str],
    backend: str,
) -> dict[str, Any]:
    """A new ticket in the caller's words; refs (order_id, card_last4 ...) go into its description."""
    during = "a web chat" if ctx.conversation_id else "a call"
    lines = [summary.strip(), "", f"Opened by the bot ({backend}) during {during}."]
    lines += [f"{k}: {v}" for k, v in refs.items() if v]
    phone = e164(ctx.caller)
    fields = {
        "subject": summary.strip()[:200],
        "description": "\n".join(lines),
        "type": category,
        "priority": BOT_PRIORITY,
        "group": "",
        "assignee": None,
        # A chat's customer is the conversation's (it links to it); a call's, the number that called.
        "customer": {"phone": phone} if phone else ({"sip": ctx.caller[:200]} if ctx.caller else {}),
        "language": ctx.language,
        "source": "bot",
        "call_id": ctx.call_id or None,
        "contact_id": None,
        "conversation_id": ctx.conversation_id or None,
        "sla_policy": BOT_SLA_POLICY,
    }
    async with conn.transaction():
        row = await store.create(conn, fields, None, "bot", dt.datetime.now(dt.UTC))
    return {"ticket_id": row["number"], "category": category}
