"""The ``archspec`` command: a thin face over the library.

Parse arguments, call the library, print, choose the exit code: 0 success, 1 an invalid
spec or a failed check, 2 a usage error. Results go to stdout, diagnostics to stderr, and
a user's mistake is one ``FILE:LINE:COL: key.path: message`` line, never a traceback.
``validate``, ``summary`` (without --verify), ``table``, ``list``, ``schema``, ``diff``,
``canonical``, ``new`` and ``search`` never import torch; where torch is missing, a command
that needs it says what to install.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, Sequence

from . import zoo
from .version import __version__
from .canonical import canonical, content_hash
from .errors import TORCH_MISSING, SpecError, torch_missing
from .yamlio import COMMAND_LINE
from .files import OutputError, write_atomic
from .pipeline import load_plan
from .plan import Plan, plan as make_plan
from .resources import DTYPE_BYTES, check_resources
from .report import (diff_json, diff_text, human, list_rows, printable, setting, paper_table,
                     render_table, search_csv, search_text, summary_data, summary_text)

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Usage(Exception):
    """A command line that makes no sense (exit 2)."""


class _LocatedUsage(Exception):
    """A usage error located at an argument: ``<command line>:1:N: option: message`` (exit 2)."""

    def __init__(self, position: int, option: str, message: str):
        super().__init__(f"{COMMAND_LINE}:1:{position}: {option}: {message}")


# --- output helpers ----------------------------------------------------------------------

def _colour(text: str, code: str, stream) -> str:
    """ANSI colour only on a terminal and never with NO_COLOR set (no-color.org)."""
    if os.environ.get("NO_COLOR") or not getattr(stream, "isatty", lambda: False)():
        return text
    return f"\033[{code}m{text}\033[0m"


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


MAX_PROBLEMS_SHOWN = 30  # a checkpoint of the wrong network differs in hundreds of keys


def _print_problems(e: SpecError, limit: int | None = MAX_PROBLEMS_SHOWN) -> None:
    shown = e.problems if limit is None else e.problems[:limit]
    for problem in shown:
        _err(_colour(printable(str(problem), one_line=True), "31", sys.stderr))  # one line each
    if len(shown) < len(e.problems):
        _err(f"... and {len(e.problems) - len(shown)} more problems (--all shows every one)")


# --- spec loading shared by the commands ---------------------------------------------------

def _overrides(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _Usage(f"--set takes KEY.PATH=VALUE, got {pair!r}")
        out[key.strip()] = value
    return out


def _at_argv(e: SpecError, argv: Sequence[str]) -> SpecError:
    """Problems located on the command line count words as --vary's do: the loader's
    column N is the N-th override (--set in order, then --input); here it becomes the
    1-based place of that override's word in the command line."""
    def places_of(option: str) -> list[int]:
        return [i + 1 for i, word in enumerate(argv)
                if (i and argv[i - 1] == option) or word.startswith(option + "=")]
    places = places_of("--set") + places_of("--input")
    if not places or not any(p.file == COMMAND_LINE for p in e.problems):
        return e

    def moved(p):
        if p.file != COMMAND_LINE or not 1 <= p.column <= len(places):
            return p
        return dataclasses.replace(p, column=places[p.column - 1])
    out = SpecError([moved(p) for p in e.problems])
    out.partial = e.partial
    return out


def _input_overrides(text: str | None) -> dict[str, str]:
    """--input CxL, CxHxW or CxDxHxW as one override of ``input`` (so a size problem is
    located at it); CxHxW is written height/width, the 2D spelling."""
    if not text:
        return {}
    parts = text.lower().split("x")
    if not 2 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise _Usage(f"--input takes CxL, CxHxW or CxDxHxW such as 3x224x224 or "
                     f"1x96x96x96, got {text!r}")
    c, *size = parts
    if len(size) == 2:
        return {"input": f"{{channels: {c}, height: {size[0]}, width: {size[1]}}}"}
    return {"input": f"{{channels: {c}, size: [{', '.join(size)}]}}"}


def _plan(name: str, args: argparse.Namespace) -> Plan:
    """Load and plan one spec with the command's --set (and --input) overrides; every
    problem of the spec, schema and arithmetic, in one SpecError."""
    overrides = {**_overrides(getattr(args, "set", None)),
                 **_input_overrides(getattr(args, "input", None))}
    return load_plan(name, overrides=overrides or None)


def _inputs(args: argparse.Namespace, *plans: Plan) -> list[str]:
    """Every file the command reads: the specs named, every file they extend, and the
    weights. An output is never one of them, with --force or without."""
    named = [getattr(args, "spec", None), *(getattr(args, "specs", None) or ()),
             getattr(args, "weights", None)]
    return [f for f in named if f] + [f for p in plans for f in p.spec.source_files]


