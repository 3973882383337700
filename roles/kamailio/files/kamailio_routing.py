"""aicc SIP routing for Kamailio, in Python through KEMI (app_python3).

Runs inside Kamailio with Debian's /usr/bin/python3 (stdlib only). Deployed by the aicc
kamailio role to /etc/kamailio/kamailio_routing.py; its settings come from a JSON file the
role renders next to it (aicc-routing.json), so this file is the same on every site.

Call path: flood limits -> max-forwards -> sanity -> transactions -> in-dialog (record-route)
-> OPTIONS keepalive -> REGISTER (digest auth: the subscriber table, or the short-lived credentials
the appliance API gives browser softphones; usrloc) -> INVITE: DID -> service (voicebot
dispatcher set) or a registered agent (usrloc) -> rtpengine offer/answer -> relay.

Metrics (xhttp_prom, declared in kamailio.cfg): the media quality of every call whose rtpengine
session ends (BYE, or the INVITE's failure route) into the call_* histograms, and the dispatcher's
view of the voicebot hosts into gauges, refreshed by an rtimer (ksr_metrics_timer).

A KEMI function returns an int; a negative value is failure. Unlike a native route, nothing
stops the script here but `return`, so every check returns at once once it has answered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Provided by app_python3 inside Kamailio; unit tests put a fake in sys.modules first.
KSR: Any = importlib.import_module("KSR")

CONFIG_ENV = "AICC_KAMAILIO_ROUTING_CONFIG"
CONFIG_PATH = "/etc/kamailio/aicc-routing.json"

# sanity_check() flags: Kamailio's recommended set (ruri, version, method, cseq, content-length,
# expires, proxy-require, parse uri, digest, duplicated to-tag) and all URI checks.
SANITY_MSG_CHECKS = 17895
SANITY_URI_CHECKS = 7

# Message flag: the caller is a WebSocket (browser) client, so its side of the media is WebRTC.
FLAG_SRC_WS = 5

# auth_check() results that a fresh challenge can fix (no credentials, stale or expired nonce);
# any other failure (wrong password, unknown user, user mismatch) gets 403.
RECHALLENGE = frozenset({-4, -5, -6, -7})

# rtpengine flags per side: plain RTP toward SIP phones and the voice gateway (RTCP taken apart
# again if the other side muxed it), DTLS-SRTP with ICE toward browsers, which insist on rtcp-mux
# and a=mid and must not be offered SDES keys.
RTP_PLAIN = "replace-origin replace-session-connection ICE=remove RTP/AVP rtcp-mux-demux"
RTP_WEBRTC = (
    "replace-origin replace-session-connection ICE=force DTLS=passive RTP/SAVPF "
    "rtcp-mux-require generate-mid SDES-off"
)

SERVICE_HEADER = "X-AICC-Service"

# Requests whose SDP (or end of call) rtpengine must see.
MEDIA_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "UPDATE"})

# The call's media quality, which the rtpengine module sets (modparams mos_average_*_pv in
# kamailio.cfg) when a delete ends the session: averages over the call's streams, from the RTCP
# reports rtpengine saw. MOS as "4.3", packet loss in percent, jitter in ms, round trip in
# microseconds. Unset when no endpoint sent RTCP (the module then leaves them alone).
PV_MOS = "$avp(mos_average)"
PV_PACKET_LOSS = "$avp(mos_average_packetloss)"
PV_JITTER = "$avp(mos_average_jitter)"
PV_ROUNDTRIP = "$avp(mos_average_roundtrip)"

# The dispatcher's sets and targets with their state (a JSON-RPC document run through jsonrpcs).
DISPATCHER_LIST_RPC = '{"jsonrpc": "2.0", "method": "dispatcher.list", "id": 1}'
# Target states (first letter of FLAGS in dispatcher.list) in which ds_select_dst still picks it:
# A(ctive) and T(rying: failed a probe, not yet the threshold). I(nactive) and D(isabled) are out.
DISPATCHER_UP_STATES = frozenset({"A", "T"})


def _number(value: Any) -> float | None:
    """A pseudo-variable's value as a number; None when unset, empty or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _metric_value(value: float) -> str:
    # xhttp_prom takes the number as a string (atof).
    return f"{value:g}"


