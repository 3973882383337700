"""A stand-in for Kamailio's KSR module, for unit tests of the KEMI routing without Kamailio.

It records every call as ("module.function", args) and answers from a small model of one SIP
request (method, R-URI user, source, to-tag, headers) plus per-function overrides, with the
return conventions of Kamailio 5.6 (int: >0 true/success, <0 false/failure; bool for is_*).
Htables are dicts, so a test sees what the routing stored (a banned source, ...). Other
pseudo-variables (what a module set: rtpengine's $avp, jsonrpcs' $jsonrpl) come from `pvs`; an
$avp not in it is unset (None), as in Kamailio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "UPDATE",
    "INFO",
    "MESSAGE",
    "SUBSCRIBE",
    "NOTIFY",
    "PRACK",
    "PUBLISH",
    "REFER",
)


@dataclass
class Request:
    method: str = "INVITE"
    ruri_user: str | None = "4000"
    source: str = "198.51.100.7"
    received_port: int = 5060
    transport: str = "udp"  # udp, tcp, tls, ws, wss
    to_tag: bool = False
    myself_ruri: bool = True
    myself_srcip: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    http_uri: str = "/"
    destination: str | None = None
    reply_status: int | None = None
    auth_user: str | None = None  # the username in the request's credentials
    to_user: str | None = "1001"
    source_port: int = 5062
    from_user: str | None = "1001"


class _Module:
    def __init__(self, ksr: FakeKSR, name: str) -> None:
        self._ksr = ksr
        self._name = name

    def __getattr__(self, func: str) -> Callable[..., Any]:
        return self._ksr.function(f"{self._name}.{func}")


class FakeKSR:
    """Use `ksr.returns["auth_db.auth_check"] = -2` to script a result; `ksr.called(...)` to assert."""

    def __init__(self, request: Request | None = None) -> None:
        self.request = request or Request()
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.returns: dict[str, Any] = {}
        self.htables: dict[str, dict[str, Any]] = {"ipban": {}, "did": {}}
        self.flags: set[int] = set()
        self.pike_allowed = True
        self.pvs: dict[str, Any] = {}

    # --- what tests use ---------------------------------------------------------------------

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]

    def replies(self) -> list[tuple[int, str]]:
        return [(int(a[0]), str(a[1])) for a in self.called("sl.sl_send_reply")]

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]

    # --- KSR surface --------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name.startswith("is_") or name in (
            "info",
            "warn",
            "err",
            "dbg",
            "setflag",
            "resetflag",
            "isflagset",
        ):
            return self.function(name)
        return _Module(self, name)

    def function(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls.append((name, args))
            if name in self.returns:
                value = self.returns[name]
                return value(*args) if callable(value) else value
            return self._default(name, args)

        return call

    def _default(self, name: str, args: tuple[Any, ...]) -> Any:
        r = self.request
        method_checks = {f"is_{m}": m for m in METHODS}
        if name in method_checks:
            return r.method == method_checks[name]
        transport = r.transport.lower()
        simple: dict[str, Any] = {
            "is_TCP": transport == "tcp",
            "is_UDP": transport == "udp",
            "is_TLS": transport == "tls",
            "is_WS": transport == "ws",
            "is_WSS": transport == "wss",
            "is_WSX": transport in ("ws", "wss"),
            "is_myself_ruri": r.myself_ruri,
            "is_myself_srcip": r.myself_srcip,
            "maxfwd.process_maxfwd": 1,
            "sanity.sanity_check": 1,
            "tm.t_check_trans": -1,
            "tmx.t_precheck_trans": -1,
            "siputils.has_totag": 1 if r.to_tag else -1,
            "rr.loose_route": -1,
            "rr.record_route": 1,
            "pike.pike_check_req": 1 if self.pike_allowed else -1,
            "auth_db.auth_check": -5,  # no credentials in the request
            "auth.auth_challenge": 1,
            "auth.consume_credentials": 1,
            "registrar.save": 1,
            "registrar.registered": -1,
            "registrar.lookup": -1,
            "dispatcher.ds_is_from_list": -1,
            "dispatcher.ds_select_dst": 1,
            "dispatcher.ds_next_dst": -1,
            "nathelper.nat_uac_test": -1,
            "tm.t_relay": 1,
            "tm.t_is_canceled": -1,
            "tm.t_check_status": -1,
            "tm.t_branch_timeout": -1,
        }
        if name in simple:
            return simple[name]
        if name == "pv.get":
            return self._pv(str(args[0]))
        if name == "hdr.get":
            return r.headers.get(str(args[0]))
        if name == "htable.sht_get":
            return self.htables.setdefault(str(args[0]), {}).get(str(args[1]))
        if name == "htable.sht_rm":
            self.htables.setdefault(str(args[0]), {}).pop(str(args[1]), None)
            return 1
        if name in ("htable.sht_seti", "htable.sht_sets"):
            self.htables.setdefault(str(args[0]), {})[str(args[1])] = args[2]
            return 1
        if name == "setflag":
            self.flags.add(int(args[0]))
            return True
        if name == "isflagset":
            return int(args[0]) in self.flags
        if name in ("info", "warn", "err", "dbg"):
            return None
        return 1

    def _pv(self, spec: str) -> Any:
        if spec in self.pvs:
            return self.pvs[spec]
        if spec.startswith("$avp("):
            return None
        r = self.request
        values: dict[str, Any] = {
            "$si": r.source,
            "$rm": r.method,
            "$rU": r.ruri_user,
            "$Rp": r.received_port,
            "$du": r.destination,
            "$ru": f"sip:{r.ruri_user}@aicc.local" if r.ruri_user else "sip:aicc.local",
            "$hu": r.http_uri,
            "$rs": r.reply_status,
            "$aU": r.auth_user,
            "$sp": r.source_port,
            "$tU": r.to_user,
            "$fU": r.from_user,
        }
        if spec not in values:
            raise KeyError(f"fake KSR has no value for pseudo-variable {spec}")
        return values[spec]
