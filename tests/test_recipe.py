"""Recipes are validated on load: every mistake names the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError
from edgekit.recipe import bundled_recipes, load_recipe

BASE = """
name = "t"
[data]
source = "digits"
[model]
family = "cnn"
"""


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_bundled_default_recipe_loads():
    recipe = load_recipe("cnn_digits")
    assert "cnn_digits" in bundled_recipes()
    assert recipe.model["family"] == "cnn"
    assert set(recipe.export.formats) == {"onnx", "tflite", "coreml"}


@pytest.mark.parametrize("name", bundled_recipes())
def test_every_bundled_recipe_loads_and_builds_its_model(name):
    from edgekit.models import create_model

    recipe = load_recipe(name)
    model = create_model(recipe.model["family"], recipe.model_options())
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("extra, expected", [
    ("colour = 1\n", ["model", "'colour'", "allowed keys", "width"]),
    ("[train]\nepochs = 'ten'\n", ["train.epochs", "'ten'", "integer"]),
    ("[train]\nepoch = 3\n", ["'epoch'", "epochs"]),
    ("[train]\naugment = 'spin'\n", ["'spin'", "shift", "none"]),
    ("[export]\nformats = ['onnx', 'tfl']\n", ["'tfl'", "coreml", "tflite"]),
    ("[export]\nprecision = 'int3'\n", ["'int3'", "fp32"]),
    ("[bench]\nruns = 1.5\n", ["bench.runs", "1.5", "integer"]),
])
def test_bad_values_are_named(tmp_path, extra, expected):
    with pytest.raises(EdgekitError) as err:
        load_recipe(write(tmp_path, BASE + extra))
    for text in expected:
        assert text in str(err.value)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(EdgekitError, match=r"unknown key 'traning'; allowed keys: .*model.*train"):
        load_recipe(write(tmp_path, "[traning]\nepochs = 3\n" + BASE))


def test_bad_model_and_data_options(tmp_path):
    with pytest.raises(EdgekitError, match=r"model.*'depth'.*allowed keys.*width"):
        load_recipe(write(tmp_path, BASE + "depth = 3\n"))
    with pytest.raises(EdgekitError, match=r"model.width = 'wide'.*number"):
        load_recipe(write(tmp_path, BASE + "width = 'wide'\n"))
    text = BASE.replace('source = "digits"', 'source = "digits"\nimage_sz = 32')
    with pytest.raises(EdgekitError, match=r"'image_sz'.*image_size"):
        load_recipe(write(tmp_path, text))
    with pytest.raises(EdgekitError, match=r"data.source = 'mnist'.*digits.*image_folder"):
        load_recipe(write(tmp_path, BASE.replace('"digits"', '"mnist"')))
    with pytest.raises(EdgekitError, match=r"missing the \[model\] table"):
        load_recipe(write(tmp_path, 'name = "x"\n[data]\nsource = "digits"\n'))


def test_not_toml_and_missing_recipe(tmp_path):
    with pytest.raises(EdgekitError, match="not valid TOML"):
        load_recipe(write(tmp_path, "name = = 3"))
    with pytest.raises(EdgekitError, match=r"not found.*cnn_digits"):
        load_recipe(tmp_path / "nope.toml")


def test_a_recipe_extends_another_table_by_table(tmp_path):
    prose, plain = load_recipe("ssm_lm_prose"), load_recipe("ssm_lm")
    assert prose.model == plain.model | {"d_model": 256} and plain.model["d_model"] == 128
    assert (prose.data, prose.train, prose.export, prose.seed) == (plain.data, plain.train, plain.export, plain.seed)
    assert prose.adapt.enabled and not plain.adapt.enabled and prose.name == "ssm_lm_prose"
    (tmp_path / "parent.toml").write_text(BASE + "width = 8\n[train]\nepochs = 7\nlr = 0.5\n")
    child = load_recipe(write(tmp_path, 'extends = "parent.toml"\n[train]\nepochs = 2\n'))
    assert child.name == "r" and child.model["width"] == 8  # the name is never inherited
    assert (child.train.epochs, child.train.lr) == (2, 0.5)


def test_bad_extends_is_named(tmp_path):
    with pytest.raises(EdgekitError, match=r"'nope' not found.*cnn_digits"):
        load_recipe(write(tmp_path, 'extends = "nope"\n' + BASE))
    with pytest.raises(EdgekitError, match=r"extends = 3; give a recipe name"):
        load_recipe(write(tmp_path, "extends = 3\n" + BASE))
    (tmp_path / "a.toml").write_text('extends = "r.toml"\n' + BASE)
    with pytest.raises(EdgekitError, match=r"loop \(r.toml → a.toml → r.toml\)"):
        load_recipe(write(tmp_path, 'extends = "a.toml"\n' + BASE))


@pytest.mark.parametrize("extends, bench, expected", [
    ("ssm_motion", "seq_lengths = [0, 50]", "seq_lengths = [0, 50]: 0 is not an integer from 1"),
    ("ssm_motion", "contexts = [-1]", "contexts = [-1]: -1 is not an integer from 0"),
    ("ssm_motion", "contexts = [true]", "True is not an integer"),
    ("ssm_motion", "seq_lengths = [64, 64]", "repeats a value"),
    ("ssm_motion", "contexts = 8", "bench.contexts = 8 is an integer; expected a list"),
    ("cnn_digits", "contexts = [0, 8]", "the sweep is for sequence models"),
    ("transformer_motion", "seq_lengths = [64, 256]", "256 is past the KV cache's max_context = 128"),
    ("transformer_motion", "contexts = [0, 129]", "129 is past the KV cache's max_context = 128"),
])
def test_sequence_sweep_fields_are_checked(tmp_path, extends, bench, expected):
    path = write(tmp_path, f'extends = "{extends}"\nname = "t"\n[bench]\n{bench}\n')
    with pytest.raises(EdgekitError, match="bench") as err:
        load_recipe(path)
    assert expected in str(err.value)


def test_sequence_sweep_fields_load_and_default_off(tmp_path):
    path = write(tmp_path, 'extends = "transformer_motion"\nname = "t"\n[bench]\nseq_lengths = [32, 128]\n'
                           "contexts = [0, 128]\n")
    bench = load_recipe(path).bench
    assert (bench.seq_lengths, bench.contexts) == ((32, 128), (0, 128))
    assert load_recipe("cnn_digits").bench.seq_lengths == load_recipe("cnn_digits").bench.contexts == ()
