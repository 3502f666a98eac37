"""The pydantic models: the one source of truth for what a DenseNet spec may say.

Defaults, ranges, enums, the JSON Schema for editors and the field reference in docs/ all
come from here. Counts are strict integers (``growth_rate: true`` or ``2.0`` is refused,
not read as 1 or 2) and unknown keys are refused. Rules that need arithmetic across
fields (depth -> layers per block, transition widths, spatial sizes, ``expect``) live in
the planner, which reports them with the location of the responsible key.

Upper bounds are generous for any real network and exist so that a typo such as an extra
zero is caught at once instead of allocating terabytes.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar, Literal, Optional, TypeVar, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, WithJsonSchema,
                      field_validator, model_serializer, model_validator)

__all__ = ["StemType", "NormType", "Activation", "ActivationSpec", "ACTIVATION_ARGUMENTS",
           "InputSpec", "StemSpec", "NormSpec",
           "AntiAliasSpec", "ExpectSpec", "DenseNetSpec", "json_schema",
           "Attention", "OsaStageSpec", "VoVNetSpec", "Downsample", "HarDBlockSpec",
           "HarDNetSpec", "PeleeNetSpec", "FAMILIES", "Spec",
           "AXES", "PerBlock", "MAX_LAYERS_PER_BLOCK", "MAX_BLOCKS", "NAME_PATTERN",
           "NAME_CHARS", "NAME_RULE", "MAX_NAME_LENGTH"]

# A name is printed on terminals, stored in checkpoints and used in file names: letters,
# digits and ._+-=,[] (what an override-derived name such as densenet121+growth_rate=48
# or densenet121+block_config[3]=24 needs), starting with a letter, digit or underscore.
NAME_CHARS = r"A-Za-z0-9_.+=,\[\]-"      # a regex character class's body
NAME_PATTERN = rf"^[A-Za-z0-9_][{NAME_CHARS}]*$"
NAME_RULE = "letters, digits and ._+-=,[] only and starts with a letter, digit or underscore"
MAX_NAME_LENGTH = 200

MAX_LAYERS_PER_BLOCK = 10_000
MAX_BLOCKS = 16
_MAX_WIDTH = 1 << 16
_MAX_SIZE = 1 << 16


_PER_BLOCK = Field(min_length=1, max_length=MAX_BLOCKS)
_T = TypeVar("_T")
#: One value for every block, or a list with one per block (or per transition).
PerBlock = Union[_T, Annotated[list[_T], _PER_BLOCK]]
_Growth = Annotated[int, Field(ge=1, le=_MAX_WIDTH)]
_BnSize = Annotated[int, Field(ge=1, le=256)]
_Theta = Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)]
_Drop = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]


class _Model(BaseModel):
    # strict: YAML already yields typed values, so any coercion would hide a mistake.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True,
                              use_enum_values=False, validate_default=False)


class StemType(str, Enum):
    """How the network turns the input image into the first block's feature maps."""

    cifar = "cifar"
    """One 3x3 convolution, stride 1, nothing after it (paper, CIFAR/SVHN nets)."""
    imagenet = "imagenet"
    """7x7 convolution stride 2, BN, ReLU, 3x3 max pool stride 2 pad 1 (paper, ImageNet)."""
    deep = "deep"
    """timm's 'deep': three 3x3 convs (the first stride 2) of widths k, k, 2k, each with BN
    and ReLU, then the 3x3/2 max pool."""
    deep_tiered = "deep_tiered"
    """timm's 'deep_tiered': as deep, widths 3*(k//4), 6*(k//4), 2k."""


class NormType(str, Enum):
    """The normalisation in every norm slot (norm0..2, each layer's norm1/norm2, norm5)."""

    batch = "batch"
    group = "group"
    instance = "instance"
    layer = "layer"


class Activation(str, Enum):
    """The nonlinearity after every normalisation (and before the classifier's pool)."""

    relu = "relu"
    silu = "silu"
    gelu = "gelu"
    leaky_relu = "leaky_relu"
    elu = "elu"
    mish = "mish"
    prelu = "prelu"
    relu6 = "relu6"
    """min(max(x, 0), 6): HarDNet's (and MobileNetV2's)."""


# Which arguments each activation takes, named as torch.nn's modules name them.
ACTIVATION_ARGUMENTS = {Activation.leaky_relu: ("negative_slope",), Activation.elu: ("alpha",),
                        Activation.prelu: ("init",)}


#: Names of the spatial axes for 1, 2 and 3 dimensions, as the messages print them.
AXES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


