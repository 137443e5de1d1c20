"""A Python client for ``latelex serve`` with the verbs of :class:`~latelex.search.retriever.Retriever`.

Code written against a local retriever moves to a server by changing the line that opens it::

    retriever = Retriever.open("scifact-index")                           # in process
    retriever = Client("http://127.0.0.1:8000", index="scifact-index")    # over HTTP

    hits = retriever.search("vitamin d and covid", k=5, where="year >= 2015")
    retriever.add([("d42", "a new abstract", {"year": 2024})])
    why = retriever.explain("vitamin d and covid", hits[0].doc_id)

Answers come back as the library's own types (:class:`~latelex.types.Hit`, :class:`~latelex.types.Document`,
:class:`~latelex.search.retriever.ChangeResult`, :class:`~latelex.search.explain.Explanation`), and the server's
one-line errors as latelex errors: 404 and 400 / 413 / 422 as :class:`~latelex.errors.InputError`, 409 as
:class:`~latelex.errors.DuplicateIdError`, 401 / 403 as :class:`~latelex.errors.AuthError`, and a server error or an
unreachable server as :class:`~latelex.errors.LatelexError` naming the URL. Batches over the server's limits are
split here: searches into requests of ``max_batch`` queries, adds into requests of ``max_documents`` documents (and
under ``max_body_bytes``); each request is atomic on the server, a split batch as a whole is not.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

import httpx

from .errors import AuthError, DuplicateIdError, InputError, LatelexError
from .types import Document, Hit

if TYPE_CHECKING:
    from .search.explain import Explanation
    from .search.retriever import ChangeResult
    from .types import Run

__all__ = ["Client"]

#: How many times a request refused with 503 (too many in flight) is retried, waiting as ``Retry-After`` says.
_RETRIES_ON_BUSY = 3
_MAX_RETRY_WAIT = 5.0


class Client:
    """A served index, searched and changed over HTTP with the verbs of a :class:`~latelex.search.retriever.Retriever`.

    ``url``: the server's base URL (``http://127.0.0.1:8000``). ``index``: the served index's name; ``None`` picks the
    server's only index (an error when it serves several). ``api_key``: sent as ``Authorization: Bearer KEY`` (the
    server wants it for writes, or for everything with ``--protect-search``). ``timeout``: seconds per request.
    ``max_batch`` / ``max_documents`` / ``max_body_bytes``: the server's limits (its defaults), used to split
    large batches. Thread-safe; close it (or use it as a context manager) to release its connections.
    """

    def __init__(self, url: str, index: str | None = None, api_key: str | None = None, timeout: float = 30.0, *,
                 max_batch: int = 64, max_documents: int = 1000, max_body_bytes: int = 8 * 1024 * 1024) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InputError(f"the server URL must start with http:// or https://, not {url!r}")
        for name, value in (("max_batch", max_batch), ("max_documents", max_documents),
                            ("max_body_bytes", max_body_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, not {value!r}")
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.max_batch = max_batch
        self.max_documents = max_documents
        self.max_body_bytes = max_body_bytes
        self._index = index
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the client's connections (it is unusable afterwards)."""
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, index={self._index!r})"

    # ------------------------------------------------------------------ the index

    @property
    def index(self) -> str:
        """The served index's name; when none was given, the server's only index (asked once)."""
        if self._index is None:
            names = list(self._request("GET", "/health").get("indexes") or [])
            if len(names) != 1:
                served = ", ".join(names) if names else "none"
                raise InputError(f"the server at {self.url} serves {len(names)} indexes ({served}); "
                                 f"pass index=NAME to Client")
            self._index = names[0]
        return self._index

    def info(self) -> dict[str, Any]:
        """Kind, counts, encoder, segments and sizes, as ``latelex info`` prints them (without the server's path)."""
        return self._request("GET", self._path())

    def __len__(self) -> int:
        name = self.index
        for row in self._request("GET", "/indexes"):
            if row.get("name") == name:
                return int(row["documents"])
        raise InputError(f"no index named {name!r} on the server at {self.url}")

    def __contains__(self, doc_id: object) -> bool:
        if not isinstance(doc_id, str) or not doc_id:
            return False
        try:
            self._request("GET", self._path("documents", doc_id))
        except _NotFound:
            if self.index not in (self._request("GET", "/health").get("indexes") or []):
                raise
            return False
        return True

    def get(self, doc_id: str) -> Document:
        """The document ``doc_id`` with its text (``None`` if the index keeps no texts) and metadata."""
        _check_id(doc_id)
        data = self._request("GET", self._path("documents", doc_id))
        return Document(data["id"], data.get("text"), data.get("metadata"))

    def document(self, doc_id: str) -> str:
        """The stored text of ``doc_id`` (raises if the index keeps no texts)."""
        text = self.get(doc_id).text
        if text is None:
            raise LatelexError(f"index {self.index!r} on {self.url} was built without document texts "
                               f"(store_text=False)")
        return text

    # ------------------------------------------------------------------ search

    def search(self, queries: str | Sequence[str], k: int = 10, *, where: Any = None,
               subset: Sequence[str] | None = None, with_text: bool = True, passages: bool = False,
               **engine_options: Any) -> Any:
        """The top ``k`` documents for one query (a string: returns ``list[Hit]``) or each of many (a list of
        strings: returns ``list[list[Hit]]``), best first; the arguments are :meth:`Retriever.search`'s
        (``where``: a filter expression or a dict of equalities; ``engine_options``: the engine's search knobs).
        A list longer than ``max_batch`` is sent in several requests."""
        single = isinstance(queries, str)
        texts = [queries] if single else list(queries)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, not {k!r}")
        body: dict[str, Any] = {"k": k, "with_text": with_text, "passages": passages}
        if where is not None:
            body["where"] = where
        if subset is not None:
            if isinstance(subset, str):
                raise InputError("subset must be a list of document ids, not a single string")
            body["subset"] = list(subset)
        if engine_options:
            body["options"] = engine_options
        path = self._path("search")
        if single:
            return [_hit(h) for h in self._request("POST", path, {**body, "query": texts[0]})["hits"]]
        out: list[list[Hit]] = []
        for chunk in _chunks(texts, self.max_batch):
            results = self._request("POST", path, {**body, "queries": chunk})["results"]
            out.extend([_hit(h) for h in row] for row in results)
        return out

    def search_queries(self, queries: Mapping[str, str] | Iterable[tuple[str, str]], k: int = 10, *,
                       where: Any = None, subset: Sequence[str] | None = None, **engine_options: Any) -> "Run":
        """Search many identified queries (``{qid: text}`` or ``(qid, text)`` pairs); returns a run ``{qid: hits}``
        (hits without texts)."""
        from .index.ids import query_pairs

        pairs = query_pairs(queries)
        hits = self.search([t for _, t in pairs], k=k, where=where, subset=subset, with_text=False,
                           **engine_options)
        return dict(zip([q for q, _ in pairs], hits))

    def explain(self, query: str, doc_id: str) -> "Explanation":
        """Why ``doc_id`` scores what it does for ``query``: the server's :meth:`Retriever.explain`, rebuilt as an
        :class:`~latelex.search.explain.Explanation` (contributions, their character spans, their sum)."""
        from .search.explain import Explanation

        _check_id(doc_id)
        return Explanation.from_dict(self._request("POST", self._path("explain"), {"query": query, "id": doc_id}))

    def explain_many(self, query: str, doc_ids: Sequence[str]) -> "list[Explanation]":
        """:meth:`explain` for each of ``doc_ids``, in order."""
        if isinstance(doc_ids, str):
            raise InputError("doc_ids must be a list of document ids, not a single string")
        return [self.explain(query, doc_id) for doc_id in doc_ids]

    # ------------------------------------------------------------------ changes

    def add(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None) -> "ChangeResult":
        """Add documents (texts, whose ids are generated here, ``(id, text[, metadata])``, dicts or Documents); an id
        already in the index is a :class:`DuplicateIdError` (use :meth:`upsert`). Durable once returned."""
        return self._send(docs, metadata, upsert=False)

    def upsert(self, docs: Iterable[Any], *, metadata: Mapping[str, dict] | None = None) -> "ChangeResult":
        """Add documents, replacing those whose id is already in the index."""
        return self._send(docs, metadata, upsert=True)

    def delete(self, doc_ids: Iterable[str]) -> "ChangeResult":
        """Delete documents by id; ids not in the index are counted in ``not_found`` (not an error)."""
        from .search.documents import as_ids
        from .search.retriever import ChangeResult

        ids = as_ids(doc_ids)
        total = ChangeResult()
        for chunk in _chunks(ids, self.max_documents):
            total = _sum(total, self._request("DELETE", self._path("documents"), {"ids": chunk}))
        return total

    def _send(self, docs: Iterable[Any], metadata: Mapping[str, dict] | None, *, upsert: bool) -> "ChangeResult":
        from .search.documents import as_documents
        from .search.retriever import ChangeResult

        rows = [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in as_documents(docs, metadata)]
        total = ChangeResult()
        for chunk in self._document_chunks(rows):
            total = _sum(total, self._request("POST", self._path("documents"), {"documents": chunk, "upsert": upsert}))
        return total

    def _document_chunks(self, rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        """Requests of at most ``max_documents`` documents and about ``max_body_bytes`` (a document over it alone
        goes alone, and the server says it is too large)."""
        budget = self.max_body_bytes - 1024
        chunk: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            weight = len(json.dumps(row).encode()) + 2
            if chunk and (len(chunk) == self.max_documents or size + weight > budget):
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += weight
        if chunk:
            yield chunk

    # ------------------------------------------------------------------ models

    def rerank(self, query: str, texts: Sequence[str], k: int | None = None) -> list[Hit]:
        """Score candidate ``texts`` against ``query`` with exact MaxSim (the index's ColBERT model, on the server)
        and return them best first: one :class:`Hit` per text whose ``doc_id`` is its position in ``texts`` (as a
        string) and ``text`` the text; ``k`` keeps the top ``k``."""
        if isinstance(texts, str):
            raise InputError("texts must be a list of candidate texts, not a single string")
        texts = list(texts)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(f"k must be a positive integer, not {k!r}")
        if not texts:
            raise InputError("no candidate texts to re-rank")
        hits: list[Hit] = []
        for start in range(0, len(texts), self.max_batch):
            chunk = texts[start:start + self.max_batch]
            body: dict[str, Any] = {"query": query, "documents": chunk, "index": self.index}
            if k is not None:
                body["k"] = min(k, len(chunk))
            for row in self._request("POST", "/rerank", body)["results"]:
                hits.append(Hit(str(start + int(row["index"])), float(row["score"]), text=row["text"]))
        hits.sort(key=lambda h: (-h.score, int(h.doc_id)))
        return hits if k is None else hits[:k]

    def encode(self, texts: Sequence[str], input: str = "document") -> list[Any]:
        """``texts`` encoded by the index's model on the server, as ``input`` (``"query"`` or ``"document"``):
        ColBERT, one float32 ``numpy`` array of shape (tokens, dim) per text; SPLADE, one
        :class:`~latelex.types.SparseVector` per text."""
        import numpy as np

        from .types import SparseVector

        if isinstance(texts, str):
            raise InputError("texts must be a list of texts, not a single string")
        if input not in ("query", "document"):
            raise InputError(f"input must be 'query' or 'document', not {input!r}")
        out: list[Any] = []
        for chunk in _chunks(list(texts), self.max_batch):
            data = self._request("POST", "/encode", {"texts": chunk, "input": input, "index": self.index})
            if data["family"] == "colbert":
                out.extend(np.asarray(m, dtype=np.float32).reshape(-1, int(data["dim"])) for m in data["embeddings"])
            else:
                out.extend(SparseVector(np.asarray(v["indices"], dtype=np.int32),
                                        np.asarray(v["values"], dtype=np.float32)) for v in data["embeddings"])
        return out

    # ------------------------------------------------------------------ HTTP

    def _path(self, *parts: str) -> str:
        return "/".join(["/indexes", quote(self.index, safe=""), *(quote(p, safe="") for p in parts)])

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of one request, or the server's one-line error raised as a latelex error."""
        where = f"{self.url}{path}"
        for attempt in range(_RETRIES_ON_BUSY + 1):
            try:
                response = self._http.request(method, path, json=body)
            except httpx.TimeoutException:
                raise LatelexError(f"the latelex server at {self.url} did not answer {method} {path} within "
                                   f"{self.timeout:g} s; retry, or give Client a larger timeout") from None
            except httpx.TransportError as exc:
                why = _one_line(exc) or type(exc).__name__
                raise LatelexError(f"cannot reach a latelex server at {self.url} ({why}); is `latelex serve` running "
                                   f"there?") from None
            if response.status_code != 503 or attempt == _RETRIES_ON_BUSY:
                break
            time.sleep(_retry_after(response, attempt))
        if response.status_code < 400:
            try:
                return response.json()
            except ValueError:
                raise LatelexError(f"{method} {where} answered {response.status_code} with a body that is not JSON; "
                                   f"is that a latelex server?") from None
        raise _error(response, method, where)


class _NotFound(InputError):
    """HTTP 404: the server serves no such index, or the index holds no such document."""


def _error(response: httpx.Response, method: str, where: str) -> LatelexError:
    status = response.status_code
    try:
        message = _one_line(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        message = _one_line(response.text)[:200] or response.reason_phrase
    if status == 404:
        return _NotFound(message)
    if status == 409:
        return DuplicateIdError(message)
    if status == 401:
        return AuthError(f"{message}; give Client its api_key")
    if status == 403:
        return AuthError(message)
    if 400 <= status < 500:
        return InputError(message)
    if status == 503:
        return LatelexError(f"the latelex server is busy ({message}); retry later or lower the client's concurrency")
    return LatelexError(f"{method} {where} failed with HTTP {status}: {message}; see the server's log")


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 0.2 * (attempt + 1)
    return max(0.0, min(wait, _MAX_RETRY_WAIT))


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _check_id(doc_id: Any) -> None:
    if not isinstance(doc_id, str) or not doc_id:
        raise InputError(f"a document id is a non-empty string, not {doc_id!r}")


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _hit(data: Mapping[str, Any]) -> Hit:
    span = data.get("span")
    return Hit(data["id"], float(data["score"]), text=data.get("text"), metadata=data.get("metadata"),
               passage=data.get("passage"), span=None if span is None else (int(span[0]), int(span[1])))


def _sum(total: "ChangeResult", data: Mapping[str, Any]) -> "ChangeResult":
    from .search.retriever import ChangeResult

    return ChangeResult(added=total.added + int(data["added"]), deleted=total.deleted + int(data["deleted"]),
                        not_found=total.not_found + tuple(data.get("not_found") or ()),
                        replaced=total.replaced + int(data["replaced"]))
