""".pt2 files are untrusted: nothing in one is unpickled, damaged ones fail in one line, real ones still load.

Hostile archives are real ``torch.export.save`` files with entries rewritten so that torch's own loader
would unpickle a payload whose ``__reduce__`` creates a marker file. Each case first shows edgekit refuses
it (or ignores the entry) without running the payload, then that ``torch.export.load`` does run it, so the
payload is known to be armed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shlex
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from edgekit.cli import main
from edgekit.sources import load_source


class Payload:
    """Unpickling this runs a shell command that creates ``marker`` (test payload only)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    program = torch.export.export(Tiny().eval(), (torch.randn(1, 4),))
    torch.export.save(program, str(path), extra_files={"edgekit.json": json.dumps({"labels": ["a", "b", "c"]})})
    return path


def rewrite(src: Path, dst: Path, changes: dict[str, bytes | None]) -> Path:
    """Copy the zip ``src`` to ``dst`` with entries (named below its top folder) replaced, added or removed."""
    with zipfile.ZipFile(src) as zin:
        root = zin.namelist()[0].split("/", 1)[0] + "/"
        entries = {info.filename[len(root):]: zin.read(info) for info in zin.infolist()}
    for name, data in changes.items():
        if data is None:
            entries.pop(name, None)
        else:
            entries[name] = data
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name, data in entries.items():
            zout.writestr(root + name, data)
    return dst


def config(src: Path, name: str) -> dict:
    with zipfile.ZipFile(src) as zf:
        return json.loads(zf.read(zf.namelist()[0].split("/", 1)[0] + "/" + name))


def _pickled_weight(src: Path, payload: bytes) -> dict[str, bytes | None]:
    cfg = config(src, "data/weights/model_weights_config.json")
    cfg["config"]["fc.weight"]["use_pickle"] = True
    entry = "data/weights/" + cfg["config"]["fc.weight"]["path_name"]
    return {"data/weights/model_weights_config.json": json.dumps(cfg).encode(), entry: payload}


def _pickled_constant(prefix: str):
    def build(src: Path, payload: bytes) -> dict[str, bytes | None]:
        cfg = config(src, "data/constants/model_constants_config.json")
        meta = {"dtype": 7, "sizes": [], "requires_grad": False, "device": {"type": "cpu", "index": None},
                "strides": [], "storage_offset": {"as_int": 0}, "layout": 7}
        cfg["config"]["evil"] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True,
                                 "tensor_meta": meta if prefix == "tensor_" else None}
        return {"data/constants/model_constants_config.json": json.dumps(cfg).encode(),
                f"data/constants/{prefix}0": payload}
    return build


