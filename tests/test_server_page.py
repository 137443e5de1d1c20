"""The search page at ``/`` in a headless Chromium: search, click a hit, and the highlighted spans are exactly the
library's explanation of that hit; the page fetches nothing from outside the server."""

from __future__ import annotations

import importlib.util
import shutil
from urllib.parse import urlsplit

import pytest

from latelex import ColBERT, Retriever
from latelex.server import ServerConfig
from server_helpers import running_server

pytestmark = pytest.mark.browser

DOCS = [
    ("d0", "Apple and banana: fruit is healthy.", {"year": 2010, "tag": "food"}),
    ("d1", "Cancer risk study of blood cells in patients.", {"year": 2015, "tag": "bio"}),
    ("d2", "Protein and gene effects in the brain.", {"year": 2018, "tag": "bio"}),
    ("d3", "A vaccine trial: results for a new virus.", {"year": 2021, "tag": "bio"}),
    ("d4", "Green apple, red apple — which fruit is good for health?", {"year": 2019, "tag": "food"}),
    ("d5", "Late interaction retrieval scores each query token against document token vectors.",
     {"year": 2020, "tag": "ir"}),
    ("d6", "A sparse learned index for neural search.", {"year": 2022, "tag": "ir"}),
]
QUERY = "healthy apple fruit"


def _chromium() -> str:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("Playwright is not installed (pip install playwright)")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium executable on PATH (apt-get install chromium)")
    return path


def test_search_page_highlights_the_explained_spans(tmp_path, tiny_bert):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    encoder = ColBERT.from_pretrained(tiny_bert)
    Retriever.build(tmp_path / "index", encoder, DOCS).close()
    retriever = Retriever.open(tmp_path / "index", encoder=encoder)  # the library, beside the server
    with running_server(ServerConfig(indexes={"demo": str(tmp_path / "index")})) as (url, _):
        requests: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1360, "height": 900})
                page.on("request", lambda request: requests.append(request.url))
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(url + "/")
                page.wait_for_selector("#index option[value=demo]", state="attached")
                page.select_option("#index", "demo")
                page.fill("#query", QUERY)
                page.fill("#where", "colour = 1")  # an error shows the server's one-line message
                page.click("#search")
                page.wait_for_function("document.querySelector('#error').textContent.includes('unknown field')")
                assert page.locator("#error").inner_text().startswith("unknown field 'colour' in the filter")
                page.fill("#where", "")
                page.fill("#k", "5")
                page.click("#search")
                page.wait_for_selector(".hit")
                hits = page.locator(".hit")
                assert hits.count() == 5
                first_id = hits.first.get_attribute("data-id")
                assert first_id == retriever.search(QUERY, k=1)[0].doc_id
                hits.first.click()
                page.wait_for_selector("#doc mark")
                marks = page.eval_on_selector_all(
                    "#doc mark", "ms => ms.map(m => [m.dataset.start, m.dataset.end, m.dataset.q, m.textContent, "
                                 "m.className, getComputedStyle(m).backgroundColor])")
                legend_rows = page.locator("#legend tbody tr").count()
                total = page.locator("#total td.num").inner_text()
                page.screenshot(path=str(tmp_path / "search-page.png"), full_page=True)
                assert page.locator("#error").inner_text() == ""
                assert not errors, errors
            finally:
                browser.close()
    shutil.copyfile(tmp_path / "search-page.png", "/tmp/latelex-search-page.png")

    explanation = retriever.explain(QUERY, first_id)
    retriever.close()
    expected = {span for c in explanation.contributions for span in c.spans if span[1] > span[0]}
    shown = {(int(start), int(end)) for start, end, *_ in marks}
    assert expected and shown == expected
    assert len(marks) == len(shown)  # one mark per span
    text = explanation.text
    for start, end, q, content, cls, _ in marks:
        assert content == text[int(start):int(end)]
        assert cls == "m"
        owners = {c.query_position for c in explanation.contributions if (int(start), int(end)) in c.spans}
        assert int(q) in owners
    if len({q for *_, q, _, _, _ in marks}) > 1:  # a hue per query token: different tokens, different colours
        assert len({colour for *_, colour in marks}) > 1
    assert legend_rows == len(explanation.contributions)
    assert float(total) == pytest.approx(explanation.score, abs=1e-3)
    outside = [u for u in requests if not u.startswith(url + "/") and urlsplit(u).scheme != "data"]
    assert not outside, outside
    assert any(u.endswith("/indexes/demo/explain") for u in requests)
