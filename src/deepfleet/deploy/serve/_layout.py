"""What `deepfleet serve PATH` finds on disk: one bundle, or a model repository.

A repository holds `PATH/<model>/<version>/`, each version folder a bundle; versions are
positive integers without leading zeros (as in Triton), anything else beside them (hidden
folders such as an export's temporary one, files, other names) is ignored. A single bundle
(PATH/model.json) is served as one model, named as the bundle names itself, version 1.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from deepfleet.deploy._bundle import MODEL_JSON
from deepfleet.errors import UserError

log = logging.getLogger("deepfleet.serve")

VERSION = re.compile(r"[1-9][0-9]{0,17}")
# Model names go into URL paths and metrics: a conservative alphabet.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_MODELS = 256  # folders a repository may hold; more is refused rather than loaded


@dataclass(frozen=True)
class Layout:
    root: Path
    single: str | None = None  # the model's name when root is one bundle

    def model_names(self) -> list[str]:
        if self.single is not None:
            return [self.single]
        names = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            if not NAME.fullmatch(entry.name):
                log.warning("ignoring %s: not a model name (letters, digits, _ . -)", entry)
                continue
            names.append(entry.name)
        if len(names) > MAX_MODELS:
            raise UserError(f"{self.root}: {len(names)} model folders (at most {MAX_MODELS})")
        return names

    def versions(self, name: str) -> dict[int, Path] | None:
        """The version folders of model `name` by number; None when the model is gone."""
        if self.single is not None:
            return {1: self.root} if name == self.single and self.root.is_dir() else None
        folder = self.root / name
        if not NAME.fullmatch(name) or not folder.is_dir():
            return None
        return {
            int(entry.name): entry
            for entry in folder.iterdir()
            if VERSION.fullmatch(entry.name) and entry.is_dir()
        }


def layout_of(path: str | Path) -> Layout:
    """The layout at `path`, or a UserError naming what is wrong with it."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (a bundle or a model repository)")
    if (root / MODEL_JSON).is_file():
        return Layout(root, single=_bundle_name(root))
    layout = Layout(root)
    if not layout.model_names():
        raise UserError(
            f"{root}: neither a bundle ({MODEL_JSON}) nor a model repository "
            "(<model>/<version>/ folders)"
        )
    return layout


def _bundle_name(root: Path) -> str:
    try:
        name = json.loads((root / MODEL_JSON).read_text(encoding="utf-8")).get("name", "model")
    except (OSError, ValueError, AttributeError):
        return "model"  # the bundle's own check (open_bundle) names the problem
    return str(name)


def stamp(folder: Path) -> tuple:
    """A cheap fingerprint of a version folder (names, sizes, modification times): when it
    changes, the version is verified and loaded again."""
    try:
        entries = sorted(folder.iterdir())
        return tuple(
            (e.name, s.st_size, s.st_mtime_ns, s.st_ino) for e in entries if (s := e.stat())
        )
    except OSError:
        return ()
