"""Two pipelines of a model that is not an nn.Sequential, cut at a module name, side by side
on 4 gloo ranks (each stage a DDP pair), under GPipe and 1F1B: the weights of one process."""

from __future__ import annotations

import pytest
from layout_checks import assert_same_weights
from pipe_cases import CASES, one_process, run_layouts
from pipe_user_model import named_gpt


@pytest.mark.distributed
@pytest.mark.slow
def test_pipelines_by_dp_cut_at_names_on_four_ranks_match_one_process():
    got = run_layouts(4)
    assert list(got) == [name for name, _ in CASES[4]]
    start = named_gpt().state_dict()
    reference = one_process()
    for weights in got.values():
        assert_same_weights(weights, reference, start)
