"""Conversations as agents work them (routes/conversations.py) over the one conversation model
(appliance/conversations): a customer's history across channels with their calls joined by phone
number, replies, taking, resolving, permissions and the errors."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
import pytest

from aicc.appliance.conversations import store
from tests.unit.api_support import (
    Api,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    last_audit_id,
    make_user,
)

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


async def _customer(api: Api, phone: str | None = None, name: str = "王芳") -> uuid.UUID:
    async with api.pool.connection() as conn:
        customer = await store.create_customer(conn, name=name, language="zh")
        if phone:
            await store.add_identity(conn, customer, "phone", phone)
        return customer


async def _conversation(
    api: Api, customer: uuid.UUID, channel: store.Channel, at: dt.datetime, *bodies: str
) -> dict[str, Any]:
    async with api.pool.connection() as conn:
        c = await store.create_conversation(conn, customer, channel, language="zh", handler="queue")
        await conn.execute("UPDATE aicc.conversations SET created_at = %s WHERE id = %s", (at, c["id"]))
        for i, body in enumerate(bodies):
            await store.add_message(
                conn, c["id"], direction="in", author="customer", body=body, client_id=f"c{i}"
            )
        found = await store.get_conversation(conn, c["id"])
        assert found is not None
        return found


def _call(api: Api, caller: str, at: dt.datetime, outcome: str = "resolved") -> str:
    call_id = f"call-{uuid.uuid4()}"
    with psycopg.connect(api.db.dsn) as conn:
        conn.execute(
            "INSERT INTO aicc.calls (call_id, caller, service, started_at, ended_at, outcome, summary) "
            "VALUES (%s, %s, '4001', %s, %s, %s, %s)",
            (call_id, caller, at, at + dt.timedelta(minutes=3), outcome, "订单100234：查询状态"),
        )
    return call_id


@pytest.mark.asyncio
async def test_a_customers_history_shows_every_channel_and_their_calls_in_time_order(api: Api) -> None:
    customer = await _customer(api, phone="138 0013 8000")
    chat = await _conversation(api, customer, "webchat", T0, "你好", "订单100234到哪了")
    # The same number as the trunk gave it (national form), a day later; and in E.164, later again.
    call_1 = _call(api, "13800138000", T0 + dt.timedelta(days=1))
    email = await _conversation(api, customer, "email", T0 + dt.timedelta(days=2), "发票")
    call_2 = _call(api, "+8613800138000", T0 + dt.timedelta(days=3), outcome="transferred")
    _call(api, "13900139000", T0 + dt.timedelta(days=1, hours=1))  # someone else's call
    _call(api, "1380013800", T0 + dt.timedelta(days=1, hours=2))  # one digit short: not theirs

    r = await api.client.get(f"/api/customers/{customer}/history", headers=api.auth("agent"))
    assert r.status_code == 200, r.text
    items = r.json()
    assert [(i["kind"], i["channel"]) for i in items] == [
        ("conversation", "webchat"),
        ("call", "voice"),
        ("conversation", "email"),
        ("call", "voice"),
    ]
    assert [i["id"] or i["call_id"] for i in items] == [str(chat["id"]), call_1, str(email["id"]), call_2]
    assert items[0]["messages"] == 2 and items[0]["status"] == "open"
    assert items[3]["outcome"] == "transferred" and items[3]["summary"] == "订单100234：查询状态"
    assert items[1]["caller"] == "138****8000"  # agents see numbers masked
    r = await api.client.get(f"/api/customers/{customer}/history", headers=api.auth("admin"))
    assert r.json()[3]["caller"] == "+8613800138000"


def test_number_forms_cover_how_trunks_present_a_number() -> None:
    assert store.number_forms("13800138000") == [
        "+8613800138000",
        "008613800138000",
        "13800138000",
        "8613800138000",
    ]
    assert "02112345678" in store.number_forms("+862112345678")
    assert store.number_forms("1001") == []


@pytest.mark.asyncio
async def test_messages_are_numbered_and_a_client_id_is_stored_once(api: Api) -> None:
    customer = await _customer(api)
    c = await _conversation(api, customer, "webchat", T0)
    async with api.pool.connection() as conn:
        first, created = await store.add_message(
            conn, c["id"], direction="in", author="customer", body="hello", client_id="abc"
        )
        again, created_again = await store.add_message(
            conn, c["id"], direction="in", author="customer", body="hello (resent)", client_id="abc"
        )
        bot, _ = await store.add_message(conn, c["id"], direction="out", author="bot", body="Hi!")
        with pytest.raises(ValueError, match="4000"):
            await store.add_message(conn, c["id"], direction="in", author="customer", body="x" * 4001)
        rows = await store.messages(conn, c["id"])
    assert created and not created_again and again["id"] == first["id"]
    assert [(m["seq"], m["body"]) for m in rows] == [(1, "hello"), (2, "Hi!")]
    assert bot["seq"] == 2


@pytest.mark.asyncio
async def test_an_agent_replies_takes_and_resolves(api: Api) -> None:
    customer = await _customer(api, phone="13700137000", name="Li Lei")
    c = await _conversation(api, customer, "webchat", T0, "I want a refund")
    cid = c["id"]
    agent = api.users["agent"]

    r = await api.client.get("/api/conversations?handler=queue&status=open", headers=api.auth("agent"))
    assert r.status_code == 200
    listed = {x["id"]: x for x in r.json()}
    assert str(cid) in listed and listed[str(cid)]["last_message"] == "I want a refund"
    assert listed[str(cid)]["customer_name"] == "Li Lei"

    before = last_audit_id(api.db)
    r = await api.client.post(
        f"/api/conversations/{cid}/messages",
        json={"body": "  Sure, let me check.  "},
        headers=api.auth(agent),
    )
    assert r.status_code == 201, r.text
    assert r.json()["author"] == "agent" and r.json()["author_id"] == agent.id and r.json()["seq"] == 2
    assert r.json()["body"] == "Sure, let me check."
    r = await api.client.get(f"/api/conversations/{cid}", headers=api.auth("agent"))
    detail = r.json()
    assert (detail["handler"], detail["assignee"], detail["status"]) == ("agent", agent.id, "open")
    assert [m["author"] for m in detail["messages"]] == ["customer", "agent"]
    assert detail["customer"]["identities"] == [{"kind": "phone", "value": "+861******7000"}]
    assert detail["visitor_connected"] is False and detail["visitor_typing"] is False
    r = await api.client.get(f"/api/conversations?assignee={agent.id}", headers=api.auth("supervisor"))
    assert str(cid) in {x["id"] for x in r.json()}

    # A supervisor hands it to another agent; then resolves it.
    other = make_user(api.db, "agent")
    r = await api.client.post(
        f"/api/conversations/{cid}/assign", json={"assignee": other.id}, headers=api.auth("supervisor")
    )
    assert r.status_code == 200 and r.json()["assignee"] == other.id
    r = await api.client.post(f"/api/conversations/{cid}/resolve", headers=api.auth(other))
    assert r.status_code == 200 and r.json()["status"] == "resolved" and r.json()["resolved_at"]
    r = await api.client.post(f"/api/conversations/{cid}/resolve", headers=api.auth(other))
    assert r.status_code == 200  # resolving twice changes nothing
    entries = audit_since(api.db, before)
    assert [e["action"] for e in entries] == [
        "conversation.take",
        "conversation.assign",
        "conversation.resolve",
    ]
    assert entries[0]["before"]["handler"] == "queue" and entries[0]["after"]["assignee"] == agent.id

    r = await api.client.post(
        f"/api/conversations/{cid}/messages", json={"body": "hi"}, headers=api.auth(agent)
    )
    assert r.status_code == 409 and "resolved" in r.json()["error"]["message"]
    r = await api.client.post(f"/api/conversations/{cid}/assign", json={}, headers=api.auth(agent))
    assert r.status_code == 409
    r = await api.client.get(
        "/api/conversations?status=resolved&channel=webchat", headers=api.auth("auditor")
    )
    assert str(cid) in {x["id"] for x in r.json()}


@pytest.mark.asyncio
async def test_the_auditor_reads_and_changes_nothing(api: Api) -> None:
    customer = await _customer(api)
    cid = (await _conversation(api, customer, "webchat", T0, "hello"))["id"]
    auditor = api.auth("auditor")
    assert (await api.client.get("/api/conversations", headers=auditor)).status_code == 200
    assert (await api.client.get(f"/api/conversations/{cid}", headers=auditor)).status_code == 200
    assert (await api.client.get(f"/api/customers/{customer}/history", headers=auditor)).status_code == 200
    for path, body in (
        (f"/api/conversations/{cid}/messages", {"body": "hi"}),
        (f"/api/conversations/{cid}/assign", {}),
        (f"/api/conversations/{cid}/resolve", None),
        (f"/api/conversations/{cid}/typing", None),
    ):
        r = await api.client.post(path, json=body, headers=auditor)
        assert r.status_code == 403, (path, r.text)
        assert "conversations.write" in r.json()["error"]["message"]
    assert (await api.client.get("/api/conversations")).status_code == 401
    async with api.pool.connection() as conn:
        rows = await store.messages(conn, cid)
        c = await store.get_conversation(conn, cid)
    assert len(rows) == 1 and c is not None and c["handler"] == "queue" and c["status"] == "open"


@pytest.mark.asyncio
async def test_unknown_ids_are_404_and_bad_requests_422(api: Api) -> None:
    agent = api.auth("agent")
    nobody = uuid.uuid4()
    for method, path in (
        ("GET", f"/api/conversations/{nobody}"),
        ("POST", f"/api/conversations/{nobody}/messages"),
        ("POST", f"/api/conversations/{nobody}/assign"),
        ("POST", f"/api/conversations/{nobody}/resolve"),
        ("POST", f"/api/conversations/{nobody}/typing"),
        ("GET", f"/api/customers/{nobody}/history"),
    ):
        body = {"body": "hi"} if path.endswith("messages") else ({} if path.endswith("assign") else None)
        r = await api.client.request(method, path, json=body, headers=agent)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["code"] == "not_found"
    customer = await _customer(api)
    cid = (await _conversation(api, customer, "webchat", T0, "hello"))["id"]
    bad: list[tuple[str, str, Any, str]] = [
        ("GET", "/api/conversations/not-a-uuid", None, "path.conversation_id"),
        ("GET", "/api/conversations?status=closed", None, "query.status"),
        ("GET", "/api/conversations?handler=robot", None, "query.handler"),
        ("POST", f"/api/conversations/{cid}/messages", {}, "body"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": ""}, "body"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": "x" * 4001}, "body"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": "hi", "author": "bot"}, "author"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": "   "}, "body"),
        ("POST", f"/api/conversations/{cid}/assign", {"assignee": api.users["auditor"].id}, "assignee"),
        ("POST", f"/api/conversations/{cid}/assign", {"assignee": 987654321}, "assignee"),
    ]
    for method, path, body, field in bad:
        r = await api.client.request(method, path, json=body, headers=agent)
        assert r.status_code == 422, (path, body, r.text)
        assert field in [p["field"] for p in r.json()["error"]["problems"]], (path, body, r.text)
    async with api.pool.connection() as conn:
        c = await store.get_conversation(conn, cid)
        assert len(await store.messages(conn, cid)) == 1
    assert c is not None and c["handler"] == "queue" and c["assignee"] is None


# --- what the agent desktop's Chats tab asks -----------------------------------------------------


async def _waiting(api: Api, body: str, *, at: dt.datetime) -> uuid.UUID:
    """A web chat the bot handed to the agents at `at` (back-dated), the visitor's `body` its last line."""
    customer = await _customer(api, name="")
    async with api.pool.connection() as conn:
        c = await store.create_conversation(conn, customer, "webchat", language="en", bot="retail")
        assert c["queued_at"] is None  # the bot has it
        await store.add_message(conn, c["id"], direction="out", author="bot", body="Hello!")
        after = await store.update_conversation(conn, c["id"], handler="queue", summary="wants a refund")
        assert after is not None and after["queued_at"] is not None
        await store.add_message(conn, c["id"], direction="in", author="customer", body=body, client_id="v1")
        await conn.execute("UPDATE aicc.conversations SET queued_at = %s WHERE id = %s", (at, c["id"]))
        return uuid.UUID(str(c["id"]))


