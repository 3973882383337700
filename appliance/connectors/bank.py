"""The demo bank card backend on PostgreSQL (aicc.demo_bank_*): card status, recent transactions,
blocking a card, reporting it lost, tickets; with the lines the bot speaks, in English and Mandarin.

Security rule: a caller acts only on the cards of the customer whose phone number is the caller's
(the SIP From user). Any other card, whoever holds it, is "not found": the answer does not tell a
caller that a card with those digits exists.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from aicc.appliance.connectors.base import ConnectorError, PostgresConnector
from aicc.appliance.connectors.phone import LOOKUP_CUSTOMER, customer_line, e164
from aicc.appliance.connectors.tickets import ToolContext, open_ticket
from aicc.models.engines.base import Language, ToolSpec

CARD_LAST4 = {"type": "string", "pattern": "^[0-9]{4}$", "description": "the last four digits of the card"}


def _card_tool(name: str, description: str, *, write: bool = False) -> ToolSpec:
    """A tool whose only argument is the card."""
    return ToolSpec(
        name,
        description,
        {
            "type": "object",
            "properties": {"card_last4": CARD_LAST4},
            "required": ["card_last4"],
            "additionalProperties": False,
        },
        write=write,
    )


TOOLS: list[ToolSpec] = [
    _card_tool("get_card_status", "whether a card of the caller is active, blocked or reported lost"),
    ToolSpec(
        "list_recent_transactions",
        "the latest payments made with a card of the caller",
        {
            "type": "object",
            "properties": {
                "card_last4": CARD_LAST4,
                "count": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 5,
                    "description": "how many, 3 if unsaid",
                },
            },
            "required": ["card_last4"],
            "additionalProperties": False,
        },
    ),
    _card_tool("block_card", "block a card for now (the caller can have it unblocked later)", write=True),
    _card_tool(
        "report_lost_card", "report a card lost or stolen: it is cancelled and a new one sent", write=True
    ),
    ToolSpec(
        # A ticket records the caller's problem for staff; it changes no card, so no confirmation.
        "create_ticket",
        "open a support ticket for a problem no other tool solves (a disputed payment, a card not arrived)",
        {
            "type": "object",
            "properties": {
                "summary": {"type": "string", "minLength": 3, "maxLength": 300},
                "category": {"type": "string", "enum": ["card", "transaction", "account", "other"]},
                "card_last4": CARD_LAST4,
            },
            "required": ["summary", "category"],
            "additionalProperties": False,
        },
    ),
]

# Cards ending 0555/0556 are in no seed: an example copied by mistake finds nothing.
PLAN_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "Is my card ending 0555 still working?",
        {"intent": "tools", "actions": [{"tool": "get_card_status", "arguments": {"card_last4": "0555"}}]},
    ),
    (
        "尾号0556的卡丢了，帮我挂失，再查一下最近的消费",
        {
            "intent": "tools",
            "actions": [
                {"tool": "report_lost_card", "arguments": {"card_last4": "0556"}},
                {"tool": "list_recent_transactions", "arguments": {"card_last4": "0556"}},
            ],
        },
    ),
]

_STATUS = {
    "active": {"en": "is active", "zh": "状态正常"},
    "blocked": {"en": "is blocked", "zh": "已冻结"},
    "lost": {"en": "is reported lost", "zh": "已挂失"},
}
_SAY_ZH = dict(zip("0123456789", "零幺二三四五六七八九", strict=True))
DEFAULT_TRANSACTIONS = 3
_CARD = (
    "SELECT c.id, c.last4, c.kind, c.product_en, c.product_zh, c.status "
    "FROM aicc.demo_bank_cards c JOIN aicc.demo_bank_customers u ON u.id = c.customer_id "
    "WHERE u.phone = %s AND c.last4 = %s"
)
_CARD_FOR_UPDATE = _CARD + " FOR UPDATE OF c"


def card_digits(last4: str, language: Language) -> str:
    """A card's last four digits as the bot says them, one by one (a TTS front-end reads 8421 as a
    number, "eight thousand ..."): "8 4 2 1" / "八四二幺"."""
    return "".join(_SAY_ZH.get(d, d) for d in last4) if language == "zh" else " ".join(last4)


def _amount(value: Any) -> str:
    """128.50 -> "128.5", 1280.00 -> "1280": as a caller says a price."""
    text = f"{Decimal(str(value)):.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _day(value: str, language: Language) -> str:
    d = dt.date.fromisoformat(value)
    return f"{d.month}月{d.day}日" if language == "zh" else d.strftime("%B %-d")


class BankBackend(PostgresConnector):
    """Connector to the demo bank tables (aicc.demo_bank_*)."""

    name = "demo-bank"
    backend = "bank backend"

    def tools(self) -> list[ToolSpec]:
        return [*TOOLS, LOOKUP_CUSTOMER]

    def plan_examples(self) -> list[tuple[str, dict[str, Any]]]:
        return list(PLAN_EXAMPLES)

    async def caller_ids(self, caller: str) -> list[str]:
        """The last four digits of the calling customer's cards (a heard number one digit away from
        one of them is offered to the caller rather than rejected)."""
        phone = e164(caller)
        if not phone:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT c.last4 FROM aicc.demo_bank_cards c JOIN aicc.demo_bank_customers u "
                "ON u.id = c.customer_id WHERE u.phone = %s ORDER BY c.id",
                (phone,),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def _card(self, conn: Any, caller: str, last4: str, *, lock: bool = False) -> dict[str, Any]:
        """The caller's own card with these last four digits; anyone else's is not found."""
        cur = await conn.execute(_CARD_FOR_UPDATE if lock else _CARD, (e164(caller), last4))
        row = await cur.fetchone()
        if row is None:
            raise ConnectorError(f"no card ending {last4} for this caller", kind="not_found")
        return dict(row)

    @staticmethod
    def _card_result(card: dict[str, Any]) -> dict[str, Any]:
        return {k: card[k] for k in ("last4", "kind", "product_en", "product_zh", "status")}

    async def _tool_lookup_customer(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        cur = await conn.execute(
            "SELECT name, tier, language FROM aicc.demo_bank_customers WHERE phone = %s",
            (e164(args["phone"]),),
        )
        row = await cur.fetchone()
        if row is None:
            raise ConnectorError("no customer with that phone number", kind="not_found")
        return dict(row)

    async def _tool_get_card_status(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        return self._card_result(await self._card(conn, ctx.caller, args["card_last4"]))

    async def _tool_list_recent_transactions(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        card = await self._card(conn, ctx.caller, args["card_last4"])
        cur = await conn.execute(
            "SELECT (at AT TIME ZONE 'Asia/Shanghai')::date AS day, amount, currency, merchant_en, "
            "merchant_zh FROM aicc.demo_bank_transactions WHERE card_id = %s ORDER BY at DESC LIMIT %s",
            (card["id"], int(args.get("count", DEFAULT_TRANSACTIONS))),
        )
        rows = await cur.fetchall()
        transactions = [
            {
                "day": r["day"].isoformat(),
                "amount": _amount(r["amount"]),
                "currency": r["currency"],
                "merchant_en": r["merchant_en"],
                "merchant_zh": r["merchant_zh"],
            }
            for r in rows
        ]
        return {**self._card_result(card), "count": len(transactions), "transactions": transactions}

    async def _change_status(
        self, conn: Any, args: dict[str, Any], caller: str, action: str, new: str, from_: tuple[str, ...]
    ) -> dict[str, Any]:
        async with conn.transaction():
            card = await self._card(conn, caller, args["card_last4"], lock=True)
            if card["status"] not in from_:
                return {**self._card_result(card), "changed": False}
            await conn.execute("UPDATE aicc.demo_bank_cards SET status = %s WHERE id = %s", (new, card["id"]))
            await conn.execute(
                "INSERT INTO aicc.demo_bank_card_actions (card_id, action, old_status, new_status, "
                "caller, via) VALUES (%s, %s, %s, %s, %s, 'voicebot')",
                (card["id"], action, card["status"], new, caller),
            )
        return {**self._card_result(card), "status": new, "changed": True}

    async def _tool_block_card(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        return await self._change_status(conn, args, ctx.caller, "block", "blocked", ("active",))

    async def _tool_report_lost_card(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        return await self._change_status(conn, args, ctx.caller, "report_lost", "lost", ("active", "blocked"))

    async def _tool_create_ticket(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        # A card named must be the caller's own: the ticket never tells a stranger a card exists.
        card = await self._card(conn, ctx.caller, args["card_last4"]) if args.get("card_last4") else None
        refs = {"card": f"{card['product_en']} ending {card['last4']}"} if card else {}
        return await open_ticket(
            conn, ctx, summary=args["summary"], category=args["category"], refs=refs, backend=self.name
        )

    # --- what the caller hears --------------------------------------------------------------------

    def describe(
        self, tool: str, arguments: dict[str, Any], result: dict[str, Any], language: Language
    ) -> str:
        zh = language == "zh"
        if tool == "lookup_customer":
            return customer_line(result, language)
        if tool == "create_ticket":
            return (
                f"已为您创建工单，工单号{result['ticket_id']}，我们会尽快处理。"
                if zh
                else f"I've opened ticket number {result['ticket_id']}; a colleague will follow up."
            )
        digits = card_digits(result["last4"], language)
        product = result["product_zh"] if zh else result["product_en"]
        status = _STATUS[result["status"]][language]
        if tool == "get_card_status":
            return (
                f"您尾号{digits}的{product}{status}。"
                if zh
                else f"Your {product} ending in {digits} {status}."
            )
        if tool == "list_recent_transactions":
            return self._transactions_line(result, digits, language)
        if tool in ("block_card", "report_lost_card") and not result["changed"]:
            return (
                f"您尾号{digits}的{product}{status}，无需再次办理。"
                if zh
                else f"Your {product} ending in {digits} {status} already; nothing needed changing."
            )
        if tool == "block_card":
            return (
                f"好的，您尾号{digits}的{product}已冻结，暂时无法使用。"
                if zh
                else f"Done. Your {product} ending in {digits} is blocked; nobody can pay with it now."
            )
        if tool == "report_lost_card":
            return (
                f"好的，您尾号{digits}的{product}已挂失，新卡将在7个工作日内寄出。"
                if zh
                else f"Done. Your {product} ending in {digits} is reported lost; a new card will be mailed "
                "to you within 7 working days."
            )
        raise ValueError(f"no description for tool {tool!r}")

    @staticmethod
    def _transactions_line(result: dict[str, Any], digits: str, language: Language) -> str:
        items = result["transactions"]
        if language == "zh":
            if not items:
                return f"您尾号{digits}的卡最近没有交易。"
            said = "；".join(f"{_day(t['day'], 'zh')}在{t['merchant_zh']}消费{t['amount']}元" for t in items)
            return f"您尾号{digits}的卡最近{len(items)}笔交易：{said}。"
        if not items:
            return f"There are no recent payments with your card ending in {digits}."
        said = "; ".join(f"{_day(t['day'], 'en')}, {t['amount']} yuan at {t['merchant_en']}" for t in items)
        many = "payment" if len(items) == 1 else f"{len(items)} payments"
        return f"The last {many} with your card ending in {digits}: {said}."

    def confirm_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        digits = card_digits(str(arguments.get("card_last4", "")), language)
        zh = language == "zh"
        if tool == "block_card":
            return (
                f"请确认：冻结您尾号{digits}的卡，对吗？"
                if zh
                else f"To confirm: block your card ending in {digits}. Shall I go ahead?"
            )
        if tool == "report_lost_card":
            return (
                f"请确认：挂失您尾号{digits}的卡，挂失后这张卡将不能再使用，对吗？"
                if zh
                else f"To confirm: report your card ending in {digits} as lost. It can't be used again "
                "after that. Shall I go ahead?"
            )
        return "请确认，对吗？" if zh else "Shall I go ahead?"

    def not_found_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        if tool == "lookup_customer":
            return (
                "抱歉，没有找到您的客户信息。" if language == "zh" else "Sorry, I couldn't find your details."
            )
        digits = card_digits(str(arguments.get("card_last4", "")), language)
        return (
            f"抱歉，您的名下没有尾号{digits}的卡，请核对卡号后四位。"
            if language == "zh"
            else f"Sorry, I couldn't find a card ending in {digits} in your name. Please check the last "
            "four digits."
        )
