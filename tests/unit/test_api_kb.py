"""The knowledge-base API on a real PostgreSQL: an article's life (draft, published, a new draft version
the search does not see until it is published, archived, back), who may do what (agents read and
search, supervisors write, auditors read drafts and history), 404/422 that name the field, the audit
trail, categories, and the demo's articles seeded once and searched."""

from __future__ import annotations

import itertools
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from aicc.appliance.kb import store
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    api_db_fixture,  # noqa: F401
    api_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    audit_since,
    fresh_database,
    last_audit_id,
    make_user,
    open_api,
)

_groups = itertools.count(1)


async def _create(api: Api, who: str = "supervisor", **fields: Any) -> dict[str, Any]:
    body = {
        "language": "en",
        "title": "Zorbulax refunds",
        "body": "A zorbulax order is refunded within 3 days. Ask the warehouse first.",
        "tags": ["zorbulax"],
        "visibility": "public",
        "translation_group": f"test-group-{next(_groups)}",
        **fields,
    }
    r = await api.client.post("/api/kb/articles", json=body, headers=api.auth(who))
    assert r.status_code == 201, r.text
    article: dict[str, Any] = r.json()
    return article


async def _search(api: Api, q: str, who: str = "agent", **params: Any) -> list[dict[str, Any]]:
    r = await api.client.get("/api/kb/search", params={"q": q, **params}, headers=api.auth(who))
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()
    return hits


@pytest.mark.asyncio
async def test_draft_publish_edit_and_search(api: Api) -> None:
    before = last_audit_id(api.db)
    article = await _create(api)
    aid = article["id"]
    assert (article["status"], article["version"], article["latest_version"]) == ("draft", 1, 1)
    assert article["published_version"] is None and article["author"] == "std-supervisor"
    assert await _search(api, "zorbulax refund") == []  # drafts never appear in search

    r = await api.client.post(f"/api/kb/articles/{aid}/publish", headers=api.auth("supervisor"))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["published_version"]) == ("published", 1)
    [hit] = await _search(api, "how are zorbulax refunds done?")
    assert (hit["id"], hit["version"], hit["title"], hit["visibility"]) == (
        aid,
        1,
        "Zorbulax refunds",
        "public",
    )
    assert "<mark>zorbulax</mark>" in hit["snippet"] and "<mark>refunded</mark>" in hit["snippet"]
    assert hit["score"] > 0 and hit["coverage"] == 1.0

    # An edit is a new draft version: search keeps showing the published one until it is published.
    r = await api.client.patch(
        f"/api/kb/articles/{aid}",
        json={"body": "A zorbulax order is refunded within 5 days, by bank transfer."},
        headers=api.auth("supervisor"),
    )
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["version"], edited["latest_version"], edited["published_version"]) == (2, 2, 1)
    [hit] = await _search(api, "zorbulax refund")
    assert hit["version"] == 1 and "3 days" in hit["snippet"]
    assert await _search(api, "zorbulax bank transfer", language="en", limit=1) != []  # v1 still matches
    r = await api.client.get(f"/api/kb/articles/{aid}", headers=api.auth("agent"))
    assert r.status_code == 200 and r.json()["version"] == 1 and "3 days" in r.json()["body"]

    r = await api.client.post(f"/api/kb/articles/{aid}/publish", json={}, headers=api.auth("admin"))
    assert r.status_code == 200 and r.json()["published_version"] == 2
    [hit] = await _search(api, "zorbulax refund")
    assert hit["version"] == 2 and "5 days" in hit["snippet"]
    # Back to version 1, by number.
    r = await api.client.post(
        f"/api/kb/articles/{aid}/publish", json={"version": 1}, headers=api.auth("supervisor")
    )
    assert r.status_code == 200 and r.json()["published_version"] == 1
    r = await api.client.get(f"/api/kb/articles/{aid}/versions", headers=api.auth("auditor"))
    assert r.status_code == 200
    assert [(v["version"], v["published"]) for v in r.json()] == [(2, False), (1, True)]

    actions = [(e["action"], e["target_id"], e["actor"]) for e in audit_since(api.db, before)]
    assert actions == [
        ("kb.article.create", str(aid), "std-supervisor"),
        ("kb.article.publish", str(aid), "std-supervisor"),
        ("kb.article.update", str(aid), "std-supervisor"),
        ("kb.article.publish", str(aid), "std-admin"),
        ("kb.article.publish", str(aid), "std-supervisor"),
    ]
    update = audit_since(api.db, before)[2]
    assert update["before"]["latest_version"] == 1 and update["after"]["latest_version"] == 2

    # Archived: out of every search; publishing brings it back.
    r = await api.client.post(f"/api/kb/articles/{aid}/archive", headers=api.auth("supervisor"))
    assert r.status_code == 200 and r.json()["status"] == "archived"
    assert await _search(api, "zorbulax refund") == []
    r = await api.client.get(f"/api/kb/articles/{aid}", headers=api.auth("agent"))
    assert r.status_code == 404
    r = await api.client.post(f"/api/kb/articles/{aid}/publish", headers=api.auth("supervisor"))
    assert r.json()["status"] == "published"
    assert len(await _search(api, "zorbulax refund")) == 1


