"""WeCom customer service (企业微信 微信客服, channels/wecom*.py, routes/wecom.py) against the real app and
database, with WeCom's API played by a local HTTP server (uvicorn on 127.0.0.1) that speaks the
documented protocol: gettoken, kf/sync_msg with cursor paging, kf/send_msg recording what it got, and
errcodes on demand. The callbacks are encrypted and signed as WeCom does it; the crypto is checked
against the published sample of Tencent's WXBizMsgCrypt and an independent computation.

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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.appliance.api.config import ConfigError, WeComSettings
from aicc.appliance.channels.textbot import BotRuntime
from aicc.appliance.channels.wecom import WeComHub
from aicc.appliance.channels.wecom_api import WeComApi, WeComError, WeComUnavailable, scrub, split_text
from aicc.appliance.channels.wecom_crypto import CallbackRefused, WeComCrypto, parse_xml, signature
from tests.unit.api_support import (
    Api,
    ApiDatabase,
    ApiUser,
    api_db_fixture,  # noqa: F401
    api_users_fixture,  # noqa: F401
    open_api,
)
from tests.unit.test_voice_fakes import RETAIL, FakeConnector, FakeLLM, retail_on

# Tencent's published sample (weworkapi_python callback/Sample.py): settings and two requests.
SAMPLE_TOKEN = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo"
SAMPLE_KEY = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"
SAMPLE_CORP = "ww1436e0e65a779aee"

CORP = "ww0123456789abcdef"
SECRET = "kf-secret-Zx8Qw2Lm5Np7Rt9Vb1Cd3Fg6Hj4Kl0"
TOKEN = "cbTokenQ7wE9rT2yU4iO6pA8s"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
WAIT_S = 10.0


# --- crypto ---------------------------------------------------------------------------------------


def test_the_published_sample_verifies_and_decrypts() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_CORP)
    echo = "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=="
    assert crypto.open("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb", "1476416373", "47744683", echo) == (
        b"1288432023552776189"
    )
    body = (
        "<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName>\n<Encrypt><![CDATA[Kl7kjoSf6DMD1zh7"
        "rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+"
        "kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010"
        "wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iEL"
        "cDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+]]>"
        "</Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>"
    )
    encrypted = parse_xml(body.encode())["Encrypt"]
    message = crypto.open("0c3914025cb4b4d68103f6bfc8db550f79dcf48e", "1476422779", "1597212914", encrypted)
    fields = parse_xml(message)
    assert fields["FromUserName"] == "ChenJiaShun" and fields["Content"] == "你好"
    assert fields["MsgId"] == "1456453720"
    # The sample's signature with one character changed, and the sample under another corp id.
    with pytest.raises(CallbackRefused) as bad:
        crypto.open("012bc692d0a58dd4b10f8dfe5c4ac00ae211ebec", "1476416373", "47744683", echo)
    assert bad.value.reason == "signature"
    with pytest.raises(CallbackRefused) as other:
        WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, "ww0000000000000000").decrypt(echo)
    assert other.value.reason == "receiveid"


def _independent_encrypt(key_text: str, prefix: bytes, message: bytes, receive_id: bytes) -> str:
    """The reference's algorithm written out again with `cryptography` alone."""
    key = base64.b64decode(key_text + "=")
    plain = prefix + len(message).to_bytes(4, "big") + message + receive_id
    n = 32 - len(plain) % 32
    plain += bytes([n] * n)
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(enc.update(plain) + enc.finalize()).decode()


