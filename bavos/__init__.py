"""bavos: segment every object in a video with no labels and no prompts.

The public API is ``segment_video`` and ``BavosError``. Importing :mod:`bavos` does not import torch; the pipeline
is imported on first use so that ``bavos --help`` stays fast.
"""

from typing import Any

from bavos.errors import BavosError

__version__ = "0.1.0"
__all__ = ["BavosError", "__version__", "segment_video"]


def __getattr__(name: str) -> Any:
    if name == "segment_video":
        from bavos.segment import segment_video

        return segment_video
    raise AttributeError(f"module 'bavos' has no attribute {name!r}")