@pytest.mark.asyncio
async def test_visibility_and_languages(api: Api) -> None:
    internal = await _create(
        api, title="Quuxify escalation", body="Agents only: quuxify cases go to the second line."
    )
    zh = await _create(api, language="zh", title="夸克退货", body="夸克商品签收后七天内可以退货。")
    for article in (internal, zh):
        r = await api.client.post(f"/api/kb/articles/{article['id']}/publish", headers=api.auth("admin"))
        assert r.status_code == 200
    r = await api.client.patch(
        f"/api/kb/articles/{internal['id']}", json={"visibility": "internal"}, headers=api.auth("supervisor")
    )
    assert r.status_code == 200 and r.json()["latest_version"] == 1  # not a text change: no version
    [hit] = await _search(api, "quuxify")
    assert hit["visibility"] == "internal"  # agents see internal articles
    assert await _search(api, "quuxify", visibility="public") == []  # what the bot would see
    [hit] = await _search(api, "夸克能退货吗", language="zh")
    assert hit["id"] == zh["id"] and "<mark>退货</mark>" in hit["snippet"]
    assert await _search(api, "夸克能退货吗", language="en") == []


@pytest.mark.asyncio
async def test_who_may_do_what(api: Api) -> None:
    r = await api.client.post(
        "/api/kb/articles", json={"language": "en", "title": "x"}, headers=api.auth("agent")
    )
    assert r.status_code == 403 and "kb.write" in r.json()["error"]["message"]
    r = await api.client.post(
        "/api/kb/articles", json={"language": "en", "title": "x"}, headers=api.auth("auditor")
    )
    assert r.status_code == 403
    draft = await _create(api, title="Blorptastic draft", body="Not yet.")
    did = draft["id"]
    # Agents read published articles only; auditors and supervisors read drafts and history.
    r = await api.client.get(f"/api/kb/articles/{did}", headers=api.auth("agent"))
    assert r.status_code == 404
    r = await api.client.get(f"/api/kb/articles/{did}/versions", headers=api.auth("agent"))
    assert r.status_code == 403
    r = await api.client.get("/api/kb/articles", params={"status": "draft"}, headers=api.auth("agent"))
    assert r.status_code == 200 and r.json() == []
    for who in ("auditor", "supervisor", "admin"):
        r = await api.client.get(f"/api/kb/articles/{did}", headers=api.auth(who))
        assert r.status_code == 200 and r.json()["title"] == "Blorptastic draft", who
    r = await api.client.get(
        "/api/kb/articles",
        params={"translation_group": draft["translation_group"]},
        headers=api.auth("auditor"),
    )
    assert [a["id"] for a in r.json()] == [did]
    for method, url in (
        ("PATCH", f"/api/kb/articles/{did}"),
        ("POST", f"/api/kb/articles/{did}/publish"),
        ("POST", f"/api/kb/articles/{did}/archive"),
        ("PUT", "/api/kb/categories/agent-made"),
    ):
        r = await api.client.request(
            method, url, json={"title_zh": "x", "title_en": "x"}, headers=api.auth("agent")
        )
        assert r.status_code == 403, (method, url)


