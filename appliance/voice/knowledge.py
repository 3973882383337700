"""The knowledge base as the voice bot sees it: the public articles only (drafts and internal notes
never reach a caller), indexed once per process and rebuilt when the KB changes. The revision is
asked at most every refresh_s seconds, so a question costs a search, not a query; an article
published by a knowledge manager is in the bot's answers within that time."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from psycopg.rows import dict_row, tuple_row

from aicc.appliance.kb import store
from aicc.appliance.kb.search import Doc, Hit, Index, Visibility, answerable
from aicc.models.engines.base import Language

log = logging.getLogger(__name__)

PUBLIC: tuple[Visibility, ...] = (
    "public",
)  # the bot also filters: an index given any docs answers from these


class Knowledge:
    def __init__(self, pool: Any | None, *, docs: list[Doc] | None = None, refresh_s: float = 30.0) -> None:
        """On a pool (the gateway's), or a fixed set of docs (tests, benches)."""
        self.pool = pool
        self.refresh_s = refresh_s
        self._index = Index.build(docs or [])
        self._revision: str | None = None
        self._checked = -float("inf")
        self._lock = asyncio.Lock()

    async def _fresh(self) -> Index:
        if self.pool is None or time.monotonic() - self._checked < self.refresh_s:
            return self._index
        async with self._lock:
            if time.monotonic() - self._checked < self.refresh_s:
                return self._index
            self._checked = time.monotonic()
            try:
                async with self.pool.connection() as conn:
                    conn.row_factory = dict_row
                    try:
                        revision = await store.revision(conn)
                        docs = await store.public_docs(conn) if revision != self._revision else None
                    finally:
                        conn.row_factory = tuple_row  # the gateway's pool shares connections
                if docs is not None:
                    self._index = await asyncio.to_thread(Index.build, docs)
                    self._revision = revision
                    log.info("knowledge base: %d public articles (revision %s)", len(docs), revision)
            except Exception as exc:  # the bot answers from what it had; asked again after refresh_s
                log.warning("knowledge base unavailable: %s", exc)
        return self._index

    async def warm(self) -> None:
        """Index before the first caller asks (the gateway's start-up)."""
        await self._fresh()

    async def lookup(self, question: str, language: Language) -> Hit | None:
        """The public article in the caller's language that answers the question, or None."""
        index = await self._fresh()
        hits = index.search(question, language=language, visibility=PUBLIC, limit=3)
        return answerable(hits)