def test_encryption_with_a_fixed_prefix_is_the_reference_algorithm() -> None:
    crypto = WeComCrypto(SAMPLE_TOKEN, SAMPLE_KEY, SAMPLE_CORP)
    prefix = b"1234567890123456"  # the reference draws 16 digits
    for message in (b"", b"1288432023552776189", "<xml><Content>你好</Content></xml>".encode(), b"x" * 42):
        ours = crypto.encrypt(message, random_prefix=prefix)
        assert ours == _independent_encrypt(SAMPLE_KEY, prefix, message, SAMPLE_CORP.encode())
        assert len(base64.b64decode(ours)) % 32 == 0
        assert crypto.decrypt(ours) == message
    # A plaintext that fills its blocks exactly (16 + 4 + 26 + 18 = 64 bytes) gets a whole block of padding.
    exact = b"y" * (64 - 16 - 4 - len(SAMPLE_CORP))
    assert len(base64.b64decode(crypto.encrypt(exact, random_prefix=prefix))) == 96
    assert signature("b", "a", "d", "c") == hashlib.sha1(b"abcd").hexdigest()


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("你好订单物流退款😀"), max_size=600))
def test_any_utf8_message_survives_the_round_trip(text: str) -> None:
    crypto = WeComCrypto(TOKEN, AES_KEY, CORP)
    encrypted = crypto.encrypt(text.encode())
    sig = crypto.sign("1700000000", "nonce", encrypted)
    assert crypto.open(sig, "1700000000", "nonce", encrypted).decode() == text


def test_a_bad_key_and_unsafe_xml_are_refused() -> None:
    for key in ("short", AES_KEY + "H", AES_KEY[:-1] + "="):
        with pytest.raises(ValueError, match="43"):
            WeComCrypto(TOKEN, key, CORP)
    lol = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><xml><A>&b;</A></xml>'
    )
    for data in (lol, b"<xml><A>&undefined;</A></xml>", b"<xml><A>", b"not xml", b"<a>" * 40000):
        with pytest.raises(CallbackRefused) as refused:
            parse_xml(data)
        assert refused.value.reason == "malformed"
    assert parse_xml(b"<xml><A><![CDATA[<b>&amp;]]></A><B>x<i>y</i></B></xml>") == {"A": "<b>&amp;", "B": "x"}


def test_settings_read_the_secrets_from_files_and_check_the_key(tmp_path: Path) -> None:
    files = _secret_files(tmp_path)
    loaded = WeComSettings(enabled=True, corp_id=CORP, **files).secrets()
    assert (loaded.secret, loaded.token, loaded.encoding_aes_key) == (SECRET, TOKEN, AES_KEY)
    assert SECRET not in repr(loaded) and TOKEN not in repr(loaded)
    files["aes_key_file"].write_text(AES_KEY[:-2] + "\n")
    with pytest.raises(ConfigError, match="43 characters"):
        WeComSettings(enabled=True, corp_id=CORP, **files).secrets()
    with pytest.raises(ValueError, match="corp_id"):
        WeComSettings(enabled=True, **files)
    assert scrub("GET /cgi-bin/gettoken?corpid=ww1&corpsecret=abc&x=1") == (
        "GET /cgi-bin/gettoken?corpid=ww1&corpsecret=***&x=1"
    )


def test_long_texts_are_split_between_characters() -> None:
    text = "订单" * 1500 + "\n" + "a" * 10
    parts = split_text(text)
    assert "".join(parts) == text and all(len(p.encode()) <= 2048 for p in parts) and len(parts) == 5
    assert split_text("hello") == ["hello"]


# --- WeCom's API, played locally --------------------------------------------------------------------