@pytest.mark.asyncio
async def test_the_waiting_list_is_oldest_first_and_mine_lists_what_i_hold(api: Api) -> None:
    now = dt.datetime.now(dt.UTC)
    young = await _waiting(api, "still there?", at=now - dt.timedelta(seconds=30))
    old = await _waiting(api, "hello? anyone?", at=now - dt.timedelta(minutes=5))
    agent = make_user(api.db, "agent")
    query = "/api/conversations?handler=queue&unassigned=true&status=open&order=waiting&limit=500"

    r = await api.client.get(query, headers=api.auth(agent))
    assert r.status_code == 200, r.text
    ids = [x["id"] for x in r.json()]
    assert ids.index(str(old)) < ids.index(str(young))
    item = next(x for x in r.json() if x["id"] == str(old))
    assert (item["last_seq"], item["last_author"], item["last_message"]) == (2, "customer", "hello? anyone?")
    assert item["summary"] == "wants a refund" and item["queued_at"] is not None

    # The desk takes the old one; it leaves the waiting list and is the agent's.
    r = await api.client.post(
        f"/api/conversations/{old}/assign", json={"unassigned_only": True}, headers=api.auth(agent)
    )
    assert r.status_code == 200, r.text
    assert (r.json()["handler"], r.json()["assignee"], r.json()["last_seq"]) == ("agent", agent.id, 2)
    ids = [x["id"] for x in (await api.client.get(query, headers=api.auth(agent))).json()]
    assert str(old) not in ids and str(young) in ids
    r = await api.client.get(f"/api/conversations?assignee={agent.id}&status=open", headers=api.auth(agent))
    assert [x["id"] for x in r.json()] == [str(old)]
    assert r.json()[0]["queued_at"] is not None  # how long it waited stays known

    # A second agent taking it too is told it is gone; taking it again changes nothing for its holder.
    other = make_user(api.db, "agent")
    r = await api.client.post(
        f"/api/conversations/{old}/assign", json={"unassigned_only": True}, headers=api.auth(other)
    )
    assert r.status_code == 409 and str(agent.id) in r.json()["error"]["message"], r.text
    r = await api.client.post(
        f"/api/conversations/{old}/assign", json={"unassigned_only": True}, headers=api.auth(agent)
    )
    assert r.status_code == 200 and r.json()["assignee"] == agent.id


