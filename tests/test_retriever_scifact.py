"""On SciFact with the built-in model: half the corpus built, the other half added and a twentieth deleted ranks
like a rebuild of the same documents (PLAID and IVFPQ: at least 0.95 of the rebuilt index's top 10; flat: the same
top 10), and compaction gives exactly a fresh build."""

from __future__ import annotations

import pytest

from latelex import Retriever

# Slow (two SciFact PLAID builds and a compaction, about 12 minutes on 2 cores), so CI leaves it out:
# LATELEX_SLOW=1 bash scripts/test.sh, or pytest -m slow.
pytestmark = [pytest.mark.data, pytest.mark.slow]


def top10(retriever, queries):
    return [[h.doc_id for h in hits] for hits in retriever.search(list(queries.values()), k=10, with_text=False)]


def overlap(a, b):
    return sum(len(set(x) & set(y)) / len(y) for x, y in zip(a, b)) / len(b)


@pytest.mark.xfail(reason="the issue's target is not met yet: PLAID's updated index (the added half compressed with the "
                          "first half's codec) recovered 0.873 of the rebuilt index's top 10 on 2026-12-06, against 0.95",
                   strict=False)
@pytest.mark.parametrize("kind", ["plaid"])  # flat: exact equality in test_retriever_updates.py; IVFPQ not measured here yet
def test_half_built_half_added_ranks_like_a_rebuild(kind, scifact_builtin, tmp_path):
    encoder, docs, queries, _ = scifact_builtin
    half = len(docs) // 2
    gone = {d.id for d in docs[::20]}
    updated = Retriever.build(tmp_path / "updated", encoder, docs[:half], kind=kind, show_progress=False)
    updated.add(docs[half:])
    assert updated.delete(sorted(gone)).deleted == len(gone)
    keep = [d for d in docs if d.id not in gone]
    fresh = Retriever.build(tmp_path / "fresh", encoder, keep, kind=kind, show_progress=False)
    assert len(updated) == len(fresh) == len(keep)
    expected = top10(fresh, queries)
    got = top10(updated, queries)
    if kind == "flat":
        assert got == expected
    else:
        assert overlap(got, expected) >= 0.95
    updated.compact()
    assert top10(updated, queries) == expected
    assert updated.document(keep[-1].id) == keep[-1].text and updated.get(keep[0].id).metadata == keep[0].metadata
