"""CUDA paths of the trainer: AMP and channels-last. Run where an NVIDIA GPU is present."""

import pytest
import torch

from tests.conftest import quick_config
from training.checkpoint import load_checkpoint
from training.trainer import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA"),
]


@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_amp_training_learns_and_checkpoints_load_on_cpu(tmp_path, channels_last):
    cfg = quick_config(
        **{"train.device": "cuda", "train.amp": True, "train.channels_last": channels_last}
    ).training_config()
    result = train(cfg, tmp_path / "cuda")
    assert result.metrics["device"].startswith("cuda")
    assert result.metrics["ensemble_top1"] > 0.8
    assert result.metrics["peak_memory_mb"] > 0
    loaded = load_checkpoint(result.checkpoint)  # saved on the GPU, loaded on the CPU
    assert next(loaded.model.parameters()).device.type == "cpu"
