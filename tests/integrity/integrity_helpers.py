"""Helpers of the integrity tests: the small real pipeline, artifact fingerprints, corruptions."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lmforge.fsutil import file_hashes
from lmforge.runner import read_manifest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPEC = HERE / "pipeline.yaml"
STAGES = ("corpus", "bpe", "pretrain", "eval", "export")


def manifests(run: Path) -> dict[str, dict[str, Any]]:
    found = {s: read_manifest(run / s) for s in STAGES}
    return {s: m for s, m in found.items() if m is not None}


def fingerprint(run: Path) -> dict[str, dict[str, dict[str, tuple[int, str]]]]:
    """Every stage's outputs as found on disk now: stage -> output -> file -> (size, sha256)."""
    out = {}
    for stage in STAGES:
        root = run / stage / "outputs"
        out[stage] = {p.name: file_hashes(p) for p in sorted(root.iterdir())} \
            if root.is_dir() else {}
    return out


def recorded(run: Path) -> dict[str, dict[str, dict[str, tuple[int, str]]]]:
    """What the manifests recorded of the same outputs when they were written."""
    return {stage: {name: {rel: tuple(rec) for rel, rec in o["files"].items()}
                    for name, o in m["outputs"].items()}
            for stage, m in manifests(run).items()}


def replace_with_copy(reference: Path, run: Path) -> None:
    """``run`` becomes a fresh copy of ``reference``; files hard-linked to each other there
    (the export links the model's weights) are linked to each other in the copy too."""
    if run.exists():
        shutil.rmtree(run)
    first: dict[tuple[int, int], str] = {}

    def copy(src: str, dst: str) -> None:
        st = os.stat(src)
        if st.st_nlink > 1 and (st.st_dev, st.st_ino) in first:
            os.link(first[(st.st_dev, st.st_ino)], dst)
            return
        shutil.copy2(src, dst)
        first[(st.st_dev, st.st_ino)] = dst

    shutil.copytree(reference, run, ignore=shutil.ignore_patterns(".lock"), copy_function=copy)


def flip_bit(path: Path, offset_from_end: int = 9) -> None:
    """Flip one bit near the end of the file (a safetensors file's tensor data) in place."""
    data = bytearray(path.read_bytes())
    data[len(data) - offset_from_end] ^= 0x04
    with open(path, "r+b") as fh:  # in place, as a disk error would: hard links see it too
        fh.write(bytes(data))


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