def dispatcher_states(body: str | None) -> dict[tuple[str, str], bool] | None:
    """(set id, target URI) -> in rotation, from a dispatcher.list JSON-RPC reply; None when the
    reply holds no list (an RPC error, or no destination sets at all)."""
    try:
        result = json.loads(body or "").get("result")
        records = result["RECORDS"]
    except (ValueError, AttributeError, TypeError, KeyError):
        return None
    states: dict[tuple[str, str], bool] = {}
    for record in records or ():
        ds_set = (record or {}).get("SET") or {}
        setid = str(ds_set.get("ID", ""))
        for target in ds_set.get("TARGETS") or ():
            dest = (target or {}).get("DEST") or {}
            uri, flags = str(dest.get("URI", "")), str(dest.get("FLAGS", ""))
            if setid and uri:
                states[(setid, uri)] = flags[:1] in DISPATCHER_UP_STATES
    return states


@dataclass(frozen=True)
class RoutingConfig:
    """What the role renders into aicc-routing.json."""

    realm: str
    voicebot_set: int = 1
    max_forwards: int = 10
    trusted_sources: tuple[str, ...] = ()
    rtpengine: bool = True
    metrics_port: int = 9151
    wss_port: int = 8443
    # Key of the browsers' short-lived SIP credentials (the API derives the same); empty: refused.
    ephemeral_secret: str = field(default="", repr=False)
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in self.trusted_sources)
        object.__setattr__(self, "networks", nets)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RoutingConfig:
        return cls(
            realm=str(data["realm"]),
            voicebot_set=int(data.get("voicebot_set", 1)),
            max_forwards=int(data.get("max_forwards", 10)),
            trusted_sources=tuple(str(n) for n in data.get("trusted_sources", ())),
            rtpengine=bool(data.get("rtpengine", True)),
            metrics_port=int(data.get("metrics_port", 9151)),
            wss_port=int(data.get("wss_port", 8443)),
            ephemeral_secret=str(data.get("ephemeral_secret", "")),
        )