@pytest.mark.asyncio
async def test_a_conversation_back_in_the_queue_keeps_its_place(api: Api) -> None:
    customer = await _customer(api)
    async with api.pool.connection() as conn:
        c = await store.create_conversation(conn, customer, "webchat", handler="queue")
        assert c["queued_at"] is not None  # no bot: waiting from the start
        again = await store.update_conversation(conn, c["id"], handler="queue", summary="again")
        assert again is not None and again["queued_at"] == c["queued_at"]
        taken = await store.update_conversation(conn, c["id"], handler="agent")
        assert taken is not None and taken["queued_at"] == c["queued_at"]
        earlier = c["queued_at"] - dt.timedelta(minutes=10)
        await conn.execute("UPDATE aicc.conversations SET queued_at = %s WHERE id = %s", (earlier, c["id"]))
        back = await store.update_conversation(conn, c["id"], handler="queue")
    assert back is not None and back["queued_at"] > earlier  # a new wait


@pytest.mark.asyncio
async def test_polling_gets_304_until_something_changes_and_only_new_messages(api: Api) -> None:
    cid = await _waiting(api, "my parcel is late", at=dt.datetime.now(dt.UTC))
    agent = make_user(api.db, "agent")
    headers = api.auth(agent)
    path = f"/api/conversations?assignee={agent.id}&status=open"
    r = await api.client.get(path, headers=headers)
    list_tag = r.headers["etag"]
    assert r.status_code == 200 and r.json() == [] and list_tag.startswith('"')
    r = await api.client.get(path, headers={**headers, "If-None-Match": list_tag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == list_tag

    r = await api.client.get(f"/api/conversations/{cid}", headers=headers)
    assert [m["seq"] for m in r.json()["messages"]] == [1, 2] and r.json()["last_seq"] == 2
    detail_tag = r.headers["etag"]
    r = await api.client.get(f"/api/conversations/{cid}?after_seq=2", headers=headers)
    assert r.status_code == 200 and r.json()["messages"] == [] and r.json()["last_seq"] == 2
    seen_tag = r.headers["etag"]
    r = await api.client.get(
        f"/api/conversations/{cid}?after_seq=2", headers={**headers, "If-None-Match": seen_tag}
    )
    assert r.status_code == 304

    # The agent takes it and replies: the list and the conversation change, and only the new line comes.
    r = await api.client.post(f"/api/conversations/{cid}/messages", json={"body": "On it."}, headers=headers)
    assert r.status_code == 201, r.text
    r = await api.client.get(path, headers={**headers, "If-None-Match": list_tag})
    assert r.status_code == 200 and [x["id"] for x in r.json()] == [str(cid)]
    assert (r.json()[0]["last_author"], r.json()[0]["last_seq"]) == ("agent", 3)
    r = await api.client.get(
        f"/api/conversations/{cid}?after_seq=2", headers={**headers, "If-None-Match": seen_tag}
    )
    assert r.status_code == 200 and [(m["seq"], m["body"]) for m in r.json()["messages"]] == [(3, "On it.")]
    r = await api.client.get(f"/api/conversations/{cid}", headers={**headers, "If-None-Match": detail_tag})
    assert r.status_code == 200 and len(r.json()["messages"]) == 3


@pytest.mark.asyncio
async def test_a_reply_sent_again_with_its_client_id_is_stored_once(api: Api) -> None:
    cid = await _waiting(api, "hello", at=dt.datetime.now(dt.UTC))
    agent = make_user(api.db, "agent")
    reply = {"body": "Hello, I am Li.", "client_id": "desk-7f3a"}
    first = await api.client.post(f"/api/conversations/{cid}/messages", json=reply, headers=api.auth(agent))
    assert first.status_code == 201, first.text
    assert first.json()["client_id"] == "desk-7f3a"
    again = await api.client.post(f"/api/conversations/{cid}/messages", json=reply, headers=api.auth(agent))
    assert again.status_code == 200 and again.json() == first.json()
    # Someone else's id (another agent's, or the visitor's "v1") is not this agent's message.
    other = make_user(api.db, "agent")
    for client_id in ("desk-7f3a", "v1"):
        r = await api.client.post(
            f"/api/conversations/{cid}/messages",
            json={"body": "mine?", "client_id": client_id},
            headers=api.auth(other if client_id == "desk-7f3a" else agent),
        )
        assert r.status_code == 422, r.text
        assert [p["field"] for p in r.json()["error"]["problems"]] == ["client_id"]
    async with api.pool.connection() as conn:
        rows = await store.messages(conn, cid)
    assert [m["body"] for m in rows] == ["Hello!", "hello", "Hello, I am Li."]


@pytest.mark.asyncio
async def test_the_chat_parameters_are_checked(api: Api) -> None:
    cid = await _waiting(api, "hello", at=dt.datetime.now(dt.UTC))
    agent = api.auth("agent")
    bad: list[tuple[str, str, Any, str]] = [
        ("GET", "/api/conversations?order=newest", None, "query.order"),
        ("GET", "/api/conversations?unassigned=maybe", None, "query.unassigned"),
        ("GET", f"/api/conversations/{cid}?after_seq=-1", None, "query.after_seq"),
        ("GET", f"/api/conversations/{cid}?after_seq=x", None, "query.after_seq"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": "hi", "client_id": "a b"}, "client_id"),
        ("POST", f"/api/conversations/{cid}/messages", {"body": "hi", "client_id": "x" * 65}, "client_id"),
        ("POST", f"/api/conversations/{cid}/assign", {"unassigned_only": "perhaps"}, "unassigned_only"),
    ]
    for method, path, body, field in bad:
        r = await api.client.request(method, path, json=body, headers=agent)
        assert r.status_code == 422, (path, body, r.text)
        assert field in [p["field"] for p in r.json()["error"]["problems"]], (path, body, r.text)
    auditor = api.auth("auditor")
    r = await api.client.post(
        f"/api/conversations/{cid}/assign", json={"unassigned_only": True}, headers=auditor
    )
    assert r.status_code == 403
    async with api.pool.connection() as conn:
        c = await store.get_conversation(conn, cid)
        assert len(await store.messages(conn, cid)) == 2
    assert c is not None and c["handler"] == "queue" and c["assignee"] is None


@pytest.mark.asyncio
async def test_personal_numbers_in_messages_are_masked_for_agents(api: Api) -> None:
    customer = await _customer(api)
    said = "请回电13800138000，身份证440300199001011238，订单100234"
    chat = await _conversation(api, customer, "webchat", T0, said)
    async with api.pool.connection() as conn:
        await conn.execute("UPDATE aicc.conversations SET summary = %s WHERE id = %s", (said, chat["id"]))
    masked = "请回电138****8000，身份证**************1238，订单100234"
    agent = (await api.client.get(f"/api/conversations/{chat['id']}", headers=api.auth("agent"))).json()
    assert [m["body"] for m in agent["messages"]] == [masked] and agent["summary"] == masked
    listed = (await api.client.get("/api/conversations?unassigned=true", headers=api.auth("agent"))).json()
    mine = next(c for c in listed if c["id"] == str(chat["id"]))
    assert mine["last_message"] == masked and mine["summary"] == masked
    admin = (await api.client.get(f"/api/conversations/{chat['id']}", headers=api.auth("admin"))).json()
    assert [m["body"] for m in admin["messages"]] == [said]


@pytest.mark.asyncio
async def test_an_agent_works_only_chats_nobody_else_holds(api: Api) -> None:
    customer = await _customer(api)
    c = await _conversation(api, customer, "webchat", T0, "在吗")
    cid = c["id"]
    holder, other = api.users["agent"], make_user(api.db, "agent")
    r = await api.client.post(f"/api/conversations/{cid}/assign", json={}, headers=api.auth(holder))
    assert r.status_code == 200 and r.json()["assignee"] == holder.id
    # Another agent may neither take it over, nor reply in it, nor resolve it, nor hand chats out.
    for path, body in (("assign", {}), ("messages", {"body": "我来"}), ("resolve", None)):
        r = await api.client.post(f"/api/conversations/{cid}/{path}", json=body, headers=api.auth(other))
        assert r.status_code == 409 and f"user {holder.id} holds" in r.json()["error"]["message"], (
            path,
            r.text,
        )
    fresh = (await _conversation(api, customer, "webchat", T0, "还在吗"))["id"]
    r = await api.client.post(
        f"/api/conversations/{fresh}/assign", json={"assignee": holder.id}, headers=api.auth(other)
    )
    assert r.status_code == 403, r.text
    # A supervisor steps in: hands it to the other agent, who may then answer.
    r = await api.client.post(
        f"/api/conversations/{cid}/assign", json={"assignee": other.id}, headers=api.auth("supervisor")
    )
    assert r.status_code == 200 and r.json()["assignee"] == other.id
    r = await api.client.post(
        f"/api/conversations/{cid}/messages", json={"body": "您好"}, headers=api.auth(other)
    )
    assert r.status_code == 201, r.text
    r = await api.client.post(
        f"/api/conversations/{cid}/messages", json={"body": "x"}, headers=api.auth(holder)
    )
    assert r.status_code == 409
