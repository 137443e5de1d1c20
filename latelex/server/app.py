"""The HTTP app: FastAPI routes over a :class:`~latelex.server.service.Service`.

Every error is a JSON object ``{"error": "one line"}`` with a 4xx status for the caller's mistakes (400 bad
input, 401/403 API key, 404 unknown index or document, 409 an id that exists, 413 body too large, 422 a field
of the wrong type or out of range, 503 too many requests in flight) and 500 for the server's own, whose traceback
goes to the log, never to the client.
"""

from __future__ import annotations

import hmac
import json
import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import DuplicateIdError, InputError, LatelexError
from ..types import Document, Hit
from .service import Service, UnknownIndexError

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

_STRICT = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- request models

class SearchRequest(BaseModel):
    """One query (``query``: the answer has ``hits``) or several (``queries``: the answer has ``results``)."""

    model_config = _STRICT
    query: str | None = Field(None, description="one query; the answer's `hits` are its results")
    queries: list[str] | None = Field(None, description="several queries; the answer's `results` hold one list each")
    k: int = Field(10, ge=1, description="hits per query")
    where: str | dict[str, Any] | None = Field(
        None, description='a metadata filter: an expression such as `year >= 2015 and source = "pubmed"`, '
                          'or an object of equalities')
    subset: list[str] | None = Field(None, description="document ids the hits must come from")
    with_text: bool = Field(True, description="return each hit's text")
    passages: bool = Field(False, description="chunked index: return passages instead of documents")
    explain: bool = Field(False, description="add each hit's token-level explanation (the first hits only)")
    options: dict[str, int | float | str] = Field(
        default_factory=dict, description="the engine's search knobs: PLAID `ncells`, `ndocs`, "
                                          "`centroid_score_threshold`; inverted `mode`")


class DocumentIn(BaseModel):
    model_config = _STRICT
    id: str = Field(min_length=1)
    text: str
    metadata: dict[str, Any] | None = None


class AddRequest(BaseModel):
    model_config = _STRICT
    documents: list[DocumentIn] = Field(min_length=1)
    upsert: bool = Field(False, description="replace documents whose id exists instead of refusing them")


class DeleteRequest(BaseModel):
    model_config = _STRICT
    ids: list[str] = Field(min_length=1)


class ExplainRequest(BaseModel):
    model_config = _STRICT
    query: str
    id: str = Field(min_length=1)


class RerankRequest(BaseModel):
    model_config = _STRICT
    query: str
    documents: list[str] = Field(min_length=1, description="candidate texts")
    k: int | None = Field(None, ge=1, description="keep the top k (all by default)")
    index: str | None = Field(None, description="use this served index's ColBERT model")


class EncodeRequest(BaseModel):
    model_config = _STRICT
    texts: list[str] = Field(min_length=1)
    input: Literal["query", "document"] = "document"
    index: str | None = Field(None, description="use this served index's encoder (ColBERT or SPLADE)")


# --------------------------------------------------------------------------------------------- response models

class HitOut(BaseModel):
    id: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None
    passage: int | None = None
    span: list[int] | None = None
    explanation: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    hits: list[HitOut] | None = None
    results: list[list[HitOut]] | None = None


class ChangeOut(BaseModel):
    added: int
    replaced: int
    deleted: int
    not_found: list[str]
    documents: int = Field(description="documents in the index after the change")


class DocumentOut(BaseModel):
    id: str
    text: str | None
    metadata: dict[str, Any] | None = None


class IndexSummary(BaseModel):
    name: str
    kind: str
    documents: int
    family: str


class RerankHit(BaseModel):
    index: int = Field(description="position of the text in the request's documents")
    score: float
    text: str


class RerankResponse(BaseModel):
    results: list[RerankHit]


class EncodeResponse(BaseModel):
    family: str
    dim: int | None = None
    embeddings: list[Any] = Field(description="ColBERT: one (tokens x dim) matrix per text; SPLADE: one "
                                              "{indices, values} object per text")


# ------------------------------------------------------------------------------------------------------ guard

