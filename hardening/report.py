"""The compliance report: control results per host (with their evidence and waivers), folded into results
per GB/T 28448 test unit, per layer and per host.

Rules a reader can check by hand:
- a control result is pass / fail / na (不适用) / error (the check could not run: counts as fail) /
  waived (a failure a valid waiver covers);
- a test unit is 符合 (pass) only when every result of every control covering it passes and at least one
  of those controls covers it fully: partial controls alone give at most 部分符合 (partial);
- any fail, error or waived result makes it 部分符合 when something else passed, else 不符合 (fail);
- a unit no host can evidence, or no aicc control covers, is "manual": the customer attests it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import BaseModel

from aicc.hardening.catalog import LAYER_NAMES, Catalog, unit_sort_key
from aicc.hardening.evidence import Collected, Evidence, HostObservations
from aicc.hardening.waivers import Waiver

ControlStatus = Literal["pass", "fail", "na", "error", "waived"]
ClauseStatus = Literal["pass", "partial", "fail", "na", "manual"]
CONTROL_STATUSES: tuple[ControlStatus, ...] = ("pass", "fail", "error", "waived", "na")
CLAUSE_STATUSES: tuple[ClauseStatus, ...] = ("pass", "partial", "fail", "na", "manual")


class WaiverUse(BaseModel):
    control: str
    hosts: str
    reason: str
    approver: str
    expires: str
    state: Literal["applied", "expired", "unmatched", "not needed"]
    covers: list[str]  # "control@host" it applied (or would apply) to


class Result(BaseModel):
    control: str
    host: str
    status: ControlStatus
    high_risk: bool
    command: str
    output: str
    waiver: str = ""  # approver and expiry of the waiver that applies, or the expired one


class ClauseResult(BaseModel):
    unit: str
    clause: str
    layer: str
    requirement_zh: str
    requirement_en: str
    status: ClauseStatus
    controls: list[str]  # covering controls, "ID (full|partial)"
    high_risk: bool
    waived: bool
    why: str


class Report(BaseModel):
    site: str
    aicc_version: str
    catalog_sha256: str
    hosts: dict[str, list[str]]  # host -> its groups
    unreachable: dict[str, str]
    results: list[Result]
    clauses: list[ClauseResult]
    waivers: list[WaiverUse]
    observations: list[HostObservations]
    totals: dict[str, int]
    clause_totals: dict[str, int]
    by_layer: dict[str, dict[str, int]]
    by_host: dict[str, dict[str, int]]
    high_risk: list[str]  # "control@host" of high-risk findings


def apply_waivers(
    evidence: list[Evidence], waivers: list[Waiver], today: date, high_risk: dict[str, bool]
) -> tuple[list[Result], list[WaiverUse]]:
    results = []
    hits: dict[int, list[str]] = {i: [] for i in range(len(waivers))}
    for ev in evidence:
        status: ControlStatus = ev.status
        note = ""
        for i, w in enumerate(waivers):
            if not w.covers(ev.control, ev.host):
                continue
            hits[i].append(f"{ev.control}@{ev.host}")
            if status in ("fail", "error"):
                if w.expired(today):
                    note = note or f"waiver by {w.approver} EXPIRED on {w.expires.isoformat()}"
                else:
                    status = "waived"
                    note = f"waived by {w.approver} until {w.expires.isoformat()}: {w.reason}"
        results.append(
            Result(
                control=ev.control,
                host=ev.host,
                status=status,
                high_risk=high_risk.get(ev.control, False) and status in ("fail", "error"),
                command=ev.command,
                output=ev.output,
                waiver=note,
            )
        )
    by_key = {(r.control, r.host): r for r in results}
    uses = []
    for i, w in enumerate(waivers):
        covered = hits[i]
        if not covered:
            state = "unmatched"
        elif w.expired(today):
            state = "expired"
        elif any(by_key[tuple(k.split("@", 1))].status == "waived" for k in covered):  # type: ignore[index]
            state = "applied"
        else:
            state = "not needed"
        uses.append(
            WaiverUse(
                control=w.control,
                hosts=w.hosts,
                reason=w.reason,
                approver=w.approver,
                expires=w.expires.isoformat(),
                state=state,
                covers=sorted(covered),
            )
        )
    return results, uses


def fold_clauses(catalog: Catalog, results: list[Result]) -> list[ClauseResult]:
    by_control: dict[str, list[Result]] = {}
    for r in results:
        by_control.setdefault(r.control, []).append(r)
    out = []
    for clause in sorted(catalog.clauses, key=lambda c: unit_sort_key(c.unit)):
        covering = catalog.covering(clause.unit)
        names = [f"{c.id} ({ref.coverage})" for c, ref in covering]
        seen = [
            (ref.coverage, r) for c, ref in covering for r in by_control.get(c.id, []) if r.status != "na"
        ]
        statuses = {r.status for _, r in seen}
        waived = "waived" in statuses
        high = any(r.high_risk for _, r in seen)
        status: ClauseStatus
        if not clause.host_evidenced:
            status, why = "manual", "not evidenced by a host: network devices, physical or organisational"
        elif not covering:
            status, why = "manual", "no aicc control covers it: the customer's evidence"
        elif not seen:
            status, why = "na", "no covering control applies to these hosts"
        elif statuses & {"fail", "error", "waived"}:
            if "pass" in statuses:
                status, why = "partial", "some results pass, some do not"
            else:
                status, why = "fail", "no covering result passes"
        elif any(cov == "full" for cov, _ in seen):
            status, why = "pass", "every covering result passes, and a control covers it fully"
        else:
            status, why = "partial", "every covering result passes, but the controls cover it only partly"
        out.append(
            ClauseResult(
                unit=clause.unit,
                clause=clause.clause,
                layer=clause.layer,
                requirement_zh=clause.requirement.zh,
                requirement_en=clause.requirement.en,
                status=status,
                controls=names,
                high_risk=high,
                waived=waived,
                why=why,
            )
        )
    return out


def build_report(
    *,
    site: str,
    version: str,
    catalog: Catalog,
    hosts: dict[str, list[str]],
    collected: Collected,
    waivers: list[Waiver],
    today: date,
) -> Report:
    high_risk = {c.id: c.high_risk for c in catalog.controls}
    order = {c.id: i for i, c in enumerate(catalog.controls)}
    evidence = sorted(collected.evidence, key=lambda e: (order.get(e.control, 999), e.host))
    results, uses = apply_waivers(evidence, waivers, today, high_risk)
    clauses = fold_clauses(catalog, results)
    totals = _count(CONTROL_STATUSES, (r.status for r in results))
    clause_totals = _count(CLAUSE_STATUSES, (c.status for c in clauses))
    by_layer = {
        layer: _count(CLAUSE_STATUSES, (c.status for c in clauses if c.layer == layer))
        for layer in LAYER_NAMES
    }
    by_host = {
        host: _count(CONTROL_STATUSES, (r.status for r in results if r.host == host))
        for host in sorted(hosts)
    }
    return Report(
        site=site,
        aicc_version=version,
        catalog_sha256=catalog.digest,
        hosts=hosts,
        unreachable=collected.unreachable,
        results=results,
        clauses=clauses,
        waivers=uses,
        observations=collected.observations,
        totals=totals,
        clause_totals=clause_totals,
        by_layer=by_layer,
        by_host=by_host,
        high_risk=[f"{r.control}@{r.host}" for r in results if r.high_risk],
    )


def _count(keys: tuple[str, ...], values: Iterable[str]) -> dict[str, int]:
    return dict.fromkeys(keys, 0) | dict(Counter(values))
