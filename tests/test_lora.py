"""LoRA: adapters improve a synthetic shift, refuse a foreign base, merge and package with shared weights."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.checkpoint import load_checkpoint, save_checkpoint
from edgekit.cli import main
from edgekit.converters.base import CONVERTERS, Converter
from edgekit.errors import EdgekitError
from edgekit.graph import ModelSource, NamedGraph
from edgekit.lora import AdaptOptions, AdapterMismatchError, adapt_checkpoint, load_adapter
from edgekit.lora.adapter import Adapter
from edgekit.lora.fold import export_variant, fold_batchnorm
from edgekit.lora.layers import inject_lora, lora_layers, lora_state_dict, merge_lora, resolve_targets

FAST = AdaptOptions(steps=150, examples=200, lr=1e-2)  # seconds; adapters near real ones (quantized bundles flip near ties of weak ones)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def adapters(checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Two small adapters of the session checkpoint, one per synthetic digits shift."""
    root = tmp_path_factory.mktemp("adapters")
    made = {}
    for domain in ("digits_inverted_rotated", "digits_mirrored_noisy"):
        made[domain] = adapt_checkpoint(checkpoint, root / domain, domain=domain, options=FAST).path
    return made


def test_lora_layers_merge_and_fold_exactly():
    """Merged weights and the BN-folded export form compute what the adapted model computes."""
    from edgekit.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn", {"blocks": [[16, 2], [32, 1]], "stem_channels": 8}).eval()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 1.5)
    adapted = copy.deepcopy(model)
    targets = inject_lora(adapted, resolve_targets(adapted, ["*"]), rank=4, alpha=8)
    assert "blocks.0.depthwise" not in targets and "head.1" in targets  # depthwise convs are skipped
    for layer in lora_layers(adapted).values():
        layer.lora_B.weight.data.normal_(0, 0.1)
    x = torch.randn(3, 1, 32, 32)
    want = adapted(x)
    adapter = Adapter(lora_state_dict(adapted), {"target_modules": targets, "rank": 4, "alpha": 8,
                                                 "base_sha256": "-"}, Path("unused"))
    folded, scales = fold_batchnorm(model)
    variant = export_variant(folded, scales, adapter)
    assert torch.allclose(variant(x), want, atol=1e-5)
    assert variant.stem[0].base_layer.weight is folded.stem[0].weight  # base tensors shared, not copied
    assert torch.allclose(merge_lora(copy.deepcopy(adapted))(x), want, atol=1e-5)
    with pytest.raises(EdgekitError, match="match no Linear/Conv"):
        resolve_targets(model, ["nothing.*"])


def _named(name: str, module: torch.nn.Module, *example: torch.Tensor) -> NamedGraph:
    return NamedGraph(name, ModelSource(name, module.eval(), example, tuple(f"x{i}" for i in range(len(example))),
                                        ("y",), "-", "memory", "checkpoint"))


def test_onnx_exposes_the_weights_that_differ_between_graphs():
    """ONNX export_many finds each graph's own weights by value: for base + adapters the LoRA factors (the
    folded base tensors are shared byte for byte); adapters of another rank cannot fill the same inputs."""
    from edgekit.converters.onnx.adapters import graph_weights
    from edgekit.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn", {"blocks": [[16, 2], [32, 1]], "stem_channels": 8}).eval()
    folded, scales = fold_batchnorm(model)

    def variant(name: str, rank: int) -> NamedGraph:
        adapted = copy.deepcopy(model)
        targets = inject_lora(adapted, resolve_targets(adapted, ["*"]), rank=rank, alpha=8)
        for layer in lora_layers(adapted).values():
            layer.lora_B.weight.data.normal_(0, 0.1)
        adapter = Adapter(lora_state_dict(adapted), {"target_modules": targets, "rank": rank, "alpha": 8,
                                                     "base_sha256": "-"}, Path("unused"))
        return _named(name, export_variant(folded, scales, adapter))

    base, a, b = _named("base", folded), variant("a", 4), variant("b", 4)
    template, own = graph_weights([base, a, b])
    assert template is a and own["base"] == {}
    assert set(own["a"]) == set(own["b"]) and own["a"] and all(".lora_" in n for n in own["a"])
    assert not np.array_equal(own["a"]["head.1.lora_B.weight_t"], own["b"]["head.1.lora_B.weight_t"])
    with pytest.raises(EdgekitError, match="same names and shapes"):
        CONVERTERS.get("onnx").check_many("fp32", [base, a, variant("c", 2)])
    with pytest.raises(EdgekitError, match="fp32, int8-weight, not int8"):
        CONVERTERS.get("onnx").check_many("int8")


