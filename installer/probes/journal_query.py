"""Print JSON: the entries journalctl finds in the received journals. Runs on the monitoring host with
python3 (stdlib only), as root: argv[1] is the journal folder, the rest are journalctl's arguments
(built and checked by aicc.installer.logs)."""

import glob
import json
import os
import subprocess
import sys

folder, args = sys.argv[1], sys.argv[2:]
if not os.path.isdir(folder) or not glob.glob(os.path.join(folder, "*.journal")):
    print(json.dumps({"ok": False, "empty": True, "error": f"no journal files in {folder}"}))
    sys.exit(0)
try:
    proc = subprocess.run(
        ["journalctl", f"--directory={folder}", "--output=json", "--no-pager", "--quiet", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        check=False,
    )
except (OSError, subprocess.TimeoutExpired) as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
# journalctl exits 1 when --grep matched nothing, with nothing on stdout or stderr.
if proc.returncode != 0 and (proc.stdout.strip() or proc.stderr.strip()):
    print(json.dumps({"ok": False, "error": proc.stderr.strip() or f"journalctl exited {proc.returncode}"}))
else:
    print(json.dumps({"ok": True, "lines": proc.stdout.splitlines()}))
