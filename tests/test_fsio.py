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


def test_replacing_a_folder_is_one_step_and_leaves_nothing_beside_it(tmp_path):
    from latelex.fsio import staged_folder

    final = tmp_path / "idx"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_folder(final, tag="building") as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_a_replacement_that_died_half_way_is_rolled_back_by_the_next_build(tmp_path):
    from latelex.fsio import recover_folder, staged_folder

    final = tmp_path / "idx"
    aside = tmp_path / ".idx.old-x1y2"  # the old folder moved aside, the new one never moved in
    (aside / "old").mkdir(parents=True)
    (aside / "old" / "manifest.json").write_text("{}")
    building = tmp_path / ".idx.building-abcd"
    building.mkdir()
    (building / "half.npy").write_bytes(b"x" * 100)
    done = recover_folder(final)
    assert (final / "manifest.json").exists() and len(done) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    stray = tmp_path / ".idx.saving-zzzz"
    stray.mkdir()
    with staged_folder(final, tag="building") as tmp:  # a later build clears the leftovers first
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_a_killed_retriever_plaid_build_resumes_its_chunks(tiny_bert, tmp_path, monkeypatch):
    import latelex.index.plaid.build as build
    from latelex import ColBERT, Retriever
    from latelex.index.plaid import PlaidConfig
    from tiny_models import WORDS

    encoder = ColBERT.from_pretrained(tiny_bert)
    docs = [(f"d{i}", " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12))) for i in range(60)]
    config = PlaidConfig(chunk_size=10, n_centroids=16)
    real, calls = build.compress_chunk, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "compress_chunk", dies)
    try:
        Retriever.build(tmp_path / "idx", encoder, docs, kind="plaid", engine_config=config)
    except KeyboardInterrupt:
        pass
    assert not (tmp_path / "idx").exists() and (tmp_path / ".idx.building-resume").is_dir()
    calls.clear()
    resumed = Retriever.build(tmp_path / "idx", encoder, docs, kind="plaid", engine_config=config)
    assert len(calls) == 3  # chunks 4 to 6: the first three were compressed before the kill
    monkeypatch.undo()
    fresh = Retriever.build(tmp_path / "fresh", encoder, docs, kind="plaid", engine_config=config)
    assert [[h.doc_id for h in r] for r in resumed.search(["cancer risk", "apple"], k=5)] == \
           [[h.doc_id for h in r] for r in fresh.search(["cancer risk", "apple"], k=5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "idx"]
