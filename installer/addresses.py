"""Host addresses the user writes (inventory hosts, NTP servers, the package source, the SIP domain): an
IPv4 or IPv6 address, or a host name by RFC 952 / RFC 1123, checked when the file is read so that a
typo such as 300.1.1.1 is an input error naming the file, not an unresolvable name at install time.

The rules:
- IPv4 in dotted-quad form only: four decimal octets 0-255, no leading zeros (010.1.1.1 is octal to
  some resolvers and decimal to others), no short forms (10.1 or 167772161).
- IPv6 in any standard notation, without brackets and without a zone index: fe80::1%eth0 names an
  interface of one machine and means nothing in a file read on another; use a global or unique-local
  address, or a host name.
- A host name: labels of 1-63 ASCII letters, digits and hyphens, neither starting nor ending with a
  hyphen, at most 253 characters in all, no trailing dot; single labels (lab1) are allowed. The last
  label may not be all digits (RFC 1123 2.1): such a name could be read as an IPv4 address.
  Non-ASCII names are written in their punycode form (xn--...).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_DIGITS = re.compile(r"^[0-9]+$")


def address_problem(text: str) -> str | None:
    """Why `text` is neither a valid IP address nor a host name, or None when it is one of them."""
    if not text:
        return "an empty address is neither an IP address nor a host name"
    if text != text.strip() or any(c.isspace() for c in text):
        return f"{text!r} contains spaces: neither an IP address nor a host name"
    if ":" in text or text.startswith("["):
        return _ipv6_problem(text)
    labels = text.split(".")
    if all(_DIGITS.match(label) for label in labels):
        return _ipv4_problem(text, labels)
    why = _hostname_problem(text, labels)
    if why is None:
        return None
    if _DIGITS.match(labels[-1]):
        return f"{text} is neither a valid IP address nor a host name ({why})"
    return f"{text} is not a valid host name ({why})"


def _ipv4_problem(text: str, octets: list[str]) -> str | None:
    if len(octets) != 4:
        why = f"{len(octets)} number{'s' if len(octets) > 1 else ''}, an IPv4 address has 4"
    elif big := next((o for o in octets if int(o) > 255), None):
        why = f"octet {big} > 255"
    elif zero := next((o for o in octets if len(o) > 1 and o.startswith("0")), None):
        why = f"octet {zero} has a leading zero, which some read as octal"
    else:
        return None
    return f"{text} is neither a valid IP address ({why}) nor a host name (its last label is all digits)"


def _ipv6_problem(text: str) -> str | None:
    if text.startswith("[") or text.endswith("]"):
        return f"{text} is not a valid IP address: write an IPv6 address without brackets"
    if "%" in text:
        return (
            f"{text} is not usable here: a zone index (%...) names an interface of one machine; "
            "use a global or unique-local IPv6 address, or a host name"
        )
    try:
        ipaddress.IPv6Address(text)
    except ValueError as exc:
        return f"{text} is not a valid IPv6 address ({exc}) nor a host name (':' is not allowed in one)"
    return None


def _hostname_problem(text: str, labels: list[str]) -> str | None:
    if not text.isascii():
        return "ASCII letters, digits, '-', '.' only; give an internationalised name in punycode (xn--...)"
    if len(text) > 253:
        return f"{len(text)} characters, at most 253"
    for label in labels:
        if not label:
            return "an empty label: '..' or a leading or trailing '.'"
        if len(label) > 63:
            return f"label {label[:20]}... has {len(label)} characters, at most 63"
        if not _LABEL.match(label):
            bad = next((c for c in label if not (c.isalnum() or c == "-")), None)
            if bad is not None:
                return f"{bad!r} is not allowed; letters, digits, '-' and '.' only"
            return f"label {label!r} starts or ends with '-'"
    if _DIGITS.match(labels[-1]):
        return f"its last label {labels[-1]} is all digits"
    return None


def check_address(text: str) -> str:
    """For pydantic: `text` when it is an IP address or host name, else ValueError saying why."""
    why = address_problem(text)
    if why:
        raise ValueError(why)
    return text


def check_http_url(text: str) -> str:
    """An http(s) URL whose host is a valid address (empty is allowed: nothing configured)."""
    if not text:
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{text!r} is not an http:// or https:// URL (for example http://10.0.0.5:3142)")
    if port == 0:
        raise ValueError(f"{text!r}: port 0 is out of range 1-65535")
    why = address_problem(parts.hostname or "")
    if why:
        raise ValueError(f"{text!r}: {why}")
    return text


HostAddress = Annotated[str, AfterValidator(check_address)]
"""An IPv4 or IPv6 address or a host name (see the module's rules)."""
HttpUrl = Annotated[str, AfterValidator(check_http_url)]
"""An http(s) URL whose host is a HostAddress, or empty."""
