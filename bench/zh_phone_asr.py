"""Mandarin ASR over the phone line: what the bot's transcript gets right, old prompt vs current.

Each caller utterance is spoken by the native Mandarin caller voice (models/engines/baker.py),
sent through G.711 mu-law at 8 kHz, and transcribed by the embedded Whisper base twice in this run:
- baseline: one simplified-Chinese prompt on every utterance (what the bot did before);
- current:  WhisperASR as the bot runs it (the digits prompt on longer utterances, none on short
            ones, prompt echoes removed), then the bot's digit normaliser.
An utterance counts as right when its order number comes out exactly (after digit normalisation,
for both) or, without a number, when its key word is there. Prints each transcript, the scores and
ASR seconds, and the current/baseline ratios.

    python bench/zh_phone_asr.py [--models /var/cache/aicc/models] [--rounds 1]
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from aicc.appliance.voice.codecs import ulaw_decode, ulaw_encode
from aicc.appliance.voice.numbers import spoken_digits
from aicc.models.engines.audio import float_at, resample
from aicc.models.engines.baker import BakerTTS
from aicc.models.engines.base import Audio
from aicc.models.engines.embedded import WhisperASR

BASELINE_PROMPT = "以下是普通话的句子，使用简体中文。"

# (what the caller says, what the transcript must contain: the order number or a key word)
UTTERANCES: list[tuple[str, str]] = [
    ("查询订单一零零二三七的状态，再把收货地址改成上海市南京路八号。", "100237"),
    ("查询订单一零零二三六的状态，再把收货地址改成上海市南京路八号。", "100236"),
    ("我的订单一零零二三四到哪了？", "100234"),
    ("订单号是一零零二三五，我要退货。", "100235"),
    ("帮我查一下订单一零零二三九。", "100239"),
    ("转人工", "转"),
    ("对，确认。", "确认"),
    ("是的。", "是"),
    ("不用了，谢谢。", "不用"),
    ("我要投诉，帮我建一个工单。", "投诉"),
    ("物流到哪了？", "物流"),
    ("我要转人工客服。", "客服"),
]


def right(text: str, want: str) -> bool:
    return want in re.findall(r"\d+", text) if want.isdigit() else want in text


def phone_line(audio: Audio) -> Audio:
    narrow = resample(audio, 8000)
    return Audio(ulaw_decode(ulaw_encode(narrow.pcm)), 8000)


def baseline(asr: WhisperASR, audio: Audio) -> str:
    import zhconv

    segments, _ = asr._model.transcribe(  # the model itself, with the old prompt
        float_at(audio, 16000),
        language="zh",
        beam_size=asr.beam_size("zh"),
        vad_filter=False,
        condition_on_previous_text=False,
        initial_prompt=BASELINE_PROMPT,
    )
    return spoken_digits(zhconv.convert("".join(s.text.strip() for s in segments), "zh-cn"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path("/var/cache/aicc/models"))
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    voice = BakerTTS()
    asr = WhisperASR(args.models / "whisper-base-ct2")
    calls = [
        (phone_line(Audio(b"".join(c.pcm for c in voice.chunks(u)), voice.SAMPLE_RATE)), u, w)
        for u, w in UTTERANCES
    ]
    score = {"baseline": 0, "current": 0}
    confidence: list[float] = []  # of the right current transcripts: where the bot's threshold must sit
    seconds = {"baseline": 0.0, "current": 0.0}
    for _ in range(args.rounds):
        for audio, said, want in calls:
            t0 = time.perf_counter()
            old = baseline(asr, audio)
            t1 = time.perf_counter()
            result = asr.transcribe_sync(audio, "zh")
            new = spoken_digits(result.text)
            t2 = time.perf_counter()
            if right(new, want):
                confidence.append(result.confidence)
            seconds["baseline"] += t1 - t0
            seconds["current"] += t2 - t1
            score["baseline"] += right(old, want)
            score["current"] += right(new, want)
            print(f"{said}\n    baseline {'ok ' if right(old, want) else 'BAD'} {old}")
            print(f"    current  {'ok ' if right(new, want) else 'BAD'} {new}")
    n = len(calls) * args.rounds
    for k in ("baseline", "current"):
        print(f"{k:9} right {score[k]}/{n}  ASR {seconds[k] / n:.2f} s per utterance")
    if confidence:
        print(f"ASR confidence of the right current transcripts: {min(confidence):.2f}-{max(confidence):.2f}")
    ratio = score["current"] / max(score["baseline"], 1)
    print(f"current/baseline: right x{ratio:.2f}, ASR time x{seconds['current'] / seconds['baseline']:.2f}")


if __name__ == "__main__":
    main()
