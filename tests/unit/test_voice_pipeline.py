"""The bot pipeline end to end with fake engines, driven by a 20 ms media clock in real time:
VAD segmentation, ASR, barge-in (stop within 300 ms; echo and backchannels do not interrupt),
non-interruptible prompts, TTS cache and failure, sentence aggregation, timers, per-stage latency."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest

from aicc.appliance.bots.definition import PROMPTS
from aicc.appliance.calls.record import CallRecord
from aicc.appliance.voice.asr import ASRProcessor
from aicc.appliance.voice.audio import silence, tone
from aicc.appliance.voice.bargein import BargeInProcessor, is_backchannel
from aicc.appliance.voice.dialogue import DialogueManager, DialogueParams
from aicc.appliance.voice.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioFrame,
    LLMTextFrame,
    NoInputFrame,
    SpeakFrame,
    SpeechPauseFrame,
    StartFrame,
    TranscriptionFrame,
    TurnClock,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UtteranceFrame,
)
from aicc.appliance.voice.pipeline import Direction, FrameProcessor, Pipeline
from aicc.appliance.voice.playback import Playback
from aicc.appliance.voice.sentences import SentenceAggregator
from aicc.appliance.voice.timers import CallTimersProcessor
from aicc.appliance.voice.tts import TTSProcessor
from aicc.appliance.voice.vad import EchoReference, VADParams, VADProcessor
from aicc.models.engines.base import Audio, Language, Transcript
from tests.unit.test_voice_fakes import (  # noqa: F401
    RETAIL,
    FakeASR,
    FakeConnector,
    FakeLLM,
    FakeTTS,
    FakeVAD,
    anyio_backend,
    retail_on,
)

pytestmark = pytest.mark.anyio
RATE = 8000  # the codec side (G.711)
STATUS = {"intent": "tools", "actions": [{"tool": "get_order_status", "arguments": {"order_id": "100234"}}]}
SCRIPTS = {
    300: ("what is the status of order 100234", "en", 0.9),
    500: ("嗯", "zh", 0.9),
    700: ("转人工", "zh", 0.9),
}


@dataclass
class Bot:
    pipeline: Pipeline
    playback: Playback
    tts: TTSProcessor
    asr: FakeASR
    record: CallRecord
    metrics: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)
    out: list[Frame] = field(default_factory=list)
    sent: list[bytes | None] = field(default_factory=list)

    async def clock(self, caller: list[bytes], echo_of_bot: float = 0.0, echo_delay: int = 2) -> None:
        """Run the media clock: each 20 ms pull bot audio and push one frame of caller audio.

        echo_of_bot > 0 mixes the bot's own audio back in, attenuated, as a phone's echo would."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        for frame in caller:
            self.sent.append(self.playback.read_frame())
            pcm = frame
            if echo_of_bot and len(self.sent) > echo_delay and self.sent[-1 - echo_delay] is not None:
                import numpy as np

                bot = np.frombuffer(self.sent[-1 - echo_delay] or b"", dtype="<i2").astype(np.float64)
                mix = np.frombuffer(frame, dtype="<i2").astype(np.float64) + bot * echo_of_bot
                pcm = np.clip(mix, -32768, 32767).astype("<i2").tobytes()
            self.pipeline.queue(InputAudioFrame(pcm=pcm, sample_rate=RATE))
            next_tick += 0.02
            await asyncio.sleep(max(0.0, next_tick - loop.time()))


def frames_of(pcm: bytes) -> list[bytes]:
    step = RATE // 50 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def quiet(seconds: float) -> list[bytes]:
    return frames_of(silence(int(seconds * RATE)))


def speech(hz: int, seconds: float) -> list[bytes]:
    return frames_of(tone(hz, seconds, RATE, amplitude=0.4))


