"""Hostile input on the surfaces beyond the spec loader (issue 24): the command line's
options, output paths, search grids and the Python API's search arguments. Each gets a
one-line error naming the option or path and a non-zero exit, never a traceback, never
a file written over an input, never work that grows past what the user can see."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import archspec
from archspec.cli import main
from archspec.search import SearchError, _pareto

SMALL = ["--set", "depth=16"]  # densenet-bc-100-12 at depth 16 builds in milliseconds


def _run(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


# argv (with {tmp} for the test's folder), exit code, words in the one-line error
HOSTILE_ARGV = [
    (["build", "densenet-bc-100-12", *SMALL, "-o", "{tmp}/a.pt", "--seed",
      "12345678901234567890123"], 2, "is not a seed: use an integer from 0 to 2**64-1"),
    (["build", "densenet-bc-100-12", *SMALL, "-o", "{tmp}/a.pt", "--seed", "-1"], 2,
     "is not a seed"),
    (["build", "densenet-bc-100-12", *SMALL, "-o", "{tmp}/a.pt", "--device", "meta"], 1,
     "device 'meta' holds no data"),
    (["build", "densenet-bc-100-12", *SMALL, "-o", "{tmp}/" + "a" * 300 + ".pt"], 1,
     "File name too long"),
    (["build", "densenet-bc-100-12", *SMALL, "-o", "{tmp}/no/such/folder/a.pt"], 1,
     "does not exist"),
    (["search", "densenet-bc-100-12", "--vary", "growth_rate=12,24", "--max-params",
      "1e5000"], 2, "--max-params: '1e5000' is larger than any network"),
    (["search", "densenet-bc-100-12", "--vary", "growth_rate=12,24", "--max-macs",
      "9" * 5000], 2, "too long a number"),
    (["search", "densenet-bc-100-12", "--vary", "growth_rate=1..1" + "0" * 10**6], 2,
     "too long a number"),
    (["search", "densenet-bc-100-12", "--vary", "growth_rate=1..1e400"], 2,
     "'1e400' is out of range"),
    (["search", "densenet-bc-100-12", "--vary", "growth_rate=1..1e9"], 2,
     "has more than 1,000,000 values"),
    (["import", "torchvision:densenet", "-o", "{tmp}/imported.yaml"], 1,
     "torchvision has no DenseNet called 'densenet' (its DenseNet constructors: "
     "densenet121"),
    (["import", "torchvision:DenseNet", "-o", "{tmp}/imported.yaml"], 1,
     "no DenseNet called 'DenseNet'"),
]


@pytest.mark.parametrize("argv,code,words", HOSTILE_ARGV,
                         ids=[f"{a[0]}-{i}" for i, (a, _, _) in enumerate(HOSTILE_ARGV)])
def test_hostile_command_lines_get_one_line_errors(argv, code, words, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    got, out, err = _run(capsys, argv)
    assert got == code, err
    assert words in err.strip().splitlines()[-1], err  # the last line says it all
    assert len(err) < 2000, "the error echoes a huge argument"
    assert sorted(os.listdir(tmp_path)) == [], "wrote something"


def test_an_output_is_never_a_file_of_the_extends_chain(tmp_path, capsys):
    parent = tmp_path / "parent.yaml"
    parent.write_text("extends: densenet-bc-100-12\nname: parent\ndepth: 16\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\nname: child\n")
    before = parent.read_bytes()
    for command in (["build"], ["export"]):
        out = parent if command == ["build"] else tmp_path / "parent.pt"
        if command == ["export"]:  # a link named .pt pointing at the parent spec
            out.symlink_to(parent)
        code, _, err = _run(capsys, [*command, str(child), "-o", str(out), "--force"])
        assert code == 1 and "is an input of this command" in err, err
    assert parent.read_bytes() == before


def test_the_weights_are_never_an_output(tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["build", "densenet-bc-100-12", *SMALL, "-o", str(weights)]) == 0
    before = weights.read_bytes()
    capsys.readouterr()
    code, _, err = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "--weights",
                                 str(weights), "-o", str(weights), "--force"])
    assert code == 1 and "is an input of this command" in err
    assert weights.read_bytes() == before


def test_a_dangling_link_is_not_replaced_without_force(tmp_path, capsys):
    link = tmp_path / "out.pt"
    link.symlink_to(tmp_path / "nowhere")
    code, _, err = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "-o", str(link)])
    assert code == 1 and "(a link to a missing file); pass --force" in err
    assert link.is_symlink() and not link.exists()


@pytest.mark.slow  # a fresh interpreter importing torch: seconds
@pytest.mark.skipif(sys.platform != "linux", reason="needs RLIMIT_FSIZE")
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """A file-size limit (EFBIG, what a full quota looks like): torch.save fails inside
    its zip writer; the command says so about the file and leaves no temporary behind."""
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))\n"
            "from archspec.cli import main\n"
            f"sys.exit(main(['build', 'densenet-bc-100-12', '--set', 'depth=16', '-o', "
            f"{str(tmp_path / 'big.pt')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"archspec build: {tmp_path / 'big.pt'}: File too large"
    assert os.listdir(tmp_path) == []


def test_search_write_is_all_or_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "densenet-bc-100-12-02-growth_rate=12.yaml").write_text("mine\n")
    code, _, err = _run(capsys, ["search", "densenet-bc-100-12", *SMALL, "--vary",
                                 "growth_rate=12,24", "--write", str(out)])
    assert code == 1 and "already exists" in err
    assert sorted(os.listdir(out)) == ["densenet-bc-100-12-02-growth_rate=12.yaml"]
    assert (out / "densenet-bc-100-12-02-growth_rate=12.yaml").read_text() == "mine\n"


def test_repeated_values_are_one_candidate(tmp_path, capsys):
    code, out, _ = _run(capsys, ["search", "densenet-bc-100-12", *SMALL, "--vary",
                                 "growth_rate=12,12,12.0", "--vary", "drop_rate=0.1,0.10",
                                 "--format", "json", "--write", str(tmp_path / "w")])
    assert code == 0
    data = json.loads(out)
    assert data["evaluated"] == 1 and len(data["candidates"]) == 1
    assert len(os.listdir(tmp_path / "w")) == 1


@pytest.mark.parametrize("values,words", [
    ("12", "not the string '12'"),
    (b"12", "not the string"),
    ({"a": 1}, "not a mapping"),
    (12, "not int"),
    (range(10**8), "100,000,000 values, more than 1,000,000"),
    (itertools.count(), "more than 1,000,000 values"),
])
def test_python_search_values_are_refused_before_they_are_held(values, words):
    tracemalloc.start()
    try:
        with pytest.raises(SearchError, match=words.replace("(", r"\(")):
            archspec.search("densenet-bc-100-12", {"growth_rate": values})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # a million values at most, never 10^8 or endless


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_the_pareto_front_is_the_brute_force_front(dims):
    rnd = random.Random(dims)
    for trial in range(200):
        n = rnd.randint(0, 40)
        points = [[rnd.randint(0, 6) for _ in range(dims)] for _ in range(n)]
        brute = {i for i, p in enumerate(points)
                 if not any(all(a <= b for a, b in zip(q, p)) and q != p for q in points)}
        assert _pareto(points) == brute, points


def test_a_search_keeps_numbers_not_plans():
    """500 candidates, all on the front (growth raises params and MACs alike): the
    search holds a few numbers per candidate, not its Plan (about 13 KB each, 6.5 MB
    here)."""
    tracemalloc.start()
    try:
        r = archspec.search("densenet-bc-100-12", {"growth_rate": range(1, 501)},
                            overrides={"depth": 16})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.matched == 500 and all(c.pareto for c in r.candidates)
    assert peak < 1.5 * 2**20, peak
    assert r.candidates[0].plan.params == r.candidates[0].params  # planned when asked
    assert r.candidates[:2] == [r.candidates[0], r.candidates[1]]


# --- checkpoints and the models they make ------------------------------------------------

def _small_state():
    import torch  # noqa: F401

    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}))
    return model.state_dict()


def test_a_key_given_twice_is_ambiguous_not_whichever_came_last(tmp_path, capsys):
    import torch

    state = _small_state()
    key = "features.conv0.weight"
    state["module." + key] = torch.zeros_like(state[key])
    path = tmp_path / "twice.pt"
    torch.save(state, path)
    code, out, err = _run(capsys, ["check-weights", "densenet-bc-100-12", str(path),
                                   *SMALL])
    assert code == 1 and "does NOT load into" in out
    assert "ambiguous: the checkpoint holds it 2 times" in err
    code, _, err = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "--weights",
                                 str(path), "-o", str(tmp_path / "out.pt")])
    assert code == 1 and "ambiguous" in err and not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("dtype,words", [("complex64", "drop their imaginary part"),
                                         ("bool", "a cast between number kinds"),
                                         ("int64", "a cast between number kinds")])
def test_tensors_that_would_not_survive_the_copy_are_problems(dtype, words, tmp_path,
                                                              capsys):
    import torch

    state = _small_state()
    key = "features.conv0.weight"
    state[key] = state[key].to(getattr(torch, dtype))
    path = tmp_path / "lossy.pt"
    torch.save(state, path)
    code, out, err = _run(capsys, ["check-weights", "densenet-bc-100-12", str(path),
                                   *SMALL])
    assert code == 1 and "1 lossy" in out
    assert f"found {dtype} values where the model holds float32" in err and words in err


def test_a_long_module_prefix_is_stripped_in_linear_time():
    """Counted, not timed: the key is sliced once however many prefixes it has (the
    quadratic way copies the rest of the key once per prefix)."""
    import torch

    from archspec.weights import normalise_keys

    class CountingKey(str):
        slices = 0

        def __getitem__(self, i):
            CountingKey.slices += 1
            return CountingKey(str.__getitem__(self, i))  # its slices count too

    out, renamed = normalise_keys({CountingKey("module." * 2_000 + "x"): torch.zeros(1)})
    assert list(out) == ["x"] and renamed == 1
    assert CountingKey.slices == 1


def test_a_decompression_bomb_is_refused_before_it_is_read(tmp_path, capsys):
    import zipfile

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("archive/data/0", "w") as fh:
            for _ in range(16):
                fh.write(b"\0" * (1 << 22))  # 64 MiB of zeros in about 64 KB
    code, _, err = _run(capsys, ["check-weights", "densenet-bc-100-12", str(bomb)])
    assert code == 1 and "expand to 67,108,864" in err and "decompression bomb" in err


@pytest.mark.parametrize("argv,words", [
    (["export", "densenet-bc-100-12", "-o", "{tmp}/x.pt", "--batch", "65536"],
     "activations"),
    (["export", "densenet-bc-100-12", "-o", "{tmp}/x.pt", "--input", "3x65536x65536"],
     "activations"),
    (["check-weights", "densenet-bc-100-12", "{tmp}/none.pt", "--set",
      "block_config=[10000,10000,10000]",
      "--set", "depth=null"], "parameters, over the limit"),
])
def test_every_command_that_makes_tensors_goes_through_the_guard(argv, words, tmp_path,
                                                                 capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = _run(capsys, argv)
    assert code == 1 and words in err and "--allow-large" in err, err
    assert os.listdir(tmp_path) == []


def test_paths_reach_the_terminal_escaped(tmp_path, capsys):
    out = tmp_path / "e\x1b[31mvil\nname.pt"
    code, stdout, _ = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "-o", str(out)])
    assert code == 0 and "\x1b" not in stdout and "\\x1b[31mvil\\x0aname.pt" in stdout
    code, _, err = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "-o", str(out)])
    assert code == 1 and "\x1b" not in err and "\\x0aname.pt: already exists" in err


def test_load_checkpoint_on_foreign_files_says_what_it_is(tmp_path):
    import torch

    from archspec.errors import SpecError

    plain = tmp_path / "plain.pt"
    torch.save(_small_state(), plain)
    with pytest.raises(SpecError, match="not an archspec checkpoint"):
        archspec.load_checkpoint(plain)
    partial = tmp_path / "partial.pt"
    torch.save({"format": "archspec-checkpoint/1"}, partial)
    from archspec.builder import CHECKPOINT_FORMAT
    torch.save({"format": CHECKPOINT_FORMAT}, partial)
    with pytest.raises(SpecError, match="'spec' is missing"):
        archspec.load_checkpoint(partial)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match="cannot read checkpoint"):
        archspec.load_checkpoint(garbage)
    with pytest.raises(SpecError, match="no such checkpoint file"):
        archspec.load_checkpoint(tmp_path / "none.pt")


def test_optimize_for_inference_says_it_drops_hooks():
    model = archspec.build(archspec.load("densenet-bc-100-12", overrides={"depth": 16}))
    model.features.denseblock1.register_forward_hook(lambda *a: None)
    with pytest.warns(UserWarning, match="forward hooks on features.denseblock1 are not"):
        archspec.optimize_for_inference(model)


def test_checkpoint_keys_reach_the_terminal_on_one_escaped_line(tmp_path, capsys):
    import torch

    state = _small_state()
    state["evil\x1b[2J\nkey"] = torch.zeros(1)
    path = tmp_path / "evil.pt"
    torch.save(state, path)
    code, _, err = _run(capsys, ["check-weights", "densenet-bc-100-12", str(path), *SMALL])
    assert code == 1 and "\x1b" not in err
    line = next(x for x in err.splitlines() if "not in the spec" in x)
    assert "evil\\x1b[2J\\x0akey" in line


def test_a_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch):
    """(As root a folder's mode does not stop a write, so the refusal is simulated where
    the write starts.)"""
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = _run(capsys, ["build", "densenet-bc-100-12", *SMALL, "-o",
                                 str(tmp_path / "x.pt")])
    assert code == 1
    assert err.strip() == f"archspec build: {tmp_path / 'x.pt'}: Permission denied"