class InputSpec(_Model):
    """The input tensor of one sample: channels x length (1D), x height x width (2D) or x
    depth x height x width (3D).

    2D inputs are written ``height`` and ``width`` (or ``size: [H, W]``, read as the
    same); 1D and 3D inputs are written ``size: [L]`` or ``size: [D, H, W]``. The number
    of entries is the number of spatial dimensions of the whole network: Conv1d/2d/3d,
    and the matching norms and pools. A 2D spec's canonical form has ``height`` and
    ``width`` and no ``size`` (as before ``size`` existed, so its hash is unchanged); a 1D
    or 3D spec's has ``size`` only.
    """

    channels: int = Field(3, ge=1, le=4096, description="Input channels (3 for RGB).")
    height: int = Field(224, ge=1, le=_MAX_SIZE, description="Input height in pixels (2D).")
    width: int = Field(224, ge=1, le=_MAX_SIZE, description="Input width in pixels (2D).")
    size: Optional[Annotated[list[Annotated[int, Field(ge=1, le=_MAX_SIZE)]],
                             Field(min_length=1, max_length=3)]] = Field(
        None, description="The spatial size as a list: [L] (1D signals), [H, W] (the same "
                          "as height and width) or [D, H, W] (volumes). Instead of "
                          "height/width.")

    @model_validator(mode="before")
    @classmethod
    def _two_dimensional_size(cls, data):
        # size: [H, W] is the 2D spelling height/width in other words: one canonical form.
        if isinstance(data, dict) and "size" in data:
            if "height" in data or "width" in data:
                raise ValueError("give either size or height/width, not both")
            size = data["size"]
            if (isinstance(size, list) and len(size) == 2
                    and all(type(v) is int for v in size)):
                data = {k: v for k, v in data.items() if k != "size"}
                data["height"], data["width"] = size
        return data

    @model_serializer(mode="wrap")
    def _one_spelling(self, handler):
        out = handler(self)
        if self.size is None:
            out.pop("size", None)
        else:
            out.pop("height", None)
            out.pop("width", None)
        return out

    @property
    def spatial(self) -> tuple[int, ...]:
        """The spatial size: (L,), (H, W) or (D, H, W)."""
        return tuple(self.size) if self.size is not None else (self.height, self.width)

    @property
    def dims(self) -> int:
        """Spatial dimensions: 1, 2 or 3."""
        return len(self.spatial)

    def axis_key(self, axis: int) -> tuple:
        """The key path (under ``input``) that states spatial axis ``axis``."""
        if self.size is None:
            return ("height",) if axis == 0 else ("width",)
        return ("size", axis)


class StemSpec(_Model):
    """The first convolution(s) before the first dense block."""

    type: StemType = Field(StemType.imagenet, strict=False,
                           description="`imagenet` (7x7/2 conv, BN, ReLU, 3x3/2 max pool), "
                                       "`cifar` (one 3x3/1 conv), or timm's `deep` / "
                                       "`deep_tiered` (three 3x3 convs, then the max pool).")
    channels: Optional[int] = Field(
        None, ge=1, le=_MAX_WIDTH,
        description="Output channels of the stem. Default (as in the paper): 2k when the "
                    "net has bottlenecks or compression (DenseNet-B/C/BC), 16 otherwise; "
                    "2k for the deep stems (timm). k is the first block's growth rate.")
    widths: Optional[Annotated[list[Annotated[int, Field(ge=1, le=_MAX_WIDTH)]],
                               Field(min_length=2, max_length=2)]] = Field(
        None, description="Deep stems only: the widths of the first two 3x3 convs. Default: "
                          "k, k (`deep`) or 3*(k//4), 6*(k//4) (`deep_tiered`).")