def _plans(names: Sequence[str], args: argparse.Namespace) -> list[Plan]:
    """Plan every spec; report all that fail (each as FILE:LINE:COL lines), then exit 1."""
    plans, problems = [], []
    for name in names:
        try:
            plans.append(_plan(name, args))
        except SpecError as e:
            problems.extend(e.problems)
    if problems:
        raise SpecError(problems)
    return plans


# --- the commands: each one's arguments, help and examples beside it -------------------

_COMMANDS: dict[str, tuple[Callable, str, Callable, list[str]]] = {}


def _command(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None],
             examples: Sequence[str] = ()) -> Callable:
    """Register ``func`` as ``archspec NAME``: its one-line help, a function adding its
    arguments, and the examples its --help shows (in the order commands are defined)."""
    def register(func: Callable) -> Callable:
        _COMMANDS[name] = (func, help, arguments, list(examples))
        return func
    return register


# Options several commands share, one definition each.

def _with_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", metavar="KEY.PATH=VALUE",
                   help="override a key (value read as YAML); repeatable. The result is "
                        "a variant: its name says what changed and the base's 'expect' "
                        "pins no longer apply")


def _with_allow_large(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-large", action="store_true",
                   help="build even beyond the resource guard's limits")


def _with_format(p: argparse.ArgumentParser, choices=("table", "markdown", "json")) -> None:
    p.add_argument("--format", choices=choices, default=choices[0],
                   help=f"output format (default {choices[0]})")


def _with_force(p: argparse.ArgumentParser, help: str = "replace FILE if it exists") -> None:
    p.add_argument("--force", action="store_true", help=help)


def _seed(text: str) -> int:
    """A seed torch.manual_seed takes: an integer in [0, 2**64)."""
    try:
        value = int(text) if len(text) <= 30 else None
    except ValueError:
        value = None
    if value is None or not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(
            f"{_short(text)!r} is not a seed: use an integer from 0 to 2**64-1")
    return value


def _shown_path(path) -> str:
    """A path as printed: one line, no terminal control characters."""
    return printable(os.fsdecode(path) if isinstance(path, (bytes, os.PathLike)) else str(path),
                     one_line=True)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _with_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_seed, default=0, help="initialisation seed (default 0)")


def _with_weights(p: argparse.ArgumentParser, default: str = "") -> None:
    p.add_argument("--weights", metavar="CHECKPOINT",
                   help="load these weights (archspec, torchvision, timm or MONAI checkpoint)"
                        + default)
    p.add_argument("--drop-head", action="store_true",
                   help="with --weights: keep the new classifier (another num_classes)")
    _with_adapt(p)


def _with_adapt(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapt", action="append", choices=("inflate", "input_channels"),
                   default=[],
                   help="change the checkpoint's tensors to fit, listed in the report: "
                        "inflate (a 2D checkpoint into a 1D or 3D spec, I3D's rule), "
                        "input_channels (the first conv to the spec's input channels, "
                        "timm's rule); repeatable")


def _with_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="float32",
                   help="parameter dtype (default float32)")


def _validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _with_set(p)


@_command(
    "validate",
    "check specs: OK with params, or every error",
    _validate_arguments,
    examples=[
        "archspec validate my-densenet.yaml",
        "archspec validate specs/cifar/*.yaml",
        "archspec validate densenet121 --set growth_rate=48",
    ])
def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for name in args.specs:
        try:
            p = _plan(name, args)
        except SpecError as e:
            failed += 1
            _print_problems(_at_argv(e, args.argv))
            continue
        ok = _colour("OK", "32", sys.stdout)
        _out(f"{ok} {p.name} ({p.params:,} params, {p.out_channels} out_channels)")
    return EXIT_FAIL if failed else EXIT_OK


def _summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--input", metavar="CxHxW",
                   help="plan for another input size (CxL, CxHxW or CxDxHxW)")
    p.add_argument("--layers", action="store_true", help="expand blocks into layers")
    p.add_argument("--batch", type=int, metavar="B",
                   help="also estimate the training memory (bytes of activations autograd "
                        "keeps, float32) of a batch of B")
    p.add_argument("--verify", action="store_true",
                   help="also build the model and check it with torchinfo (imports torch)")
    p.add_argument("--device", default="cpu", help="device for --verify (default cpu)")
    _with_format(p)
    _with_set(p)
    _with_allow_large(p)


@_command(
    "summary",
    "per-stage channels, sizes, params, MACs",
    _summary_arguments,
    examples=[
        "archspec summary densenet121",
        "archspec summary densenet121 densenet169",
        "archspec summary densenet121 --input 3x64x64 --layers",
        "archspec summary densenet-bc-100-12 --batch 64 --format json",
        "archspec summary densenet121 --verify",
    ])
