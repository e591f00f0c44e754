"""bavos: segment every object in a video with no labels and no prompts.

The public API: ``Segmenter`` (models loaded once; videos, arrays or iterables of frames in, results out, nothing
written unless asked), ``segment_video`` (one video into an output folder), ``BavosError`` and ``RandomWeightsWarning``
(models whose backbone has random weights: the masks mean nothing). Importing
:mod:`bavos` does not import torch; the pipeline is imported on first use so that ``bavos --help`` stays fast.
"""

from typing import Any

from bavos.errors import BavosError, RandomWeightsWarning
from bavos.version import __version__

__all__ = ["BavosError", "RandomWeightsWarning", "Result", "Segmenter", "__version__", "segment_video"]


_LAZY = ("Segmenter", "Result", "segment_video")  # bavos.api's, imported on first use (it imports torch)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import bavos.api

        return getattr(bavos.api, name)
    raise AttributeError(f"module 'bavos' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
