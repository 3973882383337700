"""The demo business backend on PostgreSQL: order status, logistics tracking, change of delivery address,
returns and tickets, with the lines the bot speaks for each result in English and Mandarin; and the
customer lookup (phone -> name, value tier, language) the IVR routes by."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aicc.appliance.connectors.base import ConnectorError, PostgresConnector
from aicc.appliance.connectors.phone import LOOKUP_CUSTOMER, customer_line, e164
from aicc.appliance.connectors.tickets import ToolContext, open_ticket
from aicc.models.engines.base import Language, ToolSpec

ORDER_ID = {"type": "string", "pattern": "^[0-9]{6}$", "description": "the 6-digit order number"}

TOOLS: list[ToolSpec] = [
    ToolSpec(
        "get_order_status",
        "status of an order (processing, shipped, delivered) and its expected delivery date",
        {
            "type": "object",
            "properties": {"order_id": ORDER_ID},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "track_shipment",
        "where the parcel of an order is now: carrier, tracking number and last scan",
        {
            "type": "object",
            "properties": {"order_id": ORDER_ID},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    ),
    ToolSpec(
        "change_address",
        "change the delivery address of an order that is not delivered yet",
        {
            "type": "object",
            "properties": {
                "order_id": ORDER_ID,
                "new_address": {
                    "type": "string",
                    "minLength": 4,
                    "maxLength": 200,
                    "description": "the full new delivery address",
                },
            },
            "required": ["order_id", "new_address"],
            "additionalProperties": False,
        },
        write=True,
    ),
    ToolSpec(
        "create_return",
        "start a return of a delivered order",
        {
            "type": "object",
            "properties": {
                "order_id": ORDER_ID,
                "reason": {
                    "type": "string",
                    "minLength": 2,
                    "maxLength": 200,
                    "description": "why the caller returns it",
                },
            },
            "required": ["order_id", "reason"],
            "additionalProperties": False,
        },
        write=True,
    ),
    ToolSpec(
        # A ticket records the caller's problem for staff; it changes no order, so no confirmation.
        "create_ticket",
        "open a support ticket for a problem no other tool solves",
        {
            "type": "object",
            "properties": {
                "summary": {"type": "string", "minLength": 3, "maxLength": 300},
                "category": {
                    "type": "string",
                    "enum": ["delivery", "product", "payment", "account", "other"],
                },
                "order_id": ORDER_ID,
            },
            "required": ["summary", "category"],
            "additionalProperties": False,
        },
    ),
]

_STATUS = {
    "processing": {"en": "is being prepared", "zh": "正在备货"},
    "shipped": {"en": "has shipped", "zh": "已发货"},
    "delivered": {"en": "was delivered", "zh": "已签收"},
    "cancelled": {"en": "was cancelled", "zh": "已取消"},
    "returned": {"en": "was returned", "zh": "已退货"},
}
_EVENT = {
    "picked_up": {"en": "was picked up", "zh": "已揽收"},
    "in_transit": {"en": "is in transit", "zh": "运输中"},
    "out_for_delivery": {"en": "is out for delivery", "zh": "正在派送"},
    "delivered": {"en": "was delivered", "zh": "已签收"},
}
_CARRIER_ZH = {"SF Express": "顺丰速运", "JD Logistics": "京东物流", "YTO Express": "圆通速递"}


# Order numbers 555xxx are not in the seed: an example copied by mistake finds nothing.
PLAN_EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    (
        "Where is the parcel of order 555001?",
        {"intent": "tools", "actions": [{"tool": "track_shipment", "arguments": {"order_id": "555001"}}]},
    ),
    (
        "查一下订单555002的状态，然后把地址改成北京市朝阳路1号",
        {
            "intent": "tools",
            "actions": [
                {"tool": "get_order_status", "arguments": {"order_id": "555002"}},
                {
                    "tool": "change_address",
                    "arguments": {"order_id": "555002", "new_address": "北京市朝阳路1号"},
                },
            ],
        },
    ),
]


def _date(value: Any, language: Language) -> str:
    if not isinstance(value, str):
        return ""
    d = dt.date.fromisoformat(value)
    return f"{d.month}月{d.day}日" if language == "zh" else d.strftime("%B %-d")


class DemoBackend(PostgresConnector):
    """Connector to the demo backend tables (aicc.demo_*)."""

    name = "demo-retail"
    backend = "demo backend"

    def tools(self) -> list[ToolSpec]:
        return [*TOOLS, LOOKUP_CUSTOMER]

    def plan_examples(self) -> list[tuple[str, dict[str, Any]]]:
        return list(PLAN_EXAMPLES)

    async def caller_ids(self, caller: str) -> list[str]:
        """The order numbers of the customer whose phone is calling (a heard number one digit away
        from one of them is offered to the caller rather than rejected)."""
        phone = e164(caller)
        if not phone:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT o.id FROM aicc.demo_orders o JOIN aicc.demo_customers c ON c.id = o.customer_id "
                "WHERE c.phone = %s ORDER BY o.placed_on DESC LIMIT 20",
                (phone,),
            )
            return [str(row[0]) for row in await cur.fetchall()]

    async def _order(self, conn: Any, order_id: str) -> dict[str, Any]:
        cur = await conn.execute("SELECT * FROM aicc.demo_orders WHERE id = %s", (order_id,))
        row = await cur.fetchone()
        if row is None:
            raise ConnectorError(f"order {order_id} not found", kind="not_found")
        return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}

    async def _tool_lookup_customer(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        cur = await conn.execute(
            "SELECT name, tier, language FROM aicc.demo_customers WHERE phone = %s", (e164(args["phone"]),)
        )
        row = await cur.fetchone()
        if row is None:
            raise ConnectorError("no customer with that phone number", kind="not_found")
        return dict(row)

    async def _tool_get_order_status(
        self, conn: Any, args: dict[str, Any], ctx: ToolContext
    ) -> dict[str, Any]:
        o = await self._order(conn, args["order_id"])
        return {
            "order_id": o["id"],
            "status": o["status"],
            "eta": o["eta"],
            "item_en": o["item_en"],
            "item_zh": o["item_zh"],
            "carrier": o["carrier"],
        }

    async def _tool_track_shipment(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        o = await self._order(conn, args["order_id"])
        cur = await conn.execute(
            "SELECT at, location_en, location_zh, event FROM aicc.demo_shipment_events WHERE order_id = %s "
            "ORDER BY at DESC LIMIT 1",
            (o["id"],),
        )
        last = await cur.fetchone()
        return {
            "order_id": o["id"],
            "status": o["status"],
            "carrier": o["carrier"],
            "tracking_no": o["tracking_no"],
            "eta": o["eta"],
            "last_event": None
            if last is None
            else {
                "at": last["at"].isoformat(),
                "location_en": last["location_en"],
                "location_zh": last["location_zh"],
                "event": last["event"],
            },
        }

    async def _tool_change_address(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT status, delivery_address FROM aicc.demo_orders WHERE id = %s FOR UPDATE",
                (args["order_id"],),
            )
            row = await cur.fetchone()
            if row is None:
                raise ConnectorError(f"order {args['order_id']} not found", kind="not_found")
            if row["status"] in ("delivered", "cancelled", "returned"):
                return {"order_id": args["order_id"], "changed": False, "status": row["status"]}
            await conn.execute(
                "UPDATE aicc.demo_orders SET delivery_address = %s WHERE id = %s",
                (args["new_address"], args["order_id"]),
            )
            await conn.execute(
                "INSERT INTO aicc.demo_address_changes (order_id, old_address, new_address, via) "
                "VALUES (%s, %s, %s, %s)",
                (args["order_id"], row["delivery_address"], args["new_address"], "voicebot"),
            )
        return {
            "order_id": args["order_id"],
            "changed": True,
            "new_address": args["new_address"],
            "status": row["status"],
        }

    async def _tool_create_return(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        async with conn.transaction():
            o = await self._order(conn, args["order_id"])
            if o["status"] != "delivered":
                return {"order_id": o["id"], "created": False, "status": o["status"]}
            cur = await conn.execute(
                "INSERT INTO aicc.demo_returns (order_id, reason, via) "
                "VALUES (%s, %s, 'voicebot') RETURNING id",
                (o["id"], args["reason"]),
            )
            row = await cur.fetchone()
        return {"order_id": o["id"], "created": True, "return_id": row["id"]}

    async def _tool_create_ticket(self, conn: Any, args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        refs = {"order_id": (await self._order(conn, args["order_id"]))["id"]} if args.get("order_id") else {}
        return await open_ticket(
            conn, ctx, summary=args["summary"], category=args["category"], refs=refs, backend=self.name
        )

    # --- what the caller hears --------------------------------------------------------------------

    def describe(
        self, tool: str, arguments: dict[str, Any], result: dict[str, Any], language: Language
    ) -> str:
        zh = language == "zh"
        oid = str(result.get("order_id", arguments.get("order_id", "")))
        if tool == "lookup_customer":
            return customer_line(result, language)
        if tool == "get_order_status":
            status = _STATUS[result["status"]][language]
            item = result["item_zh"] if zh else result["item_en"]
            eta = _date(result.get("eta"), language)
            if zh:
                line = f"您的订单{oid}（{item}）{status}。"
                if result["status"] in ("processing", "shipped") and eta:
                    line += f"预计{eta}送达。"
                return line
            line = f"Your order {oid}, {item}, {status}."
            if result["status"] in ("processing", "shipped") and eta:
                line += f" It is expected to arrive on {eta}."
            return line
        if tool == "track_shipment":
            carrier = result.get("carrier")
            last = result.get("last_event")
            if not carrier or last is None:
                return (
                    f"订单{oid}还没有发货，暂时没有物流信息。"
                    if zh
                    else f"Order {oid} has not shipped yet, so there is no tracking information."
                )
            event = _EVENT[last["event"]][language]
            if zh:
                carrier_zh = _CARRIER_ZH.get(carrier, carrier)
                return f"订单{oid}由{carrier_zh}承运，包裹在{last['location_zh']}{event}。"
            return f"Order {oid} is with {carrier}. The parcel {event} in {last['location_en']}."
        if tool == "change_address":
            if not result.get("changed"):
                return (
                    f"订单{oid}{_STATUS[result['status']]['zh']}，无法修改地址。"
                    if zh
                    else f"Order {oid} {_STATUS[result['status']]['en']}, so its address can't be changed."
                )
            return (
                f"好的，订单{oid}的收货地址已改为{result['new_address']}。"
                if zh
                else f"Done. The delivery address of order {oid} is now {result['new_address']}."
            )
        if tool == "create_return":
            if not result.get("created"):
                return (
                    f"订单{oid}{_STATUS[result['status']]['zh']}，签收后才能申请退货。"
                    if zh
                    else f"Order {oid} {_STATUS[result['status']]['en']}; a return can start once it is "
                    "delivered."
                )
            return (
                f"退货申请已提交，退货单号{result['return_id']}。"
                if zh
                else f"Your return is registered, return number {result['return_id']}."
            )
        if tool == "create_ticket":
            return (
                f"已为您创建工单，工单号{result['ticket_id']}，我们会尽快处理。"
                if zh
                else f"I've opened ticket number {result['ticket_id']}; a colleague will follow up."
            )
        raise ValueError(f"no description for tool {tool!r}")

    def confirm_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        oid = str(arguments.get("order_id", ""))
        if tool == "change_address":
            return (
                f"请确认：把订单{oid}的收货地址改为{arguments['new_address']}，对吗？"
                if language == "zh"
                else f"To confirm: change the delivery address of order {oid} to {arguments['new_address']}. "
                "Shall I go ahead?"
            )
        if tool == "create_return":
            return (
                f"请确认：为订单{oid}申请退货，对吗？"
                if language == "zh"
                else f"To confirm: start a return for order {oid}. Shall I go ahead?"
            )
        return "请确认，对吗？" if language == "zh" else "Shall I go ahead?"

    def not_found_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        oid = str(arguments.get("order_id", ""))
        return (
            f"抱歉，没有找到订单{oid}，请核对订单号。"
            if language == "zh"
            else f"Sorry, I couldn't find order {oid}. Please check the number."
        )