async def make_bot(
    *, notice: bool = False, tts_fail: bool = False, language: str = "en", llm_token_s: float = 0.0
) -> Bot:
    echo = EchoReference()
    playback = Playback(RATE, echo)
    asr = FakeASR(SCRIPTS)
    tts = TTSProcessor(FakeTTS(fail=tts_fail), RATE)
    record = CallRecord(call_id="c1")
    llm = FakeLLM({"order": STATUS}, token_s=llm_token_s)
    dm = DialogueManager(
        llm, retail_on(FakeConnector()), record, DialogueParams(notice=notice), autostart="retail"
    )
    procs: list[FrameProcessor] = [
        VADProcessor(FakeVAD(), echo),
        ASRProcessor(asr),
        BargeInProcessor(playback),
        CallTimersProcessor(),
        dm,
        SentenceAggregator(),
        tts,
        playback,
    ]
    bot = Bot(Pipeline(procs), playback, tts, asr, record)

    async def sink(frame: Frame) -> None:
        bot.out.append(frame)

    bot.pipeline.downstream_sink = sink
    bot.pipeline.reporter = lambda n, v, labels: bot.metrics.append((n, v, labels))
    if not tts_fail:
        await tts.prewarm(DialogueManager.prewarm_lines(RETAIL, language))  # type: ignore[arg-type]
    else:
        tts.cache[(PROMPTS["engine_trouble"]["en"], "en")] = tone(200, 0.5, RATE)
    tts.fallback = {"en": PROMPTS["engine_trouble"]["en"], "zh": PROMPTS["engine_trouble"]["zh"]}
    bot.pipeline.start()
    bot.pipeline.queue(StartFrame(call_id="c1", language=language))  # type: ignore[arg-type]
    return bot


def first_gap_after(sent: list[bytes | None], start: int) -> int:
    for i in range(start, len(sent)):
        if sent[i] is None:
            return i
    return -1


async def test_greeting_plays_from_the_prewarmed_cache() -> None:
    bot = await make_bot()
    await bot.clock(quiet(0.5))
    assert sum(1 for s in bot.sent if s) >= 20  # audio from the first ticks: no silence at pickup
    assert bot.sent[1] is not None
    await bot.pipeline.stop()


async def test_caller_speech_stops_playback_within_300ms_and_answers() -> None:
    bot = await make_bot()
    lead = quiet(0.4)
    await bot.clock([*lead, *speech(300, 1.2), *quiet(1.2)])
    start = len(lead)
    gap = first_gap_after(bot.sent, start)
    assert gap > 0, "bot audio never stopped"
    assert (gap - start) * 20 <= 300, f"playback stopped {(gap - start) * 20} ms after speech began"
    assert ("barge_ins", 1.0, {}) in bot.metrics
    assert any("Order 100234 has shipped." in ln.text for ln in bot.record.lines)
    stages = {labels["stage"] for name, _, labels in bot.metrics if name == "stage_seconds"}
    assert {"vad", "asr", "llm_first_token", "tts_first_audio", "turn"} <= stages
    await bot.pipeline.stop()


async def test_hold_line_plays_while_a_slow_plan_streams_and_is_timed_apart() -> None:
    bot = await make_bot(llm_token_s=0.03)  # the plan streams for about 0.7 s
    await bot.clock([*quiet(3.0), *speech(300, 1.0), *quiet(4.0)])  # greeting over before the caller speaks
    said = [ln.text for ln in bot.record.lines if ln.speaker == "bot"]
    hold = said.index(PROMPTS["hold"]["en"])
    assert said[hold + 1] == "Order 100234 has shipped."  # then "anything else?"
    reported = [(labels["stage"], v) for name, v, labels in bot.metrics if name == "stage_seconds"]
    stages = dict(reported)
    # the caller hears the hold line well before the answer; the answer's stages are its own
    assert stages["hold"] + 0.4 < stages["turn"]
    # what the caller sits through in silence ends with the hold line, not the answer
    assert stages["first_audio"] == stages["hold"]
    # "turn" comes last: the gateway closes the turn's record on it, so "hold" must come before
    assert reported[-1][0] == "turn" and "hold" in dict(reported[:-1])
    assert stages["tts_first_audio"] >= 0.0
    await bot.pipeline.stop()


