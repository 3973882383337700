"""Interop with sipp (Debian's sip-tester) as the peer on loopback: concurrent calls, 488 for an
unsupported codec, and a call cap answered with 503 under load."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from aicc.appliance.voice.gateway import Gateway
from tests.unit.test_voice_fakes import anyio_backend  # noqa: F401
from tests.unit.test_voice_gateway import config, free_port

pytestmark = pytest.mark.anyio

SCENARIO_488 = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="g729 only">
  <send retrans="500"><![CDATA[
INVITE sip:4000@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:4000@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 18
a=rtpmap:18 G729/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="488"/>
  <send><![CDATA[
ACK sip:4000@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:4000@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
</scenario>
"""


async def sipp(*args: str, cwd: Path) -> int:
    assert shutil.which("sipp"), "sipp is missing: apt-get install sip-tester"
    proc = await asyncio.create_subprocess_exec(
        "sipp",
        *args,
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-nostdin",
        "-timeout",
        "40",
        "-trace_err",
        cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 60)


async def test_ten_concurrent_sipp_calls_all_complete(tmp_path: Path) -> None:
    gw = Gateway(config(max_calls=10), None)
    await gw.start()
    try:
        rc = await sipp(
            "-sn",
            "uac",
            "-s",
            "4000",
            f"127.0.0.1:{gw.cfg.sip_port}",
            "-m",
            "10",
            "-l",
            "10",
            "-r",
            "10",
            "-d",
            "3000",
            cwd=tmp_path,
        )
        assert rc == 0, list(tmp_path.glob("*errors.log"))
        assert gw.stats.answered == 10
        assert gw.metrics.finished.labels(outcome="abandoned")._value.get() == 10
        assert not gw.calls
    finally:
        await gw.stop()


async def test_sipp_offer_with_only_g729_gets_488(tmp_path: Path) -> None:
    gw = Gateway(config(), None)
    await gw.start()
    (tmp_path / "g729.xml").write_text(SCENARIO_488)
    try:
        rc = await sipp("-sf", "g729.xml", f"127.0.0.1:{gw.cfg.sip_port}", "-m", "3", cwd=tmp_path)
        assert rc == 0
        assert gw.metrics.rejected.labels(reason="codec")._value.get() == 3
    finally:
        await gw.stop()


async def test_sipp_load_beyond_the_cap_gets_503_not_a_crash(tmp_path: Path) -> None:
    gw = Gateway(config(max_calls=4), None)
    await gw.start()
    try:
        await sipp(
            "-sn",
            "uac",
            "-s",
            "4000",
            f"127.0.0.1:{gw.cfg.sip_port}",
            "-m",
            "12",
            "-l",
            "12",
            "-r",
            "12",
            "-d",
            "2000",
            cwd=tmp_path,
        )
        assert gw.stats.answered >= 4
        assert gw.metrics.rejected.labels(reason="capacity")._value.get() == 12 - gw.stats.answered
        await asyncio.sleep(0.2)
        assert not gw.calls
    finally:
        await gw.stop()
