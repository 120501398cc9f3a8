"""Declarative training recipes (TOML), validated on load."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit.config import check_kwargs, check_options, dataclass_from_dict
from edgekit.converters import CONVERTERS
from edgekit.data import DATASETS
from edgekit.errors import EdgekitError
from edgekit.lora.domains import DOMAINS
from edgekit.models import FAMILIES, create_model
from edgekit.placement import ACCELERATORS
from edgekit.quant.spec import QuantSpec
from edgekit.training.augment import AUGMENTATIONS


@dataclass(frozen=True)
class TrainSpec:
    epochs: int = 30  # passes over the training split
    batch_size: int = 64
    lr: float = 3e-3  # peak learning rate (AdamW, one-cycle cosine schedule)
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment: str = "none"  # a registered augmentation: see `edgekit list augmentations`
    threads: int = 2  # torch intra-op threads while training
    max_seconds: float = 0.0  # stop early after this wall time (0 = no limit)
    grad_clip: float = 0.0  # clip the global gradient norm to this before each step (0 = off)


@dataclass(frozen=True)
class ExportSpec:
    formats: tuple = ("onnx", "tflite", "coreml")  # registered converter names
    precision: str = "fp32"  # a QuantSpec name: fp32, fp16, int8, int8-dynamic, int8-weight, int4-weight, palettizeN
    calib_samples: int = 128  # int8: calibration inputs drawn from the training split
    calib_method: str = "histogram"  # int8: histogram, minmax, nncf, nncf-smoothquant or nncf-bias-correction
    smooth_quant_alpha: float = -1.0  # nncf-smoothquant: SmoothQuant alpha 0..1; < 0 = NNCF's default
    accuracy_budget: float = -1.0  # int8: allowed accuracy drop in points (mixed precision); < 0 = none
    min_sqnr_db: float = -1.0  # int8: output SQNR goal in dB vs fp32 (mixed precision); < 0 = none
    qat_epochs: int = 0  # int8: quantization-aware fine-tuning epochs after calibration (0 = PTQ only)
    require: str = ""  # placement gate: ane, gpu, npu or xnnpack ("" = none); the run fails when coverage is short
    min_coverage: float = 100.0  # with require: the share of ops (percent) that must run on the accelerator

    def __post_init__(self) -> None:
        if self.require and self.require not in ACCELERATORS:
            raise EdgekitError(f"[export] require = {self.require!r}: choose one of {', '.join(ACCELERATORS)} "
                               f"(or leave it out)")

    def quant_spec(self) -> QuantSpec:
        """The QuantSpec this export asks for: the one `edgekit convert` builds from the same settings
        (``--quant``, ``--calib-samples``, ``--calib-method``, ``--smooth-quant-alpha``, ``--accuracy-budget``,
        ``--min-sqnr``, ``--qat``); calibration data is the training split. Raises EdgekitError when the settings do
        not go together."""
        return QuantSpec.parse(self.precision, calib_samples=self.calib_samples, qat_epochs=self.qat_epochs,
                               calib_method=self.calib_method,
                               smooth_quant_alpha=self.smooth_quant_alpha if self.smooth_quant_alpha >= 0 else None,
                               budget_points=self.accuracy_budget if self.accuracy_budget >= 0 else None,
                               min_sqnr_db=self.min_sqnr_db if self.min_sqnr_db >= 0 else None)


MAX_SWEEP_POINT = 1 << 16  # longest prefill length / furthest context position a sweep may ask for


@dataclass(frozen=True)
class BenchSpec:
    threads: int = 2  # fixed intra-op thread count in every runtime
    warmup: int = 20  # untimed runs before timing
    runs: int = 200  # timed runs
    # sequence models: the report's sweep (empty = off). Prefill latency at these lengths (a length the bundle was
    # not exported at costs one export per format: seconds each) and step latency at these context positions
    seq_lengths: tuple = ()
    contexts: tuple = ()

    def __post_init__(self) -> None:
        for key, least in (("seq_lengths", 1), ("contexts", 0)):
            values = getattr(self, key)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int)
                   or not least <= v <= MAX_SWEEP_POINT]
            if bad:
                raise EdgekitError(f"[bench] {key} = {list(values)!r}: {bad[0]!r} is not an integer from {least} to "
                                   f"{MAX_SWEEP_POINT}; give a list such as {[64, 256] if least else [0, 64, 256]}")
            if len(set(values)) != len(values):
                raise EdgekitError(f"[bench] {key} = {list(values)!r} repeats a value; give each once")


@dataclass(frozen=True)
class AdaptSpec:
    """An optional LoRA step after training (`edgekit adapt`); set ``domain`` or ``data`` to enable it."""

    domain: str = ""  # a registered adaptation domain (see `edgekit list domains`); "" = none
    data: str = ""  # or your own examples: an image folder (one subfolder per label) or a text file
    name: str = ""  # adapter name (default: the domain, or the data's name)
    rank: int = 8  # LoRA rank r
    alpha: float = 16.0  # updates are scaled by alpha / r
    targets: tuple = ()  # module-name globs; empty = the family's default
    steps: int = 300  # optimizer steps
    examples: int = 200  # training examples drawn from the domain
    lr: float = 1e-2  # AdamW learning rate (cosine decay)
    package: bool = True  # also write bundle_adapters/: base + adapter with shared weights, each verified

    @property
    def enabled(self) -> bool:
        return bool(self.domain or self.data)


@dataclass(frozen=True)
class Recipe:
    name: str
    data: dict[str, Any]  # {"source": registered dataset, **its options}
    model: dict[str, Any]  # {"family": registered family, **its config}
    seed: int = 0
    description: str = ""
    train: TrainSpec = field(default_factory=TrainSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    bench: BenchSpec = field(default_factory=BenchSpec)
    adapt: AdaptSpec = field(default_factory=AdaptSpec)
    path: str = ""  # where it was loaded from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def data_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k != "source"} | {"seed": self.seed}

    def model_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "family"}


_TOP_LEVEL = {"name": "", "description": "", "seed": 0, "data": {}, "model": {},
              "train": {}, "export": {}, "bench": {}, "adapt": {}}


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path to a TOML file, or the name of a recipe shipped with edgekit (``cnn_digits``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = resources.files("edgekit.recipes").joinpath(f"{path.stem}.toml")
    if path.suffix in ("", ".toml") and bundled.is_file():
        return Path(str(bundled))
    raise EdgekitError(
        f"recipe {str(name_or_path)!r} not found; give a .toml path or one of: {', '.join(bundled_recipes())}"
    )


def bundled_recipes() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("edgekit.recipes").iterdir() if p.name.endswith(".toml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Parse and validate a recipe; every mistake names the key, the value and what is allowed."""
    path = resolve_recipe_path(name_or_path)
    raw = check_options(_read_tables(path), _TOP_LEVEL, f"{path}:")
    for section in ("data", "model"):
        if section not in raw:
            raise EdgekitError(f"{path}: missing the [{section}] table")
    recipe = Recipe(
        name=raw.get("name") or path.stem,
        description=raw.get("description", ""),
        seed=raw.get("seed", 0),
        data=dict(raw["data"]),
        model=dict(raw["model"]),
        train=dataclass_from_dict(TrainSpec, raw.get("train", {}), f"{path}: train"),
        export=dataclass_from_dict(ExportSpec, raw.get("export", {}), f"{path}: export"),
        bench=dataclass_from_dict(BenchSpec, raw.get("bench", {}), f"{path}: bench"),
        adapt=dataclass_from_dict(AdaptSpec, raw.get("adapt", {}), f"{path}: adapt"),
        path=str(path),
    )
    _check_references(recipe, str(path))
    return recipe


