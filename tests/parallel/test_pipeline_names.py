"""Pipelines of models that are not an nn.Sequential, cut at module names ("blocks.2"): the
cut checked before start, the traced stages holding the parameters the names give them, and
the weights after a few steps under GPipe, 1F1B and the interleaved schedule on 2 gloo ranks
equal to one process's. (Pipeline x data parallel on 4 ranks: test_pipeline_names_dp.py; a
job-file run with its checkpoints and bundle: test_pipeline_names_job.py.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from pipe_cases import assert_cases_match_one_process
from pipe_user_model import Backwards, Skip, named_gpt

from conftest import tiny_job_dict
from deepfleet.config import TrainSection
from deepfleet.errors import UserError
from deepfleet.parallel import checkpoint_blocks, preflight
from deepfleet.parallel._cut import (
    plan_cut,
    probe_stages,
    stage_holder,
    trace_stages,
    traced_blocks,
)

TESTS = Path(__file__).parent


def _pipeline(**pipe) -> TrainSection:
    return TrainSection.model_validate({"strategy": "pipeline", "pipeline": pipe})


def test_the_names_give_each_stage_its_parameters_before_any_trace():
    model = named_gpt()
    cut = plan_cut(model, 2, ["blocks.2"])
    first = {k.split(".")[0] + "." + k.split(".")[1] for k in cut.keys(0)}
    assert first == {"embed.tokens", "embed.positions", "blocks.0", "blocks.1"}
    assert {k for k in cut.keys(1) if not k.startswith("blocks.")} == {
        "norm.weight",
        "norm.bias",
        "head.weight",
    }
    assert set(cut.stage_of) == set(model.state_dict())
    # no split points: an even cut among the top-level modules and the blocks
    assert plan_cut(model, 2, []).points == ["blocks.2"]
    assert plan_cut(model, 3, []).points == ["blocks.2", "blocks.3"]
    held = stage_holder(model, cut.keys(1))
    assert list(held.state_dict()) == cut.keys(1)
    assert held.get_parameter("head.weight") is model.head.weight  # the model's own tensors


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (["blocks.9"], "the model has no module 'blocks.9' \\(its top-level modules: embed, "),
        (["blocks.1.attn"], "'blocks.1.attn' cuts inside 'blocks.1' \\(DecoderBlock\\)"),
        (["head", "blocks.1"], "distinct modules in the order the model defines them"),
        (["blocks"], "'blocks' is a ModuleList, which the forward never calls itself"),
        (["embed"], "stage 0 of embed would hold no parameters"),
    ],
)
def test_bad_cuts_are_refused_in_one_line_before_start(points, message):
    with pytest.raises(UserError, match=message) as err:
        preflight(_pipeline(split_points=points), named_gpt(), len(points) + 1)
    assert "\n" not in str(err.value)


def test_blocks_compiled_one_by_one_are_refused_with_a_cut_at_names():
    config = TrainSection.model_validate(
        {"strategy": "pipeline", "compile": True, "compile_scope": "blocks"}
    )
    with pytest.raises(UserError, match="blocks is not supported yet with a pipeline cut"):
        preflight(config, named_gpt(), 2)


def test_checkpointing_applies_to_the_traced_blocks_and_keeps_the_gradients():
    model = named_gpt()
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    model(ids).square().mean().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    traced = trace_stages(model, plan_cut(model, 2, ["blocks.2"]), (ids,))
    blocks = traced_blocks(model, traced)
    assert [type(b).__name__ for b in blocks.children()] == ["InterpreterModule"] * 4
    assert checkpoint_blocks(blocks, 2) == 2  # blocks 0 and 2
    calls = []
    for stage in traced.stages:
        for name, module in stage.named_modules():
            if name.endswith(".attn"):
                module.register_forward_pre_hook(lambda m, args, name=name: calls.append(name))
    h = ids
    for module in traced.stages:
        h = module(h)
    h.square().mean().backward()
    # each checkpointed block runs its forward again in the backward pass
    assert sorted(calls) == sorted(
        [f"blocks.{i}.attn" for i in range(4)] + ["blocks.0.attn", "blocks.2.attn"]
    )
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-6, atol=1e-7)


def test_a_forward_that_runs_modules_out_of_definition_order_is_refused_at_the_trace():
    model = Backwards()
    cut = plan_cut(model, 2, ["body"])  # by the names: head first, body second
    with pytest.raises(UserError, match="split_points: ") as err:
        trace_stages(model, cut, (torch.randn(2, 4),))
    assert "\n" not in str(err.value)


def test_the_command_line_traces_the_cut_before_any_worker_starts(tmp_path, capsys):
    from deepfleet.cli import run_cli
    from deepfleet.config import dump_job, job_from_dict

    spec = tiny_job_dict(
        tmp_path, model={"name": "pipe_user_model:backwards", "path": str(TESTS), "params": {}}
    )
    spec["train"].update(strategy="pipeline", pipeline={"split_points": ["body"]})
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(job_from_dict(spec)))
    assert run_cli(["train", str(job_file), "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not run its modules in the order it defines them" in err
    assert len(err.splitlines()) == 1 and not list(tmp_path.rglob("checkpoints/train"))


def test_the_traced_stages_in_a_chain_give_the_models_output_and_gradients():
    model = named_gpt()
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    model(ids).square().mean().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    cut = plan_cut(model, 3, ["blocks.1", "norm"])
    traced = trace_stages(model, cut, (ids,))
    h = ids
    for stage, module in enumerate(traced.stages):
        assert set(module.state_dict()) == set(cut.keys(stage))
        h = module(h)
    h.square().mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-6, atol=1e-7)


@pytest.mark.distributed
@pytest.mark.slow
def test_gpipe_1f1b_and_interleaved_cut_at_names_on_two_ranks_match_one_process():
    assert_cases_match_one_process(2)


def test_a_stage_passes_on_every_tensor_the_forward_uses_after_the_cut():
    torch.manual_seed(0)
    model = Skip()
    x = torch.randn(4, 16)
    model(x).square().mean().backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    traced = trace_stages(model, plan_cut(model, 3, ["c", "d"]), (x,))
    found = probe_stages(traced, (x,), [0, 1, 2], contextlib.nullcontext)
    assert [len(args) for args, _ in found.values()] == [1, 2, 1]  # c's stage also gets h
    h = (x,)
    for module in traced.stages:
        out = module(*h)
        h = out if isinstance(out, tuple) else (out,)
    h[0].square().mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-6, atol=1e-7)