def cmd_summary(args: argparse.Namespace) -> int:
    if args.batch is not None and args.batch < 1:
        raise _Usage(f"--batch must be at least 1, got {args.batch}")
    plans = _plans(args.specs, args)
    checks = {}
    if args.verify:
        from .verify import DeviceError, torchinfo_check  # imports torch

        try:
            checks = {id(p): torchinfo_check(p, device=args.device,
                                             allow_large=args.allow_large) for p in plans}
        except DeviceError as e:
            _err(f"archspec summary: {e}")
            return EXIT_FAIL
    datas, texts = [], []
    for p in plans:
        check = checks.get(id(p))
        if args.format == "json":
            data = summary_data(p, layers=args.layers, content_hash=content_hash(p.spec),
                                batch=args.batch)
            if check is not None:
                data["verify"] = check.as_dict()
            datas.append(data)
        else:
            text = summary_text(p, fmt=args.format, layers=args.layers,
                                content_hash=content_hash(p.spec), batch=args.batch)
            texts.append(text + ("\n\n" + check.render(args.format) if check else ""))
    if args.format == "json":  # one spec: an object (the contract); several: a list
        _out(json.dumps(datas[0] if len(datas) == 1 else datas, indent=2))
    else:
        _out("\n\n".join(texts))
    bad = [(name, c) for name, p in zip(args.specs, plans)
           if (c := checks.get(id(p))) is not None and not c.ok]
    for name, c in bad:
        for line in c.mismatches:
            _err(f"{name}: mismatch: {line}")
    return EXIT_FAIL if bad else EXIT_OK


def _table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _with_set(p)


@_command(
    "table",
    "the paper's architecture table (markdown)",
    _table_arguments,
    examples=[
        "archspec table densenet121 densenet169 densenet201 densenet264",
    ])
def cmd_table(args: argparse.Namespace) -> int:
    plans = _plans(args.specs, args)
    try:
        table = paper_table(plans)
    except ValueError as e:  # two members' tables do not share rows
        raise _Usage(str(e)) from None
    _out(table)
    return EXIT_OK


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wide", action="store_true",
                   help="add the source column and do not shorten descriptions")
    _with_format(p)


@_command(
    "list",
    "the zoo: name, params, MACs, description",
    _list_arguments,
    examples=[
        "archspec list",
        "archspec list --wide",
        "archspec list --format json",
    ])
def cmd_list(args: argparse.Namespace) -> int:
    plans = [load_plan(n) for n in zoo.names()]
    if args.format == "json":
        groups = zoo.groups()
        _out(json.dumps([{"name": p.name, "group": groups[p.name], "params": p.params,
                          "macs": p.macs, "source": p.spec.source,
                          "description": p.spec.description} for p in plans], indent=2))
        return EXIT_OK
    header = ["name", "params", "MACs", "description"] + (["source"] if args.wide else [])
    rows = list_rows(plans, wide=args.wide or args.format == "markdown")
    if not args.wide:
        rows = [r[:4] for r in rows]
    _out(render_table(header, rows, args.format, align="lrrll"))
    return EXIT_OK


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


@_command(
    "schema",
    "the JSON Schema of a spec",
    _no_arguments,
    examples=[
        "archspec schema > densenet.schema.json",
    ])
def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import json_schema

    _out(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def _diff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    _with_format(p)
    _with_set(p)


@_command(
    "diff",
    "what differs between two plans, stage by stage",
    _diff_arguments,
    examples=[
        "archspec diff densenet121 densenet169",
        "archspec diff densenet121 my-variant.yaml --format json",
    ])
def cmd_diff(args: argparse.Namespace) -> int:
    a, b = _plans([args.a, args.b], args)
    _out(diff_json(a, b) if args.format == "json" else diff_text(a, b, args.format))
    return EXIT_OK


def _canonical_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    _with_set(p)


@_command(
    "canonical",
    "the fully resolved spec as YAML",
    _canonical_arguments,
    examples=[
        "archspec canonical my-densenet.yaml > resolved.yaml",
    ])
def cmd_canonical(args: argparse.Namespace) -> int:
    p = _plan(args.spec, args)  # planning too: a canonical spec is a valid one
    sys.stdout.write(canonical(p.spec))
    return EXIT_OK


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="checkpoint to write (atomically; see --force)")
    p.add_argument("--device", default="cpu",
                   help="device to initialise and load weights on (default cpu); the "
                        "checkpoint is always stored on the CPU")
    _with_dtype(p)
    _with_seed(p)
    _with_force(p)
    _with_weights(p)
    p.add_argument("--layout", choices=("archspec", "monai", "torchvision", "timm"),
                   default="archspec",
                   help="archspec (default): state_dict + spec, read back by archspec; "
                        "monai, torchvision, timm: the plain state_dict that library's own "
                        "DenseNet loads with strict=True (torchvision and timm: 2D nets)")
    _with_set(p)
    _with_allow_large(p)


