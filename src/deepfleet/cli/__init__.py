"""The `deepfleet` command line: one module per area registers its commands on one app."""

from __future__ import annotations

import atexit
import faulthandler
import os
import sys
import warnings
from pathlib import Path

# Each module registers its commands on the one app when imported, in the order that
# `deepfleet --help` lists them (the job commands last).
# isort: off
from deepfleet.cli import (  # noqa: F401
    _bench,
    _cluster,
    _data,
    _deploy,
    _doctor,
    _keys,
    _parallel,
    _runs,
    _jobs,
)

# isort: on
from deepfleet.cli._app import app
from deepfleet.errors import UserError, storage_error

__all__ = ["app", "main", "run_cli"]


def _say(line: str) -> None:
    """Errors are one plain line on stderr: no wrapping, no markup, easy to grep."""
    print(" ".join(line.split()), file=sys.stderr, flush=True)


_PACKAGE = Path(__file__).resolve().parents[1]


def _notices(show):
    """deepfleet's own DeprecationWarnings (an old job-file key) as one plain line each,
    `warning: ...`, once per command and only on rank 0; every other warning as Python shows it."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeprecationWarning) and Path(filename).is_relative_to(_PACKAGE):
            if os.environ.get("RANK", "0") == "0":
                _say(f"warning: {message}")
            return
        show(message, category, filename, lineno, file, line)

    return showwarning


def run_cli(argv: list[str] | None = None) -> int:
    """Run the app and return its exit code: 0 ok, 2 bad input or config, 1 internal error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("default", category=DeprecationWarning, module=r"deepfleet\.")
        warnings.showwarning = _notices(warnings.showwarning)
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        app(args=argv, prog_name="deepfleet")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except UserError as err:
        _say(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except OSError as err:
        refusal = storage_error(err)
        if refusal is None:
            return _internal(err)
        _say(f"error: {refusal}")
        return 2
    except Exception as err:
        return _internal(err)
    return 0


def _internal(err: Exception) -> int:
    if os.environ.get("DEEPFLEET_DEBUG"):
        raise err
    _say(f"internal error: {type(err).__name__}: {err} (set DEEPFLEET_DEBUG=1 for the traceback)")
    return 1


def main() -> None:
    # A crash in C++ code (torch, gloo, a codec) prints the Python stack of every thread.
    faulthandler.enable()
    code = run_cli(sys.argv[1:])
    env = sys.modules.get("deepfleet.parallel._env")  # imported by every distributed stage
    if env is None or not env.in_worker():
        sys.exit(code)
    # A rank of a job: the exit handlers run (log handlers flushed, loader workers stopped),
    # but not the interpreter's teardown, where gloo's threads can abort a rank after its
    # work is written (std::terminate, no Python error) and the agent reports it failed.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
