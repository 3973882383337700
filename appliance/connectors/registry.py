"""Connectors by the name a bot definition gives (`connector: demo-bank`), and a site's bots opened
on them, each definition checked against its connector's tools."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from psycopg_pool import AsyncConnectionPool

from aicc.appliance.bots.definition import BotDefinition
from aicc.appliance.connectors.bank import BankBackend
from aicc.appliance.connectors.base import Connector
from aicc.appliance.connectors.demo import DemoBackend
from aicc.appliance.documents import DocumentError

CONNECTORS: dict[str, Callable[[AsyncConnectionPool[Any]], Connector]] = {
    "demo-retail": DemoBackend,
    "demo-bank": BankBackend,
}


def open_connector(name: str, pool: AsyncConnectionPool[Any]) -> Connector:
    factory = CONNECTORS.get(name)
    if factory is None:
        raise ValueError(f"unknown connector {name!r}: expected one of {', '.join(sorted(CONNECTORS))}")
    return factory(pool)


def check_bot(definition: BotDefinition, connector: Connector) -> None:
    """Refuse a definition that names tools (or arguments) its connector does not have."""
    available = {t.name: list(t.parameters.get("properties", {})) for t in connector.tools()}
    problems = definition.tool_problems(available)
    if problems:
        raise DocumentError(definition.source, problems)


def open_bots(
    definitions: Mapping[str, BotDefinition], pool: AsyncConnectionPool[Any]
) -> dict[str, tuple[BotDefinition, Connector]]:
    """Every bot with its connector (one connector per name, shared by the bots that use it)."""
    connectors: dict[str, Connector] = {}
    bots: dict[str, tuple[BotDefinition, Connector]] = {}
    for name, definition in definitions.items():
        if definition.connector not in CONNECTORS:
            known = ", ".join(sorted(CONNECTORS))
            found = f"expected one of {known}; found {definition.connector!r}"
            raise DocumentError(definition.source, [("connector", found)])
        if definition.connector not in connectors:
            connectors[definition.connector] = open_connector(definition.connector, pool)
        check_bot(definition, connectors[definition.connector])
        bots[name] = (definition, connectors[definition.connector])
    return bots
