"""What a caller's short answer means: a clear yes, a refusal, a request for an agent, or nothing sure.

A confirmation fails safe: only a clear yes runs a write. A clear yes has a yes word, no negation, no
new values (digits, "change it to ...") and little else ("可以，就这么改", "Yes, go ahead, thanks");
anything with a refusal, or what is left of one whose first syllable was lost ("要改" from "不要改",
"change it" from "don't change it"), is not a yes.
"""

from __future__ import annotations

import re
from typing import Literal

Answer = Literal["yes", "no"] | None

_HAN = re.compile(r"[\u4e00-\u9fff]")

YES_WORDS = (
    "是",
    "对",
    "好",
    "可以",
    "确认",
    "确定",
    "没问题",
    "没错",
    "行",
    "yes",
    "yeah",
    "yep",
    "yup",
    "correct",
    "sure",
    "go ahead",
    "please do",
    "do it",
    "confirm",
    "confirmed",
    "ok",
    "okay",
    "alright",
    "all right",
    "right",
    "exactly",
    "absolutely",
    "of course",
    "definitely",
    "that's right",
    "that is right",
)
# Phrases with a negation character that refuse nothing: taken out before refusals are looked for.
_YES_WITH_NEGATION = ("没问题", "没错", "不客气", "不过")  # 不过: "but", no negation
NO_WORDS = (
    "不用了",
    "不用",
    "不要",
    "不需要",
    "没有了",
    "不",
    "别",
    "没",
    "取消",
    "算了",
    "错",
    "等一下",
    "等等",
    "no",
    "nope",
    "nah",
    "don't",
    "dont",
    "do not",
    "not",
    "cancel",
    "stop",
    "wrong",
    "incorrect",
    "never mind",
    "nevermind",
    "wait",
    "hold on",
    "leave it",
)
# What is left of a Mandarin refusal whose first syllable (不/别) was lost at the start of the
# utterance: 不要改 -> 要改, 不用了 -> 用了, 不要了 -> 要了, 不用改 -> 用改, 别动 -> 动.
_CLIPPED_REFUSAL = re.compile(r"^(?:要|用|需要|必要)(?:改|了|换|动|办|弄|啦)|^(?:用|要|必)$|^动")
# A correction or an addition: not a plain yes to what was read back.
_CORRECTION = re.compile(
    r"\d|改成|改为|改到|换成|但是|不过|其实|而是|\bbut\b|\binstead\b|\bactually\b|\bchange (?:it )?to\b",
    re.IGNORECASE,
)
# Words that may stand next to a yes without changing it.
_FILLER_ZH = "请吧啊呀哦嗯的了就这么样改办帮我麻烦谢谢你呢那好是对行可以确认定没问题错"
_FILLER_EN = frozenset(
    {
        "please",
        "thanks",
        "thank",
        "you",
        "that",
        "that's",
        "is",
        "it",
        "go",
        "ahead",
        "do",
        "just",
        "yes",
        "yeah",
        "sure",
        "so",
        "fine",
        "okay",
        "ok",
        "right",
        "correct",
        "sounds",
        "good",
        "great",
        "perfect",
        "for",
        "me",
    }
)
_PUNCT = re.compile(r"[\s\.,!?;:'\"，。！？、；：…\-]+")


def has_word(text: str, words: tuple[str, ...]) -> bool:
    """Whether one of `words` is in `text`: Mandarin ones anywhere, English ones as whole words."""
    low = text.lower()
    for w in words:
        if _HAN.search(w):
            if w in low:
                return True
        elif re.search(rf"(?<![\w']){re.escape(w)}(?![\w'])", low):
            return True
    return False


def _without(text: str, words: tuple[str, ...]) -> str:
    for w in sorted(words, key=len, reverse=True):
        text = text.replace(w, " ")
    return text


def refuses(text: str) -> bool:
    """A refusal: a negation word ("不用了", "别改", "no, don't change it", "not yet")."""
    return has_word(_without(text.lower(), _YES_WITH_NEGATION), NO_WORDS)


def clipped_refusal(text: str) -> bool:
    """What is left of a refusal whose first syllable was lost: never a yes."""
    core = _PUNCT.sub("", text)
    return bool(_CLIPPED_REFUSAL.search(core))


def clear_yes(text: str, restates: tuple[str, ...] = ()) -> bool:
    """A yes and nothing that could change what it agrees to. `restates`: the words of the pending
    action ("退货", "address"): "对，确认退货" restates it, and those words count as filler."""
    if refuses(text) or clipped_refusal(text) or _CORRECTION.search(text):
        return False
    if not has_word(text, YES_WORDS):
        return False
    low = _PUNCT.sub(" ", _without(text.lower(), tuple(w.lower() for w in restates)))
    rest_zh = [c for c in low if _HAN.match(c) and c not in _FILLER_ZH]
    rest_en = [w for w in re.findall(r"[a-z']+", low) if w not in _FILLER_EN]
    return len(rest_zh) <= 3 and len(rest_en) <= 2


def answer(text: str, restates: tuple[str, ...] = ()) -> Answer:
    """A confirmation's answer: "yes" only when clear, "no" for a refusal, None when unsure."""
    if refuses(text):
        return "no"
    if clear_yes(text, restates):
        return "yes"
    return None


def is_bare_answer(text: str) -> bool:
    """Only a yes or a no, nothing asked for ("Yes.", "Yes please.", "对", "好的", "No thanks")."""
    core = _PUNCT.sub(" ", text.lower()).strip()
    if not core or re.search(r"\d", core):
        return False
    stripped = _PUNCT.sub(" ", _without(core, (*YES_WORDS, *NO_WORDS, *_YES_WITH_NEGATION))).strip()
    rest_zh = [c for c in stripped if _HAN.match(c) and c not in _FILLER_ZH]
    rest_en = [w for w in re.findall(r"[a-z']+", stripped) if w not in _FILLER_EN and w != "thanks"]
    return (has_word(core, YES_WORDS) or has_word(core, NO_WORDS)) and not rest_zh and not rest_en


TRANSFER_WORDS = (
    "转人工",
    "人工客服",
    "人工服务",
    "找人工",
    "接人工",
    "转员工",  # "transfer me to staff"; also what Whisper base hears for 转人工 over G.711
    "员工客服",  # "staff service"; Whisper base over G.711 hears 我要转人工客服 as 我要在员工客服 too
    "真人",
    "客服人员",
    "agent",
    "human",
    "operator",
    "representative",
    "real person",
    "a person",
    "transfer me",
)
# 人工 alone ("人工", "人工吧", "给我转个人工") asks for an agent; 人工智能 does not.
_REN_GONG = re.compile(r"人工(?!智能)")
# "不用转人工", "别转人工", "I don't need an agent": the word is there, the request is not.
_NOT_TRANSFER = re.compile(
    r"(?:不用|不要|不需要|别|无需|没必要)[转接找]?(?:个)?(?:人工|真人)|"
    r"\b(?:don't|do not|no need to|not)\b(?:\s+\w+){0,3}\s+(?:an? )?(?:agent|human|operator|person)",
    re.IGNORECASE,
)


def is_transfer_request(text: str) -> bool:
    if _NOT_TRANSFER.search(text):
        return False
    return has_word(text, TRANSFER_WORDS) or bool(_REN_GONG.search(text))
