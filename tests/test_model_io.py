"""A user's .pt2: integer inputs in their valid range, named and flattened outputs, --meta names and
--sample-inputs files (edgekit/sample_inputs.py, edgekit/pt2.py, edgekit/sources.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree

from edgekit.errors import EdgekitError
from edgekit.sample_inputs import read_sample_inputs
from edgekit.sources import load_source, reference_for

VOCAB, LENGTH, CLASSES, POSITIONS = 37, 12, 3, 20


class MaskedClassifier(torch.nn.Module):
    """Token ids (through a view and a dtype cast) into an embedding, a 0/1 attention mask, and position ids
    that index a buffer with index_select."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, 8)
        self.register_buffer("pos_table", torch.randn(POSITIONS, 8))
        self.head = torch.nn.Linear(8, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.reshape(1, LENGTH).to(torch.int32)
        h = self.embed(ids) + torch.index_select(self.pos_table, 0, position_ids.reshape(-1)).unsqueeze(0)
        weights = attention_mask.unsqueeze(-1).float()
        return self.head((h * weights).sum(1) / weights.sum(1).clamp(min=1.0))


class Boxes(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 7)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.fc(x)
        return {"boxes": 300 + 200 * torch.sigmoid(f[:, :4]), "scores": f[:, 4:]}


class Nested(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict:
        return {"a": (x + 1, [x * 2]), "b-c": x - 3, "x": x.sum(-1)}


def _save(tmp: Path, module: torch.nn.Module, args: tuple, name: str, meta: dict | None = None) -> Path:
    path = tmp / f"{name}.pt2"
    extra = {"edgekit.json": json.dumps(meta)} if meta else None
    torch.export.save(torch.export.export(module.eval(), args), str(path), extra_files=extra)
    return path


def _classifier_args() -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, VOCAB, (1, LENGTH)), torch.ones(1, LENGTH, dtype=torch.long),
            torch.arange(LENGTH).unsqueeze(0))