class NormSpec(_Model):
    """Normalisation layers: batch norm (the paper's), group, instance or layer norm, with
    the arguments torch.nn's modules take (``eps``, ``momentum``, ``affine``)."""

    type: NormType = Field(NormType.batch, strict=False,
                           description="`batch` (BatchNorm1d/2d/3d, the paper's), `group` "
                                       "(GroupNorm; every normalised width must be divisible "
                                       "by `groups`), `instance` (InstanceNorm1d/2d/3d: each "
                                       "sample and channel over its positions, no running "
                                       "statistics) or `layer` (GroupNorm with one group: "
                                       "each sample over all its channels and positions).")
    groups: int = Field(32, ge=1, le=_MAX_WIDTH,
                        description="Number of groups for group norm (ignored by the others).")
    eps: Optional[float] = Field(
        None, gt=0.0, le=1.0, allow_inf_nan=False,
        description="Added to the variance for numerical stability. Default: torch's, 1e-5.")
    momentum: Optional[float] = Field(
        None, ge=0.0, le=1.0, allow_inf_nan=False,
        description="Batch norm only: the running statistics' update rate. Default: "
                    "torch's, 0.1.")
    affine: Optional[bool] = Field(
        None, description="Learned per-channel scale and shift (2 parameters a channel). "
                          "Default: true, but false for instance norm (torch's and MONAI's "
                          "default).")

    @field_validator("momentum")
    @classmethod
    def _momentum_is_batch_norms(cls, v, info):
        if v is not None and info.data.get("type") not in (None, NormType.batch):
            raise ValueError("momentum is batch norm's (the others keep no running "
                             "statistics); remove it")
        return v

    @model_serializer(mode="wrap")
    def _unset_arguments_unsaid(self, handler):
        # A spec that does not give eps, momentum or affine reads, dumps and hashes as it
        # did before these arguments existed.
        out = handler(self)
        for key in ("eps", "momentum", "affine"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    @property
    def is_affine(self) -> bool:
        """Whether the norm layers have a learned scale and shift."""
        return self.affine if self.affine is not None else self.type != NormType.instance


class ActivationSpec(_Model):
    """An activation and its arguments. Written as its name alone (``relu``) or, with
    arguments, as a mapping (``{type: leaky_relu, negative_slope: 0.1}``)."""

    type: Activation = Field(strict=False, description="The activation's name.")
    negative_slope: Optional[float] = Field(
        None, ge=0.0, le=1000.0, allow_inf_nan=False,
        description="leaky_relu only: the slope for negative inputs. Default: torch's, 0.01.")
    alpha: Optional[float] = Field(
        None, gt=0.0, le=1000.0, allow_inf_nan=False,
        description="elu only: the value it tends to for very negative inputs. Default: "
                    "torch's, 1.0.")
    init: Optional[float] = Field(
        None, ge=-1000.0, le=1000.0, allow_inf_nan=False,
        description="prelu only: the learned negative slope's initial value. Default: "
                    "torch's, 0.25.")

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data):
        if isinstance(data, str):
            return {"type": data}
        if not isinstance(data, dict):
            raise ValueError("expected an activation's name (" + ", ".join(
                a.value for a in Activation) + ") or a mapping such as {type: leaky_relu, "
                "negative_slope: 0.1}")
        return data

    @field_validator("negative_slope", "alpha", "init")
    @classmethod
    def _argument_of_its_activation(cls, v, info):
        kind = info.data.get("type")
        if v is not None and kind is not None and \
                info.field_name not in ACTIVATION_ARGUMENTS.get(kind, ()):
            takes = ACTIVATION_ARGUMENTS.get(kind)
            raise ValueError(f"{kind.value} takes " + (
                f"{', '.join(takes)}, not {info.field_name}" if takes
                else f"no arguments; {info.field_name} is "
                     + next(k.value for k, a in ACTIVATION_ARGUMENTS.items()
                            if info.field_name in a) + "'s"))
        return v

    @model_serializer(mode="wrap")
    def _name_when_plain(self, handler):
        out = {k: v for k, v in handler(self).items() if v is not None}
        return out["type"] if len(out) == 1 else out

    @property
    def value(self) -> str:
        """The activation's name (as Activation.value)."""
        return self.type.value

    @property
    def argument(self) -> float:
        """Its one argument, torch's default where the spec gives none (0.0 for the
        activations without one): what the model's functional forms take."""
        if self.type == Activation.leaky_relu:
            return 0.01 if self.negative_slope is None else self.negative_slope
        if self.type == Activation.elu:
            return 1.0 if self.alpha is None else self.alpha
        if self.type == Activation.prelu:
            return 0.25 if self.init is None else self.init
        return 0.0

    @property
    def params(self) -> int:
        """Learned parameters of one use of the activation: PReLU's one slope (torch's
        and MONAI's default, num_parameters=1), none for the others."""
        return 1 if self.type == Activation.prelu else 0


class AntiAliasSpec(_Model):
    """Blur pooling (Zhang, "Making Convolutional Networks Shift-Invariant Again", 2019),
    as timm applies it to DenseNet."""

    stem: bool = Field(False, description="The stem pool becomes a 3x3/1 max pool followed "
                                          "by a stride-2 blur (needs a pooling stem).")
    transitions: bool = Field(False, description="Each transition's 2x2 average pool "
                                                 "becomes a stride-2 blur.")
    filter_size: int = Field(3, ge=2, le=7, description="Binomial blur filter size.")


