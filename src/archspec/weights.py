"""Loading weights trained elsewhere, with a report in the spec's terms.

Reads archspec checkpoints, plain state_dicts (torchvision, timm), common wrappers
(``{"state_dict": ...}``, ``{"model": ...}``) and .safetensors files, always without
unpickling arbitrary objects (``torch.load(weights_only=True)``). Keys are normalised
before comparison: DataParallel's ``module.`` prefix is stripped and old torchvision keys
(``denselayer1.norm.1.weight``) become new ones (``denselayer1.norm1.weight``), as
torchvision's own loader does. Missing, unexpected and mis-shaped keys are reported as
"block 3, layer 7, conv2: expected 32x128x3x3, found 48x192x3x3", not as a raw torch error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from .errors import Problem, SpecError

__all__ = ["WeightsError", "WeightsReport", "read_state_dict", "check_declared_size",
           "normalise_keys", "LAYOUTS", "in_layout", "ADAPTATIONS", "inflate_kernel",
           "adapt_input_channels",
           "spec_terms", "compare", "load_weights"]

# torchvision's pattern for pre-0.3 checkpoints: 'norm.1' -> 'norm1', 'conv.2' -> 'conv2'
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\."
    r"(?:weight|bias|running_mean|running_var|num_batches_tracked))$")
# MONAI's DenseNet: each dense layer's modules sit in a Sequential called ``layers``, and
# the classifier is ``class_layers.out``; its pool and flatten hold no tensors, its relu
# only when it is a learned activation (PReLU), archspec's ``features.relu5``.
_MONAI_LAYER = re.compile(r"^(.*denselayer\d+)\.layers\.(.+)$")
_MONAI_HEAD = "class_layers.out."
_MONAI_HEAD_ACT, _HEAD_ACT = "class_layers.relu.", "features.relu5."
# Checkpoints older than PyTorch 0.4 have no BN step counters; BatchNorm fills them in.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
# An activation module with a tensor: a PReLU's slope (``...relu1.weight``).
_LEARNED_ACTIVATION = re.compile(r"(?:^|\.)relu\d*\.weight$")
_HEAD_PREFIX = "classifier."
# Training scripts save {"state_dict": ...} and the like; the tensors are inside.
_WRAPPERS = ("state_dict", "model_state_dict", "model", "state_dict_ema")


class WeightsError(SpecError):
    """A checkpoint that cannot be read or does not fit the spec; one problem per key."""


@dataclass
class WeightsReport:
    """What comparing a checkpoint with a model found. ``ok`` when it loads strictly."""

    checkpoint: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    remapped: int = 0          # old-style, prefixed or MONAI keys renamed
    layouts: list[str] = field(default_factory=list)  # what was recognised and renamed
    dropped_head: list[str] = field(default_factory=list)
    matched: int = 0
    # two checkpoint keys that name one tensor (``x`` and ``module.x``): which one loads
    # would depend on their order in the file
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)
    # tensors whose values would not survive the copy: complex (the imaginary part),
    # booleans or integers where the model holds floating point (and the reverse)
    lossy: list[tuple[str, str, str]] = field(default_factory=list)
    # tensors changed to fit, each opted into (``adapt``): key, what was done
    adapted: list[tuple[str, str]] = field(default_factory=list)
    # what an adaptation not asked for would do about a mismatch: key -> message tail
    hints: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.ambiguous
                    or self.lossy)

    def problems(self) -> list[Problem]:
        out = [Problem(f"expected {_shape(e)}, found {_shape(f)}{self.hints.get(k, '')}",
                       self.checkpoint, 0, 0, spec_terms(k)) for k, e, f in self.mismatched]
        out += [Problem("missing from the checkpoint", self.checkpoint, 0, 0, spec_terms(k))
                for k in self.missing]
        out += [Problem(f"in the checkpoint but not in the spec (key {k})", self.checkpoint,
                        0, 0, spec_terms(k)) for k in self.unexpected]
        out += [Problem(f"ambiguous: the checkpoint holds it {len(keys)} times (keys "
                        f"{', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}); keep one",
                        self.checkpoint, 0, 0, spec_terms(k)) for k, keys in self.ambiguous]
        out += [Problem(f"found {found} values where the model holds {want}: loading would "
                        f"{_loss(found)}", self.checkpoint, 0, 0, spec_terms(k))
                for k, want, found in self.lossy]
        return out

    def summary(self) -> str:
        parts = [f"{self.matched} tensors match"]
        if self.remapped:
            parts.append(f"{self.remapped} keys remapped"
                         + (f" ({', '.join(self.layouts)})" if self.layouts else ""))
        if self.dropped_head:
            parts.append(f"classifier not loaded ({len(self.dropped_head)} tensors, drop_head)")
        if self.adapted:
            parts.append(f"{len(self.adapted)} adapted ("
                         + "; ".join(f"{spec_terms(k)}: {how}" for k, how in self.adapted[:2])
                         + ("; ..." if len(self.adapted) > 2 else "") + ")")
        for label, items in (("mismatched", self.mismatched), ("missing", self.missing),
                             ("unexpected", self.unexpected), ("ambiguous", self.ambiguous),
                             ("lossy", self.lossy)):
            if items:
                parts.append(f"{len(items)} {label}")
        return ", ".join(parts)


def _loss(found: str) -> str:
    if found.startswith("complex"):
        return "drop their imaginary part"
    return "change them (a cast between number kinds)"


def _kind(t: torch.Tensor) -> str:
    if t.is_complex():
        return "complex"
    if t.is_floating_point():
        return "float"
    return "bool" if t.dtype == torch.bool else "int"


def _shape(s: tuple) -> str:
    return "x".join(map(str, s)) if s else "scalar"


def spec_terms(key: str) -> str:
    """``features.denseblock3.denselayer7.conv2.weight`` -> ``block 3, layer 7, conv2``."""
    name = key[:-len(".weight")] if key.endswith(".weight") else key
    m = re.match(r"features\.denseblock(\d+)\.denselayer(\d+)\.(.+)$", name)
    if m:
        return f"block {m[1]}, layer {m[2]}, {m[3]}"
    m = re.match(r"features\.transition(\d+)\.(.+)$", name)
    if m:
        return f"transition {m[1]}, {m[2]}"
    m = re.match(r"features\.(conv[012]|norm[012]|pool0)(.*)$", name)
    if m:
        return f"stem, {m[1]}{m[2]}"
    if name.startswith("features.norm5"):
        return "final " + name[len("features."):]
    return name


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped; WeightsError if it is not one."""
    file = os.fspath(path)
    if not os.path.isfile(file):
        raise WeightsError(Problem("no such checkpoint file", file))
    check_declared_size(file)
    try:
        if file.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj: Any = load_file(file)
        else:
            obj = torch.load(file, map_location="cpu", weights_only=True)
    except ImportError:
        raise WeightsError(Problem("reading .safetensors needs the safetensors package",
                                   file)) from None
    except Exception as e:  # unpickling refused, truncated zip, not a torch file ...
        if "weights_only" in str(e) or "Unpickl" in type(e).__name__:
            why = ("not a tensors-only checkpoint: it is not a torch file, or it holds "
                   "Python objects that archspec will not unpickle")
        else:
            why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise WeightsError(Problem(f"cannot read checkpoint: {why}", file)) from None
    for wrapper in _WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsError(Problem("not a state_dict: expected a mapping of names to tensors",
                                   file))
    return obj


