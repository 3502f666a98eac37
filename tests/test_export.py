"""`archspec export` and archspec.export: each format by suffix, loaded back by the runtime
that serves it; weights, --optimize, batch sizes, input sizes; refusals that write nothing."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch

import archspec
from archspec import deploy as export_mod
from archspec.cli import main

warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
SMALL = ["densenet-bc-100-12", "--set", "depth=16"]  # 3 blocks of 2 layers: exports in seconds


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _load(path, fmt: str):
    """The artefact as its serving runtime sees it: a function of a CPU tensor."""
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    if fmt == "pt2":
        return torch.export.load(str(path)).module()
    return torch.jit.load(str(path))


# (.pt2 with the slow tests: 6 s on 2 cores; onnx and pt stay in the fast suite)
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("pt2", marks=pytest.mark.slow), "pt"])
def test_export_by_suffix_with_a_dynamic_batch(capsys, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    code, text, err = run(capsys, "export", *SMALL, "-o", str(out), "--dynamic-batch")
    assert code == 0, err
    assert text.startswith(f"wrote {out} (") and "input Nx3x32x32" in text
    assert "max |exported - eager|:" in text and "at batch 1 and" in text and "at batch 2" in text
    reference = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}),
                               seed=0).eval()
    served = _load(out, fmt)
    for n in (1, 5):  # any batch, not only the traced one
        x = torch.randn(n, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(served(x), reference(x), rtol=1e-4, atol=1e-4)
    assert oct(out.stat().st_mode & 0o777) != "0o600"  # not the temporary file's mode


@pytest.mark.slow  # two ONNX exports: 12 s
def test_optimize_is_never_slower_for_onnx_it_exports_the_plain_graph(capsys, tmp_path):
    """ONNX Runtime runs optimize_for_inference's rearranged graph slower than the plain
    one (it fuses the norms itself; docs/benchmarks.md), so --optimize exports the plain
    graph for .onnx, says so, and reports "optimized": false; the graph is the plain
    export's, node for node."""
    onnx = pytest.importorskip("onnx")
    graphs = []
    for extra in ([], ["--optimize"]):
        out = tmp_path / f"m{len(extra)}.onnx"
        code, text, err = run(capsys, "export", *SMALL, "-o", str(out), "--format", "json",
                              *extra)
        assert code == 0, err
        assert json.loads(text)["optimized"] is False
        graphs.append([n.op_type for n in onnx.load(str(out)).graph.node])
    assert "ONNX Runtime fuses the norms itself" in err
    assert graphs[0] == graphs[1]


@pytest.mark.slow  # ~5 s on 2 cores; the fast suite exports through test_second_walk.py
def test_export_weights_optimize_input_and_json(capsys, tmp_path):
    """--weights (a torchvision-keyed state_dict), --optimize, --input, --batch, --format json:
    the artefact computes what the weighted model computes at the new size."""
    source = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}),
                            seed=7).eval()
    weights = tmp_path / "w.pth"
    torch.save(source.state_dict(), weights)
    out = tmp_path / "fast.pt2"
    code, text, err = run(capsys, "export", *SMALL, "--weights", str(weights), "--optimize",
                          "--input", "3x48x48", "--batch", "3", "-o", str(out),
                          "--format", "json")
    assert code == 0, err
    data = json.loads(text)
    assert data["format"] == "exported_program" and data["optimized"] is True
    assert data["input"] == [3, 48, 48] and data["batch"] == 3 and not data["dynamic_batch"]
    assert set(data["max_abs_diff"]) == {"3"} and data["max_abs_diff"]["3"] <= 1e-4
    assert data["bytes"] == out.stat().st_size
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(_load(out, "pt2")(x), source(x), rtol=1e-4, atol=1e-4)


def test_export_refusals_write_nothing(capsys, tmp_path):
    code, _, err = run(capsys, "export", *SMALL, "-o", str(tmp_path / "m.txt"))
    assert code == 2 and "the suffix picks the format: .onnx" in err
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"mine")
    code, _, err = run(capsys, "export", *SMALL, "-o", str(taken))
    assert code == 1 and "already exists; pass --force" in err and taken.read_bytes() == b"mine"
    code, _, err = run(capsys, "export", *SMALL, "-o", str(tmp_path / "m.pt"), "--batch", "0")
    assert code == 2 and "--batch must be at least 1" in err
    code, _, err = run(capsys, "export", "densenet121", "--input", "3x8x8",
                       "-o", str(tmp_path / "m.pt"))
    assert code == 1 and err.startswith("<command line>:1:4: input.height:")
    code, _, err = run(capsys, "export", *SMALL, "-o", str(tmp_path / "no" / "m.pt"))
    assert code == 1 and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.pt"]
    assert "Traceback" not in err


def test_an_artefact_that_disagrees_with_eager_is_not_written(capsys, tmp_path, monkeypatch):
    """The check is real: a runtime that computes something else fails the export."""
    real = export_mod._LOADERS["torchscript"]

    def off_by_a_little(data):
        run_it = real(data)
        return lambda x: run_it(x) + 1e-3
    monkeypatch.setitem(export_mod._LOADERS, "torchscript", off_by_a_little)
    out = tmp_path / "m.pt"
    code, _, err = run(capsys, "export", *SMALL, "-o", str(out))
    assert code == 1 and "differs from eager by 0.001" in err and "nothing written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_api_returns_the_result_and_restores_training_mode(tmp_path):
    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}),
                           seed=0)
    assert model.training
    result = archspec.export(model, tmp_path / "m.pt", input_shape=(3, 32, 32), batch=2)
    assert model.training  # put back as it was
    assert result.format == "torchscript" and result.max_abs_diff[2] == 0.0
    loaded = torch.jit.load(io.BytesIO((tmp_path / "m.pt").read_bytes()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="suffix"):
        archspec.export(model, tmp_path / "m.onnx2", input_shape=(3, 32, 32))
