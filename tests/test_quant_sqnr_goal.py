"""Mixed precision to an output SQNR goal (``--min-sqnr``, ``QuantSpec.min_sqnr_db``, recipe ``[export] min_sqnr_db``):
the search keeps the most sensitive layers float until the output SQNR against fp32 reaches the goal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekit.cli import main
from edgekit.converters import ModelSource
from edgekit.errors import EdgekitError
from edgekit.quant import QuantSpec
from edgekit.recipe import load_recipe
from edgekit.quant.report import sqnr_db

GOAL_DB = 32.0


def outlier_source() -> ModelSource:
    """A 2-layer MLP whose first layer has one weight per output row 30x the others: per-channel int8 then rounds
    the other 1023 weights of each row on a coarse grid (plain int8 ~27 dB at the output; that layer float ~37 dB)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1024, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        model[1].weight[:, 0] = 30 * model[1].weight.abs().max()
    return ModelSource("outlier", model, (torch.randn(1, 1, 32, 32),), ("image",), ("logits",), "0" * 64, "outlier",
                       "pt2")


def test_the_search_reaches_an_sqnr_goal_plain_int8_misses():
    from edgekit.quant.plan import plan_quantization

    source = outlier_source()
    calib = np.random.default_rng(0).normal(size=(16, 1, 32, 32)).astype(np.float32)
    spec = QuantSpec.parse("int8", calib_samples=16, calib_method="minmax", min_sqnr_db=GOAL_DB, budget_points=0)
    plan = plan_quantization(source, spec, calib)
    mixed = plan.mixed
    assert mixed["steps"][0]["float_layers"] == [] and mixed["steps"][0]["sqnr_db"] < GOAL_DB - 3  # plain int8 misses
    assert mixed["float_layers"] == ["1"] and mixed["sqnr_db"] >= GOAL_DB  # the outlier layer went float first
    assert mixed["sqnr_met"] is True and mixed["within_budget"] is True and mixed["goal_met"] is True
    assert mixed["min_sqnr_db"] == GOAL_DB and len(mixed["steps"]) == 2
    # the graph the plan keeps really has that SQNR, measured here on the same inputs
    x = torch.from_numpy(calib)
    with torch.no_grad():
        ref = source.module(x)
        got = torch.cat([plan.prepared.converted(fold_quantize=False)(x[i:i + 1]) for i in range(len(x))])
    assert abs(sqnr_db(ref, got) - mixed["sqnr_db"]) < 0.05 and float(ref.abs().min()) > 0
    assert plan.prepared.spec.float_layers == ("1",)


def test_an_unreachable_goal_tries_every_layer_and_says_it_was_missed():
    from edgekit.quant.mixed import EvalSet, search

    source = outlier_source()
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(1, 1, 32, 32, generator=g),) for _ in range(8)]
    labels = tuple(int(source.module(*s).argmax()) for s in calib)
    result = search(source, QuantSpec.parse("int8", calib_method="minmax"), calib, EvalSet(tuple(calib), labels, "c"),
                    min_sqnr_db=99.0, probe=4)  # int8 activations stay: 99 dB cannot be reached
    assert sorted(result.float_layers) == ["1", "3"] and result.to_dict()["goal_met"] is False
    assert result.within_budget is None and 30 < result.sqnr_db < 99 and not math.isinf(result.sqnr_db)


@pytest.mark.parametrize("value, message", [
    (0, r"output SQNR goal must be > 0 and <= 100 dB, got 0"),
    (-3.0, r"> 0 and <= 100 dB, got -3.0"),
    (250, r"> 0 and <= 100 dB"),
    (float("nan"), r"must be a number of dB or None"),
    ("high", r"must be a number of dB or None, got 'high'"),
    (True, r"must be a number of dB or None"),
])
def test_a_bad_sqnr_goal_is_refused(value, message):
    with pytest.raises(EdgekitError, match=message):
        QuantSpec.parse("int8", min_sqnr_db=value)


def test_the_goal_needs_static_int8_without_qat_and_round_trips():
    with pytest.raises(EdgekitError, match="an output SQNR goal needs --quant int8"):
        QuantSpec.parse("int8-weight", min_sqnr_db=20)
    with pytest.raises(EdgekitError, match="either an output SQNR goal .* or QAT, not both"):
        QuantSpec.parse("int8", min_sqnr_db=20, qat_epochs=1)
    spec = QuantSpec.parse("int8", min_sqnr_db=20.5, budget_points=1)
    assert QuantSpec.from_dict(spec.to_dict()) == spec and spec.to_dict()["min_sqnr_db"] == 20.5
    with pytest.raises(EdgekitError, match="must be a number of dB"):
        QuantSpec.from_dict(spec.to_dict() | {"min_sqnr_db": "20"})


def test_the_recipe_key_and_the_cli_flag(tmp_path, capsys):
    recipe = tmp_path / "goal.toml"
    recipe.write_text('extends = "cnn_digits"\n[export]\nprecision = "int8"\nmin_sqnr_db = 25.0\n')
    assert load_recipe(recipe).export.quant_spec().min_sqnr_db == 25.0
    recipe.write_text('extends = "cnn_digits"\n[export]\nprecision = "int8"\nmin_sqnr_db = 0.0\n')
    with pytest.raises(EdgekitError, match="output SQNR goal must be > 0"):
        load_recipe(recipe).export.quant_spec()
    assert main(["convert", str(tmp_path), "--quant", "int8", "--min-sqnr", "-3"]) != 0
    assert "argument --min-sqnr: -3 is out of range; expected a finite number > 0 and <= 100" in capsys.readouterr().err