class ExpectSpec(_Model):
    """Numbers the spec's author believes; validation fails if the plan disagrees."""

    params: Optional[int] = Field(None, ge=0, description="Exact trainable parameter count.")
    out_channels: Optional[int] = Field(
        None, ge=1, description="Channels entering the classifier (after the last block).")


# The JSON Schema editors see: a name, or a mapping with the name and its arguments.
_ACTIVATION_NAMES = {"type": "string", "enum": [a.value for a in Activation]}
_ACTIVATION_JSON_SCHEMA = {"anyOf": [_ACTIVATION_NAMES, {
    "type": "object", "additionalProperties": False, "required": ["type"],
    "properties": {
        "type": _ACTIVATION_NAMES,
        "negative_slope": {"type": "number", "minimum": 0, "maximum": 1000,
                           "description": "leaky_relu only (default 0.01)"},
        "alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000,
                  "description": "elu only (default 1.0)"},
        "init": {"type": "number", "minimum": -1000, "maximum": 1000,
                 "description": "prelu only: the learned slope's initial value (default "
                                "0.25)"}}}]}


class _SpecModel(_Model):
    """What every family member's spec has: its name, prose and input (the first fields
    of each, in this order), where it was read from, and equality by value."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN,
                      description=f"Short identifier: {NAME_RULE}.")
    description: str = Field("", max_length=10_000, description="One line for people.")
    source: str = Field("", max_length=10_000,
                        description="Where the variant comes from: paper table and column, "
                                    "or a library.")
    input: InputSpec = Field(default_factory=InputSpec,
                             description="The input: channels, and height/width (2D) or "
                                         "size [L] (1D) or [D, H, W] (3D).")

    # Where each key was written (archspec.yamlio.SourceMap); not part of the spec's value.
    _source: object = PrivateAttr(default=None)
    _files: tuple = PrivateAttr(default=())

    def __eq__(self, other: object) -> bool:
        # Two specs are equal when they say the same thing, wherever they were written.
        if not isinstance(other, _SpecModel):
            return NotImplemented
        return type(self) is type(other) and self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(repr(self.model_dump()))

    @property
    def source_files(self) -> tuple[str, ...]:
        """The files this spec was read from: its own, then every file it ``extends``
        (empty for a spec made in code). No command writes over any of them."""
        return self._files

    @property
    def source_map(self):
        """The SourceMap the spec was loaded with (a synthetic one for specs made in code)."""
        from .yamlio import SourceMap

        return self._source if self._source is not None else SourceMap(f"<spec {self.name}>")


class DenseNetSpec(_SpecModel):
    """A DenseNet (Huang et al., CVPR 2017): dense blocks joined by transition layers."""

    #: The family member (not a field: a spec without ``family`` is a DenseNet, and its
    #: canonical form and hash stay what they were before the family grew).
    family: ClassVar[str] = "densenet"

    stem: StemSpec = Field(default_factory=StemSpec, description="The stem.")
    growth_rate: PerBlock[_Growth] = Field(
        description="k: channels each dense layer adds. One number, or one per block.")
    bn_size: PerBlock[Optional[_BnSize]] = Field(
        None,
        description="Bottleneck width multiplier (DenseNet-B): each layer is "
                    "BN-ReLU-Conv1x1(bn_size*k)-BN-ReLU-Conv3x3(k). null or absent: no "
                    "bottleneck, each layer is BN-ReLU-Conv3x3(k). The paper uses 4. One "
                    "value, or one per block (null for a block without bottlenecks).")
    compression: PerBlock[_Theta] = Field(
        1.0,
        description="theta (DenseNet-C): a transition outputs floor(theta*m) of its m input "
                    "channels. 1 means no compression; the paper uses 0.5. One value, or one "
                    "per transition (blocks - 1).")
    block_config: Optional[Annotated[
        list[Annotated[int, Field(ge=1, le=MAX_LAYERS_PER_BLOCK)]],
        Field(min_length=1, max_length=MAX_BLOCKS)]] = Field(
        None, description="Layers per dense block. Give this or `depth`.")
    depth: Optional[int] = Field(
        None, ge=1, le=3 * 6 * MAX_LAYERS_PER_BLOCK + 4,
        description="L, the paper's depth for three-block (CIFAR-style) nets: each block "
                    "gets (L-4)/3 layers, or (L-4)/6 with bottlenecks. Give this or "
                    "`block_config`.")
    drop_rate: PerBlock[_Drop] = Field(
        0.0,
        description="Dropout after every convolution but the first (after the bottleneck "
                    "1x1, the 3x3 and each transition's 1x1, as the reference code places "
                    "it). The paper uses 0.2 without data augmentation. One value, or one "
                    "per block (a transition uses the rate of the block before it).")
    norm: NormSpec = Field(default_factory=NormSpec, description="Normalisation layers.")
    activation: Annotated[ActivationSpec, WithJsonSchema(_ACTIVATION_JSON_SCHEMA)] = Field(
        ActivationSpec(type=Activation.relu),
        description="`relu` (the paper's), `relu6`, `silu`, `gelu`, `mish`, `leaky_relu`, "
                    "`elu` or `prelu`; with arguments as a mapping: `{type: leaky_relu, "
                    "negative_slope: 0.1}` (torch's default slope 0.01), `{type: elu, "
                    "alpha: 0.5}` (default 1.0), `{type: prelu, init: 0.1}` (default "
                    "0.25). PReLU learns one slope in every place it is used (MONAI's "
                    "layout), the head's activation included.")
    anti_alias: AntiAliasSpec = Field(default_factory=AntiAliasSpec,
                                      description="Blur pooling in the stem and transitions.")
    num_classes: int = Field(1000, ge=0, le=1_000_000,
                             description="Classifier outputs. 0: no classifier (a headless "
                                         "model, as timm's num_classes=0): the model returns "
                                         "the pooled features.")
    memory_efficient: Union[bool, Literal["max"]] = Field(
        False, description="Store less for backward and recompute it, with the plain "
                           "model's gradients bit for bit. `true`: the efficient-DenseNet "
                           "trade (features in one shared buffer; concatenation, norms and "
                           "activations recomputed, convolution outputs kept): linear "
                           "memory for a little time. `max`: only each block's output is "
                           "kept and backward reruns the convolutions too: the least memory "
                           "for the most time.")
    expect: Optional[ExpectSpec] = Field(
        None, description="Figures the author believes (params, out_channels); checked "
                          "against the plan.")



class Attention(str, Enum):
    """Channel attention at the end of a VoVNet stage."""

    none = "none"
    ese = "ese"
    """Effective squeeze-excitation (CenterMask, 2020): the global mean of each channel,
    one 1x1 conv with bias, a hard-sigmoid gate on the block's output."""