@pytest.mark.asyncio
async def test_not_found_and_invalid_requests(api: Api) -> None:
    h = api.auth("supervisor")
    for method, url in (
        ("GET", "/api/kb/articles/999999"),
        ("PATCH", "/api/kb/articles/999999"),
        ("POST", "/api/kb/articles/999999/publish"),
        ("POST", "/api/kb/articles/999999/archive"),
        ("GET", "/api/kb/articles/999999/versions"),
    ):
        r = await api.client.request(method, url, json={} if method == "PATCH" else None, headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (method, url)

    def field(r: Any) -> str:
        assert r.status_code == 422, r.text
        return str(r.json()["error"]["problems"][0]["field"])

    base = {"language": "en", "title": "Fine", "body": "fine"}
    cases = [
        ({**base, "title": "   "}, "title"),
        ({**base, "title": "x" * 201}, "title"),
        ({**base, "body": "字" * 40_000}, "body"),  # 120,000 bytes
        ({**base, "language": "fr"}, "language"),
        ({**base, "category": "no-such-category"}, "category"),
        ({**base, "category": "Bad Name"}, "category"),
        ({**base, "visibility": "draft"}, "visibility"),
        ({**base, "tags": [""]}, "tags[0]"),
        ({**base, "colour": "red"}, "colour"),
        ({"title": "no language"}, "language"),
    ]
    for body, name in cases:
        r = await api.client.post("/api/kb/articles", json=body, headers=h)
        assert field(r) == name, (body, r.text)
    r = await api.client.post("/api/kb/articles", json={**base, "body": "字" * 33_000}, headers=h)
    assert r.status_code == 201  # 99,000 bytes: under the cap
    aid = r.json()["id"]
    assert field(
        await api.client.post(f"/api/kb/articles/{aid}/publish", json={"version": 9}, headers=h)
    ) == ("version")
    assert (
        field(await api.client.patch(f"/api/kb/articles/{aid}", json={"title": None}, headers=h)) == "title"
    )
    assert field(await api.client.patch(f"/api/kb/articles/{aid}", json={"category": "nope"}, headers=h)) == (
        "category"
    )
    assert (
        field(await api.client.get("/api/kb/search", params={"q": "x", "limit": 0}, headers=h))
        == "query.limit"
    )
    assert (
        field(await api.client.get("/api/kb/search", params={"language": "de"}, headers=h))
        == "query.language"
    )
    # A translation group holds one article per language.
    first = await _create(api, translation_group="test-pair")
    r = await api.client.post("/api/kb/articles", json={**base, "translation_group": "test-pair"}, headers=h)
    assert r.status_code == 409
    r = await api.client.post(
        "/api/kb/articles", json={**base, "language": "zh", "translation_group": "test-pair"}, headers=h
    )
    assert r.status_code == 201
    assert first["translation_group"] == r.json()["translation_group"] == "test-pair"


@pytest.mark.asyncio
async def test_search_takes_any_query(api: Api) -> None:
    for q in (
        "",
        "   ",
        "!!!???",
        "的了吗",
        "<script>alert(1)</script>",
        "a" * 1999,
        "退款 " * 300,
        "\x00\x01",
    ):
        r = await api.client.get("/api/kb/search", params={"q": q}, headers=api.auth("auditor"))
        assert r.status_code == 200, (q[:20], r.text)
    r = await api.client.get("/api/kb/search", params={"q": "a" * 2001}, headers=api.auth("auditor"))
    assert r.status_code == 422


@pytest.mark.asyncio
async def test_categories(api: Api) -> None:
    before = last_audit_id(api.db)
    r = await api.client.put(
        "/api/kb/categories/test-cards",
        json={"title_zh": "银行卡", "title_en": "Cards"},
        headers=api.auth("supervisor"),
    )
    assert r.status_code == 200 and r.json()["title_en"] == "Cards"
    r = await api.client.put(
        "/api/kb/categories/test-cards",
        json={"title_zh": "卡", "title_en": "Bank cards"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 200
    r = await api.client.get("/api/kb/categories", headers=api.auth("agent"))
    names = {c["name"]: c for c in r.json()}
    assert names["test-cards"]["title_en"] == "Bank cards" and "general" in names
    entries = audit_since(api.db, before)
    assert [e["action"] for e in entries] == ["kb.category.put", "kb.category.put"]
    assert entries[1]["before"] == {"title_zh": "银行卡", "title_en": "Cards"}
    article = await _create(api, category="test-cards")
    assert article["category"] == "test-cards"
    r = await api.client.put(
        "/api/kb/categories/test-cards", json={"title_zh": "", "title_en": "x"}, headers=api.auth("admin")
    )
    assert r.status_code == 422 and r.json()["error"]["problems"][0]["field"] == "title_zh"


@pytest.fixture(scope="module")
def kb_db(api_db: ApiDatabase) -> ApiDatabase:
    """A database of its own for the demo's articles (it counts them)."""
    return fresh_database(api_db, "aicc_kb")


@pytest.mark.asyncio
async def test_the_demo_articles_are_seeded_once_and_answer(kb_db: ApiDatabase) -> None:
    async with await AsyncConnection.connect(kb_db.dsn, row_factory=dict_row) as conn:
        revision = await store.revision(conn)
        created = await store.seed_demo(conn)
        await conn.commit()
        assert created >= 60
        assert await store.seed_demo(conn) == 0  # idempotent
        assert await store.revision(conn) != revision
        public = await store.public_docs(conn)
        everything = await store.docs(conn, ("internal", "public"))
        assert 0 < len(public) < len(everything) == created
        assert {d.language for d in public} == {"zh", "en"} and all(d.visibility == "public" for d in public)
    with psycopg.connect(kb_db.dsn) as conn:
        n = conn.execute("SELECT count(*) FROM aicc.audit_log WHERE action = 'kb.article.create'").fetchone()
        assert n is not None and n[0] == created
    users = {"agent": make_user(kb_db, "agent"), "supervisor": make_user(kb_db, "supervisor")}
    async with open_api(kb_db, users) as api:
        [hit, *_] = await _search(api, "我的卡丢了怎么办", language="zh", limit=3)
        assert hit["title"] == "挂失银行卡"
        [hit, *_] = await _search(api, "someone stole my card", language="en")
        assert hit["title"] == "Reporting a lost or stolen card"
        # A change moves the revision; the next search sees it (the cached index is rebuilt).
        r = await api.client.patch(
            f"/api/kb/articles/{hit['id']}", json={"visibility": "internal"}, headers=api.auth("supervisor")
        )
        assert r.status_code == 200
        hits = await _search(api, "someone stole my card", language="en", visibility="public")
        assert hit["id"] not in [h["id"] for h in hits]