@dataclass
class FakeWeCom:
    """WeCom's API for one corp: what it was asked and what it answers."""

    url: str = ""
    page_size: int = 1
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per open_kfid
    sync_tokens: set[str] = field(default_factory=set)
    sync_requests: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    send_script: list[tuple[int, int]] = field(default_factory=list)  # (HTTP status, errcode), then ok
    tokens: list[str] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)

    def customer_says(
        self,
        open_kfid: str,
        user: str,
        text: str | None = None,
        *,
        msgtype: str = "text",
        at: float | None = None,
    ) -> str:
        msgid = "msg" + uuid.uuid4().hex
        entry: dict[str, Any] = {
            "msgid": msgid,
            "open_kfid": open_kfid,
            "external_userid": user,
            "send_time": int(at if at is not None else time.time()),
            "origin": 3,
            "msgtype": msgtype,
        }
        if msgtype == "text":
            entry["text"] = {"content": text}
        else:
            entry[msgtype] = {"media_id": "MEDIA"}
        self.messages.setdefault(open_kfid, []).append(entry)
        return msgid

    def sent_to(self, user: str) -> list[str]:
        return [s["text"]["content"] for s in self.sent if s["touser"] == user]

    def app(self) -> FastAPI:
        app = FastAPI()

        def token_error(request: Request) -> dict[str, Any] | None:
            token = request.query_params.get("access_token", "")
            if token in self.expired:
                return {"errcode": 42001, "errmsg": "access_token expired"}
            if token not in self.tokens:
                return {"errcode": 40014, "errmsg": "invalid access_token"}
            return None

        @app.get("/cgi-bin/gettoken")
        async def gettoken(corpid: str = "", corpsecret: str = "") -> dict[str, Any]:
            if (corpid, corpsecret) != (CORP, SECRET):
                return {"errcode": 40001, "errmsg": "invalid credential"}
            self.tokens.append(f"at-{uuid.uuid4().hex}")
            return {"errcode": 0, "errmsg": "ok", "access_token": self.tokens[-1], "expires_in": 7200}

        @app.post("/cgi-bin/kf/sync_msg")
        async def sync_msg(request: Request) -> dict[str, Any]:
            if (error := token_error(request)) is not None:
                return error
            body = await request.json()
            self.sync_requests.append(body)
            if body.get("token") not in self.sync_tokens:
                return {"errcode": 95007, "errmsg": "invalid msg token"}
            msgs = self.messages.get(body["open_kfid"], [])
            start = int(body.get("cursor") or 0)
            page = msgs[start : start + min(self.page_size, body["limit"])]
            end = start + len(page)
            return {
                "errcode": 0,
                "errmsg": "ok",
                "next_cursor": str(end),
                "has_more": int(end < len(msgs)),
                "msg_list": page,
            }

        @app.post("/cgi-bin/kf/send_msg")
        async def send_msg(request: Request) -> Any:
            if (error := token_error(request)) is not None:
                return error
            body = await request.json()
            if self.send_script:
                status, errcode = self.send_script.pop(0)
                if status != 200:
                    from fastapi.responses import PlainTextResponse

                    return PlainTextResponse("upstream trouble", status_code=status)
                if errcode:
                    return {"errcode": errcode, "errmsg": "scripted failure"}
            ok = (
                body.get("msgtype") == "text"
                and 1 <= len(body.get("msgid", "")) <= 32
                and len(body["text"]["content"].encode()) <= 2048
                and body.get("touser")
                and body.get("open_kfid")
            )
            if not ok:
                return {"errcode": 40058, "errmsg": "invalid parameter"}
            self.sent.append(body)
            return {"errcode": 0, "errmsg": "ok", "msgid": body["msgid"]}

        return app