# kind → (how to arm the archive, what edgekit's message must name, does torch.export.load run it)
HOSTILE = {
    "use_pickle weight": (_pickled_weight, "data/weights/model_weights_config.json", True),
    "use_pickle tensor constant": (_pickled_constant("tensor_"), "data/constants/model_constants_config.json", True),
    "opaque constant": (_pickled_constant("opaque_obj_"), "opaque_obj_0", True),
    "torchbind constant": (_pickled_constant("custom_obj_"), "custom_obj_0", False),
    "legacy weights": (lambda src, p: {"data/weights/model.pt": p}, "data/weights/model.pt", True),
    "legacy constants": (lambda src, p: {"data/constants/model.pt": p}, "data/constants/model.pt", False),
    "edgekit.json": (lambda src, p: {"extra/edgekit.json": p}, "extra/edgekit.json", False),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_entry_is_refused_and_never_run(capsys, tmp_path, tiny_pt2, kind):
    arm, named, torch_runs_it = HOSTILE[kind]
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Payload(marker), protocol=0 if kind == "edgekit.json" else 4)
    pt2 = rewrite(tiny_pt2, tmp_path / "evil.pt2", arm(tiny_pt2, payload))
    out = tmp_path / "bundle"
    rc = main(["convert", str(pt2), "--to", "onnx", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists() and not out.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: ") and str(pt2) in lines[0], err
    assert named in lines[0], lines[0]
    if torch_runs_it:  # the control: the same archive does run its payload under torch.export.load
        with contextlib.suppress(Exception):
            torch.export.load(str(pt2))
        assert marker.exists()


def test_pre_pt2_archive_with_pickled_state_dict_is_refused(capsys, tmp_path):
    marker = tmp_path / "pwned"
    pt2 = tmp_path / "old.pt2"
    with zipfile.ZipFile(pt2, "w") as zf:  # the older torch.export layout: a pickled state dict at top level
        zf.writestr("version", "8.0")
        zf.writestr("serialized_exported_program.json", "{}")
        zf.writestr("serialized_state_dict.json", pickle.dumps(Payload(marker)))
    rc = main(["convert", str(pt2), "--to", "onnx", "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 1 and not marker.exists() and not (tmp_path / "b").exists()
    assert err.count("\n") == 1 and "serialized_state_dict.json" in err and "pickled state dict" in err, err


def test_hostile_sample_inputs_are_never_read(capsys, tmp_path, tiny_pt2):
    """The PoC of the issue: a crafted data/sample_inputs pickle. edgekit never reads that entry."""
    marker = tmp_path / "pwned"
    pt2 = rewrite(tiny_pt2, tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": pickle.dumps(Payload(marker))})
    rc = main(["convert", str(pt2), "--to", "onnx", "--out", str(tmp_path / "bundle"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert not marker.exists()
    assert json.loads(captured.out)["artifacts"][0]["status"] == "verified"
    with pytest.raises(Exception):
        torch.export.load(str(pt2))
    assert marker.exists()


def test_unforeseen_unpickling_is_stopped_by_the_guard(tmp_path, tiny_pt2, monkeypatch):
    """Defence in depth: should torch's deserializer unpickle anything, the guard refuses it in one line."""
    from torch._export.serde import serialize

    from edgekit.errors import EdgekitError

    marker = tmp_path / "pwned"
    real = serialize.ExportedProgramDeserializer.deserialize

    def sneaky(self, *args, **kwargs):
        pickle.loads(pickle.dumps(Payload(marker)))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(serialize.ExportedProgramDeserializer, "deserialize", sneaky)
    with pytest.raises(EdgekitError, match="models/model.json made torch unpickle data"):
        load_source(tiny_pt2)
    assert not marker.exists()
    assert pickle.loads(pickle.dumps([1])) == [1] and torch.load is not None  # the guard is lifted afterwards


def _damaged(kind: str, tmp_path: Path, tiny_pt2: Path) -> Path:
    path = tmp_path / "bad.pt2"
    data = tiny_pt2.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    elif kind in ("zip, not a pt2", "zip with one folder"):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("notes/readme.txt", "hello")
            if kind == "zip, not a pt2":
                zf.writestr("readme.txt", "hello")
    elif kind == "flipped weight byte":  # CRC mismatch in a weight entry
        blob = bytearray(data)
        with zipfile.ZipFile(tiny_pt2) as zf:
            info = next(i for i in zf.infolist() if i.filename.endswith("data/weights/weight_0"))
        name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)  # the local header's
        blob[info.header_offset + 30 + name_len + extra_len + 1] ^= 0xFF
        path.write_bytes(bytes(blob))
    elif kind == "archive version 9":
        rewrite(tiny_pt2, path, {"archive_version": b"9"})
    elif kind == "no model json":
        rewrite(tiny_pt2, path, {"models/model.json": None})
    elif kind == "newer schema":
        with zipfile.ZipFile(tiny_pt2) as zf:
            program = json.loads(zf.read(next(n for n in zf.namelist() if n.endswith("models/model.json"))))
        program["schema_version"]["major"] += 100
        rewrite(tiny_pt2, path, {"models/model.json": json.dumps(program).encode()})
    elif kind == "short weight":
        rewrite(tiny_pt2, path, {"data/weights/weight_0": b"\0" * 8})
    return path


DAMAGED = {  # kind → fragments the one line must hold
    "empty": ("not a readable torch.export program", "empty"),
    "truncated": ("not a readable torch.export program", "not a zip archive"),
    "random bytes": ("not a readable torch.export program", "not a zip archive"),
    "zip, not a pt2": ("not a readable torch.export program", "not a PT2 archive"),
    "zip with one folder": ("not a readable torch.export program", "without the entry archive_format"),
    "flipped weight byte": ("data/weights/weight_0", "damaged"),
    "archive version 9": ("archive_version", "'9'"),
    "no model json": ("models/model.json", "missing"),
    "newer schema": ("models/model.json", "schema version"),
    "short weight": ("data/weights/weight_0", "the archive is damaged"),
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_damaged_pt2_is_one_line(capfd, tmp_path, tiny_pt2, kind):
    pt2 = _damaged(kind, tmp_path, tiny_pt2)
    rc = main(["convert", str(pt2), "--to", "onnx", "--out", str(tmp_path / "bundle")])
    out, err = capfd.readouterr()
    assert rc == 1 and not (tmp_path / "bundle").exists()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"edgekit: error: {pt2}"), err
    for fragment in DAMAGED[kind]:
        assert fragment in err, err


class BufferInt(torch.nn.Module):
    """A registered buffer, a non-persistent buffer, a tied weight and an int64 input."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 6)
        self.out = torch.nn.Linear(6, 10, bias=False)
        self.out.weight = self.emb.weight
        self.register_buffer("scale", torch.linspace(0.5, 1.5, 6))
        # a view at storage offset 6 of a larger tensor, kept as a (non-persistent) constant
        self.register_buffer("shift", torch.arange(12.0).reshape(2, 6)[1], persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(tokens) * self.scale + self.shift)


def _family(name: str) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    from edgekit.models import create_model

    configs = {
        "cnn": {"width": 0.25, "blocks": [[16, 1]], "num_classes": 3},
        "transformer": {"head": "byte_lm", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_context": 16,
                        "export_lengths": [8]},
        "ssm": {"head": "classify", "d_model": 16, "n_layers": 1, "head_dim": 8, "d_state": 4, "chunk": 8,
                "export_lengths": [8]},
    }
    if name == "buffer+int64":
        return BufferInt().eval(), (torch.tensor([[1, 2, 3, 9]]),)
    model = create_model(name, configs[name]).eval()
    return model, model.example_inputs()


@pytest.mark.parametrize("family", ["cnn", "transformer", "ssm", "buffer+int64"])
def test_real_archive_of_every_family_loads(tmp_path, family):
    torch.manual_seed(0)
    model, example = _family(family)
    path = tmp_path / f"{family}.pt2"
    torch.export.save(torch.export.export(model, example), str(path))
    source = load_source(path)
    assert [(x.shape, x.dtype) for x in source.example_inputs] == [(x.shape, x.dtype) for x in example]
    with torch.no_grad():
        want, got = model(*example), source.module(*example)
    want, got = (want, got) if isinstance(want, tuple) else ((want,), (got,))
    assert len(got) == len(want) and len(source.output_names) == len(want)
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_extra_files_views_and_aliasing_survive(tmp_path, tiny_pt2):
    from edgekit.pt2 import load_pt2

    _, extra = load_pt2(tiny_pt2)
    assert json.loads(extra["edgekit.json"]) == {"labels": ["a", "b", "c"]}
    assert load_source(tiny_pt2).labels == ["a", "b", "c"]
    path = tmp_path / "tied.pt2"
    torch.export.save(torch.export.export(BufferInt().eval(), (torch.tensor([[1, 2]]),)), str(path))
    program, _ = load_pt2(path)
    tied = program.state_dict["emb.weight"], program.state_dict["out.weight"]
    assert tied[0].data_ptr() == tied[1].data_ptr()  # one storage, as in the eager model
    shift = program.constants["shift"]
    assert shift.storage_offset() == 6 and torch.equal(shift, torch.arange(6.0, 12.0))


class TwoInputs(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y


def test_example_inputs_come_from_the_graph(tmp_path):
    """No sample inputs are read, so shapes come from placeholders; a dynamic size takes its smallest value;
    keyword inputs are refused in one line naming the file."""
    from edgekit.errors import EdgekitError

    batch = torch.export.Dim("batch", min=3, max=64)
    program = torch.export.export(TwoInputs(), (torch.randn(5, 4), torch.randn(5, 4)),
                                  dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(tmp_path / "dyn.pt2"))
    source = load_source(tmp_path / "dyn.pt2")
    assert [tuple(x.shape) for x in source.example_inputs] == [(3, 4), (3, 4)]
    assert source.input_names == ("x", "y")
    torch.export.save(torch.export.export(TwoInputs(), (torch.randn(2),), {"y": torch.randn(2)}),
                      str(tmp_path / "kw.pt2"))
    with pytest.raises(EdgekitError, match="kw.pt2 takes keyword inputs"):
        load_source(tmp_path / "kw.pt2")


@pytest.mark.parametrize("meta, words", [
    ({"labels": 5}, "labels = 5 must be a non-empty list"),
    ({"labels": ["a", "b"]}, "2 labels for a model with 3 output classes"),
    ({"output_names": ["x", "y"]}, "output_names has 2 names; the model has 1"),
    ({"colour": "rgb"}, "unknown key 'colour'"),
    (["a", "b", "c"], "must be a JSON object"),
])
def test_embedded_metadata_is_checked_like_meta_before_anything_is_written(capsys, tmp_path, meta, words):
    """A .pt2's own edgekit.json is as untrusted as --meta: wrong types or counts are refused up front
    (once, `"labels": 5` got as far as writing a bundle whose manifest could not be read back)."""
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.randn(1, 4),)), str(path),
                      extra_files={"edgekit.json": json.dumps(meta)})
    out = tmp_path / "out"
    assert main(["convert", str(path), "--to", "onnx", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "entry extra/edgekit.json" in err[0] and words in err[0], err
    assert not out.exists()
