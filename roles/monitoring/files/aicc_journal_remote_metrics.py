#!/usr/bin/python3
"""Publish, per inventory host, when its journal was last written on this (the monitoring) host.

systemd-journal-remote (SplitMode=host, Debian 12's build without GnuTLS) files each uploader's
journal under the address it connects from: remote-ADDRESS.journal, archived as
remote-ADDRESS@....journal (remote-ADDRESS@....journal~ when it was damaged). The newest mtime of a
host's files (journal-remote truncates the file to its size after each write, which sets it) is
written for node_exporter's textfile collector as

    aicc_journal_remote_last_write_timestamp_seconds{uploader="NAME"} UNIX-TIME

one series per inventory host given on the command line (0 while nothing has arrived from it).
Files of senders outside the inventory are left out: any machine that reaches the port can add
some, and its address must not become a label value. The label is `uploader`, not `host`: Prometheus
keeps the scrape target's own `host` label and would rename ours to exported_host.

Runs every minute from aicc-journal-remote-metrics.timer; Python 3's standard library only.
Usage: aicc-journal-remote-metrics --journal-dir DIR --out FILE.prom NAME=ADDRESS...
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import socket
import sys
import tempfile

METRIC = "aicc_journal_remote_last_write_timestamp_seconds"
FILE = re.compile(r"^remote-(?P<sender>[^@/]+?)(?:@[^/]*)?\.journal~?$")


def canonical(address: str) -> str:
    """One spelling per address: IPv6 compressed and lower case, names lower case."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


def addresses_of(name: str, address: str) -> set[str]:
    """Every spelling a host's files may carry: its inventory name and address, and what the address
    resolves to (/etc/hosts lists the inventory; an address that is a DNS name needs DNS)."""
    found = {canonical(name), canonical(address)}
    try:
        for *_, sockaddr in socket.getaddrinfo(address, None, type=socket.SOCK_STREAM):
            found.add(canonical(str(sockaddr[0])))
    except OSError:
        pass  # not resolvable now: its literal spelling still matches
    return found


def newest_writes(journal_dir: str) -> dict[str, float]:
    """Sender (canonical) -> newest mtime of its journal files."""
    newest: dict[str, float] = {}
    try:
        entries = list(os.scandir(journal_dir))
    except FileNotFoundError:
        return newest  # nothing received yet
    for entry in entries:
        match = FILE.match(entry.name)
        if not match:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # rotated or deleted by the retention timer meanwhile
        sender = canonical(match["sender"])
        newest[sender] = max(mtime, newest.get(sender, 0.0))
    return newest


def label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(hosts: list[tuple[str, str]], newest: dict[str, float]) -> str:
    lines = [
        f"# HELP {METRIC} When this host's journal was last written on the monitoring host "
        "(Unix time, 0: never).",
        f"# TYPE {METRIC} gauge",
    ]
    for name, address in hosts:
        seen = [newest[a] for a in addresses_of(name, address) if a in newest]
        lines.append(f'{METRIC}{{uploader="{label_value(name)}"}} {int(max(seen, default=0.0))}')
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """A temporary file in the same folder, then a rename: the collector never reads half a file (it
    reads *.prom only, so the temporary name is ignored)."""
    fd, tmp = tempfile.mkstemp(prefix=".aicc_journal_remote.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def host_pair(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name or not address:
        raise argparse.ArgumentTypeError(f"expected NAME=ADDRESS, found {text!r}")
    return name, address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--journal-dir", required=True, help="systemd-journal-remote's output folder")
    parser.add_argument("--out", required=True, help="the .prom file in node_exporter's textfile folder")
    parser.add_argument("hosts", nargs="*", type=host_pair, metavar="NAME=ADDRESS")
    args = parser.parse_args(argv)
    try:
        write_atomically(args.out, exposition(args.hosts, newest_writes(args.journal_dir)))
    except OSError as exc:
        print(f"cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
