"""A user's own model for deepfleet: any function (input_shape, num_classes, **params) -> Module.

Named in a job file as `name = "custom_model:build"`; deepfleet looks for the module beside
the job file first.
"""

import math

from torch import nn


def build(input_shape, num_classes, width=64):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.GELU(),
        nn.LayerNorm(width),
        nn.Linear(width, num_classes),
    )
