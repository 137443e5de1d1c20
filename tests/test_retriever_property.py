"""Property: after any sequence of add / delete / upsert / compact, and after reopening, every live id's text and
metadata are its own, and the engine holds exactly the live ids (hypothesis over random sequences, tiny models)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latelex import ColBERT, Retriever, Splade
from latelex.types import Document
from tiny_models import WORDS

VOCAB = [w for w in WORDS if len(w) > 2]
IDS = [f"id{i}" for i in range(12)]

texts = st.lists(st.sampled_from(VOCAB), min_size=2, max_size=10).map(" ".join)
docs = st.lists(st.tuples(st.sampled_from(IDS), texts, st.integers(0, 9)), min_size=1, max_size=4,
                unique_by=lambda t: t[0])
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), docs),
        st.tuples(st.just("upsert"), docs),
        st.tuples(st.just("delete"), st.lists(st.sampled_from(IDS), min_size=1, max_size=4, unique=True)),
        st.tuples(st.just("compact"), st.none()),
        st.tuples(st.just("reopen"), st.none()),
    ),
    min_size=1, max_size=6,
)


@pytest.fixture(scope="module")
def encoders(tiny_bert, tiny_mlm):
    return {"colbert": ColBERT.from_pretrained(tiny_bert), "splade": Splade.from_pretrained(tiny_mlm)}


def check(retriever: Retriever, model: dict[str, tuple[str, dict]]) -> None:
    assert len(retriever) == len(model)
    assert sorted(retriever.doc_ids) == sorted(model)
    for doc_id, (text, meta) in model.items():
        got = retriever.get(doc_id)
        assert (got.text, got.metadata) == (text, meta), doc_id
    engine_ids: set[str] = set()
    for seg in retriever._state.segments:
        engine_ids |= seg.live_ids()
    assert engine_ids == set(model)
    if model:  # every live document is found by its own text, with its own text attached
        some = sorted(model)[0]
        hit = retriever.search(model[some][0], k=1, subset=[some])[0]
        assert (hit.doc_id, hit.text, hit.metadata) == (some, model[some][0], model[some][1])


@pytest.mark.parametrize("kind", ["flat", "plaid", "inverted"])
def test_documents_stay_in_step_with_the_engine(kind, encoders, tmp_path_factory):
    encoder = encoders["splade" if kind == "inverted" else "colbert"]
    seed = [Document(f"base{i}", f"{VOCAB[i]} {VOCAB[i + 3]} {VOCAB[i + 7]}", {"v": i}) for i in range(8)]

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(sequence=ops)
    def run(sequence):
        path = tmp_path_factory.mktemp(kind) / "index"
        retriever = Retriever.build(path, encoder, seed, kind=kind)
        model = {d.id: (d.text, d.metadata) for d in seed}
        for op, arg in sequence:
            if op in ("add", "upsert"):
                batch = [Document(i, t, {"v": v}) for i, t, v in arg]
                if op == "add":
                    batch = [d for d in batch if d.id not in model]
                    if not batch:
                        continue
                    retriever.add(batch)
                else:
                    retriever.upsert(batch)
                model.update({d.id: (d.text, d.metadata) for d in batch})
            elif op == "delete":
                if len(model) - len(set(arg) & set(model)) < 1:
                    continue  # keep one document: an index is never emptied in this test
                result = retriever.delete(arg)
                assert result.deleted == len(set(arg) & set(model))
                assert set(result.not_found) == set(arg) - set(model)
                for d in arg:
                    model.pop(d, None)
            elif op == "compact":
                retriever.compact()
            else:
                retriever = Retriever.open(path, encoder=encoder)
            check(retriever, model)
        check(Retriever.open(path, encoder=encoder), model)

    run()
