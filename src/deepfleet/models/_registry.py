"""Building a model from [model]: a zoo name or a user's `module.path:factory`.

Every factory has the signature factory(input_shape, num_classes, **params) -> nn.Module.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from deepfleet._factory import import_factory
from deepfleet.config import ModelSection
from deepfleet.errors import UserError
from deepfleet.models._cnn import cnn
from deepfleet.models._gpt import gpt
from deepfleet.models._mlp import mlp
from deepfleet.models._resnet import resnet
from deepfleet.models._resnet_imagenet import resnet18, resnet50

ZOO: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "resnet": resnet,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "gpt": gpt,
}


def resolve_factory(spec: str, search_path: str | None = None) -> Callable[..., nn.Module]:
    if spec in ZOO:
        return ZOO[spec]
    if ":" in spec:
        return import_factory(spec, search_path, "model.name")
    raise UserError(
        f"model.name: unknown model {spec!r} (zoo: {', '.join(ZOO)}; or module.path:factory)"
    )


def build_model(section: ModelSection, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate the configured model; bad params are a user error, not a traceback."""
    factory = resolve_factory(section.name, section.path)
    params: dict[str, Any] = dict(section.params)
    try:
        inspect.signature(factory).bind(tuple(input_shape), num_classes, **params)
    except TypeError as err:
        raise UserError(f"model.params: {err}") from None
    try:
        model = factory(tuple(input_shape), num_classes, **params)
    except (ValueError, TypeError) as err:  # the factory refuses these inputs or params
        raise UserError(
            f"model {section.name}: cannot be built for samples of shape "
            f"{list(input_shape)} and {num_classes} classes ({err})"
        ) from None
    if not isinstance(model, nn.Module):
        raise UserError(
            f"model.name: {section.name} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