@_command(
    "build",
    "write an initialised checkpoint (state_dict + spec)",
    _build_arguments,
    examples=[
        "archspec build densenet121 -o densenet121.pt",
        "archspec build densenet121 -o d121-bf16.pt --dtype bfloat16 --seed 1",
        "archspec build densenet121 --set num_classes=10 --weights tv.pth --drop-head -o "
        "d121-10.pt",
        "archspec build densenet121-3d --layout monai -o d121-3d-monai.pt",
    ])
def cmd_build(args: argparse.Namespace) -> int:
    from .files import check_writable

    p = _plan(args.spec, args)
    # The guard again inside build(); here first so an absurd spec fails before torch loads.
    check_resources(p, device="cpu", allow_large=args.allow_large)
    if args.layout in ("torchvision", "timm") and p.dims != 2:
        raise _Usage(f"--layout {args.layout}: {args.layout}'s DenseNet is 2D and "
                     f"{p.name} is {p.dims}D; write --layout monai or archspec")
    if args.layout in ("torchvision", "timm") and p.spec.activation.params:
        raise _Usage(f"--layout {args.layout}: {args.layout}'s DenseNet has no learned "
                     f"activation and {p.name} has {p.spec.activation.value}; write "
                     "--layout monai or archspec")
    check_writable(args.output, force=args.force, inputs=_inputs(args, p))  # before building
    from .builder import build, save_checkpoint  # imports torch
    from .verify import DeviceError, parse_device, parse_dtype

    try:
        model = build(p, device=parse_device(args.device), dtype=parse_dtype(args.dtype),
                      seed=args.seed, allow_large=args.allow_large, weights=args.weights,
                      drop_head=args.drop_head, adapt=args.adapt)
    except DeviceError as e:
        _err(f"archspec build: {e}")
        return EXIT_FAIL
    out = save_checkpoint(model, args.output, force=args.force, inputs=_inputs(args, p),
                          seed=args.seed, layout=args.layout)
    layout = "" if args.layout == "archspec" else f"{args.layout}'s key layout, "
    _out(f"wrote {_shown_path(out)} ({p.name}, {layout}{p.params:,} params, {args.dtype}, "
         f"seed {args.seed}, "
         f"sha256 {content_hash(p.spec)[:16]}...)")
    return EXIT_OK


def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="artefact to write (atomically, only after it matched eager on a "
                        "random input; see --force)")
    _with_weights(p, "; default: initialised from --seed")
    _with_seed(p)
    p.add_argument("--optimize", action="store_true",
                   help="export optimize_for_inference's model (norms folded, no "
                        "per-layer concatenation)")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="batch size of the traced and checked input (default 1)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="let the artefact take any batch size (checked at B and B+1)")
    p.add_argument("--input", metavar="CxHxW",
                   help="export for another input size (CxL, CxHxW or CxDxHxW)")
    _with_force(p)
    _with_format(p, ("text", "json"))
    _with_set(p)
    _with_allow_large(p)


@_command(
    "export",
    "write a checked deployable model: .onnx, .pt2 (torch.export) or .pt (TorchScript), by FILE's"
    " suffix",
    _export_arguments,
    examples=[
        "archspec export densenet121 -o densenet121.onnx --dynamic-batch",
        "archspec export densenet121 -o d121.pt2 --weights d121.pth --optimize",
        "archspec export densenet-bc-100-12 -o bc100.pt --input 3x64x64 --batch 8",
    ])