async def test_a_slow_answer_never_leaves_the_caller_in_silence_after_the_hold_line() -> None:
    bot = await make_bot(llm_token_s=0.2)  # the plan streams for about 5 s (a loaded 2-core host)
    start = int(3.0 / 0.02)
    await bot.clock([*quiet(3.0), *speech(300, 1.0), *quiet(9.0)])
    said = [ln.text for ln in bot.record.lines if ln.speaker == "bot"]
    hold = said.index(PROMPTS["hold"]["en"])
    assert said[hold + 1] == PROMPTS["progress"]["en"]  # once, in words; soft cues after it
    assert said[hold + 2] == "Order 100234 has shipped."
    assert said.count(PROMPTS["progress"]["en"]) == 1
    # From the hold line's first audio to the end of the answer: no silence of 1.5 s (75 ticks).
    heard = [i for i in range(start, len(bot.sent)) if bot.sent[i] is not None]
    gaps = [b - a - 1 for a, b in itertools.pairwise(heard)]
    assert max(gaps) < 75, max(gaps)
    stages = {labels["stage"]: v for name, v, labels in bot.metrics if name == "stage_seconds"}
    assert stages["turn"] > 4.0, stages  # the plan really was slow
    assert 0.5 < stages["hold_silence"] < 1.5, stages
    await bot.pipeline.stop()


async def test_a_caller_who_talks_during_the_wait_stops_the_fillers() -> None:
    bot = await make_bot(llm_token_s=0.2)
    # "转人工" over the hold line: the barge-in ends the wait's fillers; that request comes next.
    await bot.clock([*quiet(3.0), *speech(300, 1.0), *quiet(0.6), *speech(700, 0.8), *quiet(8.0)])
    said = [ln.text for ln in bot.record.lines if ln.speaker == "bot"]
    assert PROMPTS["hold"]["en"] in said and PROMPTS["progress"]["en"] not in said, said
    assert said[-1] == PROMPTS["transfer"]["en"], said
    await bot.pipeline.stop()


async def test_backchannel_pauses_then_resumes_without_interrupting() -> None:
    bot = await make_bot()
    await bot.clock([*quiet(0.3), *speech(500, 0.4), *quiet(1.5)])
    assert ("barge_ins", 1.0, {}) not in bot.metrics
    assert ("backchannels", 1.0, {}) in bot.metrics
    assert bot.sent[-10] is not None or bot.playback.played_s > 2.0  # the greeting went on
    assert not any(ln.speaker == "caller" for ln in bot.record.lines)
    await bot.pipeline.stop()


async def test_bot_echo_does_not_interrupt() -> None:
    bot = await make_bot()
    await bot.clock(quiet(1.5), echo_of_bot=0.15)
    assert not any(name in ("barge_ins", "backchannels") for name, _, _ in bot.metrics)
    assert all(s is not None for s in bot.sent[2:60])  # continuous bot audio through the echo
    await bot.pipeline.stop()


async def test_non_interruptible_notice_is_not_paused() -> None:
    bot = await make_bot(notice=True)
    lead = quiet(0.2)
    await bot.clock([*lead, *speech(300, 0.6), *quiet(0.8)])
    notice_frames = int(len(PROMPTS["notice"]["en"]) * 0.02 / 0.02)  # FakeTTS: 0.02 s a character
    assert all(s is not None for s in bot.sent[1 : min(notice_frames, 40)])
    await bot.pipeline.stop()


async def test_transfer_request_reaches_the_sink_after_the_line_is_played() -> None:
    bot = await make_bot(language="zh")
    await bot.clock([*quiet(0.2), *speech(700, 0.8), *quiet(4.0)])
    transfers = [f for f in bot.out if type(f).__name__ == "TransferFrame"]
    assert transfers, [type(f).__name__ for f in bot.out]
    await bot.pipeline.stop()


async def test_tts_failure_plays_the_prewarmed_fallback_line() -> None:
    bot = await make_bot(tts_fail=True)
    await bot.clock(quiet(0.6))
    assert any(s is not None for s in bot.sent)
    assert ("engine_errors", 1.0, {"engine": "tts"}) in bot.metrics
    await bot.pipeline.stop()


# --- single processors ---------------------------------------------------------------------------


class Collect(FrameProcessor):
    name = "collect"

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[Frame] = []

    async def process(self, frame: Frame, direction: Direction) -> None:
        self.frames.append(frame)

    async def on_system(self, frame: Frame) -> None:
        self.frames.append(frame)


