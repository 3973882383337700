"""Print JSON: the alerts Prometheus at URL (argv[1]) evaluates now, pending and firing. Runs on the
monitoring host with python3 (stdlib only): Prometheus listens on that host's address only."""

import json
import sys
import urllib.error
import urllib.request

try:
    # The URL is the installer's http://<monitoring host>:<port>, never user input.
    with urllib.request.urlopen(sys.argv[1] + "/api/v1/alerts", timeout=10) as reply:  # noqa: S310
        print(json.dumps({"ok": True, "alerts": json.load(reply)["data"]["alerts"]}))
except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