def cmd_export(args: argparse.Namespace) -> int:
    from .files import check_writable

    p = _plan(args.spec, args)
    if args.batch < 1:
        raise _Usage(f"--batch must be at least 1, got {args.batch}")
    # The guard again inside build(); here first so an absurd spec fails before torch loads:
    # the export runs the model in eval at --batch (and one more for --dynamic-batch).
    check_resources(p, device="cpu", batch=args.batch + args.dynamic_batch, training=False,
                    allow_large=args.allow_large)
    try:
        from .deploy import format_for  # imports torch
        fmt = format_for(args.output)
    except ValueError as e:
        raise _Usage(str(e)) from None
    inputs = _inputs(args, p)
    check_writable(args.output, force=args.force, inputs=inputs)  # before the slow part
    from .builder import build
    from .deploy import OPTIMIZE_HELPS, TOLERANCE, ExportError, export
    from .inference import optimize_for_inference

    model = build(p, seed=args.seed, allow_large=args.allow_large, weights=args.weights,
                  drop_head=args.drop_head, adapt=args.adapt)
    optimized = args.optimize and OPTIMIZE_HELPS[fmt]
    if args.optimize and not optimized:
        _err("archspec export: --optimize: ONNX Runtime fuses the norms itself and runs the "
             "plain graph faster (see docs/deploy.md); exporting the plain graph")
    if optimized:
        model = optimize_for_inference(model)
    try:
        result = export(model, args.output, input_shape=p.input_shape, batch=args.batch,
                        dynamic_batch=args.dynamic_batch, force=args.force, inputs=inputs,
                        progress=lambda step: _err(f"archspec export: {step}"))
    except ExportError as e:
        _err(f"archspec export: {printable(str(e))}")
        return EXIT_FAIL
    if args.format == "json":
        _out(json.dumps({**result.as_dict(), "name": p.name, "params": p.params,
                         "optimized": bool(optimized),
                         "sha256": content_hash(p.spec)}, indent=2))
        return EXIT_OK
    checked = " and ".join(f"{d:.2g} at batch {n}" for n, d in result.max_abs_diff.items())
    shape = f"{'Nx' if args.dynamic_batch else f'{args.batch}x'}" + "x".join(
        map(str, p.input_shape))
    _out(f"wrote {_shown_path(result.path)} ({fmt}, {p.name}"
         f"{', optimized' if optimized else ''}, "
         f"input {shape}, {human(result.bytes, 'B')})")
    _out(f"max |exported - eager|: {checked} (tolerance {TOLERANCE:g})")
    return EXIT_OK


def _say_provenance(names: Sequence[str]) -> None:
    """For each exported file among ``names``: which spec and archspec made it."""
    from .provenance import embedded_spec, is_artefact

    for name in names:
        if is_artefact(name) and os.path.isfile(name):
            prov = embedded_spec(name)
            spec_name = load_plan(name).name  # read as every SPEC is (sha256 checked)
            _err(f"{printable(name)}: exported by archspec {printable(prov.version) or '?'} "
                 f"from {printable(spec_name)} (spec sha256 {prov.sha256}, matches the "
                 "embedded spec)")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="*", metavar="SPEC")
    p.add_argument("--all", action="store_true", help="every zoo spec")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    _with_format(p)
    _with_set(p)
    _with_allow_large(p)


@_command(
    "verify",
    "build, run forward and backward, check params and shapes against the plan",
    _verify_arguments,
    examples=[
        "archspec verify densenet121",
        "archspec verify --all --device cuda --dtype bfloat16",
    ])
def cmd_verify(args: argparse.Namespace) -> int:
    names = zoo.names() if args.all else args.specs
    if not names:
        raise _Usage("verify needs SPEC... or --all")
    plans = _plans(names, args)
    if args.batch < 1:
        raise _Usage(f"--batch must be at least 1, got {args.batch}")
    if args.device.startswith("cpu"):  # fail before torch loads; verify_all checks again
        for p in plans:
            check_resources(p, device="cpu", dtype_bytes=DTYPE_BYTES[args.dtype],
                            batch=args.batch, allow_large=args.allow_large)
    _say_provenance(names)
    from .verify import DeviceError, verify_all  # imports torch

    try:
        results = verify_all(plans, device=args.device, batch=args.batch, dtype=args.dtype,
                             progress=_progress, allow_large=args.allow_large)
    except DeviceError as e:
        _err(f"archspec verify: {e}")
        return EXIT_FAIL
    rows = [[r.name, r.device, r.dtype, str(r.batch), f"{r.observed_params:,}",
             f"{sum(s.ok for s in r.stages)}/{len(r.stages)}",
             f"{r.forward_s * 1000:.0f}", f"{r.backward_s * 1000:.0f}",
             "ok" if r.ok else "FAIL"] for r in results]
    if args.format == "json":
        _out(json.dumps([{"name": r.name, "device": r.device, "dtype": r.dtype,
                          "batch": r.batch, "params": r.observed_params,
                          "planned_params": r.planned_params, "ok": r.ok,
                          "mismatches": r.mismatches, "forward_ms": r.forward_s * 1000,
                          "backward_ms": r.backward_s * 1000} for r in results], indent=2))
    else:
        _out(render_table(["spec", "device", "dtype", "batch", "params", "stages ok",
                           "forward ms", "backward ms", "result"], rows, args.format,
                          align="lllrrrrrl"))
    bad = [r for r in results if not r.ok]
    for r in bad:
        for m in r.mismatches:
            _err(f"{r.name}: {m}")
    return EXIT_FAIL if bad else EXIT_OK


def _check_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--drop-head", action="store_true", help="ignore the classifier")
    _with_adapt(p)
    p.add_argument("--all", action="store_true",
                   help=f"list every problem (default: the first {MAX_PROBLEMS_SHOWN})")
    _with_set(p)
    _with_allow_large(p)


