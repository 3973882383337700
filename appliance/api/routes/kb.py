"""The knowledge base: articles (one language each; a zh and an en article share a translation group),
their versions and categories, and search (jieba + BM25, appliance/kb/search.py) with highlighted
snippets.

kb.read (agents, supervisors, admins, auditors): search and the published articles, internal and
public. kb.drafts.read (supervisors, admins, auditors): drafts, archived articles, every version.
kb.write (supervisors, admins: the knowledge managers): create, edit, publish, archive; categories.

Editing an article's text adds a version; search (and the bot, which answers from public articles
only) sees the published version until another one is published. Category, visibility and
translation group are the article's and change at once. Search uses one Index per process, rebuilt
when aicc.appliance.kb.store.revision() moves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from psycopg import AsyncConnection
from psycopg.rows import DictRow
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from aicc.appliance.api import audit
from aicc.appliance.api.deps import (
    COMMON_ERRORS,
    PoolDep,
    Principal,
    client_address,
    conflict,
    error_responses,
    invalid,
    not_found,
    require,
)
from aicc.appliance.api.routes import Strict
from aicc.appliance.kb import store
from aicc.appliance.kb.search import Index, Language

router = APIRouter(tags=["knowledge base"], responses=COMMON_ERRORS)

MAX_BODY_BYTES = 100_000
Audience = Literal["internal", "public"]
Status = Literal["draft", "published", "archived"]
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,40}$"
CategoryName = Annotated[str, Field(pattern=CATEGORY_PATTERN)]
Group = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,80}$", description="links translations")]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
CategoryTitle = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ArticleId = Annotated[int, Path(ge=1, le=2**62)]


def _body_size(body: str) -> str:
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise ValueError(f"at most {MAX_BODY_BYTES} bytes (UTF-8)")
    return body


Body = Annotated[str, AfterValidator(_body_size)]
Tags = Annotated[list[Tag], Field(max_length=20)]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ArticleCreate(Strict):
    language: Language
    category: CategoryName = "general"
    title: Title
    body: Body = ""
    tags: Tags = Field(default_factory=list)
    visibility: Audience = Field("internal", description="the audience once published")
    translation_group: Group | None = None


class ArticleChange(Strict):
    """Text fields (title, body, tags) make a new version, published only by .../publish; the others
    change the article at once."""

    title: Title | None = None
    body: Body | None = None
    tags: Tags | None = None
    category: CategoryName | None = None
    visibility: Audience | None = None
    translation_group: Group | None = Field(None, description="null: no translations")


class Publish(Strict):
    version: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(None, description="default: the latest")


class CategoryPut(Strict):
    title_zh: CategoryTitle
    title_en: CategoryTitle


class Category(BaseModel):
    name: str
    title_zh: str
    title_en: str
    updated_at: dt.datetime
    articles: int | None = None


class Article(BaseModel):
    id: int
    language: Language
    category: str
    translation_group: str | None
    visibility: Audience
    status: Status
    latest_version: int
    published_version: int | None
    version: int = Field(description="the version whose text this is")
    title: str
    body: str
    tags: list[str]
    author: str = Field(description="who wrote this version")
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime


class ArticleSummary(BaseModel):
    id: int
    language: Language
    category: str
    translation_group: str | None
    visibility: Audience
    status: Status
    latest_version: int
    published_version: int | None
    version: int = Field(description="the version whose title this is")
    title: str
    tags: list[str]
    updated_at: dt.datetime


class Version(BaseModel):
    version: int
    title: str
    body: str
    tags: list[str]
    author: str
    created_at: dt.datetime
    published: bool = Field(description="the version search shows now")


class SearchHit(BaseModel):
    id: int
    version: int
    language: Language
    visibility: Audience
    category: str
    title: str
    snippet: str = Field(description="HTML: the best passage, escaped, matched words in <mark>..</mark>")
    score: float = Field(description="BM25")
    coverage: float = Field(description="share of the question's content words the article holds")


def _drafts(principal: Principal) -> bool:
    return principal.can("kb.drafts.read")


def _audit_view(article: dict[str, Any]) -> dict[str, Any]:
    keys = ("language", "category", "translation_group", "visibility", "status")
    return {k: article[k] for k in keys} | {
        "latest_version": article["latest_version"],
        "published_version": article["published_version"],
        "title": article["title"],
    }


async def _locked(conn: AsyncConnection[DictRow], article_id: int) -> dict[str, Any]:
    article = await store.get(conn, article_id, lock=True)
    if article is None:
        raise not_found("article", article_id)
    return article


async def _check_category(conn: AsyncConnection[DictRow], name: str) -> None:
    if await store.get_category(conn, name) is None:
        raise invalid("category", f"no category {name!r} (PUT /api/kb/categories/{name} creates it)")


async def _check_group(
    conn: AsyncConnection[DictRow], group: str | None, language: str, article_id: int | None = None
) -> None:
    if group is not None and await store.group_taken(conn, group, language, article_id):
        raise conflict(f"translation group {group!r} has a {language} article already")


def _article(row: dict[str, Any], text: dict[str, Any] | None = None) -> Article:
    """The article with `text` (a version row), default the latest version's text in `row`."""
    version = text or {
        "version": row["latest_version"],
        **{k: row[k] for k in ("title", "body", "tags", "author")},
    }
    text_keys = ("version", "title", "body", "tags", "author")
    fields = {k: row[k] for k in Article.model_fields if k in row and k not in text_keys}
    return Article(**fields, **{k: version[k] for k in text_keys})