async def test_vad_segments_one_utterance_with_pre_roll_and_drops_clicks() -> None:
    vad, sink = VADProcessor(FakeVAD()), Collect()
    pipe = Pipeline([vad, sink])
    pipe.start()
    for f in [*quiet(0.3), *speech(300, 0.05), *quiet(0.7), *speech(300, 1.0), *quiet(0.7)]:
        pipe.queue(InputAudioFrame(pcm=f, sample_rate=RATE))
    await pipe.idle()
    utterances = [f for f in sink.frames if isinstance(f, UtteranceFrame)]
    assert len(utterances) == 1
    assert 1.0 <= utterances[0].duration_s <= 1.0 + VADParams().pre_roll_s + 0.5 + 0.05
    assert [type(f) for f in sink.frames if not isinstance(f, UtteranceFrame | SpeechPauseFrame)] == [
        UserStartedSpeakingFrame,
        UserStoppedSpeakingFrame,
    ]
    await pipe.stop()


async def test_vad_sends_the_speech_so_far_at_a_pause_and_says_whether_the_caller_went_on() -> None:
    vad, sink = VADProcessor(FakeVAD()), Collect()
    pipe = Pipeline([vad, sink])
    pipe.start()
    # a pause of 0.3 s (past early_s, short of stop_s) inside the first utterance; none in the second
    first = [*speech(300, 0.6), *quiet(0.3), *speech(300, 0.6), *quiet(0.7)]
    for f in [*quiet(0.3), *first, *speech(500, 0.8), *quiet(0.7)]:
        pipe.queue(InputAudioFrame(pcm=f, sample_rate=RATE))
    await pipe.idle()
    kinds = [type(f).__name__ for f in sink.frames if isinstance(f, SpeechPauseFrame | UtteranceFrame)]
    assert kinds == [
        "SpeechPauseFrame",
        "SpeechPauseFrame",
        "UtteranceFrame",
        "SpeechPauseFrame",
        "UtteranceFrame",
    ]
    utterances = [f for f in sink.frames if isinstance(f, UtteranceFrame)]
    pauses = [f for f in sink.frames if isinstance(f, SpeechPauseFrame)]
    assert all(u.same_as_pause for u in utterances)  # each ended with a pause it was sent at
    assert utterances[0].pcm.startswith(pauses[1].pcm) and len(pauses[0].pcm) < len(pauses[1].pcm)
    await pipe.stop()


