"""Turn PaddleSpeech's usage statistics off (data residency): no request ever leaves the host.

Loaded at interpreter start by aicc_paddle_nostats.pth; when paddlespeech.cli.utils is imported, its
statistics sender and worker thread are replaced with no-ops.
"""

import importlib.abc
import importlib.machinery
import sys

_TARGET = "paddlespeech.cli.utils"


def _silence(module):
    if hasattr(module, "_note_one_stat"):
        module._note_one_stat = lambda *args, **kwargs: None
    worker = getattr(module, "StatsWorker", None)
    if worker is not None:
        worker.run = lambda self: None
    if hasattr(module, "stats_api"):
        module.stats_api = "http://127.0.0.1:9/disabled"


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            _silence(module)

        loader.exec_module = exec_module
        return spec


if _TARGET in sys.modules:
    _silence(sys.modules[_TARGET])
else:
    sys.meta_path.insert(0, _Hook())