@_command(
    "check-weights",
    "whether a checkpoint fits a spec: missing, unexpected, mis-shaped keys",
    _check_weights_arguments,
    examples=[
        "archspec check-weights densenet121 densenet121.pth",
        "archspec check-weights densenet161 densenet121.pth --all",
    ])
def cmd_check_weights(args: argparse.Namespace) -> int:
    p = _plan(args.spec, args)
    check_resources(p, device="cpu", allow_large=args.allow_large)  # the model it builds
    _say_provenance([args.spec])
    from .builder import expected_state, zoo_specs_fitting  # imports torch
    from .weights import WeightsError, compare, read_state_dict

    state = read_state_dict(args.checkpoint)
    report, _ = compare(expected_state(p), state, args.checkpoint, drop_head=args.drop_head,
                        adapt=args.adapt)
    verdict = "loads into" if report.ok else "does NOT load into"
    _out(f"{_shown_path(args.checkpoint)} {verdict} {p.name}: {report.summary()}")
    if not report.ok:
        fits = [n for n in zoo_specs_fitting(state, drop_head=args.drop_head) if n != p.name]
        if fits:  # said first: 800 mismatched shapes are read as "wrong spec" anyway
            _err(f"{_shown_path(args.checkpoint)} fits the zoo's {' and '.join(fits)}: "
                 f"archspec check-weights {fits[0]} {_shown_path(args.checkpoint)}")
        _print_problems(WeightsError(report.problems()), None if args.all else
                        MAX_PROBLEMS_SHOWN)
        return EXIT_FAIL
    return EXIT_OK


def _new_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME", help="the spec's name")
    p.add_argument("--from", dest="base", metavar="BASE",
                   help="extend this zoo name or spec file (its settings listed as comments)")
    p.add_argument("-o", "--output", metavar="FILE.yaml", help="default: NAME.yaml")
    _with_force(p)


@_command(
    "new",
    "write a commented starter spec (NAME.yaml) to edit",
    _new_arguments,
    examples=[
        "archspec new my-densenet",
        "archspec new wide121 --from densenet121",
        "archspec new tiny --from densenet-bc-100-12 -o specs/tiny.yaml",
    ])
def cmd_new(args: argparse.Namespace) -> int:
    import re

    from pathlib import Path

    from .loader import resolve_text
    from .schema import MAX_NAME_LENGTH, NAME_PATTERN, NAME_RULE
    from .starter import starter_text

    if not re.match(NAME_PATTERN, args.name) or len(args.name) > MAX_NAME_LENGTH:
        raise _Usage(f"NAME holds {NAME_RULE}, at most {MAX_NAME_LENGTH} characters; got "
                     f"{printable(args.name)!r}")
    if args.output is not None and not args.output.strip():
        raise _Usage("-o/--output: an empty path; leave it out for NAME.yaml")
    output = args.output or f"{args.name}.yaml"
    text = starter_text(args.name, output, args.base)
    # Checked where it will live (a relative 'extends' starts there); a starter that does
    # not validate would be a bug of ours, and nothing is written then.
    resolve_text(text, output, Path(output).parent).spec()
    out = write_atomic(output, lambda fh: fh.write(text.encode()), force=args.force,
                       inputs=[args.base] if args.base else [])
    _out(f"wrote {_shown_path(out)}: edit it, then archspec validate {_shown_path(out)}")
    return EXIT_OK


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="LIBRARY:NAME")
    p.add_argument("-o", "--output", required=True, metavar="FILE.yaml")
    p.add_argument("--name", help="the spec's name (default: the zoo's name for the same "
                                  "network, else NAME)")
    _with_force(p)


@_command(
    "import",
    "write the spec of a torchvision or timm DenseNet (e.g. torchvision:densenet121)",
    _import_arguments,
    examples=[
        "archspec import torchvision:densenet121 -o densenet121.yaml",
        "archspec import timm:densenetblur121d -o blur.yaml",
    ])