class _Guard:
    """ASGI middleware: refuses bodies over the size limit (413) and requests over the concurrency limit (503)."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.limits = service.config.limits
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_error(send, 413, f"request body over {limit} bytes; send fewer documents per request")
            return
        if self.in_flight >= self.limits.max_concurrent:
            await _send_error(send, 503, f"more than {self.limits.max_concurrent} requests in flight; retry shortly",
                              [(b"retry-after", b"1")])
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body over {limit} bytes; send fewer documents per request")
            return message

        self.in_flight += 1
        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= 1


async def _send_error(send: Any, status: int, message: str, extra: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------------------- app

def create_app(service: Service) -> FastAPI:
    """The FastAPI app over ``service`` (whose batcher it starts and whose indexes it closes with the app)."""
    from .. import __version__

    limits = service.config.limits
    key = service.config.api_key

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = max(40, limits.max_concurrent)
        service.start()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="latelex", version=__version__, lifespan=lifespan,
                  description="Late-interaction (ColBERT, PLAID), SPLADE and BM25 search over latelex indexes.")
    app.add_middleware(_Guard, service=service)

    # --------------------------------------------------------------- errors: one line of JSON, never a traceback

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": _one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
        if first.get("type") == "json_invalid":
            return JSONResponse({"error": f"malformed JSON body: {_one_line(first.get('ctx', {}).get('error', ''))}"
                                          .rstrip(": ")}, status_code=400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse({"error": _one_line(f"{where}: {first.get('msg')}{more}")}, status_code=422)

    @app.exception_handler(LatelexError)
    async def library_error(request: Request, exc: LatelexError) -> JSONResponse:
        status = 404 if isinstance(exc, (UnknownIndexError, _UnknownDocument)) else \
            409 if isinstance(exc, DuplicateIdError) else 400 if isinstance(exc, InputError) else 500
        if status == 500:
            logger.error("request %s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": _one_line(str(exc))}, status_code=status)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    # --------------------------------------------------------------- API key

    def _check_key(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if not given:
            raise HTTPException(401, "this endpoint needs an API key: send 'Authorization: Bearer KEY' or "
                                     "'X-API-Key: KEY'", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise HTTPException(403, "wrong API key")

    def write_access(request: Request) -> None:
        _check_key(request)

    def read_access(request: Request) -> None:
        if service.config.protect_search:
            _check_key(request)

    # --------------------------------------------------------------- limits

    def _check_queries(texts: list[str]) -> None:
        if len(texts) > limits.max_batch:
            raise HTTPException(422, f"{len(texts)} queries in one request; the limit is {limits.max_batch}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"query {i} is empty; give non-empty query texts")
            if len(text) > limits.max_query_chars:
                raise HTTPException(422, f"query {i} has {len(text)} characters; the limit is "
                                         f"{limits.max_query_chars}")

    def _check_texts(texts: list[str], counted: str, each: str) -> None:
        if len(texts) > limits.max_batch:
            raise HTTPException(422, f"{len(texts)} {counted}; the limit is {limits.max_batch}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"{each} {i} is empty")

    def _check_k(k: int | None) -> None:
        if k is not None and k > limits.max_k:
            raise HTTPException(422, f"k={k} is over the limit of {limits.max_k}")

    # --------------------------------------------------------------- routes

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text("utf-8"))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the server answers, and what it serves."""
        return {"status": "ok", "indexes": sorted(service.retrievers)}

    @app.get("/indexes", response_model=list[IndexSummary], dependencies=[Depends(read_access)])
    def indexes() -> list[dict[str, Any]]:
        """Every served index: name, kind, live documents, model family."""
        return [{"name": name, "kind": r.kind, "documents": len(r), "family": r.spec.family}
                for name, r in sorted(service.retrievers.items())]

    @app.get("/indexes/{name}", dependencies=[Depends(read_access)])
    def index_info(name: str) -> dict[str, Any]:
        """What ``latelex info`` prints for the index (without its path on the server)."""
        info = service.retriever(name).info()
        info.pop("path", None)
        info["name"] = name
        return json.loads(json.dumps(info, default=str))

    @app.post("/indexes/{name}/search", response_model=SearchResponse, response_model_exclude_none=True,
              dependencies=[Depends(read_access)])
    def search(name: str, body: SearchRequest) -> dict[str, Any]:
        """Search with one query or a batch; hits carry id, score, text, metadata (and the explanation)."""
        if (body.query is None) == (body.queries is None):
            raise HTTPException(422, "give exactly one of 'query' (one text) or 'queries' (a list of texts)")
        texts = [body.query] if body.query is not None else list(body.queries or [])
        _check_queries(texts)
        _check_k(body.k)
        retriever = service.retriever(name)
        found = service.search(name, texts, k=body.k, where=body.where, subset=body.subset,
                               with_text=body.with_text, passages=body.passages, **body.options) if texts else []
        rows = []
        for text, hits in zip(texts, found):
            row = [_hit(h) for h in hits]
            if body.explain:
                for out, hit in zip(row[:limits.max_explain], hits):
                    out["explanation"] = retriever.explain(text, hit.doc_id).to_dict()
            rows.append(row)
        return {"hits": rows[0]} if body.query is not None else {"results": rows}

    @app.post("/indexes/{name}/explain", dependencies=[Depends(read_access)])
    def explain(name: str, body: ExplainRequest) -> dict[str, Any]:
        """Why document ``id`` matches ``query``: each query token's matched document token, its character span
        and its share of the score (ColBERT); the shared terms' weights (SPLADE); each term's BM25 weight."""
        _check_queries([body.query])
        retriever = service.retriever(name)
        _require_document(retriever, body.id)
        return retriever.explain(body.query, body.id).to_dict()

    @app.post("/indexes/{name}/documents", response_model=ChangeOut, dependencies=[Depends(write_access)])
    def add_documents(name: str, body: AddRequest) -> dict[str, Any]:
        """Add documents (an id that exists is a 409 unless ``upsert``); durable once answered."""
        if len(body.documents) > limits.max_documents:
            raise HTTPException(422, f"{len(body.documents)} documents in one request; the limit is "
                                     f"{limits.max_documents}")
        retriever = service.retriever(name)
        docs = [Document(d.id, d.text, d.metadata) for d in body.documents]
        result = service.write(name, "upsert" if body.upsert else "add", docs=docs)
        return _change(result, retriever)

    @app.delete("/indexes/{name}/documents", response_model=ChangeOut, dependencies=[Depends(write_access)])
    def delete_documents(name: str, body: DeleteRequest) -> dict[str, Any]:
        """Delete documents by id; ids not in the index come back in ``not_found``."""
        if len(body.ids) > limits.max_documents:
            raise HTTPException(422, f"{len(body.ids)} ids in one request; the limit is {limits.max_documents}")
        retriever = service.retriever(name)
        return _change(service.write(name, "delete", ids=body.ids), retriever)

    @app.get("/indexes/{name}/documents/{doc_id:path}", response_model=DocumentOut,
             dependencies=[Depends(read_access)])
    def get_document(name: str, doc_id: str) -> dict[str, Any]:
        """One document: id, text (null if the index keeps no texts) and metadata."""
        retriever = service.retriever(name)
        _require_document(retriever, doc_id)
        doc = retriever.get(doc_id)
        return {"id": doc.id, "text": doc.text, "metadata": doc.metadata}

    @app.post("/rerank", response_model=RerankResponse, dependencies=[Depends(read_access)])
    def rerank(body: RerankRequest) -> dict[str, Any]:
        """Score candidate texts against a query with the server's ColBERT model (exact MaxSim, no index)."""
        from ..search.rerank import rerank as rerank_run

        _check_queries([body.query])
        _check_k(body.k)
        _check_texts(body.documents, "documents to re-rank", "document")
        encoder = service.encoder_for(body.index, colbert=True)
        ids = [str(i) for i in range(len(body.documents))]
        run = rerank_run(encoder, {"q": body.query}, {"q": ids}, dict(zip(ids, body.documents)), k=body.k,
                         show_progress=False)
        return {"results": [{"index": int(h.doc_id), "score": h.score, "text": body.documents[int(h.doc_id)]}
                            for h in run["q"]]}

    @app.post("/encode", response_model=EncodeResponse, dependencies=[Depends(read_access)])
    def encode(body: EncodeRequest) -> dict[str, Any]:
        """Token vectors (ColBERT) or sparse vectors (SPLADE) of texts, for clients that store them elsewhere."""
        _check_texts(body.texts, "texts in one request", "text")
        encoder = service.encoder_for(body.index, colbert=False)
        run = encoder.encode_queries if body.input == "query" else encoder.encode_documents
        encoded = run(body.texts, show_progress=False)
        family = encoder.spec()["family"]
        if family == "colbert":
            return {"family": family, "dim": int(encoder.dim),
                    "embeddings": [m.float().numpy().round(6).tolist() for m in encoded]}
        return {"family": family, "dim": int(encoder.vocab_size),
                "embeddings": [{"indices": v.ids.tolist(), "values": v.weights.round(6).tolist()} for v in encoded]}

    return app


class _UnknownDocument(InputError):
    """A request named a document the index does not hold (HTTP 404)."""


def _require_document(retriever: Any, doc_id: str) -> None:
    if doc_id not in retriever:
        raise _UnknownDocument(f"no document {doc_id!r} in this index")


def _hit(hit: Hit) -> dict[str, Any]:
    out: dict[str, Any] = {"id": hit.doc_id, "score": hit.score}
    if hit.text is not None:
        out["text"] = hit.text
    if hit.metadata is not None:
        out["metadata"] = hit.metadata
    if hit.passage is not None:
        out["passage"] = hit.passage
    if hit.span is not None:
        out["span"] = list(hit.span)
    return out


def _change(result: Any, retriever: Any) -> dict[str, Any]:
    return {"added": result.added, "replaced": result.replaced, "deleted": result.deleted,
            "not_found": list(result.not_found), "documents": len(retriever)}
