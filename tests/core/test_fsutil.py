"""Atomic writes honour the umask like any other file (issue 8: artifacts were 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from lmforge.fsutil import atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_mode_is_what_open_would_give(tmp_path: Path, umask, mask: int) -> None:
    umask(mask)
    atomic_write_text(tmp_path / "a" / "manifest.json", "{}")
    (tmp_path / "plain.txt").write_text("x")  # what any other file gets
    assert _mode(tmp_path / "a" / "manifest.json") == _mode(tmp_path / "plain.txt") == \
        0o666 & ~mask


def test_replacing_keeps_content_atomic_and_leaves_no_temp(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_failed_write_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(tmp_path / "f.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_save_safetensors_honours_the_umask(tmp_path: Path, umask) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch

    from lmforge.fsutil import current_umask, save_safetensors

    umask(0o027)
    assert current_umask() == 0o027
    save_safetensors({"w": torch.ones(2)}, tmp_path / "w.safetensors", metadata={"a": "b"})
    assert _mode(tmp_path / "w.safetensors") == 0o640
    assert safetensors.torch.load_file(str(tmp_path / "w.safetensors"))["w"].tolist() == [1, 1]


def test_every_file_of_a_run_has_the_same_mode(tmp_path: Path, umask) -> None:
    from lmforge.testing import plugin_manager, run_spec
    from tests.core import toy_plugin

    umask(0o022)
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b b\n")
    spec = {"stages": [{"id": "w", "kind": "data", "plugin": "count",
                        "config": {"path": str(corpus)}},
                       {"id": "acc", "kind": "train", "plugin": "accumulate",
                        "inputs": {"counts": "w"}, "config": {"steps": 4}}]}
    run_spec(spec, plugin_manager(toy_plugin), tmp_path / "run")
    modes = {str(p.relative_to(tmp_path)): oct(_mode(p))
             for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert any(name.endswith("manifest.json") for name in modes)
    assert set(modes.values()) == {"0o644"}, modes