def check_declared_size(file: str) -> None:
    """Refuse, before reading, a torch zip checkpoint whose entries declare more bytes
    than this machine has free (a small file whose compressed entries expand to
    gigabytes: a decompression bomb), or entries that expand more than any tensor data
    does."""
    import zipfile

    from .resources import HEADROOM, available_bytes

    try:
        # (is_zipfile itself raises on some damaged end records: found by the fuzzer)
        if not zipfile.is_zipfile(file):
            return  # the legacy format, safetensors: their readers check sizes themselves
        with zipfile.ZipFile(file) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(Problem(f"cannot read checkpoint: {e}", file)) from None
    declared = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    free = available_bytes("cpu")
    if free is not None and declared > HEADROOM * free:
        raise WeightsError(Problem(
            f"cannot read checkpoint: its entries declare {declared:,} bytes, more than "
            f"the {free:,} bytes of memory free here", file))
    if declared > 100 * max(packed, 1) + 2**20:
        raise WeightsError(Problem(
            f"cannot read checkpoint: {packed:,} bytes expand to {declared:,} (a "
            "decompression bomb? torch writes tensors uncompressed)", file))


def normalise_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Strip ``module.`` prefixes, rename old torchvision keys and MONAI's layout; returns
    (dict, renamed)."""
    out, renamed, _, _ = _normalise(state)
    return out, renamed


def _normalise(state: Mapping[str, torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], int, dict[str, list[str]], list[str]]:
    """normalise_keys, the keys that two or more checkpoint keys became, and the layouts
    recognised (in the order first seen)."""
    out, renamed, sources, layouts = {}, 0, {}, {}
    for key, value in state.items():
        start = 0
        while key.startswith("module.", start):  # offsets: linear in the key's length
            start += len("module.")
        if start:
            layouts["DataParallel's module. prefix"] = None
        new = key[start:]
        m = _OLD_KEY.match(new)
        if m:
            new = m[1] + m[2]
            layouts["torchvision before 0.3"] = None
        m = _MONAI_LAYER.match(new)
        if m:
            new = f"{m[1]}.{m[2]}"
            layouts["MONAI"] = None
        elif new.startswith(_MONAI_HEAD):
            new = _HEAD_PREFIX + new[len(_MONAI_HEAD):]
            layouts["MONAI"] = None
        elif new.startswith(_MONAI_HEAD_ACT):
            new = _HEAD_ACT + new[len(_MONAI_HEAD_ACT):]
            layouts["MONAI"] = None
        renamed += new != key
        out[new] = value
        sources.setdefault(new, []).append(key)
    return out, renamed, {k: v for k, v in sources.items() if len(v) > 1}, list(layouts)


#: The key layouts ``in_layout`` writes. torchvision's and timm's DenseNets use
#: archspec's own keys (2D only); MONAI's nests each dense layer's modules in ``layers``
#: and calls the classifier ``class_layers.out`` (any number of dimensions).
LAYOUTS = ("archspec", "torchvision", "timm", "monai")


def in_layout(state: Mapping[str, torch.Tensor], layout: str, *, dims: int = 2
              ) -> dict[str, torch.Tensor]:
    """An archspec model's state_dict renamed so that ``layout``'s own model loads it
    with ``strict=True``: ``monai.networks.nets.DenseNet`` (``"monai"``), torchvision's or
    timm's DenseNet (``"torchvision"``, ``"timm"``: the keys are already theirs; they are
    2D networks, so ``dims`` must be 2). ValueError for another layout or a 1D/3D net in
    a 2D-only layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout in ("torchvision", "timm") and dims != 2:
        raise ValueError(f"{layout}'s DenseNet is 2D; this net is {dims}D: write it in "
                         "the monai or archspec layout")
    if layout != "monai":
        learned = [k for k in state if _LEARNED_ACTIVATION.search(k)]
        if layout != "archspec" and learned:
            raise ValueError(f"{layout}'s DenseNet has no learned activation, and this net "
                             f"has {len(learned)} (PReLU slopes such as {learned[0]!r}): "
                             "write it in the monai or archspec layout")
        return dict(state)
    out = {}
    for key, value in state.items():
        m = re.match(r"^(.*denselayer\d+)\.(.+)$", key)
        if m:
            key = f"{m[1]}.layers.{m[2]}"
        elif key.startswith(_HEAD_PREFIX):
            key = _MONAI_HEAD + key[len(_HEAD_PREFIX):]
        elif key.startswith(_HEAD_ACT):
            key = _MONAI_HEAD_ACT + key[len(_HEAD_ACT):]
        out[key] = value
    return out


