"""The model versions of a run served to Label Studio: ``RUN`` itself is ``v0``; each fine-tune writes the
next ``RUN/versions/v<N>/`` (a run folder: ``plan.yaml``, ``best/``, ``job.json``, ``decision.json``,
``finetune.log``), kept whether or not it was swapped in; ``RUN/versions/current.json`` names the one served.

A version's ``model_version`` (what Label Studio records with each prediction) is
``<run name>-v<N>-<first 8 hex digits of its weights' SHA-256>``: it changes with every swap and names the
exact weights.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from unetkit._io import write_json_atomic
from unetkit.untrusted import UntrustedFileError, load_json_limited

CURRENT = "current.json"
_NAME = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Version:
    """One model version: ``name`` (``v0``, ``v1`` ...), its run ``folder`` and its ``model_version``."""

    name: str
    folder: Path
    model_version: str


def versions_dir(run: Path) -> Path:
    """``RUN/versions``."""
    return Path(run) / "versions"


def describe(run: Path, name: str) -> Version:
    """The version ``name`` of ``run`` (``v0`` = the run itself).

    Raises:
        FileNotFoundError: the version has no ``best/model.safetensors``.
    """
    folder = Path(run) if name == "v0" else versions_dir(run) / name
    weights = folder / "best" / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: version {name} of {run} has no saved model")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    return Version(name=name, folder=folder, model_version=f"{Path(run).resolve().name}-{name}-{digest}")


def current(run: Path) -> Version:
    """The version served: the one ``current.json`` names, else ``v0``.

    Raises:
        UntrustedFileError: ``current.json`` is unreadable or names no version.
        FileNotFoundError: the named version has no saved model.
    """
    path = versions_dir(run) / CURRENT
    if not path.is_file():
        return describe(run, "v0")
    raw = load_json_limited(path, what="current model version", max_bytes=4096)
    name = raw.get("version") if isinstance(raw, dict) else None
    if not isinstance(name, str) or not (name == "v0" or _NAME.match(name)):
        raise UntrustedFileError(f"{path}: 'version' must be v0, v1, ...")
    return describe(run, name)


def set_current(run: Path, version: Version) -> None:
    """Record ``version`` as the one served (atomically)."""
    write_json_atomic(versions_dir(run) / CURRENT, {"version": version.name, "model_version": version.model_version})


def next_name(run: Path) -> str:
    """The next free version name (``v1`` for the first fine-tune)."""
    folder = versions_dir(run)
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name))] if folder.is_dir() else []
    return f"v{max(taken, default=0) + 1}"


def all_versions(run: Path) -> list[Version]:
    """Every version of ``run`` with a saved model, ``v0`` first."""
    folder = versions_dir(run)
    names = sorted((int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name))) if folder.is_dir() else [])
    found = [describe(run, "v0")]
    for n in names:
        try:
            found.append(describe(run, f"v{n}"))
        except FileNotFoundError:
            continue  # a fine-tune that failed before saving a model
    return found