@router.get("/api/kb/search", response_model=list[SearchHit])
async def search_articles(
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.read"))],
    pool: PoolDep,
    q: Annotated[
        str, Query(max_length=2000, description="the question; the first 500 characters count")
    ] = "",
    language: Language | None = None,
    visibility: Annotated[Audience | None, Query(description="default: internal and public")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> list[SearchHit]:
    """Published articles only (drafts and archived ones never), best first."""
    index = await _index(request, pool)
    hits = index.search(
        q, language=language, visibility=None if visibility is None else (visibility,), limit=limit
    )
    return [
        SearchHit(
            id=h.doc.id,
            version=h.doc.version,
            language=h.doc.language,
            visibility=h.doc.visibility,  # the index holds published (internal, public) ones only
            category=h.doc.category,
            title=h.doc.title,
            snippet=h.snippet,
            score=round(h.score, 4),
            coverage=round(h.coverage, 4),
        )
        for h in hits
    ]


@dataclass
class _Cached:
    revision: str
    index: Index


async def _index(request: Request, pool: PoolDep) -> Index:
    """This process's Index of published articles, rebuilt (in a thread) when the revision moved."""
    state = request.app.state
    async with pool.connection() as conn:
        revision = await store.revision(conn)
    cached: _Cached | None = getattr(state, "kb_index", None)
    if cached is not None and cached.revision == revision:
        return cached.index
    lock: asyncio.Lock | None = getattr(state, "kb_index_lock", None)
    if lock is None:
        lock = state.kb_index_lock = asyncio.Lock()
    async with lock:
        latest: _Cached | None = getattr(state, "kb_index", None)
        if latest is not None and latest.revision == revision:
            return latest.index
        async with pool.connection() as conn:
            # The revision first: a change committed in between makes the next request rebuild
            # once more, never keeps a stale index.
            revision = await store.revision(conn)
            docs = await store.docs(conn, ("internal", "public"))
        index = await asyncio.to_thread(Index.build, docs)
        state.kb_index = _Cached(revision, index)
        return index


@router.get("/api/kb/articles", response_model=list[ArticleSummary])
async def list_articles(
    principal: Annotated[Principal, Depends(require("kb.read"))],
    pool: PoolDep,
    language: Language | None = None,
    category: Annotated[str | None, Query(pattern=CATEGORY_PATTERN)] = None,
    status: Status | None = None,
    visibility: Audience | None = None,
    translation_group: Annotated[str | None, Query(pattern=r"^[a-z0-9][a-z0-9._-]{0,80}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[ArticleSummary]:
    """Most recently changed first, with the latest version's title; without kb.drafts.read, the
    published articles with their published title."""
    filters = store.Filters(language, category, status, visibility, translation_group)
    async with pool.connection() as conn:
        rows = await store.listing(conn, filters, limit, offset, published_only=not _drafts(principal))
    return [ArticleSummary(**{**r, "version": r["shown_version"]}) for r in rows]


@router.post("/api/kb/articles", response_model=Article, status_code=201, responses=error_responses(409))
async def create_article(
    body: ArticleCreate,
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.write"))],
    pool: PoolDep,
) -> Article:
    """A draft (version 1): nobody's search sees it until it is published."""
    async with pool.connection() as conn:
        await _check_category(conn, body.category)
        await _check_group(conn, body.translation_group, body.language)
        row = await store.create(conn, body.model_dump(), principal.username, _now())
        await audit.record(
            conn,
            principal,
            "kb.article.create",
            "kb_article",
            row["id"],
            None,
            _audit_view(row),
            client_address(request),
        )
    return _article(row)


@router.get("/api/kb/articles/{article_id}", response_model=Article, responses=error_responses(404))
async def get_article(
    article_id: ArticleId,
    principal: Annotated[Principal, Depends(require("kb.read"))],
    pool: PoolDep,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="default: see below")] = None,
) -> Article:
    """With kb.drafts.read, the latest version (or `version`); else the published version of a
    published article (other articles and versions answer 404)."""
    async with pool.connection() as conn:
        row = await store.get(conn, article_id)
        if row is None or (not _drafts(principal) and row["status"] != "published"):
            raise not_found("article", article_id)
        wanted = version or (row["latest_version"] if _drafts(principal) else row["published_version"])
        if not _drafts(principal) and wanted != row["published_version"]:
            raise not_found("published version of article", f"{article_id} v{wanted}")
        text = await store.version(conn, article_id, wanted)
    if text is None:
        raise not_found("version of article", f"{article_id} v{wanted}")
    return _article(row, text)


@router.patch("/api/kb/articles/{article_id}", response_model=Article, responses=error_responses(404, 409))
async def change_article(
    article_id: ArticleId,
    body: ArticleChange,
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.write"))],
    pool: PoolDep,
) -> Article:
    """Changed text: a new latest version (published one unchanged). Other fields: at once."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("title", "body", "tags", "category", "visibility"):
        if key in changes and changes[key] is None:
            raise invalid(key, "may not be null")
    at = _now()
    async with pool.connection() as conn:
        article = await _locked(conn, article_id)
        if "category" in changes and changes["category"] != article["category"]:
            await _check_category(conn, changes["category"])
        if changes.get("translation_group") not in (None, article["translation_group"]):
            await _check_group(conn, changes["translation_group"], article["language"], article_id)
        text = {k: changes.get(k, article[k]) for k in ("title", "body", "tags")}
        new_text = any(text[k] != article[k] for k in text)
        if new_text:
            await store.add_version(conn, article, text, principal.username, at)
        fields = {k: v for k, v in changes.items() if k in store.ARTICLE_FIELDS and v != article[k]}
        await store.set_fields(conn, article_id, fields, at)
        after = await store.get(conn, article_id)
        assert after is not None
        if new_text or fields:
            await audit.record(
                conn,
                principal,
                "kb.article.update",
                "kb_article",
                article_id,
                _audit_view(article),
                _audit_view(after),
                client_address(request),
            )
    return _article(after)


@router.post(
    "/api/kb/articles/{article_id}/publish", response_model=Article, responses=error_responses(404, 409)
)
async def publish_article(
    article_id: ArticleId,
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.write"))],
    pool: PoolDep,
    body: Publish | None = None,
) -> Article:
    """Search shows `version` (default the latest) from now on; an archived article comes back."""
    number = body.version if body is not None else None
    async with pool.connection() as conn:
        article = await _locked(conn, article_id)
        number = number or int(article["latest_version"])
        if number > article["latest_version"]:
            raise invalid("version", f"article {article_id} has versions 1-{article['latest_version']}")
        if article["status"] != "published" or article["published_version"] != number:
            await store.publish(conn, article_id, number, _now())
            after = await store.get(conn, article_id)
            assert after is not None
            await audit.record(
                conn,
                principal,
                "kb.article.publish",
                "kb_article",
                article_id,
                _audit_view(article),
                _audit_view(after),
                client_address(request),
            )
            article = after
    return _article(article)


@router.post("/api/kb/articles/{article_id}/archive", response_model=Article, responses=error_responses(404))
async def archive_article(
    article_id: ArticleId,
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.write"))],
    pool: PoolDep,
) -> Article:
    """Out of every search (its versions stay; publishing brings it back). Archived already: no change."""
    async with pool.connection() as conn:
        article = await _locked(conn, article_id)
        if article["status"] != "archived":
            await store.archive(conn, article_id, _now())
            after = await store.get(conn, article_id)
            assert after is not None
            await audit.record(
                conn,
                principal,
                "kb.article.archive",
                "kb_article",
                article_id,
                _audit_view(article),
                _audit_view(after),
                client_address(request),
            )
            article = after
    return _article(article)


@router.get(
    "/api/kb/articles/{article_id}/versions", response_model=list[Version], responses=error_responses(404)
)
async def article_versions(
    article_id: ArticleId,
    principal: Annotated[Principal, Depends(require("kb.drafts.read"))],
    pool: PoolDep,
) -> list[Version]:
    """Every version, newest first."""
    async with pool.connection() as conn:
        article = await store.get(conn, article_id)
        if article is None:
            raise not_found("article", article_id)
        rows = await store.versions(conn, article_id)
    published = article["published_version"] if article["status"] == "published" else None
    return [Version(**r, published=r["version"] == published) for r in rows]


@router.get("/api/kb/categories", response_model=list[Category])
async def list_categories(
    principal: Annotated[Principal, Depends(require("kb.read"))],
    pool: PoolDep,
) -> list[Category]:
    async with pool.connection() as conn:
        return [Category(**r) for r in await store.categories(conn)]


@router.put("/api/kb/categories/{name}", response_model=Category)
async def put_category(
    name: Annotated[str, Path(pattern=CATEGORY_PATTERN)],
    body: CategoryPut,
    request: Request,
    principal: Annotated[Principal, Depends(require("kb.write"))],
    pool: PoolDep,
) -> Category:
    """Create a category or change its titles."""
    async with pool.connection() as conn:
        before = await store.get_category(conn, name)
        row = await store.put_category(conn, name, body.title_zh, body.title_en, _now())
        await audit.record(
            conn,
            principal,
            "kb.category.put",
            "kb_category",
            name,
            before and {k: before[k] for k in ("title_zh", "title_en")},
            body,
            client_address(request),
        )
    return Category(**row)
