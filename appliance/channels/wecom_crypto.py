"""WeCom callback crypto (企业微信 回调加解密), the algorithm of Tencent's WXBizMsgCrypt.

- signature: SHA-1 (hex) of the sorted concatenation of [token, timestamp, nonce, encrypted];
- key: base64decode(EncodingAESKey + "="), 32 bytes; AES-256-CBC with IV = key[:16];
- plaintext: 16 random bytes + the message's length (4 bytes, big-endian) + the message + the
  receiveid (the corp id), PKCS#7-padded to a 32-byte block (not AES's 16);
- the callback body: flat XML whose <Encrypt> holds the base64 ciphertext.

XML is read with expat directly: a document with a DTD is refused, so no entity can be declared and
none expanded (billion laughs, external entities); only the root's direct children are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass, field
from typing import Literal
from xml.parsers import expat

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

AES_KEY_CHARS = 43
BLOCK = 32  # WeCom pads to 32 bytes
XML_MAX_BYTES = 64 * 1024  # a callback is a few hundred bytes
_KEY = re.compile(r"^[A-Za-z0-9+/]{43}$")

Reason = Literal["signature", "malformed", "decrypt", "receiveid"]


class CallbackRefused(Exception):
    """A callback that is not WeCom's, or not readable: `reason` is the metric's label."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message


def aes_key(encoding_aes_key: str) -> bytes:
    """The AES key of an EncodingAESKey (43 base64 characters); ValueError when it is not one."""
    if not _KEY.match(encoding_aes_key):
        raise ValueError(
            f"an EncodingAESKey is {AES_KEY_CHARS} characters of A-Z, a-z, 0-9, + and /; "
            f"this one has {len(encoding_aes_key)}"
        )
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:  # cannot happen for 43 valid characters; kept as the reference checks it
        raise ValueError("the EncodingAESKey does not decode to 32 bytes")
    return key


def signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted((token, timestamp, nonce, encrypted))).encode()).hexdigest()  # noqa: S324


@dataclass(frozen=True)
class WeComCrypto:
    token: str = field(repr=False)
    encoding_aes_key: str = field(repr=False)
    receive_id: str

    _key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A bad key is refused now, not at the first callback.
        object.__setattr__(self, "_key", aes_key(self.encoding_aes_key))

    def sign(self, timestamp: str, nonce: str, encrypted: str) -> str:
        return signature(self.token, timestamp, nonce, encrypted)

    def check(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = self.sign(timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected.encode(), msg_signature.strip().lower().encode()):
            raise CallbackRefused("signature", "msg_signature does not match the callback token")

    def encrypt(self, message: bytes, *, random_prefix: bytes | None = None) -> str:
        """Base64 ciphertext of `message` (random_prefix: 16 bytes, for known-answer tests only)."""
        prefix = secrets.token_bytes(16) if random_prefix is None else random_prefix
        if len(prefix) != 16:
            raise ValueError("the random prefix is 16 bytes")
        plain = prefix + struct.pack(">I", len(message)) + message + self.receive_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        plain += bytes([pad]) * pad
        encryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).encryptor()
        return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> bytes:
        """The message inside `encrypted`; CallbackRefused (decrypt, receiveid) when it is not one."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise CallbackRefused("decrypt", "the ciphertext is not base64") from None
        if len(data) < BLOCK or len(data) % 16:
            raise CallbackRefused("decrypt", f"the ciphertext has {len(data)} bytes, not whole AES blocks")
        decryptor = Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16])).decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise CallbackRefused("decrypt", "bad padding: the ciphertext was altered or another key made it")
        content = plain[16:-pad]
        if len(content) < 4:
            raise CallbackRefused("decrypt", "the plaintext is too short")
        (length,) = struct.unpack(">I", content[:4])
        if length > len(content) - 4:
            raise CallbackRefused("decrypt", "the message's length exceeds the plaintext")
        message, receive_id = content[4 : 4 + length], content[4 + length :]
        if not hmac.compare_digest(receive_id, self.receive_id.encode()):
            raise CallbackRefused("receiveid", "the message is for another corp id (receiveid)")
        return message

    def open(self, msg_signature: str, timestamp: str, nonce: str, encrypted: str) -> bytes:
        """Check the signature, then decrypt: what WXBizMsgCrypt's VerifyURL and DecryptMsg do."""
        self.check(msg_signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)


class _Refused(Exception):
    pass


def parse_xml(data: bytes) -> dict[str, str]:
    """The root's direct children of a flat XML document as {tag: text}; CallbackRefused (malformed)
    for anything else: too large, not XML, a DTD (hence no entities), nested elements kept out."""
    if len(data) > XML_MAX_BYTES:
        raise CallbackRefused("malformed", f"the XML has over {XML_MAX_BYTES} bytes")
    parser = expat.ParserCreate()
    found: dict[str, str] = {}
    depth = 0
    tag: str | None = None
    text: list[str] = []

    def refuse_dtd(*_: object) -> None:
        raise _Refused("a DTD (and with it entity declarations) is not accepted")

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, tag, text
        depth += 1
        if depth == 2:
            tag, text = name, []

    def end(name: str) -> None:
        nonlocal depth, tag
        if depth == 2 and tag is not None:
            found.setdefault(tag, "".join(text).strip())
            tag = None
        depth -= 1

    def chars(data: str) -> None:
        if depth == 2:
            text.append(data)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise CallbackRefused("malformed", str(exc)) from None
    except expat.ExpatError as exc:
        raise CallbackRefused("malformed", f"not XML: {exc}") from None
    return found
