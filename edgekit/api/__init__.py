"""The public Python API: a small face over the library, the same steps the CLI runs.

    bundle = edgekit.convert(model, (x,), to=["onnx", "tflite"], quant=edgekit.QuantSpec.parse("int8"),
                             calib=calib_array, out="my_bundle")
    bundle.verify().ok; bundle.bench(threads=2); edgekit.Bundle.load("my_bundle")

The pipeline and its steps as verbs (``run``, ``train``, ``adapt``, ``bench``, ``bench_graph``, ``create_model``,
``load_recipe``), a bundle's golden data and runners (``Bundle.reference``, ``Bundle.runner``). One module per
concern: ``bundle`` (Bundle, VerifyReport), ``convert``, ``steps`` (train, adapt, run, load, …), ``bench``. Imports
of edgekit's own modules stay inside the functions so that ``import edgekit`` stays light.
"""

from edgekit.api.bench import BenchReport, bench, bench_graph
from edgekit.api.bundle import Bundle, VerifyReport
from edgekit.api.convert import convert, reference
from edgekit.api.steps import Adapted, Trained, adapt, create_model, load, load_recipe, run, train

__all__ = ["Adapted", "BenchReport", "Bundle", "Trained", "VerifyReport", "adapt", "bench",
           "bench_graph", "convert", "create_model", "load", "load_recipe", "reference", "run", "train"]
