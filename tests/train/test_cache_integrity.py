"""Tokenised-array caches (stagekit.cached_arrays) record their files' hashes and are rebuilt,
with a warning naming the cache, when a file changed after it was written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmforge.errors import IntegrityWarning
from lmforge.training.stagekit import cache_problem, cached_arrays


def test_a_damaged_cache_is_reported_and_rebuilt(tmp_path: Path) -> None:
    builds = []

    def build(tmp: Path) -> dict:
        builds.append(1)
        np.save(tmp / "tokens.npy", np.arange(1000, dtype=np.int32))
        return {"rows": 1000}

    folder = tmp_path / "cache"
    assert cache_problem(folder) == "missing"
    arrays, meta = cached_arrays(folder, build)
    assert meta == {"rows": 1000} and int(arrays["tokens"][999]) == 999
    assert cache_problem(folder) is None
    cached_arrays(folder, build)
    assert len(builds) == 1  # intact: loaded, not rebuilt

    raw = bytearray((folder / "tokens.npy").read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit in the data
    (folder / "tokens.npy").write_bytes(bytes(raw))
    assert "tokens.npy" in (cache_problem(folder) or "")
    with pytest.warns(IntegrityWarning, match="cache .*cache is damaged"):
        arrays, _ = cached_arrays(folder, build)
    assert len(builds) == 2 and int(arrays["tokens"][999]) == 999
    assert cache_problem(folder) is None