def _read_tables(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file's keys on top of those of the recipe it ``extends`` (a bundled recipe's name or a
    .toml path beside it): each table merged key by key; name and description are never inherited."""
    if path.resolve() in chain:
        loop = " → ".join(p.name for p in (*chain, path))
        raise EdgekitError(f"{path}: recipes extend each other in a loop ({loop})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise EdgekitError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise EdgekitError(f"{path}: not a UTF-8 text file (byte {exc.start}); a recipe is TOML text") from None
    except OSError as exc:
        raise EdgekitError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise EdgekitError(f"{path}: extends = {parent!r}; give a recipe name ({', '.join(bundled_recipes())}) "
                           "or a .toml path")
    beside = path.parent / parent
    inherited = _read_tables(beside if beside.is_file() else resolve_recipe_path(parent), (*chain, path.resolve()))
    for key in ("name", "description"):
        inherited.pop(key, None)
    return {key: {**inherited[key], **value} if isinstance(value, dict) and isinstance(inherited.get(key), dict)
            else value for key, value in (inherited | raw).items()}


def _check_references(recipe: Recipe, where: str) -> None:
    """Check the names a recipe refers to: dataset, family, augmentation, formats, precision."""
    source = _required(recipe.data, "source", f"{where}: data", DATASETS.names())
    check_kwargs(DATASETS.get(source), recipe.data_options(), f"{where}: data")
    family = _required(recipe.model, "family", f"{where}: model", FAMILIES.names())
    dataclass_from_dict(FAMILIES.get(family).config_cls, recipe.model_options(), f"{where}: model")
    _one_of(recipe.train.augment, AUGMENTATIONS.names(), f"{where}: train.augment")
    for fmt in recipe.export.formats:
        _one_of(fmt, CONVERTERS.names(), f"{where}: export.formats")
    _check_adapt(recipe.adapt, f"{where}: adapt")
    _check_sweep(recipe, f"{where}: bench")
    try:
        recipe.export.quant_spec()
    except EdgekitError as exc:
        raise EdgekitError(f"{where}: export: {exc}") from None


def _check_adapt(adapt: AdaptSpec, where: str) -> None:
    if adapt.domain and adapt.data:
        raise EdgekitError(f"{where}: give domain or data, not both")
    if adapt.domain:
        _one_of(adapt.domain, DOMAINS.names(), f"{where}.domain")
    for key in ("rank", "steps", "examples"):
        if getattr(adapt, key) < 1:
            raise EdgekitError(f"{where}.{key} = {getattr(adapt, key)!r} must be at least 1")


def _check_sweep(recipe: Recipe, where: str) -> None:
    """``seq_lengths`` / ``contexts`` only for a model with a streaming step graph, and (a fixed KV cache) none past
    its ``max_context``."""
    bench = recipe.bench
    if not (bench.seq_lengths or bench.contexts):
        return
    model = create_model(recipe.model["family"], recipe.model_options())
    key = "seq_lengths" if bench.seq_lengths else "contexts"
    if not any(g.name == "step" for g in model.export_graphs()):
        raise EdgekitError(f"{where}.{key}: the sweep is for sequence models (a prefill and a step graph); "
                           f"{recipe.model['family']} with these options has one graph: leave {key} out")
    slots = getattr(model.config, "max_context", None)
    for key in ("seq_lengths", "contexts"):
        past = [n for n in getattr(bench, key) if slots is not None and n > slots]
        if past:
            raise EdgekitError(f"{where}.{key} = {list(getattr(bench, key))!r}: {past[0]} is past the KV cache's "
                               f"max_context = {slots}; give values up to {slots} (or raise [model] max_context)")


def _required(table: dict[str, Any], key: str, where: str, options: list[str]) -> str:
    if key not in table:
        raise EdgekitError(f"{where}: missing key {key!r}; one of: {', '.join(options)}")
    _one_of(table[key], options, f"{where}.{key}")
    return table[key]


def _one_of(value: Any, options: list[str], where: str) -> None:
    if value not in options:
        raise EdgekitError(f"{where} = {value!r} is not one of: {', '.join(options)}")
