"""The connector interface: tools (typed specs), calls with a deadline, and speakable results."""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from aicc.appliance.connectors.tickets import ToolContext
from aicc.models.engines.base import Language, ToolSpec


class ConnectorError(Exception):
    """A tool call failed. kind: not_found (a real answer for the caller), invalid, unavailable."""

    def __init__(self, message: str, *, kind: Literal["not_found", "invalid", "unavailable"]) -> None:
        super().__init__(message)
        self.kind = kind


@runtime_checkable
class Connector(Protocol):
    name: str

    def tools(self) -> list[ToolSpec]: ...

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        caller: str,
        call_id: str = "",
        language: Language = "en",
        conversation_id: str = "",
    ) -> dict[str, Any]:
        """Run one tool for the caller (their number), on a call (its Call-ID, "" outside one) or in a
        text conversation (its id), in the language the bot speaks with them. Raises ConnectorError;
        the caller applies its own timeout."""
        ...

    def describe(
        self, tool: str, arguments: dict[str, Any], result: dict[str, Any], language: Language
    ) -> str:
        """One or two sentences telling the caller the result, in their language."""
        ...

    def confirm_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str:
        """The question asked before a write action runs."""
        ...

    def not_found_line(self, tool: str, arguments: dict[str, Any], language: Language) -> str: ...

    def plan_examples(self) -> list[tuple[str, dict[str, Any]]]:
        """Worked examples (caller's words, plan) shown to the planner before the caller's words.

        Cheap (part of the prompt prefix the LLM server caches) and they teach what instructions do
        not: compact one-line JSON (half the tokens of the pretty-printed default, so half the plan
        time) and one action per part of a compound request. Use order numbers no real caller has."""
        ...


class PostgresConnector:
    """A connector whose tools are methods `_tool_<name>(conn, arguments, ctx)` on one PostgreSQL pool:
    a database that fails is a ConnectorError of kind unavailable (the bot says so gracefully)."""

    backend = "backend"  # for messages: "demo backend unavailable"

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self.pool = pool

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        caller: str,
        call_id: str = "",
        language: Language = "en",
        conversation_id: str = "",
    ) -> dict[str, Any]:
        ctx = ToolContext(caller, call_id, language, conversation_id)
        handler = getattr(self, f"_tool_{tool}", None)
        if handler is None:
            raise ConnectorError(f"no tool {tool!r}", kind="invalid")
        try:
            async with self.pool.connection() as conn:
                conn.row_factory = dict_row
                try:
                    result: dict[str, Any] = await handler(conn, arguments, ctx)
                finally:
                    conn.row_factory = tuple_row  # the pool shares connections
                return result
        except ConnectorError:
            raise
        except (psycopg.Error, OSError) as exc:
            raise ConnectorError(
                f"{self.backend} unavailable: {type(exc).__name__}", kind="unavailable"
            ) from exc