#: What ``adapt=`` may do to a checkpoint's tensors so that they fit, each opted into:
#: ``inflate``: a 2D checkpoint into a 1D or 3D network, every convolution kernel given
#: the network's dimensions (inflate_kernel); ``input_channels``: the first convolution
#: made to take the spec's input channels (adapt_input_channels).
ADAPTATIONS = ("inflate", "input_channels")


def inflate_kernel(weight: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A convolution kernel of another number of spatial dimensions, by I3D's rule
    (Carreira and Zisserman, 2017): a new leading axis of extent k repeats the kernel k
    times, divided by k, so the inflated conv on an input constant along that axis gives
    the 2D conv's output (away from the borders); an axis removed (a 2D kernel into a 1D
    net) is summed over, so the 1D conv on a signal gives the 2D conv's output on the
    image that repeats the signal along the removed axis. ``shape`` is the target's."""
    out, dims = weight, len(shape) - 2
    while out.dim() - 2 > dims:  # remove the last spatial axis (width): sum over it
        out = out.sum(dim=-1)
    while out.dim() - 2 < dims:  # add a leading spatial axis (depth): repeat / extent
        k = shape[2 + (dims - (out.dim() - 2)) - 1]
        out = out.unsqueeze(2).repeat_interleave(k, dim=2) / k
    return out


def adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """The first convolution's kernel for ``channels`` inputs, by timm's
    ``adapt_input_conv`` rule: one channel takes the sum of the RGB kernels (a gray image
    gives the colour net's response to that gray); more channels repeat the kernels
    cyclically and scale by in/channels, so the expected response keeps its size."""
    have = weight.shape[1]
    if channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeat = -(-channels // have)
    reps = [1, repeat] + [1] * (weight.dim() - 2)
    return weight.repeat(*reps)[:, :channels] * (have / channels)


def _adapt(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
           adapt: tuple[str, ...], report: WeightsReport,
           first: str = "features.conv0.weight") -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with the opted-into adaptations applied where the shapes
    call for them; each change is listed in ``report.adapted``."""
    out = dict(state)
    for key, found in state.items():
        want = expected.get(key)
        if want is None or tuple(found.shape) == tuple(want.shape) or found.dim() < 3 \
                or not found.is_floating_point():
            continue
        value, how = found, []
        if "inflate" in adapt and value.dim() != want.dim():
            value = inflate_kernel(value, tuple(want.shape))
            how.append(f"{_shape(tuple(found.shape))} inflated to "
                       f"{_shape(tuple(value.shape))} (I3D)")
        if "input_channels" in adapt and key == first \
                and value.shape[1] != want.shape[1] and value.shape[0] == want.shape[0]:
            before = value.shape[1]
            value = adapt_input_channels(value, want.shape[1])
            how.append(f"input channels {before} -> {want.shape[1]} (timm's "
                       "adapt_input_conv)")
        if how and tuple(value.shape) == tuple(want.shape):
            out[key] = value.to(found.dtype)
            report.adapted.append((key, "; ".join(how)))
    return out


def _head_and_first_conv(model: nn.Module) -> tuple[str, str]:
    """The classifier's key prefix and the first conv's weight key of a built model, as
    its pretrained_cfg names them (timm's keys): a DenseNet's ``classifier.`` and
    ``features.conv0.weight``, a VoVNet's ``head.fc.`` and ``stem.0.conv.weight``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return (cfg.get("classifier", "classifier") + ".",
            cfg.get("first_conv", "features.conv0") + ".weight")


def _hint(found: tuple, want: tuple, key: str, adapt: tuple[str, ...],
          first: str = "features.conv0.weight") -> str:
    """What ``adapt`` would do about a mismatch it could fix, for the message."""
    said = []
    if len(found) >= 3 and len(found) != len(want) and "inflate" not in adapt:
        said.append(f"a {len(found) - 2}D kernel in a {len(want) - 2}D net: "
                    "adapt=('inflate',) (--adapt inflate) inflates it (I3D's rule)")
    if key == first and len(found) >= 3 and found[0] == want[0] \
            and found[1] != want[1] and "input_channels" not in adapt:
        said.append(f"{found[1]} input channels for the spec's {want[1]}: "
                    "adapt=('input_channels',) (--adapt input_channels) adapts them")
    return "".join(f"; {s}" for s in said)


def compare(model: nn.Module, state: dict[str, torch.Tensor], checkpoint: str = "<weights>",
            *, drop_head: bool = False, adapt: tuple[str, ...] | list[str] = ()
            ) -> tuple[WeightsReport, dict[str, torch.Tensor]]:
    """Compare a checkpoint's tensors with ``model``'s; returns the report and the
    normalised state to load (without the classifier when ``drop_head``; with the
    ``adapt`` changes, ADAPTATIONS, made where a shape asks for them)."""
    unknown = [a for a in adapt if a not in ADAPTATIONS]
    if unknown:
        raise ValueError(f"unknown adaptation {unknown[0]!r}: choose from "
                         + ", ".join(ADAPTATIONS))
    state, renamed, ambiguous, layouts = _normalise(state)
    plan = getattr(model, "plan", None)
    if getattr(plan, "family", None) == "hardnet" and any(k.startswith("base.") for k in state):
        from .weights_hardnet import REFERENCE, from_reference

        state, more = from_reference(state, plan)
        renamed += more
        layouts.append(REFERENCE)
    expected = model.state_dict()
    head, first = _head_and_first_conv(model)
    report = WeightsReport(checkpoint, remapped=renamed, ambiguous=sorted(ambiguous.items()),
                           layouts=layouts)
    if adapt:
        state = _adapt(state, expected, tuple(adapt), report, first)
    report.hints = {k: _hint(tuple(v.shape), tuple(expected[k].shape), k, tuple(adapt),
                             first)
                    for k, v in state.items()
                    if k in expected and tuple(v.shape) != tuple(expected[k].shape)}
    if drop_head:
        report.dropped_head = [k for k in state if k.startswith(head)]
        state = {k: v for k, v in state.items() if not k.startswith(head)}
        expected = {k: v for k, v in expected.items() if not k.startswith(head)}
    for key, want in expected.items():
        if key not in state:
            if not key.endswith(_OPTIONAL_SUFFIX):
                report.missing.append(key)
        elif tuple(state[key].shape) != tuple(want.shape):
            report.mismatched.append((key, tuple(want.shape), tuple(state[key].shape)))
        elif _kind(state[key]) != _kind(want):
            report.lossy.append((key, str(want.dtype).removeprefix("torch."),
                                 str(state[key].dtype).removeprefix("torch.")))
        else:
            report.matched += 1
    report.unexpected = [k for k in state if k not in expected]
    return report, state


def load_weights(model: nn.Module, weights: str | os.PathLike | Mapping[str, torch.Tensor],
                 *, drop_head: bool = False, adapt: tuple[str, ...] | list[str] = ()
                 ) -> WeightsReport:
    """Load a checkpoint file, or a state_dict already in memory, into ``model`` strictly
    (but for the head with ``drop_head``; with ``adapt``'s changes, ADAPTATIONS, where
    the shapes call for them); WeightsError listing every problem in the spec's terms if
    it does not fit."""
    if isinstance(weights, Mapping):
        for wrapper in _WRAPPERS:  # {"state_dict": ...} as a checkpoint file may hold it
            if isinstance(weights.get(wrapper), Mapping):
                weights = weights[wrapper]
                break
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                   for k, v in weights.items()):
            raise WeightsError(Problem("not a state_dict: expected a mapping of names to "
                                       "tensors", "<state_dict>"))
        state, where = dict(weights), "<state_dict>"
    else:
        state, where = read_state_dict(weights), os.fspath(weights)
    report, state = compare(model, state, where, drop_head=drop_head, adapt=adapt)
    if not report.ok:
        raise WeightsError(report.problems())
    model.load_state_dict(state, strict=not drop_head)
    return report
