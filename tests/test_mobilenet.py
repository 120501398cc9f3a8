"""MobileNetV2's inverted residual in the cnn family, its 224 preset, BatchNorm re-estimation on photo crops,
the residual-add int8 annotation and the uint8 activation form of int8 ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.data import load_dataset
from edgekit.errors import EdgekitError
from edgekit.models import create_model
from edgekit.models.cnn import BLOCKS, PRESETS, InvertedResidual

TINY_V2 = {"in_channels": 3, "image_size": 32, "num_classes": 10, "stem_channels": 16, "stem_stride": 2,
           "block": "inverted_residual", "head_channels": 64,
           "blocks": [[16, 1, 1], [24, 2, 6], [24, 1, 6], [32, 2, 6], [32, 1, 6]]}


def test_inverted_residual_adds_its_input_only_when_shapes_match():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    same = InvertedResidual(16, 16, 1, expand=6).eval()
    assert same.residual and torch.allclose(same(x), x + same.layers(x))
    for block, shape in ((InvertedResidual(16, 24, 1).eval(), (2, 24, 8, 8)),
                         (InvertedResidual(16, 16, 2).eval(), (2, 16, 4, 4))):
        assert not block.residual
        assert block(x).shape == shape and torch.equal(block(x), block.layers(x))
    # expand 1: no expansion conv (depthwise → project); expand 6: 1x1 to 6x channels first
    assert [type(m).__name__ for m in InvertedResidual(16, 16, 1, expand=1).layers][0] == "Conv2d"
    assert InvertedResidual(16, 16, 1, expand=1).layers[0].groups == 16
    assert InvertedResidual(16, 16, 1, expand=6).layers[0].out_channels == 96
    assert not isinstance(InvertedResidual(16, 16, 1).layers[-1], (torch.nn.ReLU6, torch.nn.ReLU))  # linear bottleneck


def test_mobilenet_v2_preset_has_mobilenet_v2_parameter_count():
    model = create_model("cnn", PRESETS.get("mobilenet_v2_224"))
    assert sum(p.numel() for p in model.parameters()) == 3_504_872  # torchvision's mobilenet_v2()
    assert sum(b.residual for b in model.blocks) == 10 and len(model.blocks) == 17
    assert model.example_inputs()[0].shape == (1, 3, 224, 224)
    with pytest.raises(EdgekitError, match="unknown cnn block kind 'resnet'.*inverted_residual"):
        create_model("cnn", {"block": "resnet"})


def test_old_cnn_configs_build_the_same_model():
    """A meta.json written before block kinds existed has none of the new keys: same modules, same names."""
    model = create_model("cnn", {"width": 1.0})
    assert sum(p.numel() for p in model.parameters()) == 136_202  # counted by hand from the default blocks
    keys = list(model.state_dict())
    assert keys[:3] == ["stem.0.weight", "stem.1.weight", "stem.1.bias"]
    assert "blocks.0.depthwise.weight" in keys and "blocks.4.pointwise.weight" in keys and keys[-1] == "head.1.bias"
    assert not any(k.startswith("head_conv") for k in keys)
    assert model.stem[0].stride == (1, 1) and set(BLOCKS.names()) == {"depthwise_separable", "inverted_residual"}


def test_photo_crops_are_normalized_distinct_and_reproducible():
    a = load_dataset("photo_crops", image_size=32, train=24, val=2, test=4, seed=0)
    b = load_dataset("photo_crops", image_size=32, train=24, val=2, test=4, seed=0)
    assert a.train.inputs.shape == (24, 3, 32, 32) and torch.equal(a.train.inputs, b.train.inputs)
    assert not torch.equal(a.train.inputs, a.test.inputs[:1].expand(24, -1, -1, -1))
    assert {"china", "flower"} <= set(a.labels) and len(set(a.train.labels.tolist())) >= 2
    means = a.train.inputs.mean(dim=(0, 2, 3))
    assert means.abs().max() < 1.0 and 0.5 < float(a.train.inputs.std()) < 2.0  # ImageNet-normalized photos
    assert float(a.train.inputs.std(dim=0).mean()) > 0.3  # crops differ from each other


def test_batchnorm_reestimation_makes_logits_depend_on_the_image():
    torch.manual_seed(0)
    model = create_model("cnn", TINY_V2).eval()
    data = load_dataset("photo_crops", image_size=32, train=64, val=1, test=8)
    with torch.no_grad():
        before = model(data.test.inputs)
        model.reestimate_batchnorm(data.train.inputs.split(16))
        after = model(data.test.inputs)
    assert not model.training and torch.isfinite(after).all()
    spread = lambda y: float(y.std(dim=0).mean())  # how much the logits change from image to image
    assert spread(after) > 100 * spread(before) and spread(after) > 1e-3
    first = model.blocks[0].layers[1]
    assert first.num_batches_tracked == 4 and not torch.allclose(first.running_var, torch.ones_like(first.running_var))
    with pytest.raises(EdgekitError, match="no input batches"):
        model.reestimate_batchnorm([])


def test_residual_adds_between_int8_tensors_are_quantized():
    """Each residual add reads two observed (int8) tensors and its output is observed too: an int8 add."""
    from edgekit.graph import ModelSource
    from edgekit.quant.pt2e import prepare_quant
    from edgekit.quant.spec import QuantSpec

    model = create_model("cnn", TINY_V2).eval()
    source = ModelSource("m", model, model.example_inputs(), ("image",), ("logits",), "x", "test", "module")
    graph = prepare_quant(source, QuantSpec.parse("int8"), []).prepared.graph
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.add.Tensor]
    assert len(adds) == 3  # the three stride-1, same-width blocks (16→16, 24→24, 32→32)
    observed = lambda n: n.op == "call_module" and "activation_post_process" in str(n.target)
    for add in adds:
        assert all(observed(a) for a in add.args) and [observed(u) for u in add.users] == [True]


def _qdq_conv_model():
    """x → Q/DQ (int8, zero point 5) → Conv (int8 per-channel weights) → Q/DQ → Add with the first DQ."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(5, np.int8), "z"),
            numpy_helper.from_array(rng.integers(-60, 60, (4, 4, 1, 1)).astype(np.int8), "w"),
            numpy_helper.from_array(np.full(4, 0.01, np.float32), "ws"), numpy_helper.from_array(np.zeros(4, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]), helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"]), helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]), helper.make_node("Add", ["cd", "xd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3, 3])], init,
                              value_info=[helper.make_tensor_value_info("cq", TensorProto.INT8, [1, 4, 3, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_uint8_activations_give_identical_onnx_runtime_outputs(tmp_path):
    import onnx
    import onnxruntime as ort

    from edgekit.converters.onnx.qdq import activations_to_uint8

    model = _qdq_conv_model()
    onnx.save(model, tmp_path / "s8.onnx")
    assert activations_to_uint8(model) == 4  # the two Q and two DQ of activations; the weight's DQ stays int8
    onnx.checker.check_model(model)
    onnx.save(model, tmp_path / "u8.onnx")
    zero_points = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert zero_points["z_uint8"] == 133 and zero_points["wz"].dtype == np.int8
    x = {"x": np.random.default_rng(1).normal(0, 3, (1, 4, 3, 3)).astype(np.float32)}  # values that saturate too
    out = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, x)[0]
           for f in ("s8.onnx", "u8.onnx")]
    assert np.abs(out[0]).max() > 0.5 and np.array_equal(out[0], out[1])