class OsaStageSpec(_Model):
    """One VoVNet stage: ``blocks`` one-shot aggregation (OSA) blocks of the same widths."""

    conv_channels: int = Field(ge=1, le=_MAX_WIDTH,
                               description="Width of every 3x3 conv in the stage's OSA "
                                           "blocks (the paper's 'OSA module' conv width).")
    out_channels: int = Field(ge=1, le=_MAX_WIDTH,
                              description="Width of the 1x1 conv that aggregates the block's "
                                          "input and all its 3x3 outputs (the paper's "
                                          "'concat & 1x1').")
    blocks: int = Field(1, ge=1, le=MAX_LAYERS_PER_BLOCK,
                        description="OSA blocks in the stage.")


class VoVNetSpec(_SpecModel):
    """A VoVNet (Lee et al., 2019; VoVNetV2 in CenterMask, Lee and Park, CVPR 2020): a
    three-conv stem, then stages of one-shot aggregation (OSA) blocks. An OSA block runs
    ``layers_per_block`` 3x3 convs in a chain, each reading only the one before it, and
    concatenates the block's input with every conv's output once, into a 1x1 conv. Every
    stage but the first starts with a 3x3/2 max pool (ceil mode). Conv-norm-activation
    throughout (post-activation), named as timm's ``vovnet.py`` names its modules so that
    state_dicts interchange."""

    family: Literal["vovnet"] = Field(description="The family member: `vovnet`.")
    stem_widths: Annotated[list[Annotated[int, Field(ge=1, le=_MAX_WIDTH)]],
                           Field(min_length=3, max_length=3)] = Field(
        [64, 64, 128], description="Widths of the stem's three 3x3 convs (strides 2, 1, 2).")
    stages: Annotated[list[OsaStageSpec], Field(min_length=1, max_length=MAX_BLOCKS)] = Field(
        description="The OSA stages, in order.")
    layers_per_block: int = Field(ge=1, le=1024,
                                  description="3x3 convs in each OSA block (the paper's 5 for "
                                              "VoVNet-39/57, 3 for VoVNet-19).")
    residual: bool = Field(False, description="VoVNetV2's identity shortcut around every "
                                              "OSA block but the first of each stage.")
    depthwise: bool = Field(False, description="Depthwise-separable 3x3 convs (a depthwise "
                                               "3x3 then a pointwise 1x1), in the stem's "
                                               "last two convs and every OSA block, whose "
                                               "input is first reduced by a 1x1 conv to "
                                               "conv_channels.")
    attention: Attention = Field(Attention.none, strict=False,
                                 description="`ese` (VoVNetV2's effective squeeze-excitation "
                                             "on the last block of every stage) or `none`.")
    norm: NormSpec = Field(default_factory=NormSpec, description="Normalisation layers.")
    activation: Annotated[ActivationSpec, WithJsonSchema(_ACTIVATION_JSON_SCHEMA)] = Field(
        ActivationSpec(type=Activation.relu),
        description="The activation after every norm: as a DenseNet's (`relu`, the paper's).")
    drop_rate: _Drop = Field(0.0, description="Dropout before the classifier (timm's "
                                              "drop_rate).")
    num_classes: int = Field(1000, ge=0, le=1_000_000,
                             description="Classifier outputs. 0: no classifier (a headless "
                                         "model): the model returns the pooled features.")
    memory_efficient: Literal[False] = Field(
        False, description="Always false: the memory levels recompute DenseNet's "
                           "concatenations; an OSA block concatenates once, so it keeps no "
                           "more than a plain conv net.")
    expect: Optional[ExpectSpec] = Field(
        None, description="Figures the author believes (params, out_channels); checked "
                          "against the plan.")

    @field_validator("memory_efficient", mode="before")
    @classmethod
    def _no_memory_levels(cls, v):
        if v is not False:
            raise ValueError("the memory levels are DenseNet's: they recompute what a "
                             "dense block's repeated concatenations keep, and an OSA block "
                             "concatenates once; remove memory_efficient")
        return v


