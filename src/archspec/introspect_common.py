"""What reading a module into a spec needs for every family member: the norm and the
activation a spec can name (or a SpecError naming the module), the check that the spec
rebuilds the module's every parameter shape, and the zoo spec that builds the same
network. archspec.introspect (DenseNet) and archspec.introspect_vovnet use it."""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import SpecError
from .nn import BATCH_NORMS
from .plan import plan as make_plan
from .schema import Spec

__all__ = ["fail", "activation_of", "norm_of", "check_shapes", "zoo_twin", "finished_spec"]


def fail(message: str) -> SpecError:
    return SpecError.at(message, "<module>")


def zoo_twin(spec: Spec) -> str | None:
    """The name of the zoo spec that builds the same network, or None: equal plans (every
    stage's channels, sizes and parameters, with defaults such as the stem's width
    resolved) and equal options, whatever the name, prose, pins and memory mode."""
    from . import zoo
    from .canonical import canonical_dict
    from .loader import load
    from .report import plan_dict

    def key(s: Spec) -> tuple:
        options = canonical_dict(s)
        p = make_plan(s)
        resolved = plan_dict(p, layers=True)
        resolved.pop("name")
        if s.family == "vovnet":
            # residual acts on a stage's second block on: with none, both say one net
            if all(st.blocks == 1 for st in s.stages):
                resolved.pop("residual")
        if s.family != "densenet":
            return resolved, {k: options.get(k) for k in ("norm", "activation", "drop_rate",
                                                          "block_dropout")}
        # the plan resolves defaults (stem width, depth); the options it does not show
        return p.stem_widths, resolved, {k: options[k] for k in (
            "norm", "activation", "anti_alias", "drop_rate")}
    mine = key(spec)
    for name in zoo.names():
        other = load(name)
        if other.family == spec.family and key(other) == mine:
            return name
    return None


_ACTIVATIONS = ((nn.ReLU, "relu"), (nn.SiLU, "silu"), (nn.GELU, "gelu"), (nn.Mish, "mish"),
                (nn.LeakyReLU, "leaky_relu"), (nn.ELU, "elu"), (nn.PReLU, "prelu"),
                (nn.ReLU6, "relu6"))


def norm_of(model: nn.Module) -> dict[str, Any]:
    """The spec's norm: the first normalisation module decides, with the arguments that
    differ from torch's defaults; one archspec cannot express is a SpecError naming it."""
    for name, m in model.named_modules():
        if isinstance(m, BATCH_NORMS + (nn.SyncBatchNorm,)):
            if not m.track_running_stats or m.momentum is None:
                raise fail(f"{name} is {type(m).__name__} without running statistics "
                            "or with a cumulative average (momentum=None); archspec's "
                            "batch norm keeps an exponential one")
            return _norm_arguments({"type": "batch"}, m, momentum=m.momentum)
        if isinstance(m, nn.GroupNorm):
            return _norm_arguments({"type": "group", "groups": m.num_groups}, m)
        if isinstance(m, nn.modules.instancenorm._InstanceNorm):
            if m.track_running_stats:
                raise fail(f"{name} is {type(m).__name__} with running statistics; "
                            "archspec's instance norm keeps none (torch's default)")
            return _norm_arguments({"type": "instance"}, m)
        if isinstance(m, (nn.LayerNorm, nn.LocalResponseNorm)):
            raise fail(f"{name} is {type(m).__name__}; archspec's norms are batch, group, "
                        "instance and layer norm (GroupNorm with one group)")
    return {"type": "batch"}


def _norm_arguments(norm: dict[str, Any], m: nn.Module, momentum: float = 0.1
                    ) -> dict[str, Any]:
    """The spec's eps, momentum and affine where they differ from torch's defaults."""
    if m.eps != 1e-5:
        norm["eps"] = float(m.eps)
    if momentum != 0.1:
        norm["momentum"] = float(momentum)
    default_affine = norm["type"] != "instance"
    if bool(m.affine) != default_affine:
        norm["affine"] = bool(m.affine)
    return norm


def activation_of(act: nn.Module, where: str) -> Any:
    """The spec's activation for the module ``act`` (found at ``where``): one archspec
    names, with its arguments, or a SpecError naming it."""
    for cls, kind in _ACTIVATIONS:
        if type(act) is cls:
            if kind == "gelu" and act.approximate != "none":
                raise fail(f"{where} is GELU(approximate={act.approximate!r}); "
                            "archspec's gelu is the exact one")
            if kind == "leaky_relu" and act.negative_slope != 0.01:
                return {"type": kind, "negative_slope": float(act.negative_slope)}
            if kind == "elu" and act.alpha != 1.0:
                return {"type": kind, "alpha": float(act.alpha)}
            if kind == "prelu":
                if act.num_parameters != 1:
                    raise fail(f"{where} is PReLU(num_parameters="
                                f"{act.num_parameters}): archspec's prelu learns one slope "
                                "per place (num_parameters=1, MONAI's), not one per channel")
                if act.init != 0.25:
                    return {"type": kind, "init": float(act.init)}
            return kind
    # MONAI's own modules for the same functions: Mish and MemoryEfficientSwish call
    # F.mish and F.silu; Swish computes x * sigmoid(alpha * x), SiLU at alpha 1 (to
    # rounding).
    if type(act).__module__.startswith("monai."):
        monai_kind = {"Mish": "mish", "MemoryEfficientSwish": "silu"}.get(type(act).__name__)
        if type(act).__name__ == "Swish" and float(getattr(act, "alpha", 0.0)) == 1.0:
            monai_kind = "silu"
        if monai_kind:
            return monai_kind
    raise fail(f"{where} is {type(act).__module__}.{type(act).__name__}; "
                "archspec's activations are "
                + ", ".join(f"{kind} (nn.{cls.__name__})" for cls, kind in _ACTIVATIONS))


def check_shapes(spec: Spec, model: nn.Module) -> None:
    """The inferred spec must give the module's parameter names and shapes, exactly."""
    from .builder import expected_state
    from .weights import compare

    report, _ = compare(expected_state(spec), model.state_dict(), "<module>")
    if not report.ok:
        raise SpecError(report.problems())


def finished_spec(data: dict, model: nn.Module, name: str | None) -> Spec:
    """The spec ``data`` says, checked against ``model``'s every parameter shape, with the
    count and width so checked pinned in ``expect`` (the written spec guards its own
    numbers) and, when no ``name`` was asked for, the zoo's name for the same network."""
    import yaml

    from .loader import loads

    spec = loads(yaml.safe_dump(data, sort_keys=False), source="<module>")
    check_shapes(spec, model)
    p = make_plan(spec)
    data = {**data, "expect": {"params": p.params, "out_channels": p.out_channels}}
    if name is None:
        data["name"] = zoo_twin(spec) or data["name"]
    return loads(yaml.safe_dump(data, sort_keys=False), source="<module>")