def test_default_export_many_writes_one_file_per_further_graph(tmp_path):
    """A format without its own export_many gets several graphs per artifact from the default: the first
    graph at the path, each further one as ``<stem>.<name><suffix>`` beside it, each runnable by name."""
    from edgekit.converters.onnx.export import OnnxConverter

    class PlainOnnx(OnnxConverter):  # not registered: ONNX with the Converter defaults for several graphs
        export_many, check_many, switcher = Converter.export_many, Converter.check_many, Converter.switcher

        def runner(self, path, threads, variant=None):
            return super().runner(self.graph_file(path, variant), threads)

    torch.manual_seed(0)
    x = torch.randn(1, 3)
    first, second = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    conv, path = PlainOnnx(), tmp_path / "m.onnx"
    written = conv.export_many([_named("a", first, x), _named("b", second, x)], path, "fp32", {})
    assert written.select == {"a": {"file": "m.onnx"}, "b": {"file": "m.b.onnx"}}
    assert written.side_files == [tmp_path / "m.b.onnx"] and path.is_file()
    switch = conv.switcher(path, 1)
    for name, module in (("a", first), ("b", second)):
        want = module(x).detach().numpy()
        np.testing.assert_allclose(conv.runner(path, 1, name)([x.numpy()])[0], want, atol=1e-6)
        np.testing.assert_allclose(switch(name, [x.numpy()])[0], want, atol=1e-6)
    with pytest.raises(EdgekitError, match="several graphs support fp32, int8-weight, not int8$"):
        conv.export_many([_named("a", first, x)], path, "int8", {})


def test_adapter_improves_accuracy_on_synthetic_shift(adapters):
    for domain, path in adapters.items():
        meta = json.loads((path / "adapter.json").read_text())
        before, after = meta["before"]["accuracy"], meta["after"]["accuracy"]
        assert after >= before + 0.30, (domain, before, after)
        assert meta["base_sha256"] and meta["examples"] == FAST.examples and meta["steps"] == FAST.steps
        assert 0 < meta["trainable_fraction"] < 0.15 and "synthetic" in meta["data_description"]
        assert (path / "adapter.safetensors").is_file()


def test_adapter_refuses_another_base(checkpoint, adapters, tmp_path, capsys):
    ckpt = load_checkpoint(checkpoint)
    other = copy.deepcopy(ckpt.model)
    with torch.no_grad():
        other.head[1].bias.add_(0.01)
    other_path = save_checkpoint(other, tmp_path / "other", {k: v for k, v in ckpt.meta.items()
                                                            if k not in ("family", "config", "weights_sha256")})
    other_ckpt = load_checkpoint(other_path)
    adapter = load_adapter(adapters["digits_inverted_rotated"])
    with pytest.raises(AdapterMismatchError) as err:
        adapter.applied_to(other_ckpt)
    assert ckpt.sha256 in str(err.value) and other_ckpt.sha256 in str(err.value)
    code, _, stderr = run_cli(capsys, "convert", other_path, "--adapter", adapter.path, "--to", "onnx",
                              "--out", tmp_path / "b")
    assert code == 1 and other_ckpt.sha256 in stderr and adapter.base_sha256 in stderr
    assert not (tmp_path / "b").exists()


def test_merged_adapter_export_parity(checkpoint, adapters, tmp_path, capsys):
    path = adapters["digits_inverted_rotated"]
    after = json.loads((path / "adapter.json").read_text())["after"]["accuracy"]
    code, out, _ = run_cli(capsys, "convert", checkpoint, "--adapter", path, "--to", "onnx,tflite",
                           "--out", tmp_path / "merged", "--json")
    assert code == 0
    for art in json.loads(out)["artifacts"]:
        v = art["verification"]
        assert art["status"] == "verified" and v["max_abs_diff"] < 1e-4
        assert "digits_inverted_rotated test split" in v["input_source"]
        assert v["accuracy"] == pytest.approx(after, abs=0.005)


