"""Finding a model's tensor-parallel plan: the zoo gpt's, or `parallelize(model, mesh)` in the
module that defines the model's class (with an optional `check_tp(model, tp) -> str | None`
that says why a degree cannot work, asked before any worker starts)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from deepfleet.errors import UserError
from deepfleet.models import _gpt_plan
from deepfleet.models._gpt import is_gpt


@dataclass(frozen=True)
class TPPlan:
    """How to split one model over a tensor-parallel mesh, and whether it can be."""

    name: str
    apply: Callable[[nn.Module, object], None]  # (model, one-dimensional tp DeviceMesh)
    problem: Callable[[nn.Module, int], str | None]

    def check(self, model: nn.Module, tp: int) -> None:
        """UserError naming the problem when the model cannot be split `tp` ways."""
        found = self.problem(model, tp)
        if found:
            raise UserError(f"train.parallel.tp: {found}")


def _no_problem(model: nn.Module, tp: int) -> str | None:
    return None


def tp_plan(model: nn.Module, sequence_parallel: bool = False) -> TPPlan | None:
    """The model's plan, or None when it has none. `sequence_parallel` asks the zoo gpt's
    plan to cut its norms and residual stream along the sequence too (a user's plan decides
    that itself)."""
    if is_gpt(model):
        return TPPlan(
            "gpt",
            partial(_gpt_plan.parallelize, sequence_parallel=sequence_parallel),
            partial(_gpt_plan.check_tp, sequence_parallel=sequence_parallel),
        )
    module = sys.modules.get(type(model).__module__)
    apply = getattr(module, "parallelize", None)
    if module is None or not callable(apply) or module.__name__.startswith("torch"):
        return None
    return TPPlan(module.__name__, apply, getattr(module, "check_tp", _no_problem))
