"""The run folder: one job's outputs, named and laid out in one place.

runs/<name>-<UTC time>/
  job.toml          the resolved job (every default filled in, paths absolute)
  shards/           the prepared data, or data.json pointing at a prepared data set
  checkpoints/      weights written during training
  metrics.jsonl     one JSON object per logged step and epoch
  report/           metrics.json, report.md, confusion.png, curves.png
  bundle/           the exported model
  predictions/      batch predictions as Parquet
  status.json       {"status": "failed", ...} while the last attempt at a stage failed

A run folder can live at a URL (run.runs_dir = "s3://bucket/runs"): then every process works
in a node-local working copy ($DEEPFLEET_CACHE/runs/s3/<bucket>/<prefix>/<run>, under
~/.cache/deepfleet by default) and the URL is the durable copy. job.toml is written there when
the run is made; rank 0 uploads what changed in its working copy (metrics.jsonl, weights,
report/, bundle/, predictions/, status.json) at each checkpoint and at the end of each stage;
the training checkpoints go there directly from every rank (train/_checkpoint.py). Opening
the URL on a fresh machine fetches the run into a working copy, checkpoints excepted (the
resume fetches the one it needs). remote.json in the working copy names the URL, so every
process given the working copy's path knows where the durable copy is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfleet import storage
from deepfleet._atomic import write_json_atomic, write_text_atomic
from deepfleet.config import JobConfig, dump_job, load_job
from deepfleet.errors import StorageError, UserError
from deepfleet.storage import is_remote

if TYPE_CHECKING:
    from deepfleet.storage import Store

REMOTE = "remote.json"  # in a working copy: the URL of the durable copy
SYNCED = ".synced.json"  # in a working copy: size and mtime of each file as last synced
TRAIN_CHECKPOINTS = "checkpoints/train"  # written to the durable copy by the Checkpointer
# Uploaded last, so a reader that finds them finds everything they describe (job.toml
# marks a run folder).
_LAST_NAMES = ("manifest.json", "model.json", "model.sig", "job.toml")


def storage_options(job: JobConfig | None = None) -> dict[str, Any]:
    """The settings for reaching a run's URL: the job's data.storage_options (the run lives
    beside its data); none for a run opened by URL before its job is read, when the
    endpoint comes from $AWS_ENDPOINT_URL as for every storage URL (storage/_url.py).
    Every remote run's store is made with these."""
    return dict(job.data.storage_options or {}) if job else {}


def run_store(url: str, job: JobConfig | None = None) -> Store:
    return storage.Store(url, storage_options(job) if is_remote(url) else None)


