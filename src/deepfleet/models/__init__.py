"""The model zoo and loading a user's model factory. Model code never mentions ranks."""

from deepfleet.models._cnn import cnn
from deepfleet.models._gpt import gpt
from deepfleet.models._mlp import mlp
from deepfleet.models._plans import TPPlan, tp_plan
from deepfleet.models._registry import ZOO, build_model, resolve_factory
from deepfleet.models._resnet import BasicBlock, resnet
from deepfleet.models._resnet_imagenet import Bottleneck, resnet18, resnet50

__all__ = [
    "ZOO",
    "TPPlan",
    "BasicBlock",
    "Bottleneck",
    "build_model",
    "cnn",
    "gpt",
    "mlp",
    "resnet",
    "resnet18",
    "resnet50",
    "resolve_factory",
    "tp_plan",
]