@pytest.fixture(scope="module")
def pt2s(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("io")
    torch.manual_seed(0)
    return {"classifier": _save(tmp, MaskedClassifier(), _classifier_args(), "classifier"),
            "boxes": _save(tmp, Boxes(), (torch.randn(1, 4),), "boxes"),
            "nested": _save(tmp, Nested(), (torch.randn(1, 3),), "nested")}


def _is_padding_mask(mask: np.ndarray) -> bool:
    """Ones, then zeros, along the last axis, with at least one 1."""
    row = mask.reshape(-1, mask.shape[-1])
    return bool(np.all(row[:, 0] == 1) and np.all(np.diff(row.astype(np.int64), axis=-1) <= 0)
                and set(np.unique(row)) <= {0, 1})


# ---- integer inputs in range -----------------------------------------------------------------------------------
def test_integer_inputs_get_the_range_of_the_table_they_index(pt2s):
    source = load_source(pt2s["classifier"])
    assert source.input_names == ("input_ids", "attention_mask", "position_ids")
    assert source.input_ranges == ((0, VOCAB), (0, 2), (0, POSITIONS))
    ids, mask, positions = source.example_inputs
    assert ids.dtype == torch.long and 0 <= int(ids.min()) and int(ids.max()) < VOCAB
    assert int(positions.max()) < POSITIONS and _is_padding_mask(mask.numpy())


def test_random_reference_draws_ids_across_the_vocabulary_and_padding_masks(pt2s):
    reference = reference_for(load_source(pt2s["classifier"]))
    ids = np.concatenate([s[0] for s in reference.inputs])
    masks = np.concatenate([s[1] for s in reference.inputs])
    assert ids.min() >= 0 and ids.max() == VOCAB - 1 and len(np.unique(ids)) == VOCAB  # not just 0/1
    assert all(_is_padding_mask(m) for m in masks)
    lengths = masks.sum(-1)
    assert lengths.min() >= 1 and len(np.unique(lengths)) > 3  # varied lengths, never an all-zero mask
    assert all(np.isfinite(o).all() for out in reference.outputs for o in out)


# ---- named, flat outputs ---------------------------------------------------------------------------------------
def test_dict_outputs_are_flattened_and_named_by_their_keys(pt2s):
    source = load_source(pt2s["boxes"])
    assert source.output_names == ("boxes", "scores")
    x = source.example_inputs[0]
    with torch.no_grad():
        out = source.module(*source.example_inputs)
        original = torch.export.load(str(pt2s["boxes"])).module()(x)  # the test's own file: safe to load here
    assert isinstance(out, tuple) and len(out) == 2
    assert torch.equal(out[0], original["boxes"]) and torch.equal(out[1], original["scores"])
    assert float(out[0].min()) > 299  # the large-valued output really is the boxes
    program = source.exported_program()
    assert program.call_spec.out_spec.type is tuple and program.call_spec.out_spec.num_children == 2
    assert isinstance(program.module()(x), tuple)


def test_nested_outputs_are_named_by_their_paths_and_keep_their_values(pt2s):
    source = load_source(pt2s["nested"])
    # "b-c" is not a valid name everywhere; "x" is an input's name already
    assert source.output_names == ("a_0", "a_1_0", "b_c", "x_2")
    x = source.example_inputs[0]
    out = source.module(x)
    expected = (x + 1, x * 2, x - 3, x.sum(-1))
    assert len(out) == 4 and all(torch.allclose(o, e) for o, e in zip(out, expected))


def test_tuple_and_single_outputs_keep_default_names(tmp_path):
    class Two(torch.nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    two = load_source(_save(tmp_path, Two(), (torch.randn(1, 2),), "two"))
    one = load_source(_save(tmp_path, torch.nn.Linear(2, 2), (torch.randn(1, 2),), "one"))
    assert two.output_names == ("output_0", "output_1") and one.output_names == ("output",)
    assert two.exported is not None and one.exported is not None


def test_unregistered_output_type_with_keys_loads_as_named_outputs(tmp_path, pt2s):
    """A ModelOutput saved while transformers was imported, read where it is not: keyed outputs keep names."""
    src = pt2s["boxes"]
    dst = tmp_path / "unknown_type.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("models/model.json"):
                program = json.loads(data)
                signature = program["graph_module"]["module_call_graph"][0]["signature"]
                assert '"builtins.dict"' in signature["out_spec"]
                signature["out_spec"] = signature["out_spec"].replace("builtins.dict", "somepackage.DetectionOutput")
                with pytest.raises(NotImplementedError, match="DetectionOutput"):
                    pytree.treespec_loads(signature["out_spec"])  # torch alone cannot read it
                data = json.dumps(program).encode()
            zout.writestr(info, data)
    source = load_source(dst)
    assert source.output_names == ("boxes", "scores")
    assert torch.equal(source.module(*source.example_inputs)[0],
                       load_source(src).module(*source.example_inputs)[0])


# ---- a transformers model, exported as users do ----------------------------------------------------------------
@pytest.fixture(scope="module")
def bert_pt2(tmp_path_factory) -> Path:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=3)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    mask = torch.ones(1, 10, dtype=torch.long)
    mask[0, 7:] = 0
    path = tmp_path_factory.mktemp("bert") / "bert.pt2"
    torch.export.save(torch.export.export(model, (torch.randint(0, 50, (1, 10)), mask)), str(path))
    return path


def test_bert_inputs_ranges_and_model_output_names(bert_pt2):
    source = load_source(bert_pt2)
    assert source.input_names == ("input_ids", "attention_mask")
    assert source.input_ranges == ((0, 50), (0, 2))
    assert source.output_names == ("logits",)
    reference = reference_for(source)
    assert reference.outputs[0][0].shape == (1, 3)
    ids = np.concatenate([s[0] for s in reference.inputs])
    assert ids.max() == 49 and all(_is_padding_mask(s[1]) for s in reference.inputs)
    logits = np.concatenate([o[0] for o in reference.outputs])
    assert np.isfinite(logits).all() and logits.std(0).max() > 0  # masks of varied length change the output


# ---- --sample-inputs --------------------------------------------------------------------------------------------
def _good(n: int = 4) -> dict[str, np.ndarray]:
    mask = np.ones((n, LENGTH), dtype=np.int64)
    mask[:, 8:] = 0
    return {"input_ids": np.arange(n * LENGTH, dtype=np.int32).reshape(n, LENGTH) % VOCAB,
            "attention_mask": mask, "position_ids": np.tile(np.arange(LENGTH), (n, 1))}


def _npz(tmp_path: Path, name: str = "s.npz", **arrays: np.ndarray) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_sample_inputs_are_read_per_sample_in_input_order_with_the_model_dtypes(tmp_path, pt2s):
    source = load_source(pt2s["classifier"])
    arrays = _good(5)
    samples = read_sample_inputs(_npz(tmp_path, **dict(reversed(list(arrays.items())))), source)
    assert len(samples) == 5
    for i, sample in enumerate(samples):
        assert [t.shape for t in sample] == [torch.Size([1, LENGTH])] * 3
        assert [t.dtype for t in sample] == [torch.long] * 3  # int32 ids cast to the model's int64
        assert np.array_equal(sample[0].numpy(), arrays["input_ids"][i:i + 1])
    reference = reference_for(source, sample_inputs=tmp_path / "s.npz")
    assert reference.description == "s.npz (5)" and len(reference.inputs) == 5
    assert np.array_equal(reference.inputs[3][0], arrays["input_ids"][3:4])


def test_one_sample_of_exactly_the_input_shape_is_accepted(tmp_path, pt2s):
    source = load_source(pt2s["boxes"])
    x = np.linspace(-1, 1, 4, dtype=np.float64).reshape(1, 4)
    (sample,) = read_sample_inputs(_npz(tmp_path, x=x), source)
    assert sample[0].dtype == torch.float32 and np.allclose(sample[0].numpy(), x)


BAD_NPZ = {
    "missing key": (lambda a: {k: v for k, v in a.items() if k != "attention_mask"},
                    ["'attention_mask'", "input_ids, attention_mask, position_ids"]),
    "unknown key": (lambda a: a | {"token_type_ids": a["input_ids"]}, ["'token_type_ids'", "input_ids"]),
    "float ids": (lambda a: a | {"input_ids": a["input_ids"].astype(np.float32)}, ["input_ids", "float32",
                                                                                   "integer array"]),
    "id out of range": (lambda a: a | {"input_ids": np.where(a["input_ids"] == 5, VOCAB, a["input_ids"])},
                        ["input_ids", f"holds {VOCAB}", f"{VOCAB} rows", f"[0, {VOCAB})"]),
    "negative id": (lambda a: a | {"position_ids": a["position_ids"] - 1}, ["position_ids", "holds -1",
                                                                            f"{POSITIONS} rows"]),
    "N mismatch": (lambda a: a | {"attention_mask": a["attention_mask"][:3]}, ["input_ids: 4", "attention_mask: 3"]),
    "wrong shape": (lambda a: a | {"input_ids": a["input_ids"][:, None]}, ["input_ids", "(4, 1, 12)", "(N, 12)"]),
    "bool ids": (lambda a: a | {"input_ids": a["input_ids"] > 3}, ["input_ids", "bool", "integer array"]),
    "too large for int": (lambda a: a | {"attention_mask": a["attention_mask"].astype(np.uint64) + 2 ** 63},
                          ["attention_mask", str(2 ** 63), "int64"]),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_sample_inputs_fail_in_one_line_naming_the_problem(tmp_path, pt2s, case):
    source = load_source(pt2s["classifier"])
    change, expected = BAD_NPZ[case]
    path = _npz(tmp_path, **change(_good(4)))
    with pytest.raises(EdgekitError) as err:
        read_sample_inputs(path, source)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for part in expected:
        assert part in message, (case, message)


def test_non_finite_float_samples_are_refused(tmp_path, pt2s):
    source = load_source(pt2s["boxes"])
    x = np.zeros((3, 4), dtype=np.float32)
    x[1, 2] = np.nan
    with pytest.raises(EdgekitError, match=r"x holds 1 NaN/inf values \(first at index \(1, 2\)\)"):
        read_sample_inputs(_npz(tmp_path, x=x), source)
    with pytest.raises(EdgekitError, match="beyond the range of the model's float32"):
        read_sample_inputs(_npz(tmp_path, "big.npz", x=np.full((2, 4), 1e300)), source)
    with pytest.raises(EdgekitError, match="holds int64 values; the model's input is float32"):
        read_sample_inputs(_npz(tmp_path, "ints.npz", x=np.ones((2, 4), dtype=np.int64)), source)


def _damaged(tmp: Path) -> Path:
    data = _npz(tmp, "good.npz", x=np.zeros((2, 4), np.float32)).read_bytes()
    return _write(tmp / "cut.npz", data[:len(data) // 2])


def _object_array(tmp: Path) -> Path:
    path = tmp / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))  # savez pickles it; edgekit must not unpickle
    return path


def _npy(tmp: Path) -> Path:
    np.save(tmp / "one.npy", np.zeros((1, 4)))
    return (tmp / "one.npy").rename(tmp / "one.npz")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = {
    "damaged": (_damaged, "is not a readable .npz file"),
    "empty": (lambda tmp: _write(tmp / "empty.npz", b""), "is empty"),
    "text": (lambda tmp: _write(tmp / "text.npz", b"x,y\n1,2\n"), "is not a .npz archive"),
    "npy": (_npy, "is a single .npy array"),
    "objects": (_object_array, "holds Python objects, which edgekit does not unpickle"),
    "absent": (lambda tmp: tmp / "absent.npz", "cannot read it"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_unreadable_sample_files_fail_in_one_line(tmp_path, pt2s, case):
    make, expected = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(EdgekitError) as err:
        read_sample_inputs(path, load_source(pt2s["boxes"]))
    assert expected in str(err.value) and "\n" not in str(err.value) and path.name in str(err.value)


# ---- --meta and embedded names ----------------------------------------------------------------------------------
def _meta(tmp_path: Path, **meta) -> str:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(meta))
    return str(path)


def test_meta_names_are_carried_by_the_source(tmp_path, pt2s):
    names = {"input_names": ["tokens", "mask", "positions"], "output_names": ["class_logits"]}
    source = load_source(pt2s["classifier"], meta=_meta(tmp_path, **names))
    assert source.input_names == ("tokens", "mask", "positions") and source.output_names == ("class_logits",)
    assert source.input_ranges == ((0, VOCAB), (0, 2), (0, POSITIONS))  # ranges stay by position
    samples = read_sample_inputs(_npz(tmp_path, **dict(zip(names["input_names"], _good(2).values()))), source)
    assert len(samples) == 2


@pytest.mark.parametrize("names, expected", [
    ({"output_names": ["boxes-xyxy", "scores"]}, "'boxes-xyxy' is not a valid I/O name"),
    ({"output_names": ["2boxes", "scores"]}, "'2boxes' is not a valid I/O name"),
    ({"output_names": ["same", "same"]}, "'same' appears more than once"),
    ({"input_names": ["boxes"]}, "'boxes' names both an input and an output"),
])
def test_invalid_meta_names_are_refused(tmp_path, pt2s, names, expected):
    with pytest.raises(EdgekitError) as err:
        load_source(pt2s["boxes"], meta=_meta(tmp_path, **names))
    assert expected in str(err.value) and "\n" not in str(err.value) and "meta.json" in str(err.value)


def test_embedded_names_are_validated_like_meta(tmp_path):
    good = _save(tmp_path, Boxes(), (torch.randn(1, 4),), "good", {"output_names": ["bbox", "cls"]})
    assert load_source(good).output_names == ("bbox", "cls")
    bad = _save(tmp_path, Boxes(), (torch.randn(1, 4),), "bad", {"output_names": ["bbox", "cls score"]})
    with pytest.raises(EdgekitError, match=r"extra/edgekit.json: output_names: 'cls score' is not a valid I/O name"):
        load_source(bad)
