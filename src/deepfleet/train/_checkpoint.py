"""Training checkpoints with torch.distributed.checkpoint: sharded tensors from every rank,
committed by an atomic rename plus an atomic `latest` pointer.

checkpoints/train/
  step-000000120/     .metadata + *.distcp (model, optimizer tensors; DCP's own format)
                      trainer.json (step counters, data position, scheduler, best so far)
                      rank-00000.json ... (each rank's RNG states, optimizer settings, sums)
  .step-000000160.tmp/  a write in progress or interrupted: never read
  latest              the name of the newest committed checkpoint

Only tensors go through DCP (its non-tensor values would be unpickled on load); everything
else is JSON.

When the run lives at a URL (object storage has no folder rename, and nodes share no disk),
the local folder above is only staging: every rank writes its DCP files there and uploads
the files it wrote itself (`__RANK_*.distcp`, rank-RANK.json) to the run's
checkpoints/train/step-N/; once every rank has, rank 0 uploads .metadata and trainer.json
(the two markers of a complete checkpoint) and then rewrites `latest`. A reader takes only a
complete checkpoint, the one `latest` names or else the newest complete one, so an
interrupted upload is never read. A resume fetches the chosen checkpoint into a staging
folder of its own rank and loads it from there, at any world size as on a local disk.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import CheckpointException, DefaultSavePlanner
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from deepfleet._atomic import fsync_dir, write_json_atomic, write_text_atomic
from deepfleet.errors import StorageError, UserError, storage_error, storage_errors
from deepfleet.storage import Store, download_tree, upload_files

LATEST = "latest"
TRAINER = "trainer.json"
_COMMITTED = re.compile(r"^step-(\d{9})$")
_MARKERS = (".metadata", TRAINER)  # uploaded last, in this order: together they commit
_FETCHED = ".fetched-rank-"  # a rank's staging folder for the checkpoint it resumes from
_OWNED = re.compile(r"^(?:__(\d+)_.*|rank-(\d+)\.json)$")


def _owner(name: str) -> int:
    """The rank that wrote a checkpoint file (DCP names its files __RANK_N.distcp); rank 0
    for anything shared."""
    found = _OWNED.match(name)
    return int(found.group(1) or found.group(2)) if found else 0


def _rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.json"


def _complete(path: Path) -> bool:
    return (path / ".metadata").is_file() and (path / TRAINER).is_file()


def committed(root: Path) -> list[Path]:
    """Committed checkpoints, oldest first (temporary folders are never listed)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _COMMITTED.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def find_latest(root: Path) -> Path | None:
    """The checkpoint to resume from: the one `latest` names, else the newest complete one."""
    pointer = Path(root) / LATEST
    complete = [p.name for p in committed(Path(root)) if _complete(p)]
    name = _choose(pointer.read_bytes() if pointer.is_file() else None, complete)
    return Path(root) / name if name else None


def _choose(pointer: bytes | None, complete: list[str]) -> str | None:
    """The checkpoint the `latest` pointer names if it is among the complete ones (oldest
    first), else the newest of them. Any bytes at all may be in the pointer (a torn write on
    a broken disk, a hand edit): only a complete checkpoint's name is taken."""
    name = pointer.decode("ascii", errors="replace").strip() if pointer is not None else None
    if name in complete:
        return name
    return complete[-1] if complete else None


def _save_planner() -> DefaultSavePlanner:
    """Replicated tensors are written once; by default DCP picks whichever rank balances the
    write load, but buffers that each rank updates itself (BatchNorm's running statistics
    under ddp and fsdp) differ between ranks, and rank 0's are the ones that count (ddp
    broadcasts them before every forward; the exported weights are rank 0's). So rank 0
    writes every replicated tensor, and a resumed run restores exactly what it would have
    continued with."""
    return DefaultSavePlanner(dedup_save_to_lowest_rank=True)