def cmd_import(args: argparse.Namespace) -> int:
    from .introspect import from_module, from_name  # imports torch

    model, ref = from_name(args.ref)
    spec = from_module(model, name=args.name, source=ref)
    if args.name is None and spec.name not in zoo.names():  # not a zoo network: NAME
        spec = from_module(model, name=args.ref.partition(":")[2], source=ref)
    text = canonical(spec)
    out = write_atomic(args.output, lambda fh: fh.write(text.encode()), force=args.force)
    p = make_plan(spec)
    shape = (f"block_config {list(p.block_config)}, k={setting(p.growth_rate)}"
             if p.family == "densenet" else
             f"VoVNet-{p.depth}, blocks per stage {[st.blocks for st in spec.stages]}")
    _out(f"wrote {_shown_path(out)} ({spec.name}: {p.params:,} params, {shape})")
    return EXIT_OK


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", metavar="BASE", help="zoo name or spec file to vary")
    p.add_argument("--vary", action="append", metavar="KEY=VALUES",
                   help="a key path (as --set takes) and its values: 12,24,40 or 40..250 "
                        "(inclusive) or 8..48:4 (with a step); repeatable")
    for option, what in (("--max-params", "at most this many parameters"),
                         ("--min-params", "at least this many parameters"),
                         ("--max-macs", "at most this many MACs per image"),
                         ("--max-activations", "at most this many bytes of training "
                                               "activations at --batch (float32)")):
        p.add_argument(option, metavar="N", help=what + "; 1M, 300M, 2.5G work")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="batch size for activations (default 1)")
    p.add_argument("--objectives", default="params:max,macs:min",
                   help="axes of the Pareto front (default params:max,macs:min)")
    p.add_argument("--sort", default="-params",
                   choices=[m for k in ("params", "macs", "activations") for m in (k, "-" + k)],
                   help="order of the candidates (default -params: largest first)")
    p.add_argument("--top", type=int, metavar="N", help="keep the first N candidates")
    p.add_argument("--show-invalid", action="store_true",
                   help="list the combinations that are not valid specs, and why")
    p.add_argument("--write", metavar="DIR",
                   help="write the (--top) candidates as spec files into DIR, expect pinned")
    p.add_argument("--plot", metavar="FILE.png|svg|pdf",
                   help="draw params against MACs, the front highlighted, the base and the "
                        "zoo's nets of the same input marked")
    _with_force(p, "replace files that exist")
    p.add_argument("--allow-large-grid", action="store_true",
                   help="search grids of more than 1,000,000 combinations")
    p.add_argument("--allow-large", action="store_true", help=argparse.SUPPRESS)
    _with_format(p, ("table", "json", "csv"))
    _with_set(p)


@_command(
    "search",
    "plan every combination of some keys' values; keep what fits a budget",
    _search_arguments,
    examples=[
        "archspec search densenet-bc-100-12 --set input={channels:3,height:64,width:64} --vary "
        "growth_rate=8..40:4 --vary depth=40..250:6 --max-params 1M --top 10",
        "archspec search densenet121 --vary growth_rate=16..48:8 --vary block_config[3]=8..32:8 "
        "--max-macs 3G --format json",
        "archspec search densenet121 --vary growth_rate=16..48:4 --max-macs 3G --plot front.svg "
        "--write candidates/",
    ])
def cmd_search(args: argparse.Namespace) -> int:
    from .search import SearchError, parse_number, parse_objectives, parse_values, search

    if args.allow_large:
        raise _Usage("--allow-large is for commands that build models (past the resource "
                     "guard); search builds none: for grids over 1,000,000 combinations, "
                     "use --allow-large-grid")

    def at(value: str) -> int:  # 1-based position of an argument, for the error's column
        return args.argv.index(value) + 1 if value in args.argv else 0

    def number(option: str, value: str | None) -> int | None:
        try:
            return None if value is None else parse_number(value)
        except SearchError as e:
            raise _LocatedUsage(at(value), option, e.message) from None
    vary: dict[str, list] = {}
    for item in args.vary or ():
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise _LocatedUsage(at(item), "--vary", f"expected KEY=VALUES (growth_rate=12,24 "
                                                    f"or depth=40..250:6), got {item!r}")
        try:
            vary[key.strip()] = parse_values(values)
        except SearchError as e:
            raise _LocatedUsage(at(item), "--vary", f"{key.strip()}: {e.message}") from None
    if not vary:
        raise _Usage("give at least one --vary KEY=VALUES")
    limits = {name: number(option, getattr(args, name)) for name, option in (
        ("max_params", "--max-params"), ("min_params", "--min-params"),
        ("max_macs", "--max-macs"), ("max_activations", "--max-activations"))}
    try:
        objectives = parse_objectives(args.objectives)
    except SearchError as e:
        raise _LocatedUsage(at(args.objectives), "--objectives", e.message) from None
    for option, value in (("--batch", args.batch), ("--top", args.top)):
        if value is not None and value < 1:
            raise _Usage(f"{option} must be at least 1, got {value}")
    if args.plot and not args.plot.lower().endswith((".png", ".svg", ".pdf")):
        raise _Usage(f"--plot must end in .png, .svg or .pdf, got {args.plot!r}")
    try:
        result = search(args.base, vary, overrides=_overrides(args.set) or None,
                        batch=args.batch, objectives=objectives, sort=args.sort,
                        top=args.top, allow_large_grid=args.allow_large_grid, **limits)
    except SearchError as e:
        if e.position:  # the position-th varied key
            key = list(vary)[e.position - 1]
            item = next(i for i in args.vary if i.partition("=")[0].strip() == key)
            raise _LocatedUsage(at(item), "--vary", e.message) from None
        raise _Usage(e.message) from None
    if args.format == "json":
        _out(json.dumps(result.as_dict(show_invalid=args.show_invalid), indent=2,
                        default=str))
    elif args.format == "csv":
        _out(search_csv(result))
    else:
        _out(search_text(result, show_invalid=args.show_invalid))
    if args.write:
        from .search import write_candidates

        for path in write_candidates(result, args.write, force=args.force,
                                     inputs=_inputs(args, result.base_plan)):
            _err(f"wrote {_shown_path(path)}")
    if args.plot:
        from .plot import plot_search  # imports matplotlib

        _err(f"wrote {_shown_path(plot_search(result, args.plot, force=args.force))}")
    return EXIT_OK


