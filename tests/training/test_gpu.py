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


def test_data_held_on_the_gpu_gives_the_cpu_batches():
    from dataclasses import replace

    from training.config import DataConfig
    from training.data import TensorImages, load_data, make_loader

    digits = load_data(DataConfig(name="digits"))
    spec = replace(digits.spec, augmentation="crop2+flip")
    data = TensorImages(digits.train.images, digits.train.labels, spec, "all", digits.train.indices)
    cpu = make_loader(data, 64, shuffle=True, seed=3, augment="crop2+flip")
    gpu = make_loader(
        data, 64, shuffle=True, seed=3, augment="crop2+flip", device=torch.device("cuda")
    )
    for (xc, yc), (xg, yg) in zip(cpu, gpu, strict=True):
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        torch.testing.assert_close(xg.cpu(), xc)
        assert torch.equal(yg.cpu(), yc)


def test_compiled_bf16_channels_last_training_on_gpu_data(tmp_path):
    cfg = quick_config(
        **{
            "train.device": "cuda",
            "train.amp": True,
            "train.channels_last": True,
            "train.data_on_device": True,
            "train.compile": True,
            "train.epochs": 3,
        }
    ).training_config()
    result = train(cfg, tmp_path / "compiled")
    assert result.metrics["ensemble_top1"] > 0.8
    assert result.metrics["images_per_second"] > 0