@pytest.fixture(scope="module")
def wecom_server() -> Iterator[FakeWeCom]:
    fake = FakeWeCom()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    fake.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # No access log: WeCom's side would log the access tokens of our requests, which is not ours to test.
    server = uvicorn.Server(uvicorn.Config(fake.app(), log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fake WeCom did not start"
        time.sleep(0.05)
    try:
        yield fake
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _secret_files(folder: Path) -> dict[str, Path]:
    files = {"secret_file": SECRET, "token_file": TOKEN, "aes_key_file": AES_KEY}
    out = {}
    for name, value in files.items():
        path = folder / name
        path.write_text(value + "\n", encoding="utf-8")
        out[name] = path
    return out


@dataclass
class Site:
    api: Api
    fake: FakeWeCom
    hub: WeComHub
    crypto: WeComCrypto
    open_kfid: str = field(default_factory=lambda: "wk" + uuid.uuid4().hex[:16])

    def refused(self, reason: str) -> float:
        return float(self.hub.metrics.refused.labels(reason)._value.get())

    def event(self, open_kfid: str | None = None) -> str:
        token = "ENC" + uuid.uuid4().hex
        self.fake.sync_tokens.add(token)
        return (
            f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><CreateTime>{int(time.time())}</CreateTime>"
            "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>"
            f"<Token><![CDATA[{token}]]></Token>"
            f"<OpenKfId><![CDATA[{open_kfid or self.open_kfid}]]></OpenKfId></xml>"
        )

    def envelope(
        self, plain: str, *, crypto: WeComCrypto | None = None, tamper: Callable[[str], str] | None = None
    ) -> tuple[dict[str, str], bytes]:
        encrypted = (crypto or self.crypto).encrypt(plain.encode())
        if tamper is not None:
            encrypted = tamper(encrypted)
        timestamp, nonce = str(int(time.time())), str(uuid.uuid4().int % 10**9)
        params = {
            "msg_signature": self.crypto.sign(timestamp, nonce, encrypted),
            "timestamp": timestamp,
            "nonce": nonce,
        }
        body = (
            f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
            "<AgentID><![CDATA[]]></AgentID></xml>"
        )
        return params, body.encode()

    async def post(self, params: dict[str, str], body: bytes) -> Any:
        return await self.api.client.post("/wecom/v1/callback", params=params, content=body)

    async def notify(self, open_kfid: str | None = None) -> None:
        """WeCom's callback that there is something new on the account, and the sync it starts."""
        r = await self.post(*self.envelope(self.event(open_kfid)))
        assert r.status_code == 200 and r.text == "success", r.text
        await self.hub.drain()

    async def conversation_of(self, user: str) -> dict[str, Any]:
        async with self.api.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT conversation_id FROM aicc.wecom_conversations "
                "WHERE open_kfid = %s AND external_userid = %s",
                (self.open_kfid, user),
            )
            row = await cur.fetchone()
        assert row is not None, "no conversation for the customer"
        r = await self.api.client.get(
            f"/api/conversations/{row['conversation_id']}", headers=self.api.auth("agent")
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def wait_sent(self, user: str, count: int) -> list[str]:
        deadline = time.monotonic() + WAIT_S
        while len(self.fake.sent_to(user)) < count:
            assert time.monotonic() < deadline, f"only {self.fake.sent_to(user)} sent"
            await asyncio.sleep(0.05)
        return self.fake.sent_to(user)


@contextlib.asynccontextmanager
async def wecom_site(
    db: ApiDatabase,
    users: dict[str, ApiUser],
    fake: FakeWeCom,
    folder: Path,
    *,
    bot: bool = True,
    **extra: Any,
) -> AsyncIterator[Site]:
    settings_ = {
        "enabled": True,
        "corp_id": CORP,
        "api_base_url": fake.url,
        "retry_base_s": 0.01,
        "send_attempts": 3,
        **_secret_files(folder),
        **extra,
    }
    async with open_api(db, users, wecom=settings_) as api:
        runtime = BotRuntime(FakeLLM({"order": STATUS, "订单": STATUS}), retail_on(FakeConnector()), "retail")
        api.app.state.webchat.use_runtime(runtime if bot else None)
        hub: WeComHub = api.app.state.wecom
        try:
            yield Site(api, fake, hub, WeComCrypto(TOKEN, AES_KEY, CORP))
        finally:
            await hub.close()


@pytest_asyncio.fixture(name="site")
async def site_fixture(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wecom_server: FakeWeCom, tmp_path: Path
) -> AsyncIterator[Site]:
    async with wecom_site(api_db, api_users, wecom_server, tmp_path) as opened:
        yield opened


def _count(db: ApiDatabase, query: str, *args: Any) -> int:
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(query, args).fetchone()
    assert row is not None
    return int(row[0])


# --- callbacks ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_console_url_check_gets_the_decrypted_echostr(site: Site) -> None:
    echostr = site.crypto.encrypt(b"4598621357426547891")
    ts, nonce = "1700000000", "123456"
    params = {"msg_signature": site.crypto.sign(ts, nonce, echostr), "timestamp": ts, "nonce": nonce}
    r = await site.api.client.get("/wecom/v1/callback", params={**params, "echostr": echostr})
    assert r.status_code == 200 and r.text == "4598621357426547891"
    before = site.refused("signature")
    r = await site.api.client.get(
        "/wecom/v1/callback", params={**params, "nonce": "654321", "echostr": echostr}
    )
    assert r.status_code == 403 and site.refused("signature") == before + 1


@pytest.mark.asyncio
async def test_wecom_is_off_unless_enabled(api_db: ApiDatabase, api_users: dict[str, ApiUser]) -> None:
    async with open_api(api_db, api_users) as api:
        r = await api.client.post("/wecom/v1/callback?msg_signature=a&timestamp=1&nonce=2", content=b"<xml/>")
        assert r.status_code == 404
        assert (await api.client.get("/wecom/v1/callback")).status_code == 404


@pytest.mark.asyncio
async def test_a_customers_message_becomes_a_conversation_and_the_bot_answers_through_send_msg(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = "wm" + uuid.uuid4().hex
    site.fake.customer_says(site.open_kfid, user, "what is the status of order 100234")
    site.fake.customer_says(site.open_kfid, user, msgtype="image")
    await site.notify()
    # Two pages of one message each, the second from the first's cursor; the cursor saved.
    mine = [q for q in site.fake.sync_requests if q["open_kfid"] == site.open_kfid]
    assert [q.get("cursor") for q in mine] == [None, "1"]
    assert (
        _count(
            site.api.db,
            "SELECT count(*) FROM aicc.wecom_cursors WHERE open_kfid = %s AND cursor = '2'",
            site.open_kfid,
        )
        == 1
    )
    sent = await site.wait_sent(user, 2)
    deadline = time.monotonic() + WAIT_S
    while "Order 100234 has shipped." not in sent:
        assert time.monotonic() < deadline, sent
        await asyncio.sleep(0.05)
        sent = site.fake.sent_to(user)
    assert sent[0] == RETAIL.prompt("greeting", "en")
    assert all(s["open_kfid"] == site.open_kfid for s in site.fake.sent)

    detail = await site.conversation_of(user)
    assert detail["channel"] == "wecom" and detail["handler"] == "bot" and detail["language"] == "en"
    assert {"kind": "wecom", "value": user} in detail["customer"]["identities"]
    said = [(m["author"], m["body"]) for m in detail["messages"]]
    # The bot greets after the first message (there is no visitor opening a chat as on the web).
    assert said[:2] == [("customer", "what is the status of order 100234"), ("bot", sent[0])]
    notes = [body for author, body in said if author == "system"]
    assert len(notes) == 1 and "image" in notes[0] and "not supported yet" in notes[0]
    assert ("bot", "Order 100234 has shipped.") in said
    await site.hub.drain()
    detail = await site.conversation_of(user)
    assert all(m["delivered_at"] for m in detail["messages"] if m["author"] == "bot")

    # Secrets never logged: not the Secret, the Token, the key, nor an access token.
    text = caplog.text
    assert "HTTP Request" in text and "access_token=***" in text
    for secret in (SECRET, TOKEN, AES_KEY, *site.fake.tokens):
        assert secret not in text


@pytest.mark.asyncio
async def test_a_message_synced_or_called_back_twice_is_stored_once(site: Site) -> None:
    user = "wm" + uuid.uuid4().hex
    site.fake.customer_says(site.open_kfid, user, "我的订单100234到哪了")
    params, body = site.envelope(site.event())
    for _ in range(2):  # WeCom retries a callback it got no answer to in time
        assert (await site.post(params, body)).status_code == 200
    await site.hub.drain()
    before = site.hub.metrics.duplicates._value.get()
    # The cursor lost (a restore, another appliance): the same messages come again.
    async with site.api.pool.connection() as conn:
        await conn.execute("DELETE FROM aicc.wecom_cursors WHERE open_kfid = %s", (site.open_kfid,))
    await site.notify()
    assert site.hub.metrics.duplicates._value.get() == before + 1
    detail = await site.conversation_of(user)
    assert [m["body"] for m in detail["messages"] if m["author"] == "customer"] == ["我的订单100234到哪了"]
    assert detail["language"] == "zh"


@pytest.mark.asyncio
async def test_forged_altered_and_foreign_callbacks_are_refused_counted_and_store_nothing(site: Site) -> None:
    calls = len(site.fake.sync_requests)
    event = site.event()

    params, body = site.envelope(event)
    before = site.refused("signature")
    r = await site.post({**params, "msg_signature": "0" * 40}, body)
    assert r.status_code == 403 and site.refused("signature") == before + 1

    def flip_first_byte(encrypted: str) -> str:
        raw = bytearray(base64.b64decode(encrypted))
        raw[0] ^= 0x80  # garbles the random block and flips the length's top bit
        return base64.b64encode(bytes(raw)).decode()

    before = site.refused("decrypt")
    r = await site.post(
        *site.envelope(event, tamper=flip_first_byte)
    )  # re-signed: the token leaked, not the key
    assert r.status_code == 400 and site.refused("decrypt") == before + 1

    before = site.refused("receiveid")
    foreign = WeComCrypto(TOKEN, AES_KEY, "ww9999999999999999")
    r = await site.post(*site.envelope(event, crypto=foreign))
    assert r.status_code == 403 and site.refused("receiveid") == before + 1

    before = site.refused("malformed")
    r = await site.post(params, b"<xml><ToUserName>x</ToUserName>")
    assert r.status_code == 400
    r = await site.post(params, b"<xml><Nothing/></xml>")
    assert r.status_code == 400
    r = await site.post(*site.envelope("<xml><MsgType>event</MsgType><Event>kf_msg_or_event</Event></xml>"))
    assert r.status_code == 400 and site.refused("malformed") == before + 3

    before = site.refused("too_large")
    r = await site.post(params, b"<xml>" + b" " * 70_000 + b"</xml>")
    assert r.status_code == 413 and site.refused("too_large") == before + 1
    await site.hub.drain()
    assert len(site.fake.sync_requests) == calls  # nothing was synced, so nothing stored


@pytest.mark.asyncio
async def test_a_customer_over_the_rate_limit_is_refused(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wecom_server: FakeWeCom, tmp_path: Path
) -> None:
    async with wecom_site(api_db, api_users, wecom_server, tmp_path, bot=False, rate_messages=2) as site:
        user = "wm" + uuid.uuid4().hex
        for i in range(3):
            site.fake.customer_says(site.open_kfid, user, f"第{i}条")
        await site.notify()
        assert site.refused("rate_limited") == 1
        detail = await site.conversation_of(user)
        assert [m["body"] for m in detail["messages"]] == ["第0条", "第1条"]
        assert detail["handler"] == "queue"  # no bot: straight to the agents


# --- replies --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agents_reply_within_wecoms_48_hours_and_5_messages(
    api_db: ApiDatabase, api_users: dict[str, ApiUser], wecom_server: FakeWeCom, tmp_path: Path
) -> None:
    async with wecom_site(api_db, api_users, wecom_server, tmp_path, bot=False) as site:
        user = "wm" + uuid.uuid4().hex
        site.fake.customer_says(site.open_kfid, user, "请帮我查一下退款")
        await site.notify()
        cid = (await site.conversation_of(user))["id"]
        url = f"/api/conversations/{cid}/messages"
        agent = site.api.auth("agent")
        long = "退款" * 1000  # 6,000 bytes: three parts of at most 2,048
        r = await site.api.client.post(url, json={"body": long}, headers=agent)
        assert r.status_code == 201, r.text
        for text in ("第二条", "第三条"):
            assert (await site.api.client.post(url, json={"body": text}, headers=agent)).status_code == 201
        r = await site.api.client.post(url, json={"body": "第六条"}, headers=agent)
        assert r.status_code == 409 and "at most 5 messages" in r.json()["error"]["message"]
        sent = await site.wait_sent(user, 5)
        assert "".join(sent[:3]) == long and sent[3:] == ["第二条", "第三条"]
        assert len({s["msgid"] for s in site.fake.sent if s["touser"] == user}) == 5
        # The customer writes again: five more may go.
        site.fake.customer_says(site.open_kfid, user, "好的")
        await site.notify()
        assert (await site.api.client.post(url, json={"body": "第六条"}, headers=agent)).status_code == 201
        await site.wait_sent(user, 6)
        await site.hub.drain()
        detail = await site.conversation_of(user)
        assert all(m["delivered_at"] for m in detail["messages"] if m["author"] == "agent")

        old = "wm" + uuid.uuid4().hex  # wrote 49 hours ago, and nothing since
        site.fake.customer_says(site.open_kfid, old, "在吗", at=time.time() - 49 * 3600)
        await site.notify()
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
    user = "wm" + uuid.uuid4().hex
    site.fake.customer_says(site.open_kfid, user, "hello")
    await site.notify()
    cid = (await site.conversation_of(user))["id"]
    url = f"/api/conversations/{cid}/messages"
    agent = site.api.auth("agent")

    site.fake.send_script[:] = [(503, 0), (200, -1)]  # a 5xx, then busy, then taken
    assert (await site.api.client.post(url, json={"body": "retried"}, headers=agent)).status_code == 201
    await site.hub.drain()
    assert site.fake.sent_to(user) == ["retried"]
    assert (
        _count(
            site.api.db,
            "SELECT attempts FROM aicc.wecom_messages WHERE direction = 'out' "
            "AND external_userid = %s AND status = 'sent'",
            user,
        )
        == 3
    )

    site.fake.send_script[:] = [(502, 0)] * 3
    r = await site.api.client.post(url, json={"body": "lost"}, headers=agent)
    assert r.status_code == 201
    lost = r.json()["id"]
    await site.hub.drain()  # its retries done before the next answer is scripted
    site.fake.send_script[:] = [(200, 95016)]  # refused for good: not retried
    r = await site.api.client.post(url, json={"body": "refused"}, headers=agent)
    refused = r.json()["id"]
    await site.hub.drain()
    assert site.fake.sent_to(user) == ["retried"]
    assert "errcode 95016: scripted failure" in caplog.text

    r = await site.api.client.get("/api/channels/dead-letters?channel=wecom", headers=site.api.auth("admin"))
    assert r.status_code == 200, r.text
    mine = {d["message_id"]: d for d in r.json() if d["conversation_id"] == cid}
    assert mine[lost]["attempts"] == 3 and "HTTP 502" in mine[lost]["error"]
    assert mine[refused]["attempts"] == 1 and mine[refused]["error"] == "errcode 95016: scripted failure"
    assert mine[lost]["recipient"] == f"{site.open_kfid}/{user}"
    assert (
        await site.api.client.get("/api/channels/dead-letters", headers=site.api.auth("agent"))
    ).status_code == 403
    detail = await site.conversation_of(user)
    undelivered = {m["id"] for m in detail["messages"] if m["delivered_at"] is None}
    assert {lost, refused} <= undelivered
    assert site.hub.metrics.sends.labels("dead")._value.get() == 2


@pytest.mark.asyncio
async def test_an_expired_access_token_is_renewed_once(site: Site) -> None:
    site.api.app.state.webchat.use_runtime(None)
    user = "wm" + uuid.uuid4().hex
    site.fake.customer_says(site.open_kfid, user, "hi")
    await site.notify()
    fetched = len(site.fake.tokens)
    site.fake.expired.update(site.fake.tokens)
    cid = (await site.conversation_of(user))["id"]
    r = await site.api.client.post(
        f"/api/conversations/{cid}/messages", json={"body": "still here"}, headers=site.api.auth("agent")
    )
    assert r.status_code == 201
    assert await site.wait_sent(user, 1) == ["still here"]
    assert len(site.fake.tokens) == fetched + 1


@pytest.mark.asyncio
async def test_the_api_client_tells_network_errors_from_refusals(wecom_server: FakeWeCom) -> None:
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        api = WeComApi(f"http://127.0.0.1:{closed.getsockname()[1]}", CORP, SECRET, timeout_s=2)
        with pytest.raises(WeComUnavailable, match="gettoken"):
            await api.send_text("wmuser", "wkaccount", "m1", "hi")
        await api.aclose()
    finally:
        closed.close()
    api = WeComApi(wecom_server.url, CORP, "not-the-secret")
    with pytest.raises(WeComError) as refused:
        await api.sync_msg("token", "wkaccount", "")
    assert (refused.value.api, refused.value.errcode) == ("gettoken", 40001)
    await api.aclose()