def ephemeral_password(secret: str, username: str) -> str:
    """The password of short-lived credentials "<expiry epoch>:<extension>" (the TURN REST scheme,
    as Kamailio's auth_ephemeral computes it): base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def ephemeral_user(username: str, now: float) -> str | None:
    """The extension of unexpired short-lived credentials, else None."""
    expiry, sep, extension = username.partition(":")
    if not sep or not expiry.isdigit() or not extension or int(expiry) <= now:
        return None
    return extension


def load_config(path: str | None = None) -> RoutingConfig:
    with Path(path or os.environ.get(CONFIG_ENV, CONFIG_PATH)).open(encoding="utf-8") as fh:
        return RoutingConfig.from_mapping(json.load(fh))


def mod_init() -> kamailio:
    """Called by app_python3 once, before the workers fork."""
    return kamailio(load_config())


# app_python3 looks the class up by this (lower-case) name.
class kamailio:
    def __init__(self, config: RoutingConfig) -> None:
        self.cfg = config
        # Metrics timer process only: the targets it has reported, and whether it has run yet.
        self._ds_reported: set[tuple[str, str]] = set()
        self._metrics_started = False

    def child_init(self, rank: int) -> int:
        return 0

    # --- request_route --------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        # SIP sent to the metrics listener is not served: that port is for Prometheus only.
        if KSR.is_TCP() and KSR.pv.get("$Rp") == self.cfg.metrics_port:
            return 1
        if not self._flood_ok():
            return 1
        if KSR.maxfwd.process_maxfwd(self.cfg.max_forwards) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.sanity.sanity_check(SANITY_MSG_CHECKS, SANITY_URI_CHECKS) < 0:
            # sanity answers what can be answered (400, 420, ...) and drops the rest.
            KSR.info("malformed request dropped from " + str(KSR.pv.get("$si")) + "\n")
            return 1

        # One look at the method instead of an is_*() call per check: each KSR call costs.
        method = str(KSR.pv.get("$rm"))
        if method == "CANCEL":
            if KSR.tm.t_check_trans() > 0:
                self._relay(method)
            return 1
        if method != "ACK":
            if KSR.tmx.t_precheck_trans() > 0:
                # A retransmission of a request still being processed: tm resends the reply.
                KSR.tm.t_check_trans()
                return 1
            if KSR.tm.t_check_trans() == 0:
                return 1

        if KSR.siputils.has_totag() > 0:
            self._within_dialog(method)
            return 1
        if method == "ACK":
            # ACK for a negative reply of a stateful transaction: tm relays it hop by hop.
            if KSR.tm.t_check_trans() > 0:
                self._relay(method)
            return 1

        # Initial request: a preloaded Route is not honoured (no open relay through us).
        KSR.hdr.remove("Route")
        if KSR.is_WSX():
            KSR.setflag(FLAG_SRC_WS)

        if method == "INVITE":
            self._invite()
            return 1
        if method == "REGISTER":
            self._register()
            return 1
        if method == "OPTIONS":
            if KSR.is_myself_ruri() and not KSR.pv.get("$rU"):
                KSR.sl.sl_send_reply(200, "Keepalive")
            else:
                KSR.sl.sl_send_reply(404, "Not Found")
            return 1
        KSR.hdr.append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO\r\n")
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        return 1

    # --- pieces of the request route ------------------------------------------------------

    def _trusted(self, src: str) -> bool:
        """The proxy itself, the voicebot hosts and configured trunks: no flood limits, no auth."""
        if KSR.is_myself_srcip() or KSR.dispatcher.ds_is_from_list(self.cfg.voicebot_set) > 0:
            return True
        if not self.cfg.networks:
            return False
        try:
            addr = ipaddress.ip_address(src)
        except ValueError:
            return False
        return any(addr in net for net in self.cfg.networks)

    def _flood_ok(self) -> bool:
        src = str(KSR.pv.get("$si"))
        if KSR.htable.sht_get("ipban", src) is not None:
            return False  # banned: dropped without a reply until the htable entry expires
        if self._trusted(src):
            return True
        if KSR.pike.pike_check_req() < 0:
            KSR.htable.sht_seti("ipban", src, 1)
            KSR.xhttp_prom.counter_inc_l0("flood_blocked", 1)
            KSR.warn("flood limit exceeded: source " + src + " blocked\n")
            return False
        return True

    def _within_dialog(self, method: str) -> None:
        if KSR.rr.loose_route() > 0:
            # Agents on WebSocket carry an alias in their contact: route to where they connected.
            KSR.nathelper.handle_ruri_alias()
            if method in ("INVITE", "UPDATE"):
                KSR.rr.record_route()
            self._relay(method)
            return
        if method == "ACK":
            if KSR.tm.t_check_trans() > 0:
                self._relay(method)
            return
        KSR.sl.sl_send_reply(404, "Not Here")

    def _authenticated(self, aor_user: str, register: bool) -> bool:
        """Digest auth of the request for `aor_user`; answers 401/407 or 403 itself when it fails.

        Credentials named "<expiry>:<extension>" are a browser softphone's, from the appliance API:
        checked against the key, the expiry and the extension. Others are the subscriber table's."""
        auth_user = str(KSR.pv.get("$aU") or "")  # the whole username: $au stops at a colon
        if ":" in auth_user:
            extension = ephemeral_user(auth_user, time.time())
            if not self.cfg.ephemeral_secret or extension is None or extension != aor_user:
                # Expired credentials get a fresh challenge: the page fetches new ones and retries.
                if extension is None and self.cfg.ephemeral_secret:
                    KSR.auth.auth_challenge(self.cfg.realm, 1)
                else:
                    KSR.sl.sl_send_reply(403, "Forbidden")
                return False
            rc = KSR.auth.pv_auth_check(
                self.cfg.realm, ephemeral_password(self.cfg.ephemeral_secret, auth_user), 0, 0
            )
        else:
            rc = KSR.auth_db.auth_check(self.cfg.realm, "subscriber", 1 if register else 0)
        if rc < 0:
            if rc in RECHALLENGE:
                KSR.auth.auth_challenge(self.cfg.realm, 1)
            else:
                KSR.sl.sl_send_reply(403, "Forbidden")
            return False
        KSR.auth.consume_credentials()
        return True

    def _register(self) -> None:
        if not self._authenticated(str(KSR.pv.get("$tU") or ""), register=True):
            return
        if KSR.is_WSX() or KSR.nathelper.nat_uac_test(19) > 0:
            # Browsers and NATed phones: reach them where they connected from, not their Contact.
            KSR.nathelper.fix_nated_register()
        if KSR.registrar.save("location", 0) < 0:
            KSR.sl.sl_reply_error()
            return
        if KSR.is_WSX():
            # Remember the connection's AOR: when the browser goes, so does its registration (usrloc's
            # handle_lost_tcp does not work with the database-only mode used here).
            aor = "sip:" + str(KSR.pv.get("$tU")) + "@" + self.cfg.realm
            KSR.htable.sht_sets("wsaor", self._peer(), aor)

    def _invite(self) -> None:
        if not KSR.is_myself_ruri():
            KSR.sl.sl_send_reply(403, "Relaying Forbidden")
            return
        KSR.rr.record_route()
        if KSR.is_WSX():
            # A browser's Contact is a made-up host: requests back to it go where it connected from.
            KSR.nathelper.set_contact_alias()
        user = KSR.pv.get("$rU")
        if not user:
            KSR.sl.sl_send_reply(404, "Not Found")
            return
        service = KSR.htable.sht_get("did", user)
        if service is not None:
            self._to_service(str(service))
            return
        if KSR.registrar.registered("location") > 0:
            self._to_agent()
            return
        KSR.xhttp_prom.counter_inc_l0("unknown_number", 1)
        KSR.sl.sl_send_reply(404, "Not Found")

    def _to_service(self, service: str) -> None:
        # The voice gateway picks the bot/queue from this header; a caller cannot set it.
        KSR.hdr.remove(SERVICE_HEADER)
        KSR.hdr.append(SERVICE_HEADER + ": " + service + "\r\n")
        # Algorithm 4: round-robin over the voicebot hosts that answer OPTIONS probes.
        if KSR.dispatcher.ds_select_dst(self.cfg.voicebot_set, 4) < 0:
            KSR.sl.sl_send_reply(503, "Service Unavailable")
            return
        KSR.tm.t_on_failure("ksr_failure_dispatch")
        self._relay("INVITE")

    def _to_agent(self) -> None:
        # Agents calling agents must authenticate; the voicebot hosts (the ACD's transfers) are trusted.
        if not self._trusted(str(KSR.pv.get("$si"))) and not self._authenticated(
            str(KSR.pv.get("$fU") or ""), register=False
        ):
            return
        rc = KSR.registrar.lookup("location")
        if rc < 0:
            # -1: no contact, -2: contact does not accept the method, -3: internal error.
            if rc == -2:
                KSR.sl.sl_send_reply(405, "Method Not Allowed")
            else:
                KSR.sl.sl_send_reply(480, "Temporarily Unavailable")
            return
        if self.cfg.rtpengine:
            # Busy, no answer or cancelled: the media session offered to the agent ends with it.
            KSR.tm.t_on_failure("ksr_failure_media")
        self._relay("INVITE")

    def _relay(self, method: str) -> None:
        if self.cfg.rtpengine and method in MEDIA_METHODS:
            KSR.tm.t_on_branch("ksr_branch_manage")
            KSR.tm.t_on_reply("ksr_onreply_manage")
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    # --- transaction routes ---------------------------------------------------------------

    def ksr_branch_manage(self, msg: object) -> int:
        """Per branch: the offer to the callee (or the delete on BYE/CANCEL, with the call's quality)."""
        dst = str(KSR.pv.get("$du") or KSR.pv.get("$ru") or "")
        to_browser = "transport=ws" in dst.lower()
        rc = KSR.rtpengine.rtpengine_manage(RTP_WEBRTC if to_browser else RTP_PLAIN)
        method = KSR.pv.get("$rm")
        if method in ("BYE", "CANCEL"):
            self._media_ended(rc, answered=method == "BYE")
        return 1

    def ksr_onreply_manage(self, msg: object) -> int:
        """Replies: the answer back to the caller; a browser callee gets a reachable contact."""
        status = KSR.pv.get("$rs")
        if not isinstance(status, int) or status >= 300:
            return 1
        if KSR.is_WSX():
            KSR.nathelper.set_contact_alias()
        KSR.rtpengine.rtpengine_manage(RTP_WEBRTC if KSR.isflagset(FLAG_SRC_WS) else RTP_PLAIN)
        return 1

    def ksr_failure_dispatch(self, msg: object) -> int:
        """A voicebot host timed out or failed: mark it down and try the next one."""
        if KSR.tm.t_is_canceled() < 0 and (
            KSR.tm.t_check_status("^(408|5[0-9][0-9])$") > 0 or KSR.tm.t_branch_timeout() > 0
        ):
            KSR.dispatcher.ds_mark_dst_state("ip")
            if KSR.dispatcher.ds_next_dst() > 0:
                KSR.tm.t_on_failure("ksr_failure_dispatch")
                self._relay("INVITE")
                return 1
        self._end_media()
        return 1

    def ksr_failure_media(self, msg: object) -> int:
        """A call to an agent failed or was cancelled: its media session goes."""
        self._end_media()
        return 1

    def _end_media(self) -> None:
        """The call never got answered: delete its media session (a CANCEL is not relayed through
        the branch route, so this is where a cancelled call's session ends too)."""
        if self.cfg.rtpengine:
            self._media_ended(KSR.rtpengine.rtpengine_delete0(), answered=False)

    # --- media quality metrics --------------------------------------------------------------

    def _media_ended(self, rc: int, answered: bool) -> None:
        """After rtpengine deleted a call's media session: its quality into the call_* histograms.

        No MOS (no endpoint sent RTCP) is not a good call: an answered call without one counts in
        call_quality_unknown instead, so a dashboard tells "no data" from "good". A call that was
        never answered had no media to judge and counts nowhere unless rtpengine measured some."""
        if rc < 0:
            return  # no session (already gone, rtpengine unreachable): nothing was measured
        mos = _number(KSR.pv.get(PV_MOS))
        if mos is None or mos <= 0:
            if answered:
                KSR.xhttp_prom.counter_inc_l0("call_quality_unknown", 1)
            return
        KSR.xhttp_prom.histogram_observe_l0("call_mos", _metric_value(mos))
        loss = _number(KSR.pv.get(PV_PACKET_LOSS))
        if loss is not None and loss >= 0:
            KSR.xhttp_prom.histogram_observe_l0("call_packet_loss_percent", _metric_value(loss))
        jitter = _number(KSR.pv.get(PV_JITTER))
        if jitter is not None and jitter >= 0:
            KSR.xhttp_prom.histogram_observe_l0("call_jitter_ms", _metric_value(jitter))
        roundtrip_us = _number(KSR.pv.get(PV_ROUNDTRIP))
        if roundtrip_us is not None and roundtrip_us > 0:  # 0: no round trip could be measured
            KSR.xhttp_prom.histogram_observe_l0("call_roundtrip_ms", _metric_value(roundtrip_us / 1000))

    # --- rtimer: dispatcher state ------------------------------------------------------------

    def ksr_metrics_timer(self, msg: object, evname: str) -> int:
        """Every 10 s in the rtimer's own process: each dispatcher target's state into
        dispatcher_target_up{setid,target} (1: ds_select_dst may pick it) and the count per set into
        dispatcher_targets_up{setid}. The dispatcher module keeps no statistics; its RPC has the state."""
        if not self._metrics_started:
            # Present (at 0) from start-up, so "no call lacked quality data" is a sample, not a gap.
            KSR.xhttp_prom.counter_inc_l0("call_quality_unknown", 0)
            self._metrics_started = True
        states = None
        if KSR.jsonrpcs.exec(DISPATCHER_LIST_RPC) > 0:
            states = dispatcher_states(KSR.pv.get("$jsonrpl(body)"))
        if states is None:
            KSR.warn("dispatcher.list gave no destination sets: dispatcher gauges not updated\n")
            return 1
        # A target gone from the list (dispatcher.reload) is out of rotation.
        for key in self._ds_reported - set(states):
            states[key] = False
        up_per_set: dict[str, int] = {}
        for (setid, target), up in sorted(states.items()):
            KSR.xhttp_prom.gauge_set_l2("dispatcher_target_up", "1" if up else "0", setid, target)
            up_per_set[setid] = up_per_set.get(setid, 0) + int(up)
        for setid, count in sorted(up_per_set.items()):
            KSR.xhttp_prom.gauge_set_l1("dispatcher_targets_up", str(count), setid)
        self._ds_reported = set(states)
        return 1

    # --- WebSocket connections --------------------------------------------------------------

    def ksr_websocket_event(self, msg: object, evname: str) -> int:
        """websocket:closed: the browser softphone is gone (tab closed, network lost); unregister its
        AOR at once so the ACD, which follows registrations, stops offering it contacts."""
        if evname != "websocket:closed":
            return 1
        peer = self._peer()
        aor = KSR.htable.sht_get("wsaor", peer)
        if aor is not None:
            KSR.htable.sht_rm("wsaor", peer)
            KSR.registrar.unregister("location", str(aor))
        return 1

    @staticmethod
    def _peer() -> str:
        # The connection's far end names it: its id ($conid) is gone by the time the close event runs
        # (the module runs it seconds later, from a timer), its source address and port are not.
        return str(KSR.pv.get("$si")) + ":" + str(KSR.pv.get("$sp"))

    # --- HTTP: Prometheus metrics and the WebSocket handshake -----------------------------

    def ksr_xhttp_event(self, msg: object, evname: str) -> int:
        port = KSR.pv.get("$Rp")
        if port == self.cfg.metrics_port:
            if str(KSR.pv.get("$hu") or "").startswith("/metrics"):
                KSR.xhttp_prom.dispatch()
            else:
                KSR.xhttp.xhttp_reply(404, "Not Found", "text/plain", "metrics are at /metrics\n")
            return 1
        upgrade = port == self.cfg.wss_port and str(KSR.hdr.get("Upgrade") or "").lower() == "websocket"
        if upgrade and KSR.websocket.handle_handshake() > 0:
            return 1
        KSR.xhttp.xhttp_reply(403, "Forbidden", "text/plain", "")
        return 1
