"""The exported-program rewrites that let Core ML convert text and sequence models (issue 20, item 4).

Each rewrite is checked on its own: a tiny module whose exported program holds the op; after
``apply_rewrites`` the op is gone and the program computes bit for bit what the original computes. A
variant a rewrite cannot handle exactly is a one-line ``UnsupportedOpError`` naming the op and why.
End to end, a tiny token model with an attention mask converts, keeps its names, takes int32 token ids
and matches PyTorch in the MIL reference evaluator.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools", reason="coremltools is not installed (extra: coreml)")

from edgekit.converters.base import CONVERTERS, ModelSource  # noqa: E402
from edgekit.converters.coreml.rewrites import REWRITES, apply_rewrites  # noqa: E402
from edgekit.errors import UnsupportedOpError  # noqa: E402

warnings.filterwarnings("ignore", module="coremltools")
aten = torch.ops.aten


class Alias(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return aten.alias(x) * 3.0, aten.alias(x + 1.0)


class Diff(nn.Module):
    def __init__(self, n: int = 1, dim: int = -1, prepend: bool = False, append: bool = False) -> None:
        super().__init__()
        self.n, self.dim, self.prepend, self.append = n, dim, prepend, append

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge = x.narrow(self.dim, 0, 2) * 2  # a two-wide slab to join in front / behind
        return torch.diff(x, n=self.n, dim=self.dim, prepend=edge if self.prepend else None,
                          append=edge if self.append else None)


class NewOnes(nn.Module):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = x.new_ones((), dtype=torch.bool) & (mask > 0)  # transformers' mask helpers do this
        return x * x.new_ones((2, 5)), torch.where(keep, x, -x)


class Logical(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x > 0) & (y < 0), (x > 0.5) | (y > 0.5)


class IntAnd(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x & y


class CumsumNegativeDim(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cumsum(x, dim=-2), torch.cumsum(x, dim=-1)  # -1 is fine for Core ML: left alone


def _inputs(*shapes: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s, generator=gen) for s in shapes)


def _ops(program: torch.export.ExportedProgram) -> Counter[str]:
    return Counter(str(n.target) for n in program.graph.nodes if n.op == "call_function")


def _rewrite_exactly(module: nn.Module, inputs: tuple[torch.Tensor, ...], op: str) -> list[str]:
    """Export, rewrite; assert ``op`` was there and is gone, and every output is bit-identical and
    not degenerate. Returns the rewrite lines."""
    program = torch.export.export(module.eval(), inputs)
    assert _ops(program.run_decompositions({}))[op] > 0, f"the test module has no {op} to rewrite"
    rewritten, done = apply_rewrites(program)
    assert _ops(rewritten)[op] == 0
    expected, got = program.module()(*inputs), rewritten.module()(*inputs)
    for e, g in zip(expected, got, strict=True):
        assert e.dtype == g.dtype and e.shape == g.shape
        assert torch.equal(e, g)  # bit for bit
        assert e.numel() > 1 and len(torch.unique(e)) > 1, "a constant output proves nothing"
    return done


# --- each rewrite on its own ------------------------------------------------------------------


def test_alias_becomes_identity() -> None:
    done = _rewrite_exactly(Alias(), _inputs((2, 5)), "aten.alias.default")
    assert done == ["aten.alias.default → identity (2×)"]


@pytest.mark.parametrize("n, dim, prepend, append, what", [
    (1, -1, False, False, "slice + sub"),
    (2, 0, False, False, "slice + sub"),
    (1, 1, True, False, "slice + sub + concat"),
    (3, -1, False, True, "slice + sub + concat"),
    (2, 0, True, True, "slice + sub + concat"),
])
def test_diff_becomes_slices_and_subtracts(n: int, dim: int, prepend: bool, append: bool, what: str) -> None:
    done = _rewrite_exactly(Diff(n, dim, prepend, append), _inputs((4, 6)), "aten.diff.default")
    assert done == [f"aten.diff.default → {what} (1×)"]


def test_diff_of_integers_is_exact() -> None:
    tokens = (torch.randint(-1000, 1000, (3, 7), generator=torch.Generator().manual_seed(1)),)
    done = _rewrite_exactly(Diff(n=2, dim=1), tokens, "aten.diff.default")
    assert done == ["aten.diff.default → slice + sub (1×)"]


def test_new_ones_becomes_full() -> None:
    x, = _inputs((2, 5))
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]])
    done = _rewrite_exactly(NewOnes(), (x, mask), "aten.new_ones.default")
    assert "aten.new_ones.default → full (2×)" in done
    assert "aten.__and__.Tensor → logical_and (1×)" in done


def test_bool_and_or_become_logical_ops() -> None:
    done = _rewrite_exactly(Logical(), _inputs((3, 4), (3, 4)), "aten.__and__.Tensor")
    assert done == ["aten.__and__.Tensor → logical_and (1×)", "aten.__or__.Tensor → logical_or (1×)"]


def test_cumsum_dim_below_minus_one_is_counted_from_the_front() -> None:
    x, = _inputs((2, 5, 3))
    program = torch.export.export(CumsumNegativeDim(), (x,))
    rewritten, done = apply_rewrites(program)
    dims = sorted(n.args[1] for n in rewritten.graph.nodes if n.target == aten.cumsum.default)
    assert dims == [-1, 1]  # -2 of a rank-3 tensor is 1; -1 needs nothing
    assert done == ["aten.cumsum.default → cumsum along a non-negative dim (1×)"]
    for e, g in zip(program.module()(x), rewritten.module()(x), strict=True):
        assert torch.equal(e, g) and len(torch.unique(e)) > 1


def test_a_program_without_these_ops_is_left_as_it_is() -> None:
    program = torch.export.export(nn.Linear(4, 3).eval(), _inputs((2, 4)))
    rewritten, done = apply_rewrites(program)
    assert done == [] and _ops(rewritten) == _ops(program.run_decompositions({}))


def test_every_registered_rewrite_is_tested_here() -> None:
    tested = {"aten.alias.default", "aten.diff.default", "aten.new_ones.default", "aten.__and__.Tensor",
              "aten.__or__.Tensor", "aten.cumsum.default"}
    assert set(REWRITES.names()) == tested


# --- what a rewrite cannot do is still named ----------------------------------------------------


@pytest.mark.parametrize("module, inputs, op, reason", [
    (Diff(), (torch.tensor([[True, False, True]]),), "aten.diff.default", "diff of a bool tensor"),
    (Diff(n=3, dim=1), _inputs((2, 3)), "aten.diff.default", "n=3 leaves no elements along dim 1"),
    (IntAnd(), (torch.tensor([1, 2]), torch.tensor([3, 4])), "aten.__and__.Tensor",
     "bitwise and of int64, int64 tensors"),
])
def test_unsupported_variants_are_one_line_errors(module: nn.Module, inputs: tuple, op: str, reason: str) -> None:
    with pytest.raises(UnsupportedOpError) as err:
        apply_rewrites(torch.export.export(module.eval(), inputs))
    message = str(err.value)
    assert "\n" not in message and err.value.op == op
    assert message.startswith(f"the coreml converter cannot handle operator {op} (") and reason in message


# --- end to end: a token model with a mask through the Core ML converter ---------------------------


class TinyTokenModel(nn.Module):
    """Embedding + masked mean pooling + a position diff and alias, as transformers models have them."""

    def __init__(self, vocab: int = 50, d: int = 8, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head = nn.Embedding(vocab, d), nn.Linear(d, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = attention_mask.new_ones((), dtype=torch.bool) & (attention_mask > 0)  # (B, T)
        h = aten.alias(self.embed(input_ids)) * keep.unsqueeze(-1)  # (B, T, d)
        steps = torch.diff(torch.cumsum(attention_mask, dim=-1), prepend=attention_mask[:, :1] * 0)
        pooled = h.sum(1) / keep.sum(1, keepdim=True)
        return self.head(pooled), steps


@pytest.fixture(scope="module")
def token_package(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module, list[str]]:
    """TinyTokenModel through the Core ML converter: (package, model, the rewrites it reported)."""
    tokens = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(2))
    model = TinyTokenModel().eval()
    source = ModelSource("tiny", model, (tokens, torch.ones(1, 12, dtype=torch.long)), ("input_ids", "attention_mask"),
                         ("logits", "steps"), sha256="0" * 64, origin="test", kind="pt2")
    path = tmp_path_factory.mktemp("tokens") / "tiny.mlpackage"
    return path, model, CONVERTERS.get("coreml").export(source, path, "fp32", {})


def test_token_model_converts_with_names_int32_inputs_and_parity(token_package) -> None:
    path, model, done = token_package
    assert done == ["aten.__and__.Tensor → logical_and (1×)", "aten.alias.default → identity (1×)",
                    "aten.diff.default → slice + sub + concat (1×)", "aten.new_ones.default → full (1×)"]
    conv = CONVERTERS.get("coreml")
    info = conv.inspect(path)
    assert [(t.name, t.dtype) for t in info.inputs] == [("input_ids", "int32"), ("attention_mask", "int32")]
    assert [t.name for t in info.outputs] == ["logits", "steps"]
    run = conv.reference_runner(path)
    for padded in (0, 5):  # all tokens, then the last five masked out
        mask = torch.ones(1, 12, dtype=torch.long)
        mask[0, 12 - padded:] = 0
        ids = torch.randint(0, 50, (1, 12), generator=torch.Generator().manual_seed(padded))
        with torch.no_grad():
            logits, steps = model(ids, mask)
        got_logits, got_steps = run([ids.numpy(), mask.numpy()])  # int64 arrays: cast to the declared int32
        np.testing.assert_allclose(got_logits, logits.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got_steps, steps.numpy())
        assert got_steps.sum() == 12 - padded


def test_macos_runner_feeds_the_declared_dtypes(token_package, monkeypatch: pytest.MonkeyPatch) -> None:
    """Core ML's predict gets int32 token ids (as the model declares them) even when given int64."""
    path, *_ = token_package
    fed: list[dict[str, np.ndarray]] = []

    class RecordingModel:  # stands in for ct.models.MLModel, which predicts on macOS only
        def __init__(self, where: str, **_: object) -> None:
            self.real = ct.models.MLModel(where, skip_model_load=True)

        def get_spec(self):
            return self.real.get_spec()

        def predict(self, feed: dict[str, np.ndarray], state: object = None) -> dict[str, np.ndarray]:
            fed.append(feed)
            return {"logits": np.zeros((1, 3), np.float32), "steps": np.zeros((1, 12), np.int32)}

    real_model = ct.models.MLModel
    monkeypatch.setattr("sys.platform", "darwin")
    monkeypatch.setattr(ct.models, "MLModel", lambda where, **kw: RecordingModel(where) if kw.get("compute_units")
                        else real_model(where, **kw))
    run = CONVERTERS.get("coreml").runner(path, threads=1)
    ids, mask = np.arange(12, dtype=np.int64)[None], np.ones((1, 12), np.int64)
    outputs = run([ids, mask])
    assert [o.shape for o in outputs] == [(1, 3), (1, 12)]
    assert {n: a.dtype for n, a in fed[0].items()} == {"input_ids": np.int32, "attention_mask": np.int32}
    np.testing.assert_array_equal(fed[0]["input_ids"], ids)
