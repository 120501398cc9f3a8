"""Model registry, the CNN family, bundled digits and the image-folder loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.data import load_dataset
from edgekit.errors import EdgekitError
from edgekit.models import FAMILIES, create_model


def test_cnn_is_registered_and_configurable():
    assert "cnn" in FAMILIES.names()
    small = create_model("cnn", {"width": 0.5, "blocks": [[32, 2], [64, 2]]})
    big = create_model("cnn", {"width": 1.0})
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in big.parameters())
    assert n_small < n_big / 4
    assert len(small.blocks) == 2
    (x,) = small.example_inputs()
    assert x.shape == (1, 1, 32, 32)
    assert small.eval()(x).shape == (1, 10)
    depthwise = [m for m in big.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels for m in depthwise)


def test_unknown_family_lists_known_ones():
    with pytest.raises(EdgekitError, match="unknown model family 'resnet'.*cnn"):
        create_model("resnet")


def test_digits_split_is_fixed_and_stratified():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=0)
    c = load_dataset("digits", seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (1023, 180, 594)
    assert torch.equal(a.test.inputs, b.test.inputs)
    assert not torch.equal(a.test.inputs, c.test.inputs)
    assert a.input_shape == (1, 32, 32)
    counts = np.bincount(a.test.labels.numpy(), minlength=10)
    assert counts.min() >= 55 and counts.max() <= 62
    assert abs(float(a.train.inputs.mean())) < 0.1 and 0.9 < float(a.train.inputs.std()) < 1.1


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, level in (("dark", 40), ("light", 220)):
        (tmp_path / cls).mkdir()
        for i in range(10):
            pixels = np.clip(rng.normal(level, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / cls / f"{i}.png")
    data = load_dataset("image_folder", path=str(tmp_path), image_size=16, color="rgb", test_fraction=0.2)
    assert data.labels == ["dark", "light"]
    assert data.input_shape == (3, 16, 16)
    assert len(data.train) + len(data.val) + len(data.test) == 20
    dark = data.train.inputs[data.train.labels == 0].mean()
    light = data.train.inputs[data.train.labels == 1].mean()
    assert dark < 0 < light
    assert data.preprocessing.scale == pytest.approx(1 / 255)


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgekitError, match="does not exist"):
        load_dataset("image_folder", path=str(tmp_path / "missing"))
    (tmp_path / "only").mkdir()
    with pytest.raises(EdgekitError, match="one subfolder per class"):
        load_dataset("image_folder", path=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekitError, match="has no images"):
        load_dataset("image_folder", path=str(tmp_path))
