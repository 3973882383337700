"""The conversation suite on a lab: how often the bot gets a whole conversation right, per language.

Runs the conversations of `aicc bot eval` (the shipped suite, or --suite DIR) as real SIP calls
through Kamailio against the site of --inventory, and prints per language:
- conversations fully right (goal >= 90 %);
- compound requests with every part executed;
- transfers asked for and made within one caller turn;
- writes with wrong arguments or without a clear yes (goal 0);
- first audio (end of the caller's speech -> the bot's first audio, measured by the caller) and the
  answer (the gateway's 'turn' stage from the call record), p50/p95 in seconds.
Then the failure classes and the transcripts of failed conversations, and --json writes everything.

    python bench/bot_eval.py -i INVENTORY [--lang zh|en] [--only NAME] [--limit N] [--json OUT.json]

--limit N takes the first N conversations of each language (a lab run of the whole suite on 2 CPU
cores takes about 40 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from aicc.installer import boteval


def goal(flag: bool) -> str:
    return "ok" if flag else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--inventory", type=Path, required=True)
    ap.add_argument("--suite", type=Path, default=None)
    ap.add_argument("--lang", choices=("zh", "en"), default=None)
    ap.add_argument("--only", default=None)
    ap.add_argument("--limit", type=int, default=0, help="at most N conversations per language")
    ap.add_argument("--call-timeout", type=float, default=120.0)
    ap.add_argument("--json", type=Path, default=None, help="write every result to this file")
    args = ap.parse_args()

    convs = boteval.load_suite(args.suite or boteval.default_suite(), args.lang, args.only)
    if args.limit:
        convs = [c for lang in ("en", "zh") for c in [x for x in convs if x.lang == lang][: args.limit]]
    params = boteval.params_from_site(args.inventory, None)
    params = boteval.EvalParams(**{**params.__dict__, "call_timeout_s": args.call_timeout})
    started = time.monotonic()

    def progress(v: boteval.Verdict) -> None:
        why = ", ".join(sorted({f.cls for f in v.failures}))
        print(f"{v.lang} {v.name}: {'ok' if v.ok else 'FAIL ' + why}", flush=True)
        for f in v.failures:  # a run stopped early still shows why each one failed
            print(f"    {f.cls}: {f.detail}", flush=True)

    verdicts = asyncio.run(boteval.run_suite(convs, params, progress))
    took = time.monotonic() - started
    summary = boteval.summarize(verdicts)
    print(f"\n{len(verdicts)} conversations in {took:.0f} s")
    for lang, s in summary.items():
        fa, an = s["first_audio_s"], s["answer_s"]
        print(f"\n[{lang}]")
        print(
            f"  conversations fully right: {s['right']}/{s['conversations']} "
            f"({(s['pass_rate'] or 0) * 100:.0f} %, goal >= 90 %: {goal((s['pass_rate'] or 0) >= 0.9)})"
        )
        print(f"  compound requests, every part executed: {s['compound_all_parts']}/{s['compound']}")
        print(f"  transfers within one turn: {s['transfers_within_one_turn']}/{s['transfers_wanted']}")
        print(
            "  writes with wrong arguments or without a clear yes: "
            f"{s['bad_writes']} (goal 0: {goal(not s['bad_writes'])})"
        )
        print(f"  first audio p50/p95: {fa['p50']} / {fa['p95']} s (n={fa['n']})")
        print(f"  answer p50/p95:      {an['p50']} / {an['p95']} s (n={an['n']})")
        if s["failures_by_class"]:
            print(
                "  failed conversations by class: "
                + ", ".join(f"{k} {n}" for k, n in s["failures_by_class"].items())
            )
    print()
    boteval.print_report([v for v in verdicts if not v.ok])
    if args.json:
        doc = boteval.report_json(verdicts)
        doc["seconds"] = round(took, 1)
        args.json.write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