class Downsample(str, Enum):
    """How a HarDNet halves its feature maps (in the stem and after a block)."""

    maxpool = "maxpool"
    """A max pool: 3x3/2 (padding 1) in the stem, 2x2/2 after a block."""
    depthwise = "depthwise"
    """A 3x3/2 depthwise conv and a norm, no activation (the DS variants')."""


class HarDBlockSpec(_Model):
    """One harmonic dense block and the 1x1 conv after it (a row of the HarDNet paper's
    Table 1): ``layers`` layers, layer j reading the outputs j - 2^i for every 2^i that
    divides j (0 is the block's input), each ``growth_rate`` x grmul^(links - 1) wide,
    rounded to an even number."""

    growth_rate: int = Field(ge=1, le=_MAX_WIDTH,
                             description="k: the width of a layer with one link.")
    layers: int = Field(ge=1, le=1023,
                        description="n: layers in the block (at most 1023, where every "
                                    "power of two dividing a layer's index is at most 512, "
                                    "as the reference code looks).")
    out_channels: int = Field(ge=1, le=_MAX_WIDTH,
                              description="Width of the 1x1 conv-norm-act after the block "
                                          "(the block emits its odd layers and its last).")
    downsample: bool = Field(False, description="Halve the feature maps after the 1x1 conv.")


