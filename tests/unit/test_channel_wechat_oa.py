"""The WeChat official account (微信公众号, channels/wechat_oa.py, routes/wechat_oa.py) against the real app
and database, with the platform's API played by a local HTTP server (uvicorn on 127.0.0.1) that speaks
the documented protocol: cgi-bin/token, message/custom/send recording what it got, and errcodes on
demand. Callbacks are signed and encrypted as the platform does it in safe mode; the crypto is checked
against the published sample of Tencent's WXBizMsgCrypt for official accounts.

Not tested here (no Tencent server is reachable): what Tencent's servers really answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from aicc.appliance.api.config import ConfigError, WeChatOaSettings
from aicc.appliance.channels.tencent_api import ApiError, ApiUnavailable, scrub
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.channels.wechat_oa import WeChatOaApi, WeChatOaHub, url_signature
from aicc.appliance.channels.wecom_crypto import CallbackRefused, WeComCrypto, parse_xml
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    open_api,
)
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, retail_on

# Tencent's published sample for official accounts (the Python WXBizMsgCrypt's Sample.py): settings
# and a message received in safe mode.
SAMPLE_TOKEN = "spamtest"
SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
SAMPLE_APPID = "wx2c2769f8efd9abc2"
SAMPLE_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAF"
    "mOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU"
    "8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszT"
    "fRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9eh"
    "VsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)

APP_ID = "wx0123456789abcdef"
ORIGINAL_ID = "gh_0123456789ab"
SECRET = "oa-app-secret-Q2w3E4r5T6y7U8i9O0p1"
TOKEN = "oaTokenZ8x7C6v5B4n3M2"
AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
WAIT_S = 10.0


# --- crypto and settings ---------------------------------------------------------------------------


def test_the_published_sample_decrypts_with_the_appid_as_receiveid() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_APPID)
    message = parse_xml(
        crypto.open("5d197aaffba7e9b25a30732f161a50dee96bd5fa", "1409735669", "1320562132", SAMPLE_ENCRYPT)
    )
    assert message == {
        "ToUserName": "gh_10f6c3c3ac5a",
        "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "CreateTime": "1409735668",
        "MsgType": "text",
        "Content": "abcdteT",
        "MsgId": "6054768590064713728",
    }
    with pytest.raises(CallbackRefused) as other:
        WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, "wx0000000000000000").decrypt(SAMPLE_ENCRYPT)
    assert other.value.reason == "receiveid"
    # The URL check's signature: SHA-1 of the sorted token, timestamp and nonce, written out again.
    assert url_signature("b", "c", "a") == hashlib.sha1(b"abc").hexdigest()
    assert (
        url_signature(SAMPLE_TOKEN, "1409735669", "1320562132")
        == hashlib.sha1("".join(sorted([SAMPLE_TOKEN, "1409735669", "1320562132"])).encode()).hexdigest()
    )


def _secret_files(folder: Path) -> dict[str, Path]:
    out = {}
    for name, value in {"secret_file": SECRET, "token_file": TOKEN, "aes_key_file": AES_KEY}.items():
        path = folder / f"oa-{name}"
        path.write_text(value + "\n", encoding="utf-8")
        out[name] = path
    return out


def test_settings_read_the_secrets_from_files_and_check_them(tmp_path: Path) -> None:
    files = _secret_files(tmp_path)
    loaded = WeChatOaSettings(enabled=True, app_id=APP_ID, **files).secrets()
    assert (loaded.secret, loaded.token, loaded.encoding_aes_key) == (SECRET, TOKEN, AES_KEY)
    assert SECRET not in repr(loaded) and TOKEN not in repr(loaded) and AES_KEY not in repr(loaded)
    files["aes_key_file"].write_text("short\n")
    with pytest.raises(ConfigError, match=r"wechat_oa\.aes_key_file.*43 characters"):
        WeChatOaSettings(enabled=True, app_id=APP_ID, **files).secrets()
    files["aes_key_file"].write_text(AES_KEY)
    files["token_file"].write_text("\n")
    with pytest.raises(ConfigError, match=r"wechat_oa\.token_file\): empty"):
        WeChatOaSettings(enabled=True, app_id=APP_ID, **files).secrets()
    with pytest.raises(ValueError, match="app_id"):
        WeChatOaSettings(enabled=True, **files)
    with pytest.raises(ValueError, match="app_id"):
        WeChatOaSettings(app_id="ww0123456789abcdef0")
    assert scrub("GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=abc") == (
        "GET /cgi-bin/token?grant_type=client_credential&appid=wx1&secret=***"
    )


# --- the platform's API, played locally -------------------------------------------------------------


@dataclass
class FakeWeChat:
    """The official account platform's API for one AppID: what it was asked and what it answers."""

    url: str = ""
    sent: list[dict[str, Any]] = field(default_factory=list)
    send_script: list[tuple[int, int]] = field(default_factory=list)  # (HTTP status, errcode), then ok
    tokens: list[str] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # answered 40001 (a newer token was fetched)
    expired: set[str] = field(default_factory=set)  # answered 42001

    def sent_to(self, openid: str) -> list[str]:
        return [s["text"]["content"] for s in self.sent if s["touser"] == openid]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/cgi-bin/token")
        async def token(grant_type: str = "", appid: str = "", secret: str = "") -> dict[str, Any]:
            if grant_type != "client_credential":
                return {"errcode": 40002, "errmsg": "invalid grant_type"}
            if appid != APP_ID:
                return {"errcode": 40013, "errmsg": "invalid appid"}
            if secret != SECRET:
                return {
                    "errcode": 40001,
                    "errmsg": "invalid credential, access_token is invalid or not latest",
                }
            self.tokens.append(f"oat-{uuid.uuid4().hex}")
            return {"access_token": self.tokens[-1], "expires_in": 7200}

        @app.post("/cgi-bin/message/custom/send")
        async def send(request: Request) -> Any:
            given = request.query_params.get("access_token", "")
            if given in self.expired:
                return {"errcode": 42001, "errmsg": "access_token expired"}
            if given in self.stale or given not in self.tokens:
                return {
                    "errcode": 40001,
                    "errmsg": "invalid credential, access_token is invalid or not latest",
                }
            body = await request.json()
            if self.send_script:
                status, errcode = self.send_script.pop(0)
                if status != 200:
                    return PlainTextResponse("upstream trouble", status_code=status)
                if errcode:
                    return {"errcode": errcode, "errmsg": "scripted failure"}
            ok = (
                body.get("msgtype") == "text"
                and body.get("touser")
                and 1 <= len(body["text"]["content"].encode()) <= 2048
            )
            if not ok:
                return {"errcode": 40003, "errmsg": "invalid openid or parameter"}
            self.sent.append(body)
            return {"errcode": 0, "errmsg": "ok"}

        return app


