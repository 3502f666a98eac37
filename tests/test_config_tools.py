"""Config tools build models from archspec with no glue code (issue 13): Hydra's
``_target_: archspec.build`` and jsonargparse's (LightningCLI's) ``class_path:
archspec.build``, each with a spec name and overrides, as their users write them."""

from __future__ import annotations

import textwrap

import pytest
import torch

import archspec


def _expected(**overrides):
    return archspec.build(archspec.load("densenet-bc-100-12", overrides=overrides), seed=3)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert list(a.state_dict()) == list(b.state_dict())
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=k)


def _jsonargparse_model(tmp_path, class_path: str, overrides: str) -> torch.nn.Module:
    """The model a LightningCLI-style config names: ``class_path`` with ``init_args``
    (densenet-bc-100-12, seed 3, ``overrides``), parsed and instantiated by jsonargparse."""
    jsonargparse = pytest.importorskip("jsonargparse")
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        model:
          class_path: {class_path}
          init_args:
            spec: densenet-bc-100-12
            seed: 3
            overrides: {overrides}
        """))
    parser = jsonargparse.ArgumentParser()
    # LightningCLI declares its model argument as a LightningModule or an nn.Module; a
    # class, or any callable whose return annotation fits, may be named by class_path.
    parser.add_argument("--model", type=torch.nn.Module)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    cfg = parser.parse_args(["--config", str(config)])
    return parser.instantiate(cfg).model


def test_hydra_target_builds_a_variant(tmp_path):
    pytest.importorskip("hydra")
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(textwrap.dedent("""\
        model:
          _target_: archspec.build
          spec: densenet-bc-100-12
          seed: 3
          overrides:
            depth: 40
            num_classes: 100
        """))
    model = instantiate(cfg.model)
    assert model.plan.name == "densenet-bc-100-12+depth=40+num_classes=100"
    assert model.num_classes == 100
    _same_weights(model, _expected(depth=40, num_classes=100))


def test_jsonargparse_class_path_builds_a_variant(tmp_path):
    model = _jsonargparse_model(tmp_path, "archspec.build",
                                "{depth: 40, memory_efficient: max}")
    assert model.plan.spec.memory_efficient == "max" and model.plan.spec.depth == 40
    _same_weights(model, _expected(depth=40, memory_efficient="max"))


def test_overrides_need_a_name_or_a_path():
    with pytest.raises(TypeError, match="overrides apply to a zoo name or a path"):
        archspec.build(archspec.load("densenet121"), overrides={"growth_rate": 48})


def test_jsonargparse_names_the_model_class(tmp_path):
    """LightningCLI's subclass mode: ``class_path`` names a model class and ``init_args``
    are its constructor's; ``archspec.DenseNet`` resolves lazily (torch-free import)."""
    model = _jsonargparse_model(tmp_path, "archspec.DenseNet",
                                "{depth: 40, num_classes: 100}")
    assert type(model) is archspec.DenseNet and model.num_classes == 100
    _same_weights(model, _expected(depth=40, num_classes=100))


def test_model_classes_take_builds_arguments(tmp_path):
    """``archspec.DenseNet(...)`` and ``archspec.DenseNetFeatures(...)`` are ``build`` on
    the CPU: same weights for a seed, same resource guard, weights loaded by name."""
    from archspec.resources import ResourceError

    model = archspec.DenseNet("densenet-bc-100-12", seed=3)
    _same_weights(model, archspec.build("densenet-bc-100-12", seed=3))
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    backbone = archspec.DenseNetFeatures("densenet-bc-100-12", [0, 2], weights=path)
    info = archspec.plan(archspec.load("densenet-bc-100-12")).feature_info
    assert backbone.feature_info.channels() == [info[0]["num_chs"], info[2]["num_chs"]]
    state = model.state_dict()
    for k, v in backbone.state_dict().items():  # the classifier's keys are left out
        torch.testing.assert_close(v, state[k], rtol=0, atol=0, msg=k)
    assert len(state) - len(backbone.state_dict()) == 2
    with pytest.raises(ResourceError):
        archspec.DenseNet("densenet121", overrides={"growth_rate": 4096})
