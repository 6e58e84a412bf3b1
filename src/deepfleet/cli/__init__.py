"""The `deepfleet` command line: one module per area registers its commands on one app."""

from __future__ import annotations

import os
import sys

from deepfleet.cli import (  # noqa: F401  (registers commands)
    _cluster,
    _doctor,
    _keys,
    _parallel,
    _pipeline,
)
from deepfleet.cli._app import app, err_console
from deepfleet.errors import UserError

__all__ = ["app", "main", "run_cli"]


def run_cli(argv: list[str] | None = None) -> int:
    """Run the app and return its exit code: 0 ok, 2 bad input or config, 1 internal error."""
    try:
        app(args=argv, prog_name="deepfleet")
    except SystemExit as done:
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except UserError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as err:
        if os.environ.get("DEEPFLEET_DEBUG"):
            raise
        err_console.print(f"internal error: {type(err).__name__}: {err} "
                          "(set DEEPFLEET_DEBUG=1 for the traceback)", markup=False)
        return 1
    return 0


def main() -> None:
    sys.exit(run_cli(sys.argv[1:]))
