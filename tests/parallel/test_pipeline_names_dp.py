"""Two pipelines of a model that is not an nn.Sequential, cut at a module name, side by side
on 4 gloo ranks (each stage a DDP pair), under GPipe and 1F1B: the weights of one process."""

from __future__ import annotations

import pytest
from pipe_cases import assert_cases_match_one_process


@pytest.mark.distributed
@pytest.mark.slow
def test_pipelines_by_dp_cut_at_names_on_four_ranks_match_one_process():
    assert_cases_match_one_process(4)