async def test_asr_uses_the_early_transcript_only_when_the_caller_said_nothing_more() -> None:
    asr_engine = FakeASR(SCRIPTS)
    asr, sink = ASRProcessor(asr_engine), Collect()
    metrics: list[tuple[str, float, dict[str, str]]] = []
    pipe = Pipeline([asr, sink], reporter=lambda n, v, labels: metrics.append((n, v, labels)))
    pipe.start()
    pipe.queue(StartFrame(call_id="x", language="en"))
    order, agent = tone(300, 0.5, 16000), tone(700, 0.5, 16000)
    pipe.queue(SpeechPauseFrame(pcm=order, sample_rate=16000))
    pipe.queue(UtteranceFrame(pcm=order, sample_rate=16000, clock=TurnClock(1, 0.0), same_as_pause=True))
    await pipe.idle()
    assert len(asr_engine.calls) == 1  # the early transcription was the transcription
    pipe.queue(SpeechPauseFrame(pcm=order, sample_rate=16000))  # the caller paused, then went on
    pipe.queue(UtteranceFrame(pcm=agent, sample_rate=16000, clock=TurnClock(2, 0.0), same_as_pause=False))
    await pipe.idle()
    texts = [f.text for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert texts == [SCRIPTS[300][0], SCRIPTS[700][0]]
    assert [labels["used"] for n, _, labels in metrics if n == "early_transcripts"] == ["yes", "no"]
    await pipe.stop()


async def test_asr_keeps_another_language_only_when_sure_and_reports_errors() -> None:
    asr_engine = FakeASR(SCRIPTS)
    asr, sink = ASRProcessor(asr_engine), Collect()
    pipe = Pipeline([asr, sink])
    pipe.start()
    pipe.queue(StartFrame(call_id="x", language="en"))
    for hz in (700, 700, 300):  # 700: Mandarin, 300: English
        clock = TurnClock(turn=1, end_of_speech=0.0)
        pipe.queue(UtteranceFrame(pcm=tone(hz, 0.5, 16000), sample_rate=16000, clock=clock))
    await pipe.idle()
    texts = [f for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert [t.language for t in texts] == ["zh", "zh", "zh"]
    # one short Mandarin utterance on the English line is not enough to keep Mandarin; two in a row are
    assert asr_engine.calls == [None, None, "zh"]
    asr_engine.fail = True
    pipe.queue(UtteranceFrame(pcm=tone(300, 0.5, 16000), sample_rate=16000, clock=TurnClock(2, 0.0)))
    await pipe.idle()
    assert isinstance(sink.frames[-1], ErrorFrame)
    await pipe.stop()


async def test_asr_never_uses_a_third_language_it_transcribes_again_in_the_lines() -> None:
    """A short 转人工 heard as Vietnamese on the Mandarin line: transcribed again in Mandarin, in the
    same turn, and the Mandarin line stays Mandarin."""

    class Mishears(FakeASR):
        async def transcribe(self, audio: Audio, *, language: Language | None = None) -> Transcript:
            self.calls.append(language)
            if language is None:
                return Transcript(text="Chuyển nhân công", language="vi", confidence=0.4)
            return Transcript(text="转人工", language=language, confidence=0.8)

    engine = Mishears({})
    asr, sink = ASRProcessor(engine), Collect()
    pipe = Pipeline([asr, sink])
    pipe.start()
    pipe.queue(StartFrame(call_id="x", language="zh"))
    pipe.queue(UtteranceFrame(pcm=tone(300, 0.5, 16000), sample_rate=16000, clock=TurnClock(1, 0.0)))
    await pipe.idle()
    await pipe.stop()
    (text,) = [f for f in sink.frames if isinstance(f, TranscriptionFrame)]
    assert (text.text, text.language) == ("转人工", "zh")
    assert engine.calls == [None, "zh"]


async def test_sentence_aggregator_splits_streamed_tokens() -> None:
    agg, sink = SentenceAggregator(), Collect()
    pipe = Pipeline([agg, sink])
    pipe.start()
    for token in ["Hello", " there.", " Your order", " has shipped", ".", " 好的。", " Bye"]:
        pipe.queue(LLMTextFrame(text=token))
    pipe.queue(LLMTextFrame(text=""))
    await pipe.idle()
    said = [(f.text, f.language) for f in sink.frames if isinstance(f, SpeakFrame)]
    assert said == [
        ("Hello there.", "en"),
        ("Your order has shipped.", "en"),
        ("好的。", "zh"),
        ("Bye", "en"),
    ]
    await pipe.stop()


async def test_no_input_timer_fires_after_bot_stops_and_resets_on_speech() -> None:
    from aicc.appliance.voice.frames import BotStoppedSpeakingFrame

    timers, sink = CallTimersProcessor(no_input_s=0.1, max_call_s=60), Collect()
    pipe = Pipeline([timers, sink])
    pipe.start()
    await pipe.broadcast(BotStoppedSpeakingFrame())
    await asyncio.sleep(0.25)
    await pipe.broadcast(UserStartedSpeakingFrame())
    await pipe.broadcast(BotStoppedSpeakingFrame())
    await asyncio.sleep(0.05)
    await pipe.broadcast(UserStartedSpeakingFrame())
    await asyncio.sleep(0.2)
    fired = [f for f in sink.frames if isinstance(f, NoInputFrame)]
    assert [f.count for f in fired] == [1]
    await pipe.broadcast(EndFrame(reason="test"))
    await pipe.stop()


def test_backchannel_words() -> None:
    assert is_backchannel("嗯。", 0.4)
    assert is_backchannel("OK", 0.3)
    assert not is_backchannel("ok, what about my order", 1.8)
    assert not is_backchannel("stop", 0.4)