def _save_error(err: BaseException, where: Path) -> BaseException:
    """What a failed checkpoint write becomes: a file-system refusal (the first rank's, when
    DCP gathered several) is one StorageError naming the checkpoint; anything else an
    ordinary exception with DCP's first line, never a BaseException that escapes handlers."""
    causes = (
        [failure[0] for _, failure in sorted(err.failures.items())]
        if isinstance(err, CheckpointException)
        else [err]
    )
    for cause in causes:
        refusal = storage_error(cause)
        if refusal is not None:
            return StorageError(where, refusal.cause)
    if not isinstance(err, CheckpointException):
        return err
    first = causes[0] if causes else err
    return RuntimeError(f"checkpoint {where} failed: {type(first).__name__}: {first}")


def _load_error(err: BaseException, path: Path) -> BaseException:
    """Only a checkpoint that does not fit (shapes, keys) or is damaged is the user's to fix;
    running out of memory or a failed collective while loading stays an internal error."""
    causes = (
        [failure[0] for _, failure in sorted(err.failures.items())]
        if isinstance(err, CheckpointException)
        else [err]
    )
    environment = (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError), dist.DistError)
    first = causes[0] if causes else err
    line = str(first).strip().splitlines()[0] if str(first).strip() else type(first).__name__
    if any(isinstance(cause, environment) for cause in causes):
        return RuntimeError(f"loading checkpoint {path} failed: {type(first).__name__}: {line}")
    return UserError(f"{path}: checkpoint does not fit this model or strategy ({line})")


def _tensors(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, list]:
    """The DCP payload (tensors only) and the optimizer's param_groups (for JSON)."""
    optim = get_optimizer_state_dict(module, optimizer)
    state = {
        fqn: {k: v for k, v in s.items() if v is not None} for fqn, s in optim["state"].items()
    }
    for fqn, values in state.items():
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {fqn}.{key} is not a tensor")
    return {"model": get_model_state_dict(module), "optim": state}, optim["param_groups"]


def _first_rank_groups(path: Path, current: dict[str, Any]) -> list[dict[str, Any]]:
    """A rank the checkpoint did not have (a job resumed on more ranks) takes rank 0's
    optimizer settings (the scheduler's lr of the step, for one: without them this rank
    would step its shard with a fresh optimizer's lr), keeping its own parameter lists."""
    mine = current["param_groups"]
    first = Path(path) / _rank_file(0)
    if not first.is_file():
        return mine
    saved = json.loads(first.read_text(encoding="utf-8"))["param_groups"]
    if len(saved) != len(mine):
        return mine
    return [{**old, "params": new["params"]} for old, new in zip(saved, mine, strict=True)]


