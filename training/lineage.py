"""Lineage recorded with every version: the commit the training code comes from and the library versions.

training/Makefile stamps the same commit string (`git_version`'s format) into the layer `sam build` packs, since
the retrain Lambda runs without a git checkout.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("scikit-learn", "numpy", "scipy", "pandas", "skl2onnx", "onnx", "onnxruntime", "joblib")

PACKAGE_DIR = Path(__file__).parent
# Written by training/Makefile when `sam build` packs the TrainingCodeLayer.
STAMPED_VERSION_FILE = PACKAGE_DIR / "CODE_VERSION"


@functools.cache  # installed packages do not change while a process runs (a warm Lambda runs many)
def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> str | None:
    """The commit this training code comes from: the version `sam build` stamped, else git in a checkout."""
    if STAMPED_VERSION_FILE.is_file():
        return STAMPED_VERSION_FILE.read_text().strip() or None
    return git_version(PACKAGE_DIR)


def git_version(path: Path) -> str | None:
    """12 hex digits of HEAD, with "-dirty" when tracked files changed; None outside a git checkout."""
    try:
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(  # noqa: S603
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