@dataclass(frozen=True)
class RunPaths:
    """Every path inside one run folder."""

    root: Path

    @cached_property
    def remote(self) -> str | None:
        """The URL of this run's durable copy, when the folder is a working copy of one."""
        record = self.root / REMOTE
        if not record.is_file():
            return None
        return str(json.loads(record.read_text(encoding="utf-8"))["url"])

    @property
    def location(self) -> str:
        """Where the run lives, to print: its URL (redacted), else its folder."""
        return storage.redact(self.remote) if self.remote else str(self.root)

    def show(self, path: Path) -> str:
        """A path inside the run, to print: under the run's URL when it has one."""
        if self.remote is None or not Path(path).is_relative_to(self.root):
            return str(path)
        return f"{self.location}/{Path(path).relative_to(self.root).as_posix()}"

    @cached_property
    def store(self) -> Store | None:
        """The durable copy's objects, when the run lives at a URL."""
        return self.durable("")

    def durable(self, prefix: str) -> Store | None:
        """The durable copy's objects under `prefix`, when the run lives at a URL."""
        if self.remote is None:
            return None
        job = load_job(self.job_file) if self.job_file.is_file() else None
        return run_store(f"{self.remote}/{prefix}" if prefix else self.remote, job)

    @property
    def job_file(self) -> Path:
        return self.root / "job.toml"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def data_ref(self) -> Path:
        return self.root / "data.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    def refresh(self, *names: str) -> None:
        """Fetch these files of the durable copy into the working copy (what another node's
        rank 0 wrote there); nothing for a run on a disk."""
        if self.store is None:
            return
        for name in names:
            if self.store.exists(name):
                storage.fetch_file(self.store, name, self.root / name)
        self._record_synced([n for n in names if (self.root / n).is_file()], self._synced())

    def mark_failed(self, stage: str, error: BaseException) -> None:
        """Record that `stage` failed, so no later stage takes this folder for a result."""
        lines = str(error).strip().splitlines()
        write_json_atomic(
            self.status,
            {
                "status": "failed",
                "stage": stage,
                "error": f"{type(error).__name__}: {lines[0] if lines else ''}",
            },
        )
        self.push()

    def mark_succeeded(self) -> None:
        self.status.unlink(missing_ok=True)
        if self.store is not None:
            self.store.delete(self.status.name)
        self.push()

    def _synced(self) -> dict[str, list[int]]:
        path = self.root / SYNCED
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _record_synced(self, names: list[str], synced: dict[str, list[int]]) -> None:
        for name in names:
            stat = (self.root / name).stat()
            synced[name] = [stat.st_size, stat.st_mtime_ns]
        write_json_atomic(self.root / SYNCED, synced)

    def push(self) -> list[str]:
        """Upload what changed in the working copy since it was last synced (nothing for a
        local run); returns the names uploaded. Rank 0's call: the other ranks write nothing
        here, and a node's copy that only fetched files uploads nothing."""
        if self.store is None:
            return []
        synced = self._synced()
        changed = []
        for name in self._files():
            stat = (self.root / name).stat()
            if synced.get(name) != [stat.st_size, stat.st_mtime_ns]:
                changed.append(name)
        changed.sort(key=lambda n: n.rpartition("/")[2] in _LAST_NAMES)
        storage.upload_files(self.root, self.store, changed)
        self._record_synced(changed, synced)
        return changed

    def pull(self) -> list[str]:
        """Make the working copy the durable copy's mirror, training checkpoints excepted."""
        if self.store is None:
            return []
        fetched = storage.download_tree(self.store, "", self.root, skip=[TRAIN_CHECKPOINTS])
        for stale in set(self._files()) - set(fetched):  # gone from the durable copy
            (self.root / stale).unlink()
        self._record_synced(fetched, {})
        return fetched

    def _files(self) -> list[str]:
        """The run's own files in the working copy: not the training checkpoints (the
        Checkpointer's), remote.json, or hidden names (temporaries, local records)."""
        names = []
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            hidden = any(part.startswith(".") for part in name.split("/"))
            checkpoint = name.startswith(f"{TRAIN_CHECKPOINTS}/")
            if path.is_file() and not hidden and not checkpoint and name != REMOTE:
                names.append(name)
        return names

    def failure(self) -> str | None:
        """Why this run's last attempt failed ("train: ..."), or None when it did not."""
        if not self.status.is_file():
            return None
        try:
            record = json.loads(self.status.read_text(encoding="utf-8"))
            return f"{record['stage']}: {record['error']}"
        except (ValueError, KeyError, TypeError):
            return "unknown stage: status.json is unreadable"

    def data_dir(self) -> Path | str:
        """The prepared data this run uses: its own shards/, or the folder or URL (s3://...)
        data.json names."""
        if self.data_ref.is_file():
            where = json.loads(self.data_ref.read_text())["path"]
            return where if is_remote(where) else Path(where)
        return self.shards

    def link_data(self, prepared: Path | str) -> None:
        """Point this run at an already prepared data set (a folder, or a URL kept as it
        is) instead of copying it."""
        where = str(prepared) if is_remote(prepared) else str(Path(prepared).resolve())
        write_json_atomic(self.data_ref, {"path": where})

    def load_job(self) -> JobConfig:
        return load_job(self.job_file)


def _utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def create_run(job: JobConfig) -> RunPaths:
    """Make a new run folder for `job` and write the resolved job file into it."""
    if is_remote(job.run.runs_dir):
        return _create_remote_run(job)
    parent = Path(job.run.runs_dir)
    base = f"{job.run.name}-{_utc_stamp()}"
    root = parent / base
    suffix = 1
    while root.exists():  # two runs started within the same second
        suffix += 1
        root = parent / f"{base}-{suffix}"
    root.mkdir(parents=True)
    write_text_atomic(root / "job.toml", dump_job(job))
    return RunPaths(root.resolve())


def _create_remote_run(job: JobConfig) -> RunPaths:
    """A run at runs_dir's URL: job.toml written there first, the working copy beside."""
    runs = run_store(job.run.runs_dir, job)
    base = f"{job.run.name}-{_utc_stamp()}"
    name, suffix = base, 1
    while runs.exists(f"{name}/job.toml"):  # two runs started within the same second
        suffix += 1
        name = f"{base}-{suffix}"
    url = f"{job.run.runs_dir.rstrip('/')}/{name}"
    paths = working_copy_of(url)
    write_text_atomic(paths.job_file, dump_job(job))
    paths.push()
    return paths


def working_copy_of(url: str) -> RunPaths:
    """This node's working copy of the run at `url` (made empty if absent; push() sends
    what is written into it)."""
    root = storage.node_local("runs", url)
    root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(root / REMOTE, {"url": storage.redact(url)})
    return RunPaths(root.resolve())


def open_run(folder: str | Path) -> RunPaths:
    """An existing run folder (a path, or a URL fetched into this node's working copy); a
    clear error when it is not one."""
    if is_remote(folder):
        return _open_remote_run(str(folder).rstrip("/"))
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{folder}: run folder not found")
    paths = RunPaths(root.resolve())
    if not paths.job_file.is_file():
        raise UserError(f"{folder}: not a run folder (no job.toml)")
    return paths


def _open_remote_run(url: str) -> RunPaths:
    store = run_store(url)
    try:
        store.size("job.toml")  # a missing bucket is named as such
    except StorageError as err:
        if err.cause != "no such object":
            raise
        raise UserError(f"{storage.redact(url)}: not a run folder (no job.toml)") from None
    paths = working_copy_of(url)
    paths.pull()
    return paths
