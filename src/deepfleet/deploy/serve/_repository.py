"""The model repository of one worker process: every model version it serves, by name and
number; what the repository index reports about each; and the changes (load, unload, the
folder polled for new versions).

A change never drops a request. A new version loads (verified, warmed up) in a worker
thread while the old ones keep answering; it starts answering when it is READY, and a
version being replaced or unloaded first stops admitting requests, then finishes the ones
it admitted (bounded by the request timeout), and only then stops its batcher.
A version that fails verification never serves: it is UNAVAILABLE and the index says why.

The latest READY version answers requests that name none. `--max-versions N` serves only
the N highest version numbers of each model (0: all of them), as Triton's `latest` policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._layout import VERSION, Layout, layout_of, stamp
from deepfleet.deploy.serve._loading import open_version, start_version, stop_version
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._state import Served
from deepfleet.errors import UserError

log = logging.getLogger("deepfleet.serve")

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"
UNLOADED = "unloaded"
# Past the request timeout every admitted request has been answered (or timed out); the
# grace covers the answer being written.
DRAIN_GRACE_S = 5.0
GENERATION_POLL_S = 0.05


class NotReady(RequestError):
    """A known model or version that cannot answer (gRPC FAILED_PRECONDITION)."""

    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, message: str, status: int = 400):
        super().__init__(status, message)


@dataclass
class Version:
    """One version folder of a model, as the index reports it."""

    number: int
    path: Path
    state: str = LOADING
    reason: str = ""
    served: Served | None = None
    stamp: tuple = ()  # the folder's fingerprint when last loaded or refused

    def row(self, name: str) -> dict[str, str]:
        return {
            "name": name,
            "version": str(self.number),
            "state": self.state,
            "reason": self.reason,
        }


def _number(version: str) -> int | None:
    """A version as a folder names it: digits, no leading zero (bounded: a path segment of
    thousands of digits must not reach int())."""
    return int(version) if VERSION.fullmatch(version) else None


def _reason(err: Exception) -> str:
    if isinstance(err, UserError):
        return str(err)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


class Repository:
    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.layout: Layout = layout_of(config.bundle)
        self._models: dict[str, dict[int, Version]] = {}
        self._held: set[str] = set()  # unloaded on request: polling leaves them alone
        self._lock = asyncio.Lock()  # one change at a time
        self._poller: asyncio.Task | None = None
        self.ready = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self.sync_all()
        self.ready = True
        if self.config.poll_interval_s > 0:
            self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for versions in self._models.values():
            for entry in versions.values():
                if entry.served is not None:
                    await stop_version(entry.served)
                    entry.served = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                await self.sync_all()
            except Exception:  # a bad moment on disk must not end polling
                log.exception("polling the model repository failed")

    # -- lookups (synchronous: nothing changes between the lookup and the admission) -----

    def get(self, name: str | None, version: str | None = None) -> Served:
        """The version that answers a request for `name` (None: the only model) and
        `version` (None or "": the latest READY one)."""
        if name is None:
            if len(self._models) != 1:
                raise RequestError(
                    400,
                    f"this server holds {len(self._models)} models ({self._names()}); "
                    "name one: /v2/models/<name>/infer",
                )
            name = next(iter(self._models))
        versions = self._models.get(name)
        if versions is None:
            raise RequestError(
                404, f"unknown model {name[:80]!r}; this server serves {self._names()}"
            )
        if not version:
            ready = [v for v in versions.values() if v.state == READY and v.served is not None]
            if not ready:
                raise NotReady(f"model {name!r} has no version ready ({_states(versions)})")
            return max(ready, key=lambda v: v.number).served  # type: ignore[return-value]
        number = _number(version)
        entry = versions.get(number) if number is not None else None
        if entry is None:
            known = ", ".join(str(n) for n in sorted(versions)) or "none"
            raise RequestError(
                404, f"unknown version {version[:40]!r} of model {name!r}; it has versions: {known}"
            )
        if entry.state != READY or entry.served is None:
            raise NotReady(f"model {name!r} version {version} is {entry.state}: {entry.reason}")
        return entry.served

    def versions(self, name: str) -> list[str]:
        """The READY versions of `name`, oldest first."""
        return [
            str(n)
            for n, v in sorted(self._models.get(name, {}).items())
            if v.state == READY and v.served is not None
        ]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """One row per model version: name, version, state, reason (Triton's index)."""
        rows = []
        for name, versions in sorted(self._models.items()):
            if not versions and not ready_only:
                rows.append(
                    {"name": name, "version": "", "state": UNAVAILABLE, "reason": "no versions"}
                )
            for _, entry in sorted(versions.items()):
                if entry.state == READY or not ready_only:
                    rows.append(entry.row(name))
        return rows

    @property
    def queue_depth(self) -> int:
        return sum(
            v.served.batcher.depth
            for versions in self._models.values()
            for v in versions.values()
            if v.served is not None
        )

    def _names(self) -> str:
        names = sorted(self._models)
        shown = ", ".join(repr(n) for n in names[:10])
        return shown + (f" and {len(names) - 10} more" if len(names) > 10 else "") or "nothing"

    # -- changes -------------------------------------------------------------------------

    def _check_control(self) -> None:
        if self.config.workers > 1:
            raise NotReady(
                f"with --workers {self.config.workers} every worker process holds its own "
                "models and a load or unload would reach only one of them; new versions are "
                "picked up by --poll-interval",
                status=409,
            )

    async def load(self, name: str) -> None:
        """Load (or reload) model `name` from the repository: new versions load, changed
        ones reload, gone ones unload after draining. 404 when the repository has no such
        model; 400 naming each version's reason when none is READY afterwards."""
        self._check_control()
        async with self._lock:
            if self.layout.versions(name) is None:
                raise RequestError(
                    404, f"no model {name[:80]!r} in the repository {self.layout.root}"
                )
            self._held.discard(name)
            await self._sync(name, retry=True)
            versions = self._models.get(name, {})
            if not any(v.state == READY for v in versions.values()):
                raise NotReady(f"failed to load model {name!r}: {_states(versions)}")

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name` once each has answered what it admitted;
        polling leaves the model unloaded until the next load."""
        self._check_control()
        async with self._lock:
            versions = self._models.get(name)
            if versions is None:
                raise RequestError(
                    404, f"unknown model {name[:80]!r}; this server serves {self._names()}"
                )
            self._held.add(name)
            for entry in versions.values():
                await self._retire(entry, UNLOADED)

    async def sync_all(self) -> None:
        """Bring every model in line with the folder (startup and each poll)."""
        async with self._lock:
            try:
                names = self.layout.model_names()
            except (OSError, UserError) as err:
                log.warning("cannot list the model repository: %s", err)
                return
            for gone in set(self._models) - set(names):
                for entry in self._models[gone].values():
                    await self._retire(entry, "removed from the repository")
                del self._models[gone]
            for name in names:
                if name not in self._held:
                    await self._sync(name)

    async def _sync(self, name: str, retry: bool = False) -> None:
        found = self.layout.versions(name)
        versions = self._models.setdefault(name, {})
        if found is None:
            found = {}
        keep = self.config.max_versions
        wanted = sorted(found)[-keep:] if keep else sorted(found)
        # Load first, retire after: a model keeps answering on its old versions until the
        # new ones are READY.
        for number in wanted:
            entry = versions.setdefault(number, Version(number, found[number]))
            await self._refresh(name, entry, found[number], retry)
        for number in sorted(set(versions) - set(wanted)):
            entry = versions[number]
            if number in found:
                reason = f"unloaded: only the latest {keep} versions are served"
                await self._retire(entry, reason)
            else:  # the folder is gone
                await self._retire(entry, "removed from the repository")
                del versions[number]

    async def _refresh(self, name: str, entry: Version, path: Path, retry: bool) -> None:
        """Load the version when its folder is new or changed (or on request, when it is
        not serving); a copy already serving keeps answering until the new one is READY."""
        current = stamp(path)
        unchanged = entry.stamp == current and entry.path == path
        if unchanged and (entry.served is not None or not retry):
            return
        entry.path = path
        if entry.served is None:
            entry.state, entry.reason = LOADING, ""
        try:
            opened = await asyncio.to_thread(open_version, self.config, path)
        except Exception as err:  # verification failed, or the runtime refused the model
            reason = _reason(err)
            log.warning("model %s version %d is unavailable: %s", name, entry.number, reason)
            await self._retire(entry, reason)
            entry.stamp = current  # not retried until the folder changes (or a load call)
            return
        new = start_version(self.config, self.metrics, opened, name, entry.number)
        old, entry.served = entry.served, new
        entry.state, entry.reason, entry.stamp = READY, "", current
        log.info("model %s version %d is ready (%s)", name, entry.number, new.platform)
        if old is not None:
            await self._drain_and_stop(old)

    async def _retire(self, entry: Version, reason: str) -> None:
        """UNAVAILABLE with `reason`; a serving copy first answers what it admitted."""
        old = entry.served
        entry.stamp = ()
        if old is None:
            entry.state, entry.reason = UNAVAILABLE, reason
            return
        entry.state, entry.reason = UNLOADING, reason  # admits nothing new from here
        await self._drain_and_stop(old)
        entry.served = None
        entry.state = UNAVAILABLE

    async def _drain_and_stop(self, served: Served) -> None:
        deadline = time.monotonic() + self.config.timeout_s + DRAIN_GRACE_S
        if not await served.inflight.drained(deadline - time.monotonic()):
            log.warning(
                "model %s version %s: %d requests still in flight at unload",
                served.name,
                served.version,
                served.inflight.count,
            )
        generation = served.generation
        # A text stream outlives its request handler: wait for the streams too (a generation
        # is bounded per token by the timeout, not as a whole, so the same deadline cuts it).
        while generation is not None and generation.active and time.monotonic() < deadline:
            await asyncio.sleep(GENERATION_POLL_S)
        if generation is not None and generation.active:
            log.warning(
                "model %s version %s: %d generations cut at unload",
                served.name,
                served.version,
                generation.active,
            )
        await stop_version(served)


def _states(versions: dict[int, Version]) -> str:
    if not versions:
        return "no version folders"
    return "; ".join(
        f"version {n} {v.state}" + (f": {v.reason}" if v.reason else "")
        for n, v in sorted(versions.items())
    )
