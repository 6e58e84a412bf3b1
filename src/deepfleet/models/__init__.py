"""The model zoo and loading a user's model factory. Model code never mentions ranks."""

from deepfleet.models._cnn import cnn
from deepfleet.models._mlp import mlp
from deepfleet.models._registry import ZOO, build_model, resolve_factory
from deepfleet.models._resnet import BasicBlock, resnet

__all__ = ["ZOO", "BasicBlock", "build_model", "cnn", "mlp", "resnet", "resolve_factory"]
