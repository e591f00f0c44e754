import pytest
import torch

from bavos.config import SegmentConfig, TrainConfig
from bavos.errors import ConfigError
from bavos.models.devices import precision_context, resolve_device


def test_float32_is_the_default_everywhere() -> None:
    assert SegmentConfig().precision == "float32"
    assert TrainConfig().precision == "float32"


def test_float32_on_cuda_turns_tensorfloat32_off_and_restores_it() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with precision_context(torch.device("cuda"), "float32"):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize(("precision", "dtype"), [("float32", torch.float32), ("bf16", torch.bfloat16),
                                                  ("fp16", torch.float16)])
def test_precision_context_dtypes(precision: str, dtype: torch.dtype) -> None:
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    with precision_context(torch.device("cpu"), precision):
        assert (x @ w).dtype == dtype


def test_bad_precision_and_device() -> None:
    with pytest.raises(ConfigError, match="--precision must be one of float32, bf16, fp16"):
        SegmentConfig(precision="auto")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        TrainConfig(precision="fp8")
    with pytest.raises(ConfigError, match="--precision must be one of"), precision_context(torch.device("cpu"), "x"):
        pass
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
