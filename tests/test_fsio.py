"""Layer-0 file helpers: atomic folder publishing."""

from __future__ import annotations


def test_published_folders_get_ordinary_modes(tmp_path):
    """A staged folder is published with the modes mkdir/open give (mkdtemp alone would make it private)."""
    import os
    import stat

    from latelex.fsio import staged_folder

    final = tmp_path / "published"
    with staged_folder(final) as tmp:
        (tmp / "a.bin").write_bytes(b"x")
        os.chmod(tmp / "a.bin", 0o600)
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((final / "a.bin").stat().st_mode) == 0o666 & ~umask
