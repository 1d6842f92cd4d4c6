"""``ctx.record_output_files``: the runner takes the hashes a stage recorded while writing."""

from __future__ import annotations

from lmforge.fsutil import file_hashes, hash_file


def test_known_hashes_are_used_when_the_size_matches(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"hello")
    real_b = hash_file(tmp_path / "sub" / "b.bin")
    # a recorded digest is trusted without reading the file (a stand-in value shows it)
    got = file_hashes(tmp_path, {"a.bin": (3, "recorded-digest"), "sub/b.bin": (99, "stale")})
    assert got == {"a.bin": (3, "recorded-digest"), "sub/b.bin": (5, real_b)}  # size differs:
    # re-hashed
    assert file_hashes(tmp_path) == {"a.bin": (3, hash_file(tmp_path / "a.bin")),
                                     "sub/b.bin": (5, real_b)}
