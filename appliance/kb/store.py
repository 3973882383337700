"""The knowledge base in PostgreSQL (async psycopg 3): categories, articles and their append-only
versions (appliance/kb/migrations/0001_kb.sql).

Editing an article adds a version; search sees an article's published version only, so a draft edit
changes nothing a customer or the bot sees until it is published. `docs`/`public_docs` give search
its articles (appliance/kb/search.py), `revision` a cheap marker that changes with every committed
change, so a caller keeps one Index and rebuilds it only when the marker moves.

The demo's articles (appliance/kb/seed/*.yml: an online shop and a bank, in zh and en) are created by
`seed_demo` / `seed_sets`: created when missing (by translation group and language), never
overwritten, published, audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, LiteralString

import yaml
from psycopg import AsyncConnection, sql
from psycopg.rows import DictRow

from aicc.appliance.documents import DocumentError
from aicc.appliance.kb.search import Doc

ARTICLE_COLUMNS: LiteralString = (
    "a.id, a.language, a.category, a.translation_group, a.visibility, a.status, a.latest_version, "
    "a.published_version, a.created_by, a.created_at, a.updated_at"
)
VERSION_COLUMNS: LiteralString = "v.version, v.title, v.body, v.tags, v.author, v.created_at"
# Article fields PATCH changes in place (the text makes a new version instead).
ARTICLE_FIELDS = ("category", "visibility", "translation_group")


@dataclass(frozen=True)
class Filters:
    language: str | None = None
    category: str | None = None
    status: str | None = None
    visibility: str | None = None
    translation_group: str | None = None


def _doc(row: dict[str, Any], visibility: str) -> Doc:
    return Doc(
        id=int(row["id"]),
        version=int(row["version"]),
        language=row["language"],
        title=row["title"],
        body=row["body"],
        visibility=visibility,  # type: ignore[arg-type] # one of Visibility, by the query
        category=row["category"],
        tags=tuple(row["tags"]),
    )


async def docs(conn: AsyncConnection[DictRow], visibility: Collection[str]) -> list[Doc]:
    """Search's articles of the given visibilities: for internal/public, the published version of
    every published article with that audience; for draft, the latest version of every article never
    published (Doc.visibility "draft"). Archived articles are never returned."""
    audiences = sorted({v for v in visibility if v in ("internal", "public")})
    out: list[Doc] = []
    if audiences:
        rows = await (
            await conn.execute(
                "SELECT a.id, a.language, a.category, a.visibility, v.version, v.title, v.body, v.tags "
                "FROM aicc.kb_articles a JOIN aicc.kb_versions v "
                "ON v.article_id = a.id AND v.version = a.published_version "
                "WHERE a.status = 'published' AND a.visibility = ANY(%s) ORDER BY a.id",
                (audiences,),
            )
        ).fetchall()
        out += [_doc(r, r["visibility"]) for r in rows]
    if "draft" in visibility:
        rows = await (
            await conn.execute(
                "SELECT a.id, a.language, a.category, v.version, v.title, v.body, v.tags "
                "FROM aicc.kb_articles a JOIN aicc.kb_versions v "
                "ON v.article_id = a.id AND v.version = a.latest_version "
                "WHERE a.status = 'draft' ORDER BY a.id"
            )
        ).fetchall()
        out += [_doc(r, "draft") for r in rows]
    return out


async def public_docs(conn: AsyncConnection[DictRow]) -> list[Doc]:
    """The current published version of every public article: what the bot may answer from."""
    return await docs(conn, ("public",))


async def revision(conn: AsyncConnection[DictRow]) -> str:
    """Changes whenever an article is created or changed (every change bumps its `changes` counter, so
    the sum grows with each commit, in whatever order concurrent transactions commit)."""
    row = await (
        await conn.execute("SELECT count(*) AS n, coalesce(sum(changes), 0) AS c FROM aicc.kb_articles")
    ).fetchone()
    assert row is not None
    return f"{row['n']}.{row['c']}"


# Categories


async def categories(conn: AsyncConnection[DictRow]) -> list[dict[str, Any]]:
    rows = await (
        await conn.execute(
            "SELECT c.name, c.title_zh, c.title_en, c.updated_at, "
            "(SELECT count(*) FROM aicc.kb_articles a WHERE a.category = c.name) AS articles "
            "FROM aicc.kb_categories c ORDER BY c.name"
        )
    ).fetchall()
    return [dict(r) for r in rows]


async def get_category(conn: AsyncConnection[DictRow], name: str) -> dict[str, Any] | None:
    row = await (
        await conn.execute(
            "SELECT name, title_zh, title_en, updated_at FROM aicc.kb_categories WHERE name = %s", (name,)
        )
    ).fetchone()
    return dict(row) if row else None


async def put_category(
    conn: AsyncConnection[DictRow], name: str, title_zh: str, title_en: str, at: dt.datetime
) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "INSERT INTO aicc.kb_categories (name, title_zh, title_en, updated_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET title_zh = EXCLUDED.title_zh, title_en = EXCLUDED.title_en, "
            "updated_at = EXCLUDED.updated_at RETURNING name, title_zh, title_en, updated_at",
            (name, title_zh, title_en, at),
        )
    ).fetchone()
    assert row is not None
    return dict(row)


# Articles


async def group_taken(
    conn: AsyncConnection[DictRow], group: str, language: str, except_id: int | None = None
) -> bool:
    """Whether another article of `language` is in translation group `group` already."""
    row = await (
        await conn.execute(
            "SELECT 1 FROM aicc.kb_articles WHERE translation_group = %s AND language = %s "
            "AND id IS DISTINCT FROM %s",
            (group, language, except_id),
        )
    ).fetchone()
    return row is not None


async def create(
    conn: AsyncConnection[DictRow],
    fields: dict[str, Any],
    actor: str,
    at: dt.datetime,
) -> dict[str, Any]:
    """A new draft article and its version 1; returns the article (as `get`)."""
    row = await (
        await conn.execute(
            "INSERT INTO aicc.kb_articles (language, category, translation_group, visibility, created_by, "
            "created_at, updated_at) VALUES (%(language)s, %(category)s, %(translation_group)s, "
            "%(visibility)s, %(actor)s, %(at)s, %(at)s) RETURNING id",
            {**fields, "actor": actor, "at": at},
        )
    ).fetchone()
    assert row is not None
    article_id = int(row["id"])
    await _insert_version(conn, article_id, 1, fields, actor, at)
    article = await get(conn, article_id)
    assert article is not None
    return article


async def _insert_version(
    conn: AsyncConnection[DictRow],
    article_id: int,
    version: int,
    text: dict[str, Any],
    author: str,
    at: dt.datetime,
) -> None:
    await conn.execute(
        "INSERT INTO aicc.kb_versions (article_id, version, title, body, tags, author, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (article_id, version, text["title"], text["body"], list(text["tags"]), author, at),
    )


async def get(
    conn: AsyncConnection[DictRow], article_id: int, *, lock: bool = False
) -> dict[str, Any] | None:
    """The article with the text of its latest version (title, body, tags, author, version_created_at)."""
    # Constant column lists and a constant lock clause: no input reaches the text.
    query = (
        "SELECT "  # noqa: S608
        + ARTICLE_COLUMNS
        + ", v.title, v.body, v.tags, v.author, v.created_at AS version_created_at FROM aicc.kb_articles a "
        "JOIN aicc.kb_versions v ON v.article_id = a.id AND v.version = a.latest_version WHERE a.id = %s"
        + (" FOR UPDATE OF a" if lock else "")
    )
    row = await (await conn.execute(query, (article_id,))).fetchone()
    return dict(row) if row else None


async def version(conn: AsyncConnection[DictRow], article_id: int, number: int) -> dict[str, Any] | None:
    row = await (
        await conn.execute(
            "SELECT " + VERSION_COLUMNS + " FROM aicc.kb_versions v "  # noqa: S608 - constant columns
            "WHERE v.article_id = %s AND v.version = %s",
            (article_id, number),
        )
    ).fetchone()
    return dict(row) if row else None


async def versions(conn: AsyncConnection[DictRow], article_id: int) -> list[dict[str, Any]]:
    """Every version of the article, newest first."""
    rows = await (
        await conn.execute(
            "SELECT " + VERSION_COLUMNS + " FROM aicc.kb_versions v "  # noqa: S608 - constant columns
            "WHERE v.article_id = %s ORDER BY v.version DESC",
            (article_id,),
        )
    ).fetchall()
    return [dict(r) for r in rows]


async def listing(
    conn: AsyncConnection[DictRow],
    filters: Filters,
    limit: int,
    offset: int,
    *,
    published_only: bool = False,
) -> list[dict[str, Any]]:
    """Articles matching `filters`, most recently changed first, each with its latest title (or, with
    `published_only`, published articles with their published title)."""
    shown = "a.published_version" if published_only else "a.latest_version"
    where: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for key in ("language", "category", "status", "visibility", "translation_group"):
        value = getattr(filters, key)
        if value is not None:
            where.append(sql.SQL("a.{} = {}").format(sql.Identifier(key), sql.Placeholder(key)))
            params[key] = value
    if published_only:
        where.append(sql.SQL("a.status = 'published'"))
    query = sql.SQL(
        "SELECT {}, v.version AS shown_version, v.title, v.tags FROM aicc.kb_articles a "
        "JOIN aicc.kb_versions v ON v.article_id = a.id AND v.version = {} "
        "WHERE {} ORDER BY a.updated_at DESC, a.id DESC LIMIT %(limit)s OFFSET %(offset)s"
    ).format(sql.SQL(ARTICLE_COLUMNS), sql.SQL(shown), sql.SQL(" AND ").join(where))
    rows = await (await conn.execute(query, params)).fetchall()
    return [dict(r) for r in rows]


async def _touch(conn: AsyncConnection[DictRow], article_id: int, at: dt.datetime) -> None:
    await conn.execute(
        "UPDATE aicc.kb_articles SET changes = changes + 1, updated_at = %s WHERE id = %s", (at, article_id)
    )


async def add_version(
    conn: AsyncConnection[DictRow],
    article: dict[str, Any],
    text: dict[str, Any],
    author: str,
    at: dt.datetime,
) -> int:
    """A new latest version with `text` (title, body, tags); the published one stays. Returns its
    number. The caller holds the article's lock (get(lock=True))."""
    number = int(article["latest_version"]) + 1
    await _insert_version(conn, article["id"], number, text, author, at)
    await conn.execute(
        "UPDATE aicc.kb_articles SET latest_version = %s WHERE id = %s", (number, article["id"])
    )
    await _touch(conn, article["id"], at)
    return number