class Checkpointer:
    """Saves and restores one rank's share of the training state; every call is collective."""

    def __init__(
        self,
        root: Path,
        keep: int,
        rank: int = 0,
        distributed: bool = False,
        async_save: bool = False,
        remote: Store | None = None,
    ) -> None:
        self.root = Path(root)
        self.remote = remote  # the durable checkpoints/train/ of a run at a URL
        self.keep = keep
        self.rank = rank
        self.distributed = distributed
        self.async_save = async_save
        self._pending: tuple[Any, Path, Path] | None = None  # (future, tmp, final)
        self._cpu_group: dist.ProcessGroup | None = None

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def save(
        self,
        step: int,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: dict[str, Any],
        rank_state: dict[str, Any],
    ) -> Path:
        self.wait()  # the previous asynchronous save is committed first
        name = f"step-{step:09d}"
        final, tmp = self.root / name, self.root / f".{name}.tmp"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by an interrupted attempt
            with storage_errors(tmp):
                tmp.mkdir(parents=True)
            if self.remote is not None:  # the same step saved again: uncommit it first
                for marker in reversed(_MARKERS):
                    self.remote.delete(f"{name}/{marker}")
        self._barrier()
        if self.remote is not None:  # on the other nodes, the staging folder is theirs
            with storage_errors(tmp):
                tmp.mkdir(parents=True, exist_ok=True)
        payload, groups = _tensors(module, optimizer)
        try:
            with warnings.catch_warnings():  # "assuming ... a single process": the intent
                warnings.simplefilter("ignore", UserWarning)
                if self.async_save:
                    self._start_async(payload, tmp, final)
                else:
                    dcp.save(
                        payload,
                        checkpoint_id=str(tmp),
                        no_dist=not self.distributed,
                        planner=_save_planner(),
                    )
            write_json_atomic(tmp / _rank_file(self.rank), {**rank_state, "param_groups": groups})
            if self.rank == 0:
                write_json_atomic(tmp / TRAINER, {**trainer_state, "step": step})
        except BaseException as err:  # DCP's CheckpointException derives from BaseException
            if self.rank == 0:  # no half-written folder stays behind for anyone to read
                shutil.rmtree(tmp, ignore_errors=True)
            raise _save_error(err, tmp.parent / name) from None
        if self._pending is None:
            self._commit_everywhere(tmp, final)
        return final

    def _start_async(self, payload: dict, tmp: Path, final: Path) -> None:
        """dcp.async_save copies the tensors to CPU memory before it returns (training may
        change them right after) and writes them in a thread; its collectives run there too,
        so they need a CPU (gloo) group even when training talks over NCCL."""
        if self.distributed and self._cpu_group is None:
            self._cpu_group = dist.new_group(backend="gloo")
        started = dcp.async_save(
            payload,
            checkpoint_id=str(tmp),
            no_dist=not self.distributed,
            planner=_save_planner(),
            process_group=self._cpu_group,
        )
        self._pending = (getattr(started, "upload_completion", started), tmp, final)

    def wait(self) -> None:
        """Finish an asynchronous save: its writes done on every rank, then committed. A
        failed write leaves the previous checkpoint the latest, as a synchronous one would."""
        if self._pending is None:
            return
        future, tmp, final = self._pending
        self._pending = None
        try:
            future.result()
        except BaseException as err:
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise _save_error(err, final) from None
        self._commit_everywhere(tmp, final)

    def _commit_everywhere(self, tmp: Path, final: Path) -> None:
        self._barrier()  # every rank's files are in tmp before it becomes visible
        if self.remote is not None:
            self._upload(tmp, final.name)
            return
        if self.rank == 0:
            self._commit(tmp, final)
        self._barrier()

    def _commit(self, tmp: Path, final: Path) -> None:
        if final.exists():  # the same step saved again after a restart
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(self.root)
        write_text_atomic(self.root / LATEST, final.name + "\n")
        for old in committed(self.root)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _upload(self, tmp: Path, name: str) -> None:
        """Commit on the run's storage: every rank's own files, then (rank 0) the markers
        and `latest`; the local staging copy is removed afterwards."""
        assert self.remote is not None
        files = sorted(f.name for f in tmp.iterdir() if f.is_file() and f.name not in _MARKERS)
        mine = [f for f in files if _owner(f) == self.rank]
        upload_files(tmp, self.remote, mine, prefix=name)
        self._barrier()
        if self.rank == 0:
            upload_files(tmp, self.remote, _MARKERS, prefix=name)
            self.remote.write_bytes(LATEST, f"{name}\n".encode())
            self._prune_remote()
        self._barrier()
        for file in mine + (list(_MARKERS) if self.rank == 0 else []):
            (tmp / file).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the last rank of the node to get here
            tmp.rmdir()

    def _remote_steps(self) -> tuple[dict[str, list[str]], list[str]]:
        """The run storage's checkpoint folders with their files, and the complete ones,
        oldest first."""
        assert self.remote is not None
        steps: dict[str, list[str]] = {}
        for name in self.remote.list():
            step, _, file = name.partition("/")
            if file and _COMMITTED.match(step):
                steps.setdefault(step, []).append(file)
        complete = sorted(s for s, files in steps.items() if set(_MARKERS) <= set(files))
        return steps, complete

    def _prune_remote(self) -> None:
        """Checkpoints older than the newest `keep` complete ones, markers first (a pruned
        checkpoint is uncommitted before any of its data goes)."""
        steps, complete = self._remote_steps()
        if not complete:
            return
        kept = complete[-self.keep :]
        for step in sorted(steps):
            if step >= kept[0]:
                break
            files = sorted(steps[step], key=lambda f: f not in _MARKERS)
            for file in files:
                self.remote.delete(f"{step}/{file}")

    def latest_name(self) -> str | None:
        """The name of the checkpoint to resume from, on the run's storage or the disk."""
        if self.remote is None:
            found = find_latest(self.root)
            return found.name if found else None
        _, complete = self._remote_steps()
        pointer = None
        with contextlib.suppress(StorageError):
            pointer = self.remote.read_bytes(LATEST)
        return _choose(pointer, complete)

    def latest(self) -> Path | None:
        """The checkpoint to resume from as a local folder: on a run at a URL, fetched into
        a staging folder of this rank's own (ranks of a node never share a half-written
        file)."""
        name = self.latest_name()
        if name is None or self.remote is None:
            return None if name is None else self.root / name
        staging = self.root / f"{_FETCHED}{self.rank:05d}"
        shutil.rmtree(staging, ignore_errors=True)
        download_tree(self.remote, name, staging / name)
        return staging / name

    def release(self, path: Path) -> None:
        """Drop a checkpoint fetched for a resume once it is loaded (a checkpoint on the
        disk stays)."""
        if path.parent.name.startswith(_FETCHED):
            shutil.rmtree(path.parent, ignore_errors=True)

    def latest_trainer_state(self) -> dict[str, Any] | None:
        """The trainer state of the checkpoint to resume from (nothing else is fetched)."""
        name = self.latest_name()
        if name is None:
            return None
        if self.remote is None:
            return self.read_trainer_state(self.root / name)
        return json.loads(self.remote.read_bytes(f"{name}/{TRAINER}"))

    def read_trainer_state(self, path: Path) -> dict[str, Any]:
        return json.loads((Path(path) / TRAINER).read_text(encoding="utf-8"))

    def read_rank_states(self, path: Path) -> list[dict[str, Any]]:
        """Every rank's state of a checkpoint, in rank order (it may have had more or fewer
        ranks than this job)."""
        files = sorted(Path(path).glob("rank-*.json"))
        return [json.loads(f.read_text(encoding="utf-8")) for f in files]

    def load(
        self,
        path: Path,
        module: nn.Module,
        optimizer: torch.optim.Optimizer | None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Restore the model (and the optimizer unless None) in place; returns (trainer state,
        this rank's state, or None when the checkpoint was written by fewer ranks)."""
        if optimizer is not None:
            payload, _ = _tensors(module, optimizer)  # shapes and shardings to read into
        else:
            payload = {"model": get_model_state_dict(module)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                dcp.load(payload, checkpoint_id=str(path), no_dist=not self.distributed)
        except (Exception, CheckpointException) as err:  # DCP wraps per-rank failures
            raise _load_error(err, path) from None
        rank_path = path / _rank_file(self.rank)
        rank_state = (
            json.loads(rank_path.read_text(encoding="utf-8")) if rank_path.is_file() else None
        )
        set_model_state_dict(module, payload["model"])
        if optimizer is not None:
            groups = (
                rank_state["param_groups"]
                if rank_state
                else _first_rank_groups(path, get_optimizer_state_dict(module, optimizer))
            )
            set_optimizer_state_dict(
                module, optimizer, {"state": payload["optim"], "param_groups": groups}
            )
        return self.read_trainer_state(path), rank_state
