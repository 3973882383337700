"""What each voice bot tells a caller first about itself and the recording: the evidence of the
compliance report's AICC-PRIV-01, and `python -m aicc.appliance.bots.notices [FOLDER]` on a voicebot
host (FOLDER: the site's own definitions, default /etc/aicc/bots).

PIPL Art. 17 asks that people be told before their information is processed; China's measures for
labelling AI-generated content (2025) ask that a synthetic voice say so at the start. A bot passes when
it says its notice once per call and the notice, in each of its languages, says both that the caller
talks to an AI and that the call is recorded. The words are a screen, not a judgement: the report
prints every text so that the assessor reads what callers hear.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aicc.appliance.bots.definition import BotDefinition, load_definitions
from aicc.appliance.documents import DocumentError

SITE_BOTS = Path("/etc/aicc/bots")
AI = {
    "en": re.compile(r"\bAI\b|artificial intelligence|virtual assistant|automated assistant|\bbot\b", re.I),
    "zh": re.compile(r"人工智能|AI|机器人|智能客服|智能助手|虚拟助手", re.I),
}
RECORDED = {"en": re.compile(r"\brecord", re.I), "zh": re.compile(r"录音|录制")}


def notice_problems(bot: BotDefinition) -> list[str]:
    """Why `bot`'s notice falls short, one line per language; empty when it passes."""
    if not bot.notice:
        return [
            f"{bot.name}: notice is off (notice: false): callers are not told about the AI or the recording"
        ]
    found = []
    for language in bot.languages:
        text = bot.prompt("notice", language)
        missing = [
            what
            for what, words in (("that an AI speaks", AI), ("that the call is recorded", RECORDED))
            if not words[language].search(text)
        ]
        if missing:
            found.append(
                f"{bot.name} ({language}): the notice does not say {' nor '.join(missing)}: {text!r}"
            )
    return found


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else SITE_BOTS
    try:
        bots = load_definitions(folder if folder.is_dir() else None)
    except DocumentError as exc:
        print(f"cannot read the bot definitions: {exc}")
        return 2
    problems: list[str] = []
    for name, bot in sorted(bots.items()):
        state = "said once per call, before the greeting" if bot.notice else "OFF"
        print(f"{name}: notice {state}")
        for language in bot.languages:
            print(f"  {language}: {bot.prompt('notice', language)}")
        problems += notice_problems(bot)
    print("problems:", "; ".join(problems) if problems else "none")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