async def set_fields(
    conn: AsyncConnection[DictRow], article_id: int, changes: dict[str, Any], at: dt.datetime
) -> None:
    """Change category, visibility or translation_group in place (they take effect at once)."""
    fields = {k: v for k, v in changes.items() if k in ARTICLE_FIELDS}
    if not fields:
        return
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in fields
    )
    await conn.execute(
        sql.SQL("UPDATE aicc.kb_articles SET {} WHERE id = %(id)s").format(assignments),
        {**fields, "id": article_id},
    )
    await _touch(conn, article_id, at)


async def publish(conn: AsyncConnection[DictRow], article_id: int, number: int, at: dt.datetime) -> None:
    """Search shows version `number` from now on (an archived article comes back)."""
    await conn.execute(
        "UPDATE aicc.kb_articles SET status = 'published', published_version = %s WHERE id = %s",
        (number, article_id),
    )
    await _touch(conn, article_id, at)


async def archive(conn: AsyncConnection[DictRow], article_id: int, at: dt.datetime) -> None:
    """Out of every search; its versions stay, and publishing brings it back."""
    await conn.execute("UPDATE aicc.kb_articles SET status = 'archived' WHERE id = %s", (article_id,))
    await _touch(conn, article_id, at)


# The demo's articles


def shipped_sets() -> dict[str, dict[str, Any]]:
    """The shipped article sets (appliance/kb/seed/NAME.yml) by name."""
    folder = resources.files("aicc.appliance.kb").joinpath("seed")
    out: dict[str, dict[str, Any]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            out[entry.name.removesuffix(".yml")] = yaml.safe_load(entry.read_text(encoding="utf-8"))
    return out


async def seed_sets(
    conn: AsyncConnection[DictRow], names: Sequence[str], actor: str = "installer", where: str = "seed"
) -> list[str]:
    """Create the categories and articles of the named shipped sets that the database lacks (an
    article is known by its translation group and language; nothing existing is changed), published
    at version 1 and audited; returns what was created ("kb article bank-lost-card/zh", ...). A name
    that is not a shipped set raises DocumentError."""
    from aicc.appliance.api import audit  # the API's (fastapi); voice bot hosts read docs() only

    shipped = shipped_sets()
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise DocumentError(where, [("kb", f"expected a list of article set names ({', '.join(shipped)})")])
    unknown = [n for n in names if n not in shipped]
    if unknown:
        raise DocumentError(
            where, [("kb", f"no shipped article set {n!r} ({', '.join(shipped)})") for n in unknown]
        )
    created: list[str] = []
    at = dt.datetime.now(dt.UTC)
    for name in names:
        data = shipped[name]
        for cat in data.get("categories", []):
            cur = await conn.execute(
                "INSERT INTO aicc.kb_categories (name, title_zh, title_en) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO NOTHING",
                (cat["name"], cat["title_zh"], cat["title_en"]),
            )
            if cur.rowcount:
                await audit.record(conn, actor, "kb.category.put", "kb_category", cat["name"], None, cat)
                created.append(f"kb category {cat['name']}")
        for item in data.get("articles", []):
            for language in ("zh", "en"):
                if language not in item or await group_taken(conn, item["key"], language):
                    continue
                text = item[language]
                fields = {
                    "language": language,
                    "category": item["category"],
                    "translation_group": item["key"],
                    "visibility": item.get("visibility", "public"),
                    "title": text["title"].strip(),
                    "body": text["body"].strip(),
                    "tags": [str(t) for t in text.get("tags", [])],
                }
                article = await create(conn, fields, actor, at)
                await publish(conn, article["id"], 1, at)
                view = {k: fields[k] for k in ("language", "category", "translation_group", "visibility")}
                await audit.record(
                    conn, actor, "kb.article.create", "kb_article", article["id"], None, view | {"version": 1}
                )
                created.append(f"kb article {item['key']}/{language}")
    return created


async def seed_demo(conn: AsyncConnection[DictRow], actor: str = "installer") -> int:
    """Every shipped set (the demo shop's and bank's articles); idempotent. Returns the number of
    articles created (0 when all were there)."""
    async with conn.transaction():
        created = await seed_sets(conn, list(shipped_sets()), actor)
    return sum(1 for c in created if c.startswith("kb article "))