def test_multi_adapter_bundle(checkpoint, adapters, tmp_path, capsys):
    bundle = tmp_path / "multi"
    paths = ",".join(str(p) for p in adapters.values())
    code, out, err = run_cli(capsys, "convert", checkpoint, "--adapters", paths, "--to", "onnx,tflite",
                             "--out", bundle, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [a["name"] for a in result["adapters"]] == list(adapters)
    names = ["base", *adapters]
    for art in result["artifacts"]:
        assert art["status"] == "verified", art["error"]
        assert [v["name"] for v in art["variants"]] == names
        for v in art["variants"]:
            assert v["verification"]["status"] == "passed" and v["verification"]["max_abs_diff"] < 1e-4
        assert art["verification"]["size_ratio_vs_base"] <= 1.35
        assert art["size_bytes"] == pytest.approx(art["verification"]["size_ratio_vs_base"]
                                                  * art["verification"]["base_size_bytes"])
    by_format = {a["format"]: a for a in result["artifacts"]}
    assert by_format["tflite"]["variants"][1]["select"] == {"signature": "digits_inverted_rotated"}
    adapter_files = [v["select"]["adapter_file"] for v in by_format["onnx"]["variants"][1:]]
    assert all((bundle / f).is_file() and f.endswith(".onnx_adapter") for f in adapter_files)
    assert (bundle / "golden.npz").is_file() and (bundle / "golden_digits_mirrored_noisy.npz").is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["adapters"][0]["base_sha256"] == load_checkpoint(checkpoint).sha256
    docs = manifest["documents"]  # model card + app code, written after every variant was verified
    assert "error" not in docs["app_code"] and "error" not in docs["model_card"], docs
    kotlin = {Path(f).name: (bundle / f).read_text() for f in docs["app_code"]["files"] if f.endswith(".kt")}
    tflite_kt = next(t for n, t in kotlin.items() if n.endswith("Tflite.kt"))
    onnx_kt = next(t for n, t in kotlin.items() if n.endswith("Onnx.kt"))
    assert all(f'"{n}" to "{n}"' in tflite_kt for n in names)  # LiteRT: a signature per variant
    assert all(f'to "{f}"' in onnx_kt for f in adapter_files) and '"base" to null' in onnx_kt  # ORT: .onnx_adapter
    assert all((bundle / "app" / "golden" / f"{n}.json").is_file() for n in adapters)  # each variant's golden rows
    card = json.loads((bundle / "model_card.json").read_text())
    assert {(r["format"], r["variant"]) for r in card["formats"]} >= {(f, n) for f in ("onnx", "tflite") for n in names}

    code, out, _ = run_cli(capsys, "verify", bundle, "--json")
    assert code == 0 and {r["status"] for r in json.loads(out)["results"]} == {"passed"}
    code, out, _ = run_cli(capsys, "bench", bundle, "--runs", "3", "--warmup", "1", "--json")
    assert code == 0
    rows = [r["artifact"] for r in json.loads(out)]
    for fmt in ("onnx", "tflite"):
        file = by_format[fmt]["file"]
        assert {file, f"{file}#digits_inverted_rotated", f"{file}#digits_mirrored_noisy", f"{file}#switch"} <= set(rows)


def test_adapt_cli_and_errors(checkpoint, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "adapt", checkpoint, "--domain", "digits_mirrored_noisy", "--steps", "2",
                           "--examples", "8", "--rank", "2", "--targets", "head.*", "--out", tmp_path / "a", "--json")
    assert code == 0
    meta = json.loads(out)
    assert meta["target_modules"] == ["head.1"] and meta["rank"] == 2 and meta["examples"] == 8
    assert (tmp_path / "a" / "adapter.safetensors").is_file()
    code, _, err = run_cli(capsys, "adapt", checkpoint, "--domain", "nope")
    assert code == 1 and "digits_inverted_rotated" in err and "prose" in err
    code, _, err = run_cli(capsys, "adapt", checkpoint, "--domain", "prose", "--steps", "1")
    assert code == 1 and "byte_lm" in err
    code, _, err = run_cli(capsys, "adapt", checkpoint, "--domain", "digits_mirrored_noisy", "--targets", "zzz*",
                           "--out", tmp_path / "never")
    assert code == 1 and "match no" in err and not (tmp_path / "never").exists()
    code, out, _ = run_cli(capsys, "list", "domains")
    assert code == 0 and "synthetic" in out


def test_recipe_adapt_section_is_validated(tmp_path):
    from edgekit.recipe import load_recipe

    base = (Path(__file__).parents[1] / "recipes" / "cnn_digits.toml").read_text()
    good = tmp_path / "good.toml"
    good.write_text(base + '\n[adapt]\ndomain = "digits_inverted_rotated"\nsteps = 10\ntargets = ["head.*"]\n')
    recipe = load_recipe(good)
    assert recipe.adapt.enabled and recipe.adapt.targets == ("head.*",)
    assert not load_recipe("cnn_digits").adapt.enabled
    for body, fragment in (('domain = "nope"', "digits_inverted_rotated"), ("ranks = 4", "allowed keys"),
                           ('domain = "prose"\ndata = "x.txt"', "not both"),
                           ("steps = 0", "adapt.steps = 0 is out of range; expected an integer >= 1")):
        bad = tmp_path / "bad.toml"
        bad.write_text(base + f"\n[adapt]\n{body}\n")
        with pytest.raises(EdgekitError, match=fragment):
            load_recipe(bad)


def test_run_recipe_with_adapt_step(tmp_path):
    """`edgekit run` of a recipe with [adapt]: the adapter is trained, packaged with the base, benched."""
    from edgekit.pipeline import run_pipeline
    from edgekit.recipe import load_recipe

    base = (Path(__file__).parents[1] / "recipes" / "cnn_digits.toml").read_text()
    small = base.replace("epochs = 20", "epochs = 1")
    small = small.replace('formats = ["onnx", "tflite", "coreml"]', 'formats = ["onnx"]')
    small = small.replace("warmup = 20", "warmup = 1").replace("runs = 200", "runs = 3")
    recipe_path = tmp_path / "tiny.toml"
    recipe_path.write_text(small + '\n[adapt]\ndomain = "digits_inverted_rotated"\nsteps = 3\nexamples = 16\n')
    outcome = run_pipeline(load_recipe(recipe_path), tmp_path / "run")
    assert outcome.ok, outcome.rows
    report = outcome.report
    assert report["adaptation"]["domain"] == "digits_inverted_rotated" and report["adaptation"]["steps"] == 3
    assert (tmp_path / "run" / "adapters" / "digits_inverted_rotated" / "adapter.safetensors").is_file()
    files = {r["artifact"] for r in outcome.rows}
    assert {"cnn_digits_fp32_adapters.onnx", "cnn_digits_fp32_adapters.onnx#digits_inverted_rotated",
            "cnn_digits_fp32_adapters.onnx#switch"} <= files


def test_weight_only_int8_multi_adapter_bundle(checkpoint, adapters, tmp_path, capsys):
    """int8-weight bundles: TFLite (ai-edge-quantizer on the multi-signature file, shared base weights
    quantized once) and ONNX (int8 base and int8 adapter files); every variant verified."""
    import onnx
    import onnxruntime as ort

    bundle = tmp_path / "multi8"
    paths = ",".join(str(p) for p in adapters.values())
    code, out, err = run_cli(capsys, "convert", checkpoint, "--adapters", paths, "--to", "onnx,tflite",
                             "--quant", "int8-weight", "--out", bundle, "--json")
    assert code == 0, err
    for art in json.loads(out)["artifacts"]:
        assert art["status"] == "verified", art["error"]
        assert all(v["verification"]["status"] == "passed" for v in art["variants"])
        # measured on the recipe CNN with rank-8 adapters: TFLite 1.35x, ONNX 1.31x of the int8-weight base alone
        assert art["verification"]["size_ratio_vs_base"] <= 1.4, art["format"]
    model = onnx.load(str(bundle / "cnn_digits_int8-weight_adapters.onnx"))
    assert {n.op_type for n in model.graph.node} >= {"DequantizeLinear"}
    sparse = model.graph.sparse_initializer  # zero defaults of the LoRA inputs, no values stored
    assert sparse and all(len(s.values.dims) == 1 and s.values.dims[0] == 0 for s in sparse)
    adapter_file = bundle / "cnn_digits_int8-weight_adapters.digits_inverted_rotated.onnx_adapter"
    fmt = ort.AdapterFormat.read_adapter(str(adapter_file))
    dtypes = {name: value.numpy().dtype for name, value in fmt.get_parameters().items()}
    int8 = [d for n, d in dtypes.items() if n.endswith("_int8")]
    assert int8 and all(d == np.int8 for d in int8) and len(int8) * 2 == len(dtypes)  # + one scale each


def test_training_keeps_the_best_validation_step():
    """Validation loss is checked during training and the best step's LoRA weights are kept: when the
    validation data disagrees with the training data, that is step 0, the base model itself."""
    from edgekit.data import Split
    from edgekit.lora.domains import AdaptData
    from edgekit.lora.layers import inject_lora
    from edgekit.lora.train import _train

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
    x = torch.randn(64, 4)
    train = Split(x, x[:, :3].argmax(1))
    contrary = Split(x[:32], (x[:32, :3].argmax(1) + 1) % 3)  # labels the training pushes away from
    inject_lora(model, ["0"], rank=2, alpha=4)
    _, _, picked = _train(model, AdaptData("t", "classification", train, train, ""), FAST, contrary)
    assert picked["best_step"] == 0 and picked["best_loss"] == picked["loss_before"]
    assert not model[0].lora_B.weight.any()  # restored: the update is zero again
    _, _, picked = _train(model, AdaptData("t", "classification", train, train, ""), FAST, Split(x[:32], train.labels[:32]))
    assert picked["best_step"] > 0 and picked["best_loss"] < picked["loss_before"]


def test_lora_on_a_byte_lm_tied_output_merges_without_touching_the_embedding():
    from edgekit.lora.layers import inject_lora, merge_lora, resolve_targets
    from edgekit.models import create_model

    torch.manual_seed(0)
    model = create_model("ssm", {"head": "byte_lm", "d_model": 32, "n_layers": 1, "head_dim": 16, "d_state": 8,
                                 "chunk": 16}).eval()
    assert model.head.output.weight is model.head.embedding.weight  # tied: saved once
    keys = set(model.state_dict())
    assert resolve_targets(model, ["head.output"]) == ["head.output"]
    inject_lora(model, ["head.output"], rank=4, alpha=8)
    torch.nn.init.normal_(model.head.output.lora_B.weight)
    tokens = torch.randint(0, 256, (1, 24), dtype=torch.int32)
    adapted = model(tokens)[0]
    embedding = model.head.embedding.weight.clone()
    merged = merge_lora(model)
    assert torch.allclose(merged(tokens)[0], adapted, atol=1e-5)
    assert torch.equal(merged.head.embedding.weight, embedding) and set(merged.state_dict()) == keys | {"head.output.weight"}


def test_adapter_training_is_reproducible_whatever_ran_before(checkpoint, tmp_path):
    """The same options give the same adapter: lora_A's random start does not depend on the caller's RNG."""
    from safetensors.torch import load_file

    options = AdaptOptions(steps=3, examples=32)
    first = adapt_checkpoint(checkpoint, tmp_path / "a", domain="digits_mirrored_noisy", options=options).path
    torch.rand(1000)  # the caller draws random numbers in between
    second = adapt_checkpoint(checkpoint, tmp_path / "b", domain="digits_mirrored_noisy", options=options).path
    a, b = (load_file(str(Path(p) / "adapter.safetensors")) for p in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_coreml_multifunction_bundle(checkpoint, adapters, tmp_path, capsys):
    """Core ML: one function per variant, each verified by the MIL reference evaluator (Core ML itself
    predicts only on macOS); the compacted programs keep one const per distinct text value."""
    pytest.importorskip("coremltools")
    import coremltools as ct

    bundle = tmp_path / "multi_coreml"
    paths = ",".join(str(p) for p in adapters.values())
    code, out, err = run_cli(capsys, "convert", checkpoint, "--adapters", paths, "--to", "coreml",
                             "--out", bundle, "--json")
    assert code == 0, err
    (art,) = json.loads(out)["artifacts"]
    assert art["status"] == "verified", art["error"]
    assert [v["select"] for v in art["variants"]] == [{"function": n} for n in ("base", *adapters)]
    assert all(v["verification"]["status"] == "passed" and v["verification"]["method"] == "mil-reference"
               for v in art["variants"])
    assert art["verification"]["size_ratio_vs_base"] <= 1.35  # measured 1.26x (fp16 weights)
    (swift,) = (bundle / "app" / "swift").glob("*Coreml.swift")  # the app code selects a function by name
    assert "config.functionName = name" in swift.read_text() and all(f'"{n}"' in swift.read_text() for n in adapters)
    spec = ct.models.MLModel(str(bundle / art["file"]), skip_model_load=True).get_spec()
    assert set(spec.mlProgram.functions) == {"base", *adapters}
    for name, function in spec.mlProgram.functions.items():
        ops = function.block_specializations[function.opset].operations
        texts = [op.attributes["val"].immediateValue.tensor.strings.values[0] for op in ops
                 if op.type == "const" and op.attributes["val"].immediateValue.tensor.HasField("strings")]
        assert texts and len(texts) == len(set(texts)), (name, texts)


def test_coreml_int8_weight_bundle_scales_adapter_weights_per_tensor(checkpoint, adapters, tmp_path, capsys):
    """int8-weight Core ML bundle: iOS 18 ops (no zero points stored), the base's weights per output
    channel in every function, each adapter's own LoRA factors with one scale each; all verified."""
    pytest.importorskip("coremltools")
    import coremltools as ct

    bundle = tmp_path / "multi8_coreml"
    paths = ",".join(str(p) for p in adapters.values())
    code, out, err = run_cli(capsys, "convert", checkpoint, "--adapters", paths, "--to", "coreml",
                             "--quant", "int8-weight", "--out", bundle, "--json")
    assert code == 0, err
    (art,) = json.loads(out)["artifacts"]
    assert art["status"] == "verified", art["error"]
    assert all(v["verification"]["status"] == "passed" for v in art["variants"])
    assert art["verification"]["size_ratio_vs_base"] <= 1.45  # benchmarks/results/lora.json (rank 8): 1.42x; 1.48x with iOS 16 ops and per-channel LoRA scales
    spec = ct.models.MLModel(str(bundle / art["file"]), skip_model_load=True).get_spec()
    lora_tensors = 2 * len(load_adapter(adapters["digits_inverted_rotated"]).meta["target_modules"])
    for name, function in spec.mlProgram.functions.items():
        ops = [op for op in function.block_specializations[function.opset].operations if op.type.startswith("constexpr")]
        assert ops and {op.type for op in ops} == {"constexpr_blockwise_shift_scale"}, name
        scales = [op.inputs["scale"].arguments[0].value.type.tensorType.dimensions for op in ops]
        single = sum(all(d.constant.size == 1 for d in dims) for dims in scales)
        assert single == (0 if name == "base" else lora_tensors), (name, single)


def test_adapters_are_peft_adapters_both_ways(checkpoint, adapters):
    """An edgekit adapter loads into PEFT's LoRA (its adapter.json ``peft_config`` as the LoraConfig,
    its tensors under PEFT's keys) with outputs identical to edgekit's, and a LoRA trained with PEFT on
    an edgekit model loads into edgekit's layers with the same outputs: the same tensors, the same model."""
    import peft

    from edgekit.checkpoint import load_checkpoint
    from edgekit.lora.layers import KEY_PREFIX, load_lora_state

    ckpt = load_checkpoint(checkpoint)
    adapter = load_adapter(adapters["digits_inverted_rotated"])
    x = torch.randn(8, *ckpt.model.example_inputs()[0].shape[1:])
    config = peft.LoraConfig(**adapter.meta["peft_config"])

    in_peft = peft.inject_adapter_in_model(config, copy.deepcopy(ckpt.model)).eval()
    loaded = peft.set_peft_model_state_dict(in_peft, {k.removeprefix(KEY_PREFIX): v for k, v in adapter.state.items()})
    assert not loaded.unexpected_keys
    ours = adapter.applied_to(ckpt).eval()
    with torch.no_grad():
        assert torch.equal(in_peft(x), ours(x)) and not torch.equal(ours(x), ckpt.model.eval()(x))

    trained = peft.inject_adapter_in_model(config, copy.deepcopy(ckpt.model)).eval()
    with torch.no_grad():  # stand-in for PEFT training: every lora_B nonzero
        for name, p in trained.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    state = {KEY_PREFIX + k: v for k, v in peft.get_peft_model_state_dict(trained).items()}
    mine = copy.deepcopy(ckpt.model)
    inject_lora(mine, adapter.meta["target_modules"], adapter.meta["rank"], adapter.meta["alpha"])
    load_lora_state(mine.eval(), state)
    with torch.no_grad():
        torch.testing.assert_close(mine(x), trained(x), rtol=0, atol=1e-6)