def _progress(done: int, total: int, label: str) -> None:
    """A one-line progress bar on a terminal; plain lines otherwise (logs stay readable)."""
    if sys.stderr.isatty():
        width = 24
        fill = int(width * done / total)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {label:<24}")
        if done == total:
            sys.stderr.write("\n")
    else:
        sys.stderr.write(f"[{done}/{total}] {label}\n")
    sys.stderr.flush()


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, metavar="FILE.png|svg|pdf",
                   help="picture to write; the format follows the suffix")
    p.add_argument("--links", action="store_true",
                   help="draw a block's connectivity instead: which outputs each layer "
                        "reads, and what the block emits")
    p.add_argument("--stage", metavar="NAME",
                   help="with --links: the block to draw (default: the first; "
                        "denseblock2, stage3, ...)")
    _with_force(p)
    _with_set(p)


@_command(
    "plot",
    "channels after every layer, one line per spec (--links: a block's connectivity)",
    _plot_arguments,
    examples=[
        "archspec plot densenet121 densenet169 -o channels.svg",
        "archspec plot densenet121 vovnet39a --links -o links.svg",
    ])
def cmd_plot(args: argparse.Namespace) -> int:
    if not args.output.lower().endswith((".png", ".svg", ".pdf")):
        raise _Usage(f"-o must end in .png, .svg or .pdf, got {args.output!r}")
    if args.stage is not None and not args.links:
        raise _Usage("--stage names the block --links draws; add --links")
    plans = _plans(args.specs, args)
    if args.links:
        from .plan_common import StageNotFound

        for p in plans:
            try:
                p.links(args.stage)
            except StageNotFound as e:
                raise _Usage(f"--stage: {e}") from None
    from .plot import plot_channels, plot_links  # imports matplotlib

    if args.links:
        out = plot_links(plans, args.output, stage=args.stage, force=args.force,
                         inputs=_inputs(args, *plans))
    else:
        out = plot_channels(plans, args.output, force=args.force,
                            inputs=_inputs(args, *plans))
    _out(f"wrote {_shown_path(out)}")
    return EXIT_OK


# --- argument parsing ------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archspec", description="Declarative DenseNet specs: validate, summarise, "
        "tabulate, build and verify. SPEC is a zoo name (see 'archspec list') or a YAML path.",
        epilog="'archspec COMMAND --help' shows a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"archspec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (func, help, arguments, examples) in _COMMANDS.items():
        shown = "\n".join(f"  {line}" for line in examples)
        p = sub.add_parser(name, help=help, description=help,
                           epilog=f"examples:\n{shown}" if shown else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, parser=p)
        arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)  # exits 2 on a usage error, as argparse does
    args.argv = argv
    try:
        return args.func(args)
    except _Usage as e:
        getattr(args, "parser", parser).print_usage(sys.stderr)  # the subcommand's usage
        _err(f"archspec {args.command}: error: {e}")
        return EXIT_USAGE
    except _LocatedUsage as e:
        _err(printable(str(e)))
        return EXIT_USAGE
    except SpecError as e:
        _print_problems(_at_argv(e, argv))
        return EXIT_FAIL
    except OutputError as e:
        _err(f"archspec {args.command}: {printable(e.cli, one_line=True)}")
        return EXIT_FAIL
    except ModuleNotFoundError as e:
        if not torch_missing(e):
            raise
        _err(f"archspec {args.command}: {TORCH_MISSING}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # `archspec list | head`: not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except OSError as e:  # the world said no: a read-only folder, a full disk, a long name
        name = e.filename
        if isinstance(name, (str, bytes, os.PathLike)):
            name = os.fsdecode(name)
        where = f"{_shown_path(_short(str(name), 200))}: " if name is not None else ""
        _err(f"archspec {args.command}: {where}{e.strerror or e}")
        return EXIT_FAIL
    except MemoryError:
        _err(f"archspec {args.command}: ran out of memory (see --allow-large and the "
             "resource guard in docs/guide.md)")
        return EXIT_FAIL