@pytest.fixture(scope="module")
def wechat_server() -> Iterator[FakeWeChat]:
    fake = FakeWeChat()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # No access log: the platform's side would log our access tokens, which is not ours to test.
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fake platform did not start"
        time.sleep(0.05)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _openid() -> str:
    return "o" + base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[:27]


@dataclass
class Site:
    api: Api
    fake: FakeWeChat
    hub: WeChatOaHub
    crypto: WeComCrypto = field(default_factory=lambda: WeComCrypto(TOKEN, AES_KEY, APP_ID))

    def refused(self, reason: str) -> float:
        return float(self.hub.metrics.refused.labels(reason)._value.get())

    def envelope(
        self,
        plain: str,
        *,
        crypto: WeComCrypto | None = None,
        tamper: Callable[[str], str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """A callback POST as the platform sends it in safe mode."""
        encrypted = (crypto or self.crypto).encrypt(plain.encode())
        if tamper is not None:
            encrypted = tamper(encrypted)
        timestamp, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**9)
        params = {
            "signature": url_signature(TOKEN, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": "ignored-here",
            "encrypt_type": "aes",
            "msg_signature": self.crypto.sign(timestamp, nonce, encrypted),
        }
        body = (
            f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName>"
            f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        )
        return params, body.encode()

    @staticmethod
    def text(openid: str, content: str, *, msgid: str | None = None, at: float | None = None) -> str:
        return (
            f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{int(at if at is not None else time.time())}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{msgid or uuid.uuid4().int % 10**19}</MsgId></xml>"
        )

    @staticmethod
    def image(openid: str) -> str:
        return (
            f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[image]]></MsgType>"
            "<PicUrl><![CDATA[http://mmbiz.example/pic]]></PicUrl><MediaId><![CDATA[media]]></MediaId>"
            f"<MsgId>{uuid.uuid4().int % 10**19}</MsgId></xml>"
        )

    @staticmethod
    def event(openid: str, event: str) -> str:
        return (
            f"<xml><ToUserName><![CDATA[{ORIGINAL_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
            f"</FromUserName><CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[{event}]]></Event></xml>"
        )

    async def post(self, params: dict[str, str], body: bytes) -> Any:
        return await self.api.client.post("/wechat-oa/v1/callback", params=params, content=body)

    async def says(self, plain: str) -> None:
        r = await self.post(*self.envelope(plain))
        assert r.status_code == 200 and r.text == "success", r.text
        await self.hub.drain()

    async def conversation_of(self, openid: str) -> dict[str, Any]:
        async with self.api.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT conversation_id FROM aicc.wechat_oa_conversations WHERE openid = %s", (openid,)
            )
            row = await cur.fetchone()
        assert row is not None, "no conversation for the follower"
        r = await self.api.client.get(
            f"/api/conversations/{row['conversation_id']}", headers=self.api.auth("agent")
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_sent(self, openid: str, count: int) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        while len(self.fake.sent_to(openid)) < count:
            assert time.monotonic() < deadline, f"only {self.fake.sent_to(openid)} sent"
            await asyncio.sleep(0.05)
        return self.fake.sent_to(openid)


@contextlib.asynccontextmanager
async def oa_site(
    db: ApiDatabase,
    users: dict[str, ApiUser],
    fake: FakeWeChat,
    folder: Path,
    *,
    bot: bool = True,
    **extra: Any,
) -> AsyncIterator[Site]:
    settings_ = {
        "enabled": True,
        "app_id": APP_ID,
        "api_base_url": fake.url,
        "retry_base_s": 0.01,
        "send_attempts": 3,
        **_secret_files(folder),
        **extra,
    }
    async with open_api(db, users, wechat_oa=settings_) as api:
        runtime = BotRuntime(FakeLLM({"order": STATUS, "订单": STATUS}), retail_on(FakeConnector()), "retail")
        api.app.state.webchat.use_runtime(runtime if bot else None)
        hub: WeChatOaHub = api.app.state.wechat_oa
        try:
            yield Site(api, fake, hub)
        finally:
            await hub.close()


@pytest_asyncio.fixture(name="site")
async def site_fixture(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wechat_server: FakeWeChat, tmp_path: Path
) -> AsyncIterator[Site]:
    async with oa_site(api_db, api_users, wechat_server, tmp_path) as opened:
        yield opened


def _count(db: ApiDatabase, query: str, *args: Any) -> int:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


# --- callbacks ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_console_url_check_gets_echostr_back(site: Site) -> None:
    ts, nonce, echostr = "1700000000", "123456", "8163925184732"
    params = {
        "signature": url_signature(TOKEN, ts, nonce),
        "timestamp": ts,
        "nonce": nonce,
        "echostr": echostr,
    }
    r = await site.api.client.get("/wechat-oa/v1/callback", params=params)
    assert r.status_code == 200 and r.text == echostr
    before = site.refused("signature")
    r = await site.api.client.get("/wechat-oa/v1/callback", params={**params, "nonce": "654321"})
    assert r.status_code == 403 and site.refused("signature") == before + 1
    r = await site.api.client.get("/wechat-oa/v1/callback", params={**params, "echostr": ""})
    assert r.status_code == 400


@pytest.mark.asyncio
async def test_the_channel_is_off_unless_enabled(api_db: ApiDatabase, api_users: dict[str, ApiUser]) -> None:
    async with open_api(api_db, api_users) as api:
        r = await api.client.post("/wechat-oa/v1/callback?timestamp=1&nonce=2", content=b"<xml/>")
        assert r.status_code == 404
        assert (await api.client.get("/wechat-oa/v1/callback")).status_code == 404


@pytest.mark.asyncio
async def test_a_followers_message_becomes_a_conversation_and_the_bot_answers_through_custom_send(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    openid = _openid()
    await site.says(site.text(openid, "what is the status of order 100234"))
    await site.says(site.image(openid))
    sent = await site.wait_sent(openid, 2)
    deadline = time.monotonic() + WAIT_S
    while "Order 100234 has shipped." not in sent:
        assert time.monotonic() < deadline, sent
        await asyncio.sleep(0.05)
        sent = site.fake.sent_to(openid)
    assert sent[0] == RETAIL.prompt("greeting", "en")

    detail = await site.conversation_of(openid)
    assert detail["channel"] == "wechat_oa" and detail["handler"] == "bot" and detail["language"] == "en"
    assert {"kind": "openid", "value": openid} in detail["customer"]["identities"]
    said = [(m["author"], m["body"]) for m in detail["messages"]]
    assert said[:2] == [("customer", "what is the status of order 100234"), ("bot", sent[0])]
    notes = [body for author, body in said if author == "system"]
    assert len(notes) == 1 and "image" in notes[0] and "not supported yet" in notes[0]
    assert ("bot", "Order 100234 has shipped.") in said
    await site.hub.drain()
    detail = await site.conversation_of(openid)
    assert all(m["delivered_at"] for m in detail["messages"] if m["author"] == "bot")
    assert site.hub.metrics.callbacks.labels("message")._value.get() >= 2

    # Secrets never logged: not the AppSecret, the Token, the key, an access token nor the OpenID.
    text = caplog.text
    assert "HTTP Request" in text and "access_token=***" in text and "secret=***" in text
    for secret in (SECRET, TOKEN, AES_KEY, openid, *site.fake.tokens):
        assert secret not in text


@pytest.mark.asyncio
async def test_a_callback_repeated_by_the_platform_is_stored_once(site: Site) -> None:
    openid = _openid()
    params, body = site.envelope(site.text(openid, "我的订单100234到哪了", msgid="6054768590064713728"))
    before = site.hub.metrics.duplicates._value.get()
    for _ in range(3):  # the platform retries a callback it got no answer to within 5 s, 3 times
        r = await site.post(params, body)
        assert r.status_code == 200 and r.text == "success"
    await site.hub.drain()
    assert site.hub.metrics.duplicates._value.get() == before + 2
    detail = await site.conversation_of(openid)
    assert [m["body"] for m in detail["messages"] if m["author"] == "customer"] == ["我的订单100234到哪了"]
    assert detail["language"] == "zh"


@pytest.mark.asyncio
async def test_a_new_followers_simultaneous_messages_make_one_conversation(site: Site) -> None:
    site.api.app.state.webchat.use_runtime(None)
    openid = _openid()
    posts = [site.post(*site.envelope(site.text(openid, f"第{i}条"))) for i in range(4)]
    assert [r.status_code for r in await asyncio.gather(*posts)] == [200] * 4
    await site.hub.drain()
    query = "SELECT count(*) FROM aicc.wechat_oa_conversations WHERE openid = %s"
    assert _count(site.api.db, query, openid) == 1
    detail = await site.conversation_of(openid)
    assert sorted(m["body"] for m in detail["messages"]) == [f"第{i}条" for i in range(4)]


@pytest.mark.asyncio
async def test_forged_plaintext_altered_and_foreign_callbacks_are_refused_and_store_nothing(
    site: Site,
) -> None:
    openid = _openid()
    plain = site.text(openid, "hello")

    params, body = site.envelope(plain)
    before = site.refused("signature")
    r = await site.post({**params, "msg_signature": "0" * 40}, body)
    assert r.status_code == 403 and site.refused("signature") == before + 1

    before = site.refused("malformed")
    # Plaintext mode: the body is not signed, so it is refused whatever the query's signature says.
    plain_params = {k: v for k, v in params.items() if k not in ("encrypt_type", "msg_signature")}
    r = await site.post(plain_params, plain.encode())
    assert r.status_code == 400 and "安全模式" in r.json()["error"]["message"]
    r = await site.post(params, b"<xml><ToUserName>x</ToUserName></xml>")
    assert r.status_code == 400
    no_msgid = plain.replace("<MsgId>", "<NotMsgId>").replace("</MsgId>", "</NotMsgId>")
    r = await site.post(*site.envelope(no_msgid))
    assert r.status_code == 400 and site.refused("malformed") == before + 3

    def flip_first_byte(encrypted: str) -> str:
        raw = bytearray(base64.b64decode(encrypted))
        raw[0] ^= 0x80  # garbles the random block and flips the length's top bit
        return base64.b64encode(bytes(raw)).decode()

    before = site.refused("decrypt")
    r = await site.post(*site.envelope(plain, tamper=flip_first_byte))  # re-signed: the token leaked
    assert r.status_code == 400 and site.refused("decrypt") == before + 1

    before = site.refused("receiveid")
    r = await site.post(*site.envelope(plain, crypto=WeComCrypto(TOKEN, AES_KEY, "wx9999999999999999")))
    assert r.status_code == 403 and site.refused("receiveid") == before + 1

    before = site.refused("too_large")
    r = await site.post(params, b"<xml>" + b" " * 70_000 + b"</xml>")
    assert r.status_code == 413 and site.refused("too_large") == before + 1
    assert _count(site.api.db, "SELECT count(*) FROM aicc.wechat_oa_messages WHERE openid = %s", openid) == 0


@pytest.mark.asyncio
async def test_subscribe_and_unsubscribe_are_counted_and_store_nothing(site: Site) -> None:
    openid = _openid()
    events = site.hub.metrics.events
    before = {e: events.labels(e)._value.get() for e in ("subscribe", "unsubscribe", "other")}
    for event in ("subscribe", "CLICK", "unsubscribe"):
        await site.says(site.event(openid, event))
    assert {e: events.labels(e)._value.get() - before[e] for e in before} == {
        "subscribe": 1,
        "unsubscribe": 1,
        "other": 1,
    }
    assert _count(site.api.db, "SELECT count(*) FROM aicc.wechat_oa_messages WHERE openid = %s", openid) == 0
    assert site.fake.sent_to(openid) == []


@pytest.mark.asyncio
async def test_a_follower_over_the_rate_limit_is_refused(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wechat_server: FakeWeChat, tmp_path: Path
) -> None:
    async with oa_site(api_db, api_users, wechat_server, tmp_path, bot=False, rate_messages=2) as site:
        openid = _openid()
        for i in range(3):
            await site.says(site.text(openid, f"第{i}条"))
        assert site.refused("rate_limited") == 1
        detail = await site.conversation_of(openid)
        assert [m["body"] for m in detail["messages"]] == ["第0条", "第1条"]
        assert detail["handler"] == "queue"  # no bot: straight to the agents


# --- replies --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_reply_within_48_hours_and_5_messages(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wechat_server: FakeWeChat, tmp_path: Path
) -> None:
    async with oa_site(api_db, api_users, wechat_server, tmp_path, bot=False) as site:
        openid = _openid()
        await site.says(site.text(openid, "请帮我查一下退款"))
        cid = (await site.conversation_of(openid))["id"]
        url = f"/api/conversations/{cid}/messages"
        agent = site.api.auth("agent")
        long = "退款" * 1000  # 6,000 bytes: three parts of at most 2,048
        r = await site.api.client.post(url, json={"body": long}, headers=agent)
        assert r.status_code == 201, r.text
        for text in ("第二条", "第三条"):
            assert (await site.api.client.post(url, json={"body": text}, headers=agent)).status_code == 201
        r = await site.api.client.post(url, json={"body": "第六条"}, headers=agent)
        assert r.status_code == 409 and "at most 5 messages" in r.json()["error"]["message"]
        assert "WeChat official account" in r.json()["error"]["message"]
        sent = await site.wait_sent(openid, 5)
        assert "".join(sent[:3]) == long and sent[3:] == ["第二条", "第三条"]
        # The follower writes again: five more may go.
        await site.says(site.text(openid, "好的"))
        assert (await site.api.client.post(url, json={"body": "第六条"}, headers=agent)).status_code == 201
        await site.wait_sent(openid, 6)
        await site.hub.drain()
        detail = await site.conversation_of(openid)
        assert all(m["delivered_at"] for m in detail["messages"] if m["author"] == "agent")

        old = _openid()  # wrote 49 hours ago, and nothing since
        await site.says(site.text(old, "在吗", at=time.time() - 49 * 3600))
        cid = (await site.conversation_of(old))["id"]
        r = await site.api.client.post(
            f"/api/conversations/{cid}/messages", json={"body": "在"}, headers=agent
        )
        assert r.status_code == 409 and "48 hours" in r.json()["error"]["message"]
        assert site.fake.sent_to(old) == []
        assert site.hub.metrics.replies_refused.labels("48h")._value.get() == 1


@pytest.mark.asyncio
async def test_sends_are_retried_then_dead_lettered_for_admins(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    site.api.app.state.webchat.use_runtime(None)
    openid = _openid()
    await site.says(site.text(openid, "hello"))
    cid = (await site.conversation_of(openid))["id"]
    url = f"/api/conversations/{cid}/messages"
    agent = site.api.auth("agent")

    site.fake.send_script[:] = [(503, 0), (200, -1)]  # a 5xx, then busy, then taken
    assert (await site.api.client.post(url, json={"body": "retried"}, headers=agent)).status_code == 201
    await site.hub.drain()
    assert site.fake.sent_to(openid) == ["retried"]
    query = "SELECT attempts FROM aicc.wechat_oa_messages WHERE direction = 'out' AND openid = %s"
    assert _count(site.api.db, query + " AND status = 'sent'", openid) == 3

    site.fake.send_script[:] = [(502, 0)] * 3
    r = await site.api.client.post(url, json={"body": "lost"}, headers=agent)
    lost = r.json()["id"]
    await site.hub.drain()
    site.fake.send_script[:] = [(200, 45015)]  # "response out of time limit": not retried
    r = await site.api.client.post(url, json={"body": "refused"}, headers=agent)
    refused = r.json()["id"]
    await site.hub.drain()
    assert site.fake.sent_to(openid) == ["retried"]
    assert "errcode 45015: scripted failure" in caplog.text

    r = await site.api.client.get(
        "/api/channels/dead-letters?channel=wechat_oa", headers=site.api.auth("admin")
    )
    assert r.status_code == 200, r.text
    mine = {d["message_id"]: d for d in r.json() if d["conversation_id"] == cid}
    assert mine[lost]["attempts"] == 3 and "HTTP 502" in mine[lost]["error"]
    assert mine[refused]["attempts"] == 1 and mine[refused]["error"] == "errcode 45015: scripted failure"
    assert mine[lost]["recipient"] == openid and mine[lost]["channel"] == "wechat_oa"
    detail = await site.conversation_of(openid)
    undelivered = {m["id"] for m in detail["messages"] if m["delivered_at"] is None}
    assert {lost, refused} <= undelivered
    assert site.hub.metrics.sends.labels("dead")._value.get() == 2


@pytest.mark.asyncio
async def test_a_stale_or_expired_access_token_is_renewed_once(site: Site) -> None:
    site.api.app.state.webchat.use_runtime(None)
    openid = _openid()
    await site.says(site.text(openid, "hi"))
    cid = (await site.conversation_of(openid))["id"]
    url = f"/api/conversations/{cid}/messages"
    agent = site.api.auth("agent")
    assert (await site.api.client.post(url, json={"body": "first"}, headers=agent)).status_code == 201
    await site.wait_sent(openid, 1)  # the hub holds a token now
    for i, kind in enumerate(("stale", "expired")):
        fetched = len(site.fake.tokens)
        getattr(site.fake, kind).update(site.fake.tokens)  # 40001, then 42001
        r = await site.api.client.post(url, json={"body": f"still here {i}"}, headers=agent)
        assert r.status_code == 201
        assert (await site.wait_sent(openid, i + 2))[-1] == f"still here {i}"
        assert len(site.fake.tokens) == fetched + 1


@pytest.mark.asyncio
async def test_the_api_client_tells_network_errors_from_refusals(wechat_server: FakeWeChat) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        api = WeChatOaApi(f"http://127.0.0.1:{closed.getsockname()[1]}", APP_ID, SECRET, timeout_s=2)
        with pytest.raises(ApiUnavailable, match="token"):
            await api.send_text("openid", "hi")
        await api.aclose()
    finally:
        closed.close()
    api = WeChatOaApi(wechat_server.url, APP_ID, "not-the-secret")
    with pytest.raises(ApiError) as refused:
        await api.send_text("openid", "hi")
    assert (refused.value.api, refused.value.errcode) == ("token", 40001)  # not fetched again and again
    assert "not-the-secret" not in repr(api)
    await api.aclose()
