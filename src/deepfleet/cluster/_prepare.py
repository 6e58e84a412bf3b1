"""A run folder at a fixed path, made once, however many nodes ask at the same time.

`deepfleet train JOB` names each new run folder by the time it starts, so launchers on
different nodes would each make their own. On a cluster every node (and every restarted
pod) must train the same run folder, so the manifests first run `deepfleet cluster prepare
JOB --run-dir DIR`: the first caller builds the folder beside DIR and renames it into place;
the others, and later restarts, find it there and reuse it.
"""

from __future__ import annotations

from pathlib import Path

from deepfleet._atomic import atomic_dir, write_text_atomic
from deepfleet.config import JobConfig, dump_job, load_job
from deepfleet.errors import UserError
from deepfleet.runs import RunPaths, open_run, run_store, working_copy_of
from deepfleet.storage import is_remote


def _same_job(paths: RunPaths, text: str) -> RunPaths:
    if paths.job_file.read_text(encoding="utf-8") != text:
        raise UserError(
            f"{paths.root}: holds a different job; pass another --run-dir or "
            "remove the old run folder"
        )
    return paths


def prepare_run_at(job: str | Path, run_dir: str | Path) -> RunPaths:
    """The run folder for `job` at exactly `run_dir`: created and prepared if absent."""
    # Imported here: the job stages pull in torch, which the manifest renderers never need.
    from deepfleet.jobs import stage_prepare

    config = load_job(job)
    text = dump_job(config)
    if is_remote(run_dir):
        return _prepare_remote(config, text, str(run_dir))
    final = Path(run_dir)
    if (final / "job.toml").is_file():
        return _same_job(open_run(final), text)
    if final.is_dir():
        try:
            final.rmdir()  # an empty placeholder (a fresh volume's folder) makes way
        except OSError:
            if not (final / "job.toml").is_file():
                raise UserError(f"{final}: exists and is not a run folder") from None
            return _same_job(open_run(final), text)
    try:
        with atomic_dir(final) as tmp:
            paths = RunPaths(tmp)
            write_text_atomic(paths.job_file, text)
            stage_prepare(paths, config)
    except OSError:
        # Another node renamed its copy into place first; theirs is as good as ours.
        if not (final / "job.toml").is_file():
            raise
    return _same_job(open_run(final), text)


def _prepare_remote(config: JobConfig, text: str, url: str) -> RunPaths:
    """The run at a fixed URL: prepared in this node's working copy and uploaded, job.toml
    last, so a node that finds job.toml finds a prepared run. Nodes that start together
    may both prepare; they upload the same job and data."""
    from deepfleet.jobs import stage_prepare

    if run_store(url, config).exists("job.toml"):
        return _same_job(open_run(url), text)
    paths = working_copy_of(url)
    stage_prepare(paths, config)
    write_text_atomic(paths.job_file, text)
    paths.push()
    return paths
