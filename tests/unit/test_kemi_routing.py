"""The KEMI routing file (roles/kamailio/files/kamailio_routing.py) driven by a fake KSR.

Behaviour, not implementation: what the proxy answers, where it relays, what it stores.
The same file is exercised for real in tests/integration/test_kamailio.py and bench/sip_cps.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.unit.fake_ksr import FakeKSR, Request

ROUTING = Path(__file__).resolve().parents[2] / "roles" / "kamailio" / "files" / "kamailio_routing.py"
REALM = "aicc.local"
VOICEBOT = "10.231.21.13"


@pytest.fixture(scope="module")
def routing() -> Iterator[ModuleType]:
    saved = sys.modules.get("KSR")
    sys.modules["KSR"] = FakeKSR()  # type: ignore[assignment]  # a module stand-in
    try:
        spec = importlib.util.spec_from_file_location("aicc_kamailio_routing_under_test", ROUTING)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # dataclasses resolve the module's annotations through sys.modules.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("aicc_kamailio_routing_under_test", None)
        if saved is None:
            sys.modules.pop("KSR", None)
        else:
            sys.modules["KSR"] = saved


def make(routing: ModuleType, request: Request | None = None, **cfg: Any) -> tuple[Any, FakeKSR]:
    ksr = FakeKSR(request or Request())
    routing.__dict__["KSR"] = ksr  # the module global the routing calls
    config = routing.RoutingConfig.from_mapping({"realm": REALM, **cfg})
    return routing.kamailio(config), ksr


def voicebot_source(ksr: FakeKSR) -> None:
    ksr.returns["dispatcher.ds_is_from_list"] = lambda group: 1 if ksr.request.source == VOICEBOT else -1


# --- request checks --------------------------------------------------------------------------


def test_malformed_request_is_dropped_without_routing(routing: ModuleType) -> None:
    app, ksr = make(routing)
    ksr.returns["sanity.sanity_check"] = -1
    assert app.ksr_request_route(None) == 1
    assert ksr.called("sanity.sanity_check") == [(routing.SANITY_MSG_CHECKS, routing.SANITY_URI_CHECKS)]
    assert ksr.replies() == []
    assert not ksr.called("tm.t_relay")
    assert not ksr.called("htable.sht_get") or ksr.called("htable.sht_get") == [("ipban", "198.51.100.7")]


def test_max_forwards_exceeded_gets_483(routing: ModuleType) -> None:
    app, ksr = make(routing, max_forwards=12)
    ksr.returns["maxfwd.process_maxfwd"] = -1
    app.ksr_request_route(None)
    assert ksr.called("maxfwd.process_maxfwd") == [(12,)]
    assert ksr.replies() == [(483, "Too Many Hops")]
    assert not ksr.called("tm.t_relay")


def test_sip_on_the_metrics_port_is_ignored(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="OPTIONS", ruri_user=None, transport="tcp", received_port=9151))
    app.ksr_request_route(None)
    assert ksr.replies() == []
    assert not ksr.called("pike.pike_check_req")


def test_retransmission_is_absorbed_by_tm(routing: ModuleType) -> None:
    app, ksr = make(routing)
    ksr.returns["tmx.t_precheck_trans"] = 1
    app.ksr_request_route(None)
    assert ksr.called("tm.t_check_trans") == [()]
    assert not ksr.called("rr.record_route")
    assert ksr.replies() == []


# --- OPTIONS -----------------------------------------------------------------------------------


def test_options_to_the_proxy_gets_200(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="OPTIONS", ruri_user=None))
    app.ksr_request_route(None)
    assert ksr.replies() == [(200, "Keepalive")]


def test_options_to_a_user_is_not_answered_as_keepalive(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="OPTIONS", ruri_user="1001"))
    app.ksr_request_route(None)
    assert ksr.replies() == [(404, "Not Found")]


def test_unsupported_method_gets_405_with_allow(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="SUBSCRIBE", ruri_user="1001"))
    app.ksr_request_route(None)
    assert ksr.replies() == [(405, "Method Not Allowed")]
    (allow,) = ksr.called("hdr.append_to_reply")
    assert allow[0].startswith("Allow: INVITE")


# --- REGISTER ----------------------------------------------------------------------------------


def test_register_without_credentials_is_challenged(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    app.ksr_request_route(None)
    assert ksr.called("auth_db.auth_check") == [(REALM, "subscriber", 1)]
    assert ksr.called("auth.auth_challenge") == [(REALM, 1)]
    assert not ksr.called("registrar.save")


def test_register_with_wrong_password_gets_403_and_is_not_saved(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    ksr.returns["auth_db.auth_check"] = -2  # invalid password
    app.ksr_request_route(None)
    assert ksr.replies() == [(403, "Forbidden")]
    assert not ksr.called("auth.auth_challenge")
    assert not ksr.called("registrar.save")


def test_register_with_stale_nonce_is_challenged_again(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    ksr.returns["auth_db.auth_check"] = -4  # nonce expired
    app.ksr_request_route(None)
    assert ksr.called("auth.auth_challenge") == [(REALM, 1)]


def test_register_with_right_password_is_saved(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    ksr.returns["auth_db.auth_check"] = 1
    app.ksr_request_route(None)
    assert ksr.called("registrar.save") == [("location", 0)]
    assert ksr.called("auth.consume_credentials") == [()]
    assert not ksr.called("nathelper.fix_nated_register")
    assert ksr.replies() == []  # registrar answers 200 itself


def test_register_from_a_browser_stores_where_it_connected(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None, transport="wss", received_port=8443))
    ksr.returns["auth_db.auth_check"] = 1
    app.ksr_request_route(None)
    assert ksr.called("nathelper.fix_nated_register") == [()]
    assert ksr.called("registrar.save") == [("location", 0)]


def test_register_save_failure_gets_an_error_reply(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    ksr.returns["auth_db.auth_check"] = 1
    ksr.returns["registrar.save"] = -1
    app.ksr_request_route(None)
    assert ksr.called("sl.sl_reply_error") == [()]


# --- INVITE: DIDs and agents --------------------------------------------------------------------


def test_unknown_did_gets_404(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="9999"))
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert ksr.replies() == [(404, "Not Found")]
    assert ksr.called("xhttp_prom.counter_inc_l0") == [("unknown_number", 1)]
    assert not ksr.called("tm.t_relay")
    assert not ksr.called("dispatcher.ds_select_dst")


def test_known_did_goes_to_the_voicebot_set_with_its_service(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000", headers={"X-AICC-Service": "spoofed"}), voicebot_set=3)
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert ksr.called("rr.record_route") == [()]
    assert ksr.called("dispatcher.ds_select_dst") == [(3, 4)]
    # The caller's own X-AICC-Service is removed before ours is added.
    names = ksr.names()
    assert names.index("hdr.remove") < names.index("hdr.append")
    assert ("X-AICC-Service",) in ksr.called("hdr.remove")
    assert ksr.called("hdr.append") == [("X-AICC-Service: voicebot\r\n",)]
    assert ksr.called("tm.t_on_failure") == [("ksr_failure_dispatch",)]
    assert ksr.called("tm.t_relay") == [()]
    assert ksr.replies() == []


def test_known_did_with_no_voicebot_up_gets_503(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.htables["did"] = {"4000": "voicebot"}
    ksr.returns["dispatcher.ds_select_dst"] = -1
    app.ksr_request_route(None)
    assert ksr.replies() == [(503, "Service Unavailable")]
    assert not ksr.called("tm.t_relay")


def test_invite_for_another_domain_is_not_relayed(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000", myself_ruri=False))
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert ksr.replies() == [(403, "Relaying Forbidden")]
    assert not ksr.called("tm.t_relay")


def test_call_to_registered_agent_from_outside_needs_credentials(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001"))
    ksr.returns["registrar.registered"] = 1
    app.ksr_request_route(None)
    assert ksr.called("auth_db.auth_check") == [(REALM, "subscriber", 0)]
    assert ksr.called("auth.auth_challenge") == [(REALM, 1)]
    assert not ksr.called("registrar.lookup")
    assert not ksr.called("tm.t_relay")


def test_authenticated_call_to_registered_agent_is_relayed_to_its_contact(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001"))
    ksr.returns["registrar.registered"] = 1
    ksr.returns["auth_db.auth_check"] = 1
    ksr.returns["registrar.lookup"] = 1
    app.ksr_request_route(None)
    assert ksr.called("registrar.lookup") == [("location",)]
    assert ksr.called("tm.t_relay") == [()]


def test_voicebot_host_transfers_to_an_agent_without_auth(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001", source=VOICEBOT))
    voicebot_source(ksr)
    ksr.returns["registrar.registered"] = 1
    ksr.returns["registrar.lookup"] = 1
    app.ksr_request_route(None)
    assert not ksr.called("auth_db.auth_check")
    assert ksr.called("tm.t_relay") == [()]


def test_agent_gone_between_check_and_lookup_gets_480(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001", source=VOICEBOT))
    voicebot_source(ksr)
    ksr.returns["registrar.registered"] = 1
    ksr.returns["registrar.lookup"] = -1
    app.ksr_request_route(None)
    assert ksr.replies() == [(480, "Temporarily Unavailable")]


# --- flood limits ------------------------------------------------------------------------------


def test_flooding_source_is_blocked_and_stays_blocked(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="OPTIONS", ruri_user=None, source="203.0.113.9"))
    ksr.pike_allowed = False
    app.ksr_request_route(None)
    assert ksr.htables["ipban"] == {"203.0.113.9": 1}
    assert ksr.called("xhttp_prom.counter_inc_l0") == [("flood_blocked", 1)]
    assert ksr.replies() == []
    # Next request from the same source: dropped before pike or anything else looks at it.
    ksr.pike_allowed = True
    ksr.calls.clear()
    app.ksr_request_route(None)
    assert ksr.replies() == []
    assert not ksr.called("pike.pike_check_req")
    assert not ksr.called("maxfwd.process_maxfwd")


def test_other_sources_are_not_affected_by_a_ban(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="OPTIONS", ruri_user=None, source="203.0.113.10"))
    ksr.htables["ipban"] = {"203.0.113.9": 1}
    app.ksr_request_route(None)
    assert ksr.replies() == [(200, "Keepalive")]


def test_voicebot_hosts_are_not_flood_limited(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000", source=VOICEBOT))
    voicebot_source(ksr)
    ksr.pike_allowed = False
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert not ksr.called("pike.pike_check_req")
    assert ksr.htables["ipban"] == {}
    assert ksr.called("tm.t_relay") == [()]


def test_configured_trunk_networks_are_not_flood_limited(routing: ModuleType) -> None:
    app, ksr = make(
        routing,
        Request(method="OPTIONS", ruri_user=None, source="192.0.2.77"),
        trusted_sources=["192.0.2.0/24"],
    )
    ksr.pike_allowed = False
    app.ksr_request_route(None)
    assert ksr.replies() == [(200, "Keepalive")]
    app2, ksr2 = make(
        routing,
        Request(method="OPTIONS", ruri_user=None, source="192.0.3.77"),
        trusted_sources=["192.0.2.0/24"],
    )
    ksr2.pike_allowed = False
    app2.ksr_request_route(None)
    assert ksr2.htables["ipban"] == {"192.0.3.77": 1}


# --- in-dialog, CANCEL, failover -----------------------------------------------------------------


def test_in_dialog_bye_follows_the_route_set(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True))
    ksr.returns["rr.loose_route"] = 1
    app.ksr_request_route(None)
    assert ksr.called("tm.t_relay") == [()]
    assert not ksr.called("rr.record_route")


def test_in_dialog_request_without_route_gets_404(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True))
    app.ksr_request_route(None)
    assert ksr.replies() == [(404, "Not Here")]
    assert not ksr.called("tm.t_relay")


def test_cancel_relayed_only_for_a_known_transaction(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="CANCEL"))
    app.ksr_request_route(None)
    assert not ksr.called("tm.t_relay")
    app, ksr = make(routing, Request(method="CANCEL"))
    ksr.returns["tm.t_check_trans"] = 1
    app.ksr_request_route(None)
    assert ksr.called("tm.t_relay") == [()]


def test_failed_voicebot_is_marked_down_and_the_next_is_tried(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.returns["tm.t_check_status"] = 1  # a 503 from the gateway
    ksr.returns["dispatcher.ds_next_dst"] = 1
    app.ksr_failure_dispatch(None)
    assert ksr.called("dispatcher.ds_mark_dst_state") == [("ip",)]
    assert ksr.called("tm.t_relay") == [()]


def test_no_failover_for_a_cancelled_call(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.returns["tm.t_is_canceled"] = 1
    app.ksr_failure_dispatch(None)
    assert not ksr.called("dispatcher.ds_mark_dst_state")
    assert not ksr.called("tm.t_relay")


# --- media --------------------------------------------------------------------------------------


def test_rtpengine_manages_offer_and_answer(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"), rtpengine=True)
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert ksr.called("tm.t_on_branch") == [("ksr_branch_manage",)]
    assert ksr.called("tm.t_on_reply") == [("ksr_onreply_manage",)]
    ksr.request.destination = f"sip:{VOICEBOT}:5080"
    app.ksr_branch_manage(None)
    assert ksr.called("rtpengine.rtpengine_manage") == [(routing.RTP_PLAIN,)]


def test_browser_callee_gets_webrtc_media(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001", destination="sip:10.0.0.5:51234;transport=ws"))
    app.ksr_branch_manage(None)
    assert ksr.called("rtpengine.rtpengine_manage") == [(routing.RTP_WEBRTC,)]


def test_answer_to_a_browser_caller_is_webrtc(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000", transport="wss", received_port=8443))
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)  # marks the caller as WebSocket
    ksr.request.transport = "udp"  # the 200 comes from the gateway over UDP
    ksr.request.reply_status = 200
    app.ksr_onreply_manage(None)
    assert ksr.called("rtpengine.rtpengine_manage") == [(routing.RTP_WEBRTC,)]


def test_no_rtpengine_when_the_site_has_no_media_hosts(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"), rtpengine=False)
    ksr.htables["did"] = {"4000": "voicebot"}
    app.ksr_request_route(None)
    assert not ksr.called("tm.t_on_branch")
    assert ksr.called("tm.t_relay") == [()]


def test_error_replies_do_not_touch_media(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(reply_status=486))
    app.ksr_onreply_manage(None)
    assert not ksr.called("rtpengine.rtpengine_manage")


# --- HTTP: metrics and WebSocket ------------------------------------------------------------------


def test_metrics_are_served_on_the_metrics_port(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(transport="tcp", received_port=9151, http_uri="/metrics"))
    app.ksr_xhttp_event(None, "xhttp:request")
    assert ksr.called("xhttp_prom.dispatch") == [()]
    assert not ksr.called("websocket.handle_handshake")


def test_other_paths_on_the_metrics_port_get_404(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(transport="tcp", received_port=9151, http_uri="/admin"))
    app.ksr_xhttp_event(None, "xhttp:request")
    assert not ksr.called("xhttp_prom.dispatch")
    assert ksr.called("xhttp.xhttp_reply")[0][0] == 404


def test_websocket_upgrade_on_the_wss_port_is_handed_to_websocket(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(transport="tls", received_port=8443, headers={"Upgrade": "websocket"}))
    app.ksr_xhttp_event(None, "xhttp:request")
    assert ksr.called("websocket.handle_handshake") == [()]
    assert not ksr.called("xhttp.xhttp_reply")


def test_plain_http_elsewhere_is_refused(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(transport="tls", received_port=5061, headers={"Upgrade": "websocket"}))
    app.ksr_xhttp_event(None, "xhttp:request")
    assert not ksr.called("websocket.handle_handshake")
    assert ksr.called("xhttp.xhttp_reply")[0][0] == 403


# --- configuration ------------------------------------------------------------------------------


def test_config_file_is_read_from_the_environment_path(
    routing: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "aicc-routing.json"
    path.write_text(
        json.dumps(
            {
                "realm": "example.org",
                "voicebot_set": 2,
                "trusted_sources": ["10.1.0.0/16"],
                "rtpengine": False,
            }
        )
    )
    monkeypatch.setenv(routing.CONFIG_ENV, str(path))
    cfg = routing.load_config()
    assert (cfg.realm, cfg.voicebot_set, cfg.rtpengine) == ("example.org", 2, False)
    assert [str(n) for n in cfg.networks] == ["10.1.0.0/16"]
    assert isinstance(routing.mod_init(), routing.kamailio)


def test_bad_trusted_network_fails_at_load(routing: ModuleType) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        routing.RoutingConfig.from_mapping({"realm": REALM, "trusted_sources": ["10.1.0.0/33"]})


# --- browser softphones' short-lived credentials --------------------------------------------------

SECRET = "k" * 64


def _ephemeral(routing: ModuleType, extension: str = "1001", ttl_s: int = 600) -> str:
    import time

    return f"{int(time.time()) + ttl_s}:{extension}"


def test_browser_register_with_short_lived_credentials_is_saved(routing: ModuleType) -> None:
    user = _ephemeral(routing)
    app, ksr = make(
        routing,
        Request(method="REGISTER", ruri_user=None, transport="wss", auth_user=user),
        ephemeral_secret=SECRET,
    )
    app.ksr_request_route(None)
    assert ksr.called("auth.pv_auth_check") == [(REALM, routing.ephemeral_password(SECRET, user), 0, 0)]
    assert not ksr.called("auth_db.auth_check")
    assert ksr.called("registrar.save") == [("location", 0)]


def test_expired_short_lived_credentials_are_challenged_again(routing: ModuleType) -> None:
    app, ksr = make(
        routing,
        Request(method="REGISTER", ruri_user=None, transport="wss", auth_user=_ephemeral(routing, ttl_s=-1)),
        ephemeral_secret=SECRET,
    )
    app.ksr_request_route(None)
    assert ksr.called("auth.auth_challenge") == [(REALM, 1)]
    assert not ksr.called("auth.pv_auth_check") and not ksr.called("registrar.save")


@pytest.mark.parametrize(
    ("auth_user", "secret"),
    [("{exp}:1002", SECRET), ("{exp}:1001", ""), ("soon:1001", SECRET), ("{exp}:", SECRET)],
    ids=["another-extension", "no-key-configured", "expiry-not-a-number", "no-extension"],
)
def test_short_lived_credentials_for_the_wrong_extension_or_without_a_key_get_403(
    routing: ModuleType, auth_user: str, secret: str
) -> None:
    exp = _ephemeral(routing).split(":")[0]
    app, ksr = make(
        routing,
        Request(method="REGISTER", ruri_user=None, transport="wss", auth_user=auth_user.format(exp=exp)),
        ephemeral_secret=secret,
    )
    app.ksr_request_route(None)
    if auth_user.startswith("soon") or auth_user.endswith(":"):
        assert ksr.called("auth.auth_challenge") == [(REALM, 1)]  # not valid credentials: ask again
    else:
        assert ksr.replies() == [(403, "Forbidden")]
    assert not ksr.called("auth.pv_auth_check") and not ksr.called("registrar.save")


def test_short_lived_credentials_with_a_wrong_password_get_403(routing: ModuleType) -> None:
    app, ksr = make(
        routing,
        Request(method="REGISTER", ruri_user=None, transport="wss", auth_user=_ephemeral(routing)),
        ephemeral_secret=SECRET,
    )
    ksr.returns["auth.pv_auth_check"] = -2
    app.ksr_request_route(None)
    assert ksr.replies() == [(403, "Forbidden")]
    assert not ksr.called("registrar.save")


def test_browser_calls_an_agent_with_short_lived_credentials(routing: ModuleType) -> None:
    user = _ephemeral(routing, "1001")
    app, ksr = make(
        routing,
        Request(method="INVITE", ruri_user="1002", transport="wss", auth_user=user, from_user="1001"),
        ephemeral_secret=SECRET,
    )
    ksr.returns["registrar.registered"] = 1
    ksr.returns["registrar.lookup"] = 1
    app.ksr_request_route(None)
    assert ksr.called("auth.pv_auth_check") == [(REALM, routing.ephemeral_password(SECRET, user), 0, 0)]
    assert ksr.called("tm.t_relay")


def test_the_api_and_kamailio_derive_the_same_password(routing: ModuleType) -> None:
    from aicc.appliance.api.routes.softphone import sip_password

    assert sip_password(SECRET, "1764800000:1001") == routing.ephemeral_password(SECRET, "1764800000:1001")


def test_a_closed_browser_connection_takes_its_registration_with_it(routing: ModuleType) -> None:
    app, ksr = make(
        routing,
        Request(
            method="REGISTER",
            ruri_user=None,
            transport="wss",
            auth_user=_ephemeral(routing),
            source_port=42,
        ),
        ephemeral_secret=SECRET,
    )
    app.ksr_request_route(None)
    assert ksr.htables["wsaor"] == {"198.51.100.7:42": f"sip:1001@{REALM}"}
    # Another connection closing changes nothing; this one's closing unregisters the AOR once.
    ksr.request.source_port = 43
    app.ksr_websocket_event(None, "websocket:closed")
    assert not ksr.called("registrar.unregister")
    ksr.request.source_port = 42
    app.ksr_websocket_event(None, "websocket:closed")
    app.ksr_websocket_event(None, "websocket:closed")
    assert ksr.called("registrar.unregister") == [("location", f"sip:1001@{REALM}")]
    assert ksr.htables["wsaor"] == {}


def test_a_phone_registering_over_udp_is_not_tied_to_a_connection(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="REGISTER", ruri_user=None))
    ksr.returns["auth_db.auth_check"] = 1
    app.ksr_request_route(None)
    assert ksr.called("registrar.save") and not ksr.htables.get("wsaor")


# --- metrics: media quality at the end of a call ---------------------------------------------------


def _quality(routing: ModuleType, ksr: FakeKSR, mos: str, loss: str, jitter: str, roundtrip_us: str) -> None:
    """What the rtpengine module leaves in its pvs after a delete of a call with RTCP."""
    ksr.pvs.update(
        {
            routing.PV_MOS: mos,
            routing.PV_PACKET_LOSS: loss,
            routing.PV_JITTER: jitter,
            routing.PV_ROUNDTRIP: roundtrip_us,
        }
    )


def _observed(ksr: FakeKSR) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for name, value in ksr.called("xhttp_prom.histogram_observe_l0"):
        seen.setdefault(name, []).append(value)
    return seen


def test_bye_observes_the_calls_media_quality(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True, destination=f"sip:{VOICEBOT}:5080"))
    _quality(routing, ksr, mos="4.3", loss="2", jitter="12", roundtrip_us="48500")
    app.ksr_branch_manage(None)
    assert ksr.called("rtpengine.rtpengine_manage") == [(routing.RTP_PLAIN,)]
    # Once per call, in the units the alerts use: MOS 1..5, loss in %, jitter and round trip in ms.
    assert _observed(ksr) == {
        "call_mos": ["4.3"],
        "call_packet_loss_percent": ["2"],
        "call_jitter_ms": ["12"],
        "call_roundtrip_ms": ["48.5"],
    }
    assert not ksr.called("xhttp_prom.counter_inc_l0")


def test_bye_without_rtcp_counts_as_unknown_quality_not_as_zero(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True))
    app.ksr_branch_manage(None)  # the pvs stay unset: nobody sent RTCP
    assert _observed(ksr) == {}
    assert ksr.called("xhttp_prom.counter_inc_l0") == [("call_quality_unknown", 1)]


def test_a_round_trip_rtpengine_could_not_measure_is_not_observed(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True))
    _quality(routing, ksr, mos="3.9", loss="0", jitter="3", roundtrip_us="0")
    app.ksr_branch_manage(None)
    assert _observed(ksr) == {"call_mos": ["3.9"], "call_packet_loss_percent": ["0"], "call_jitter_ms": ["3"]}


def test_no_quality_when_rtpengine_had_no_session_to_delete(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="BYE", to_tag=True))
    ksr.returns["rtpengine.rtpengine_manage"] = -1
    app.ksr_branch_manage(None)
    assert _observed(ksr) == {}
    assert not ksr.called("xhttp_prom.counter_inc_l0")


def test_offers_observe_nothing(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(method="INVITE", destination=f"sip:{VOICEBOT}:5080"))
    _quality(routing, ksr, mos="4.3", loss="2", jitter="12", roundtrip_us="48500")  # stale, say
    app.ksr_branch_manage(None)
    assert _observed(ksr) == {} and not ksr.called("xhttp_prom.counter_inc_l0")


def test_cancelled_voicebot_call_deletes_its_media_and_reads_what_was_measured(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.returns["tm.t_is_canceled"] = 1
    app.ksr_failure_dispatch(None)
    assert ksr.called("rtpengine.rtpengine_delete0") == [()]
    # Never answered and nothing measured: neither a sample nor "unknown quality".
    assert _observed(ksr) == {} and not ksr.called("xhttp_prom.counter_inc_l0")
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.returns["tm.t_is_canceled"] = 1
    _quality(routing, ksr, mos="4.1", loss="1", jitter="8", roundtrip_us="30000")  # early media
    app.ksr_failure_dispatch(None)
    assert _observed(ksr)["call_mos"] == ["4.1"]


def test_failed_voicebot_call_without_failover_deletes_its_media(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="4000"))
    ksr.returns["tm.t_check_status"] = 1  # 503, and no other voicebot host
    app.ksr_failure_dispatch(None)
    assert ksr.called("rtpengine.rtpengine_delete0") == [()]
    assert not ksr.called("tm.t_relay")


def test_call_to_an_agent_ends_its_media_when_it_fails(routing: ModuleType) -> None:
    app, ksr = make(routing, Request(ruri_user="1001", source=VOICEBOT))
    voicebot_source(ksr)
    ksr.returns["registrar.registered"] = 1
    ksr.returns["registrar.lookup"] = 1
    app.ksr_request_route(None)
    assert ksr.called("tm.t_on_failure") == [("ksr_failure_media",)]
    ksr.calls.clear()
    app.ksr_failure_media(None)
    assert ksr.called("rtpengine.rtpengine_delete0") == [()]
    app, ksr = make(routing, Request(ruri_user="1001", source=VOICEBOT), rtpengine=False)
    voicebot_source(ksr)
    ksr.returns["registrar.registered"] = 1
    ksr.returns["registrar.lookup"] = 1
    app.ksr_request_route(None)
    assert not ksr.called("tm.t_on_failure")
    app.ksr_failure_media(None)
    assert not ksr.called("rtpengine.rtpengine_delete0")


# --- metrics: dispatcher state ---------------------------------------------------------------------


def _ds_list(*targets: tuple[int, str, str]) -> str:
    """A dispatcher.list JSON-RPC reply as jsonrpcs gives it: (set id, URI, FLAGS) per target."""
    sets: dict[int, list[dict[str, Any]]] = {}
    for setid, uri, flags in targets:
        sets.setdefault(setid, []).append({"DEST": {"URI": uri, "FLAGS": flags, "PRIORITY": 0}})
    records = [{"SET": {"ID": s, "TARGETS": t}} for s, t in sets.items()]
    return json.dumps({"jsonrpc": "2.0", "result": {"NRSETS": len(sets), "RECORDS": records}, "id": 1})


def _gauges(ksr: FakeKSR) -> dict[tuple[str, ...], str]:
    out: dict[tuple[str, ...], str] = {}
    for name, value, *labels in ksr.called("xhttp_prom.gauge_set_l2") + ksr.called("xhttp_prom.gauge_set_l1"):
        out[(name, *labels)] = value
    return out


def test_dispatcher_state_becomes_gauges(routing: ModuleType) -> None:
    app, ksr = make(routing)
    ksr.pvs["$jsonrpl(body)"] = _ds_list(
        (1, "sip:10.0.0.3:5080", "AP"), (1, "sip:10.0.0.4:5080", "IP"), (1, "sip:10.0.0.5:5080", "TP")
    )
    assert app.ksr_metrics_timer(None, "rtimer") == 1
    (rpc,) = ksr.called("jsonrpcs.exec")
    assert json.loads(rpc[0])["method"] == "dispatcher.list"
    assert _gauges(ksr) == {
        ("dispatcher_target_up", "1", "sip:10.0.0.3:5080"): "1",
        ("dispatcher_target_up", "1", "sip:10.0.0.4:5080"): "0",  # inactive: failed its probes
        ("dispatcher_target_up", "1", "sip:10.0.0.5:5080"): "1",  # trying: still picked
        ("dispatcher_targets_up", "1"): "2",
    }


def test_dispatcher_gauges_follow_a_target_going_down_and_leaving(routing: ModuleType) -> None:
    app, ksr = make(routing)
    ksr.pvs["$jsonrpl(body)"] = _ds_list((1, "sip:10.0.0.3:5080", "AP"), (1, "sip:10.0.0.4:5080", "AP"))
    app.ksr_metrics_timer(None, "rtimer")
    ksr.calls.clear()
    ksr.pvs["$jsonrpl(body)"] = _ds_list((1, "sip:10.0.0.3:5080", "IP"))  # .4 removed by a reload
    app.ksr_metrics_timer(None, "rtimer")
    assert _gauges(ksr) == {
        ("dispatcher_target_up", "1", "sip:10.0.0.3:5080"): "0",
        ("dispatcher_target_up", "1", "sip:10.0.0.4:5080"): "0",
        ("dispatcher_targets_up", "1"): "0",
    }


def test_unknown_quality_counter_exists_from_the_first_timer_run(routing: ModuleType) -> None:
    app, ksr = make(routing)
    ksr.pvs["$jsonrpl(body)"] = _ds_list((1, "sip:10.0.0.3:5080", "AP"))
    app.ksr_metrics_timer(None, "rtimer")
    app.ksr_metrics_timer(None, "rtimer")
    assert ksr.called("xhttp_prom.counter_inc_l0") == [("call_quality_unknown", 0)]


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"jsonrpc": "2.0", "error": {"code": 500, "message": "No Destination Sets"}, "id": 1}),
        "",
        None,
        "not json",
    ],
    ids=["rpc-error", "empty", "unset", "garbage"],
)
def test_dispatcher_gauges_stay_as_they_are_without_a_list(routing: ModuleType, body: Any) -> None:
    app, ksr = make(routing)
    ksr.pvs["$jsonrpl(body)"] = body
    assert app.ksr_metrics_timer(None, "rtimer") == 1
    assert _gauges(ksr) == {}
    assert ksr.called("warn")
    app, ksr = make(routing)
    ksr.returns["jsonrpcs.exec"] = -1
    app.ksr_metrics_timer(None, "rtimer")
    assert _gauges(ksr) == {} and not ksr.called("pv.get")


# --- kamailio.cfg and the routing agree ------------------------------------------------------------


def _render_cfg(rtpengine: bool = True) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROUTING.parents[1] / "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    values = {
        "kamailio_managed_comment": "test",
        "kamailio_log_level": 2,
        "kamailio_children": 4,
        "kamailio_domain": REALM,
        "kamailio_listen_address": "10.0.0.11",
        "kamailio_udp_port": 5060,
        "kamailio_tls_port": 5061,
        "kamailio_wss_port": 8443,
        "kamailio_metrics_port": 9151,
        "kamailio_ctl_socket": "/run/kamailio/kamailio_ctl",
        "kamailio_fr_timer_ms": 3000,
        "kamailio_fr_inv_timer_ms": 60000,
        "kamailio_db_url": "postgres://kamailio@127.0.0.1:15432/aicc",
        "kamailio_flood_limit": 40,
        "kamailio_flood_ban_s": 300,
        "kamailio_voicebot_set": 1,
        "kamailio_config_dir": "/etc/kamailio",
        "kamailio_dispatcher_ping_interval": 10,
        "kamailio_rtpengine_sockets": ["udp:10.0.0.12:2223"] if rtpengine else [],
        "kamailio_topoh_mask_key": "k",
    }
    return env.get_template("kamailio.cfg.j2").render(**values)


def _modparams(cfg: str, module: str, name: str) -> list[str]:
    import re

    return re.findall(rf'^modparam\("{module}", "{name}", "?([^"\n]*?)"?\)$', cfg, re.M)


def test_cfg_declares_the_metrics_the_routing_writes(routing: ModuleType) -> None:
    cfg = _render_cfg()
    histograms = {
        dict(kv.strip().split("=") for kv in spec.split(";") if kv.strip())["name"]: spec
        for spec in _modparams(cfg, "xhttp_prom", "prom_histogram")
    }
    assert set(histograms) == {"call_mos", "call_jitter_ms", "call_packet_loss_percent", "call_roundtrip_ms"}
    assert "buckets=1:2:2.5:3:3.5:4:4.2:4.4:5;" in histograms["call_mos"]
    assert "buckets=5:10:20:30:50:100:200;" in histograms["call_jitter_ms"]
    assert "buckets=0.5:1:2:3:5:10:20;" in histograms["call_packet_loss_percent"]
    assert "buckets=20:50:100:150:200:300:500;" in histograms["call_roundtrip_ms"]
    assert "name=call_quality_unknown;" in _modparams(cfg, "xhttp_prom", "prom_counter")
    assert set(_modparams(cfg, "xhttp_prom", "prom_gauge")) == {
        "name=dispatcher_target_up; label=setid:target;",
        "name=dispatcher_targets_up; label=setid;",
    }
    # Metrics are kept however long no call ends (the module's default drops them after an hour).
    assert _modparams(cfg, "xhttp_prom", "xhttp_prom_timeout") == ["0"]


def test_cfg_sets_the_quality_pvs_the_routing_reads(routing: ModuleType) -> None:
    cfg = _render_cfg()
    assert _modparams(cfg, "rtpengine", "mos_average_pv") == [routing.PV_MOS]
    assert _modparams(cfg, "rtpengine", "mos_average_packetloss_pv") == [routing.PV_PACKET_LOSS]
    assert _modparams(cfg, "rtpengine", "mos_average_jitter_pv") == [routing.PV_JITTER]
    assert _modparams(cfg, "rtpengine", "mos_average_roundtrip_pv") == [routing.PV_ROUNDTRIP]
    assert not _modparams(_render_cfg(rtpengine=False), "rtpengine", "mos_average_pv")


def test_cfg_runs_the_metrics_timer_in_the_routing(routing: ModuleType) -> None:
    cfg = _render_cfg()
    kemi_block = cfg.split("# --- routing engine: begin", 1)[1].split("# --- routing engine: end", 1)[0]
    assert 'loadmodule "rtimer.so"' in kemi_block and 'loadmodule "jsonrpcs.so"' in kemi_block
    (timer,) = _modparams(kemi_block, "rtimer", "timer")
    assert "interval=10;" in timer and "mode=1;" in timer
    (exec_spec,) = _modparams(kemi_block, "rtimer", "exec")
    route = dict(kv.split("=") for kv in exec_spec.split(";"))["route"]
    assert callable(getattr(routing.kamailio, route))
    # jsonrpcs opens no FIFO or socket of its own.
    assert _modparams(kemi_block, "jsonrpcs", "transport") == ["1"]


def test_cfg_probing_takes_a_silent_gateway_out() -> None:
    """tm answers an unanswered OPTIONS probe with a local 408: a reply code list that accepts it
    (code=408, class=4) would keep a dead voice gateway in rotation, and dispatcher_target_up at 1."""
    (codes,) = _modparams(_render_cfg(), "dispatcher", "ds_ping_reply_codes")
    accepted = set(codes.split(";"))
    assert "class=2" in accepted
    assert not accepted & {"class=4", "code=408"}
    assert not any(c.startswith("class=5") or c.startswith("code=5") for c in accepted)
