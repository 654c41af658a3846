"""Embeddings on real parts: the local all-MiniLM-L6-v2 ONNX model and a local OpenAI-compatible server."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import SecretStr

from core.embeddings import (
    DIMENSIONS,
    EmbeddingError,
    EmbeddingProvider,
    MiniLMProvider,
    OpenAIEmbeddingProvider,
    embedding_provider,
)
from core.settings import Settings
from tests.peers import free_port
from tests.peers_openai import fake_vector, openai_api


@pytest.fixture(scope="module")
def local() -> EmbeddingProvider:
    provider = embedding_provider(Settings(_env_file=None, embedding_provider="local"))  # type: ignore[call-arg]
    assert provider is not None
    return provider


def _cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))  # the vectors are unit length


def test_local_vectors_are_384_unit_floats(local: EmbeddingProvider) -> None:
    [vector] = local.embed(["service checkout-api returned HTTP 503 for 5 minutes"])
    assert local.name == "all-MiniLM-L6-v2"
    assert len(vector) == DIMENSIONS
    assert all(isinstance(x, float) for x in vector)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_local_similarity_follows_meaning(local: EmbeddingProvider) -> None:
    query, pool, newsletter, disk = local.embed(
        [
            "postgres ran out of connections",
            "database connection pool exhausted",
            "the quarterly marketing newsletter was sent",
            "disk full on /var",
        ]
    )
    assert _cos(query, pool) > _cos(query, newsletter)
    assert _cos(query, pool) > _cos(query, disk)


def test_local_batch_equals_single(local: EmbeddingProvider) -> None:
    # More texts than one internal batch, of varied lengths, so sorting and padding are exercised.
    texts = [f"worker {i} restarted after OOM kill " + "retry " * (i % 17) for i in range(70)]
    batched = np.array(local.embed(texts))
    singles = np.array([local.embed([text])[0] for text in texts])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def test_local_empty_input(local: EmbeddingProvider) -> None:
    assert local.embed([]) == []


def test_local_long_text_is_truncated(local: EmbeddingProvider) -> None:
    long_text = " ".join(f"line{i} connection refused to postgres" for i in range(1000))
    assert len(long_text.split()) == 5000
    [vector] = local.embed([long_text])
    assert len(vector) == DIMENSIONS
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_local_provider_is_shared_per_process(local: EmbeddingProvider) -> None:
    assert embedding_provider(Settings(_env_file=None, embedding_provider="local")) is local  # type: ignore[call-arg]


def test_first_use_from_several_threads_loads_once() -> None:
    provider = MiniLMProvider()
    results: list[list[list[float]]] = []
    threads = [threading.Thread(target=lambda: results.append(provider.embed(["disk full on /var"]))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(r == results[0] for r in results)


def test_off_gives_no_provider() -> None:
    assert embedding_provider(Settings(_env_file=None, embedding_provider="off")) is None  # type: ignore[call-arg]


def test_openai_needs_a_url() -> None:
    settings = Settings(_env_file=None, embedding_provider="openai", embedding_url="")  # type: ignore[call-arg]
    with pytest.raises(EmbeddingError, match="EMBEDDING_URL"):
        embedding_provider(settings)


def test_openai_provider_speaks_the_wire_format() -> None:
    with openai_api() as (base, calls):
        calls.api_key = "sk-test"
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            embedding_provider="openai",
            embedding_url=base,
            embedding_model="all-minilm",
            embedding_api_key=SecretStr("sk-test"),
            outbound_allow_loopback=True,  # the stand-in runs on this machine
        )
        provider = embedding_provider(settings)
        assert provider is not None
        texts = [f"error {i}: connection reset" for i in range(40)]  # two requests of at most 32
        vectors = provider.embed(texts)
    assert provider.name == "openai:all-minilm"
    assert [c.path for c in calls.requests] == ["/v1/embeddings", "/v1/embeddings"]
    assert calls.requests[0].headers["Authorization"] == "Bearer sk-test"
    assert calls.requests[0].body == {"model": "all-minilm", "input": texts[:32]}
    assert calls.requests[1].body["input"] == texts[32:]
    # Ordered by `index` although the server answers in reverse, and normalised.
    for text, vector in zip(texts, vectors, strict=True):
        expected = np.array(fake_vector(text, DIMENSIONS))
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)


def test_the_configured_embedding_server_passes_the_ssrf_guard() -> None:
    with openai_api() as (base, calls):
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, embedding_provider="openai", embedding_url=base, embedding_model="m"
        )
        provider = embedding_provider(settings)
        assert provider is not None
        with pytest.raises(EmbeddingError, match="127.0.0.1 is loopback: refused"):
            provider.embed(["x"])
    assert calls.requests == []  # nothing was sent


def test_openai_base_url_may_end_with_v1() -> None:
    with openai_api() as (base, calls):
        [vector] = OpenAIEmbeddingProvider(f"{base}/v1/", "m").embed(["x"])
    assert calls.last.path == "/v1/embeddings"
    assert "Authorization" not in calls.last.headers
    assert len(vector) == DIMENSIONS


def test_openai_wrong_api_key() -> None:
    with openai_api() as (base, calls):
        calls.api_key = "sk-right"
        with pytest.raises(EmbeddingError, match=r"HTTP 401: .*Incorrect API key"):
            OpenAIEmbeddingProvider(base, "m", api_key="sk-wrong").embed(["x"])


def test_openai_wrong_dimensions() -> None:
    with openai_api() as (base, calls):
        calls.dimensions = 1536
        with pytest.raises(EmbeddingError, match="returned 1536 dimensions; Agent Monitor stores 384"):
            OpenAIEmbeddingProvider(base, "text-embedding-3-small").embed(["x"])


def test_openai_http_500() -> None:
    with openai_api() as (base, calls):
        calls.status = 500
        with pytest.raises(EmbeddingError, match="answered HTTP 500: .*the model crashed with a traceback") as err:
            OpenAIEmbeddingProvider(base, "m").embed(["x"])
    assert "\n" not in str(err.value)


def test_openai_malformed_json() -> None:
    with openai_api() as (base, calls):
        calls.raw = b"<html>gateway</html>"
        with pytest.raises(EmbeddingError, match="malformed answer"):
            OpenAIEmbeddingProvider(base, "m").embed(["x"])


def test_openai_timeout() -> None:
    with openai_api() as (base, calls):
        calls.delay = 1.0
        with pytest.raises(EmbeddingError, match=r"did not answer within 0.2s"):
            OpenAIEmbeddingProvider(base, "m", timeout=0.2).embed(["x"])


def test_openai_closed_port() -> None:
    with pytest.raises(EmbeddingError, match="cannot reach embedding server 127.0.0.1"):
        OpenAIEmbeddingProvider(f"http://127.0.0.1:{free_port()}", "m").embed(["x"])