class HarDNetSpec(_SpecModel):
    """A HarDNet (Chao et al., ICCV 2019): a two-conv stem and a downsampling, then
    harmonic dense blocks, each followed by a 1x1 conv and, where asked, a downsampling.
    Layer j of a block reads the outputs j - 2^i for every 2^i dividing j, and the block
    emits its odd layers and its last (not its input). Conv-norm-activation throughout
    (post-activation, ReLU6), as the reference code (PingoLH/Pytorch-HarDNet,
    ``hardnet.py``) builds it."""

    family: Literal["hardnet"] = Field(description="The family member: `hardnet`.")
    stem_widths: Annotated[list[Annotated[int, Field(ge=1, le=_MAX_WIDTH)]],
                           Field(min_length=2, max_length=2)] = Field(
        [32, 64], description="Widths of the stem's two convs (the first has stride 2).")
    stem_kernels: Annotated[list[Annotated[int, Field(ge=1, le=15)]],
                            Field(min_length=2, max_length=2)] = Field(
        [3, 3], description="Kernel sizes of the stem's two convs (odd; the DS variants' "
                            "second is 1).")
    downsample: Downsample = Field(Downsample.maxpool, strict=False,
                                   description="`maxpool` or `depthwise` (the DS "
                                               "variants'): the stem's and the blocks'.")
    grmul: float = Field(ge=1.0, le=4.0, allow_inf_nan=False,
                         description="m: a layer with L links is growth_rate x m^(L-1) "
                                     "wide (1.7 for HarDNet-68/85, 1.6 for HarDNet-39).")
    blocks: Annotated[list[HarDBlockSpec], Field(min_length=1, max_length=MAX_BLOCKS)] = \
        Field(description="The harmonic dense blocks, in order.")
    depthwise: bool = Field(False, description="Every block layer a 1x1 conv-norm-act then a "
                                               "3x3 depthwise conv-norm (the DS variants).")
    block_dropout: _Drop = Field(0.0, description="Dropout after the last block, before its "
                                                  "1x1 conv (HarDNet-85's 0.1).")
    norm: NormSpec = Field(default_factory=NormSpec, description="Normalisation layers.")
    activation: Annotated[ActivationSpec, WithJsonSchema(_ACTIVATION_JSON_SCHEMA)] = Field(
        ActivationSpec(type=Activation.relu6),
        description="The activation after every norm but the depthwise convs': as a "
                    "DenseNet's (`relu6`, the paper's).")
    drop_rate: _Drop = Field(0.0, description="Dropout before the classifier.")
    num_classes: int = Field(1000, ge=0, le=1_000_000,
                             description="Classifier outputs. 0: no classifier (a headless "
                                         "model): the model returns the pooled features.")
    memory_efficient: Literal[False] = Field(
        False, description="Always false: the memory levels recompute DenseNet's "
                           "pre-activation layers; a HarDNet layer is post-activation and "
                           "reads only log2(j) earlier outputs.")
    expect: Optional[ExpectSpec] = Field(
        None, description="Figures the author believes (params, out_channels); checked "
                          "against the plan.")

    @field_validator("memory_efficient", mode="before")
    @classmethod
    def _no_memory_levels(cls, v):
        if v is not False:
            raise ValueError("the memory levels are DenseNet's: they recompute a dense "
                             "block's pre-activation norms and its concatenations; a "
                             "HarDNet layer is post-activation and reads a few earlier "
                             "outputs; remove memory_efficient")
        return v

    @field_validator("stem_kernels")
    @classmethod
    def _odd_kernels(cls, v):
        if any(k % 2 == 0 for k in v):
            raise ValueError(f"stem kernels must be odd (padding k//2 keeps the size): {v}")
        return v


class PeleeNetSpec(_SpecModel):
    """A PeleeNet (Wang et al., NeurIPS 2018): a stem block, then dense blocks whose
    layers have two branches of k/2 channels each (a 1x1 bottleneck then one 3x3, or then
    two stacked 3x3s, for two receptive fields), each block followed by a 1x1 transition
    conv that keeps every channel (no compression) and, but for the last, a 2x2 average
    pool. Conv-norm-activation throughout (post-activation), named as the reference code
    (Robert-JunWang/PeleeNet, ``peleenet.py``) names its modules, so state_dicts
    interchange with strict=True."""

    family: Literal["peleenet"] = Field(description="The family member: `peleenet`.")
    stem_channels: int = Field(32, ge=2, le=_MAX_WIDTH,
                               description="The stem block's width: a 3x3/2 conv to it, then "
                                           "a 2x2 max pool beside a 1x1 (half as wide) and a "
                                           "3x3/2, concatenated into a 1x1 conv to it (even).")
    growth_rate: PerBlock[_Growth] = Field(
        32, description="k: channels each dense layer adds, k/2 from each branch (even). One "
                        "number, or one per block.")
    bottleneck_width: PerBlock[_BnSize] = Field(
        [1, 2, 4, 4],
        description="A branch's 1x1 bottleneck is bottleneck_width x k/2 wide, rounded down "
                    "to a multiple of 4, and at most half the layer's input (else "
                    "floor(input/8) x 4), as the reference sizes it. One value, or one per "
                    "block.")
    block_config: Annotated[list[Annotated[int, Field(ge=1, le=MAX_LAYERS_PER_BLOCK)]],
                            Field(min_length=1, max_length=MAX_BLOCKS)] = Field(
        [3, 4, 8, 6], description="Layers per dense block.")
    drop_rate: _Drop = Field(0.0, description="Dropout before the classifier (the "
                                              "reference's 0.05).")
    norm: NormSpec = Field(default_factory=NormSpec, description="Normalisation layers.")
    activation: Annotated[ActivationSpec, WithJsonSchema(_ACTIVATION_JSON_SCHEMA)] = Field(
        ActivationSpec(type=Activation.relu),
        description="The activation after every norm: as a DenseNet's (`relu`, the paper's).")
    num_classes: int = Field(1000, ge=0, le=1_000_000,
                             description="Classifier outputs. 0: no classifier (a headless "
                                         "model): the model returns the pooled features.")
    memory_efficient: Literal[False] = Field(
        False, description="Always false: archspec's memory levels recompute DenseNet's "
                           "pre-activation layers (norm, activation, conv); a PeleeNet layer "
                           "is post-activation with two branches, which they do not "
                           "implement.")
    expect: Optional[ExpectSpec] = Field(
        None, description="Figures the author believes (params, out_channels); checked "
                          "against the plan.")

    @field_validator("memory_efficient", mode="before")
    @classmethod
    def _no_memory_levels(cls, v):
        if v is not False:
            raise ValueError("archspec's memory levels recompute DenseNet's pre-activation "
                             "layers; a PeleeNet layer is post-activation with two branches, "
                             "which they do not implement; remove memory_efficient")
        return v

    @field_validator("growth_rate")
    @classmethod
    def _even_growth(cls, v):
        odd = [k for k in (v if isinstance(v, list) else [v]) if k % 2]
        if odd:
            raise ValueError(f"must be even: each of a layer's two branches adds k/2 "
                             f"channels (found {odd[0]})")
        return v

    @field_validator("stem_channels")
    @classmethod
    def _even_stem(cls, v):
        if v % 2:
            raise ValueError(f"must be even: the stem block's 1x1 branch is half as wide "
                             f"(found {v})")
        return v


