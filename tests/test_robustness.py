"""Property-based and fuzz testing, atomic writes, determinism across processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import archspec
from archspec.files import OutputError, write_atomic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import fuzz  # noqa: E402  (the fuzz script's mutator, shared with this test)

SEEDS = fuzz.seeds()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_mutated_specs_raise_only_spec_error(text, rnd):
    data = fuzz.mutate(text, rnd)
    try:
        archspec.plan(archspec.loads(data, source="<mutated>"))
    except archspec.SpecError as e:
        assert all(p.file == "<mutated>" and p.line >= 1 for p in e.problems), str(e)


def test_fuzz_script_small_run():
    result = fuzz.fuzz(1500, seed=7)
    assert result["crashed"] == 0, result["crashes"][:1]
    assert result["accepted"] > 0 and result["rejected"] > 0


@pytest.mark.parametrize("surface,cases", [
    ("search", 500), ("checkpoint", 15), ("output", 120),
    pytest.param("checkpoint", 400, marks=pytest.mark.slow, id="checkpoint-long"),
    pytest.param("output", 2000, marks=pytest.mark.slow, id="output-long")])
def test_fuzz_the_other_surfaces(surface, cases):
    """Search arguments, checkpoint files (torch zip and safetensors, as dicts and as
    bytes) and output paths: a result or the surface's own error, never a crash."""
    result = fuzz.fuzz(cases, seed=3, surface=surface)
    assert result["crashed"] == 0, result["crashes"][:1]
    assert result["accepted"] > 0 and result["rejected"] > 0, result


def test_fuzz_script_runs_as_a_command():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz.py"), "--cases",
                           "200"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cases 200  accepted" in proc.stdout and "crashed 0" in proc.stdout


# --- nothing lost, nothing overwritten ------------------------------------------------------

def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old contents")

    def half_then_fail(fh):
        fh.write(b"new but incomplete")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail, force=True)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_killed_write_leaves_the_old_file(tmp_path):
    """A process killed in the middle of a write (SIGKILL: no cleanup at all)."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"old contents")
    script = textwrap.dedent(f"""
        import sys, time
        from archspec.files import write_atomic
        def slow(fh):
            fh.write(b"partial")
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        write_atomic({str(target)!r}, slow, force=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert target.read_bytes() == b"old contents"


def test_write_refuses_existing_directory_and_inputs(tmp_path):
    existing = tmp_path / "a.txt"
    existing.write_text("keep")
    with pytest.raises(OutputError, match="already exists"):
        write_atomic(existing, lambda fh: fh.write(b"x"))
    with pytest.raises(OutputError, match="is a directory"):
        write_atomic(tmp_path, lambda fh: fh.write(b"x"), force=True)
    with pytest.raises(OutputError, match="is an input"):
        write_atomic(existing, lambda fh: fh.write(b"x"), force=True, inputs=[existing])
    with pytest.raises(OutputError, match="does not exist"):
        write_atomic(tmp_path / "no" / "dir.pt", lambda fh: fh.write(b"x"))
    assert existing.read_text() == "keep"


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
def test_cli_never_touches_input_specs(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text((REPO / "specs" / "cifar" / "densenet-40-12.yaml").read_text())
    before = (spec.read_bytes(), spec.stat().st_mtime_ns)
    for argv in (["validate", str(spec)], ["summary", str(spec)], ["canonical", str(spec)],
                 ["build", str(spec), "-o", str(tmp_path / "m.pt")],
                 ["plot", str(spec), "-o", str(tmp_path / "p.svg")]):
        subprocess.run([sys.executable, "-m", "archspec", *argv], check=True,
                       capture_output=True)
    assert (spec.read_bytes(), spec.stat().st_mtime_ns) == before


# --- determinism ------------------------------------------------------------------------------

def _state_digest(seed: int) -> str:
    code = ("import hashlib, archspec\n"
            f"m = archspec.build('densenet-bc-100-12', seed={seed})\n"
            "h = hashlib.sha256()\n"
            "for k, v in m.state_dict().items():\n"
            "    h.update(k.encode()); h.update(v.contiguous().numpy().tobytes())\n"
            "print(h.hexdigest())\n")
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
def test_seed_is_bitwise_reproducible_across_processes():
    a, b, c = _state_digest(5), _state_digest(5), _state_digest(6)
    assert a == b != c


@pytest.mark.slow  # seconds of subprocesses: .ci/run runs it after the fast suite (5-minute budget)
def test_cli_seed_is_reproducible(tmp_path):
    import torch

    paths = []
    for name in ("a.pt", "b.pt"):
        paths.append(tmp_path / name)
        subprocess.run([sys.executable, "-m", "archspec", "build", "densenet-40-12", "-o",
                        str(paths[-1]), "--seed", "9"], check=True, capture_output=True)
    a, b = (torch.load(p, weights_only=True) for p in paths)
    assert a["sha256"] == b["sha256"] and a["seed"] == b["seed"] == 9
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