#: The family members a spec's ``family`` key names; a spec without one is a DenseNet.
FAMILIES = {"densenet": DenseNetSpec, "vovnet": VoVNetSpec, "hardnet": HarDNetSpec,
            "peleenet": PeleeNetSpec}
#: Any member's spec.
Spec = Union[DenseNetSpec, VoVNetSpec, HarDNetSpec, PeleeNetSpec]


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a spec file, for editors and docs: a VoVNet's
    (``$defs/VoVNetSpec``) when the file says ``family: vovnet``, a HarDNet's
    (``$defs/HarDNetSpec``) for ``family: hardnet``, a PeleeNet's for ``family:
    peleenet``, else a DenseNet's
    (``$defs/DenseNetSpec``).

    ``extends`` is added here: the loader resolves it before validation, so it is not a
    field of the model, but a spec file may say it; so is a DenseNet's optional
    ``family: densenet``, which the loader reads and drops.
    """
    extends = {
        "type": "string", "title": "Extends",
        "description": "A zoo name or a path (relative to this file) of a spec to start "
                       "from; this file's keys are merged over it."}
    defs: dict = {}
    members = {}
    for name, model in (("DenseNetSpec", DenseNetSpec), ("VoVNetSpec", VoVNetSpec),
                        ("HarDNetSpec", HarDNetSpec), ("PeleeNetSpec", PeleeNetSpec)):
        schema = model.model_json_schema()
        defs.update(schema.pop("$defs", {}))
        schema["properties"]["extends"] = extends
        members[name] = schema
    members["DenseNetSpec"]["properties"] = {
        "family": {"type": "string", "enum": ["densenet"], "default": "densenet",
                   "title": "Family",
                   "description": "The family member; a spec without it is a DenseNet. "
                                  "`vovnet`, `hardnet` and `peleenet` take their "
                                  "own keys instead."},
        **members["DenseNetSpec"]["properties"]}
    defs.update(members)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:archspec:schema:densenet", "title": "archspec spec",
            "description": "A network of the dense family: a DenseNet, or the member "
                           "`family` names.",
            "if": {"properties": {"family": {"const": "vovnet"}}, "required": ["family"]},
            "then": {"$ref": "#/$defs/VoVNetSpec"},
            "else": {
                "if": {"properties": {"family": {"const": "hardnet"}},
                       "required": ["family"]},
                "then": {"$ref": "#/$defs/HarDNetSpec"},
                "else": {
                    "if": {"properties": {"family": {"const": "peleenet"}},
                           "required": ["family"]},
                    "then": {"$ref": "#/$defs/PeleeNetSpec"},
                    "else": {"$ref": "#/$defs/DenseNetSpec"}}},
            "$defs": defs}
