"""The residual codec: bit packing, bucket learning, compression error, and the search-side decompression kernel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from latelex.config import config_from_dict
from latelex.errors import ConfigError
from latelex.index.plaid.codec import SCALE_TABLE, ResidualCodec, assign, pack_buckets, unpack_buckets, unpack_table
from latelex.index.plaid.config import PlaidConfig, colbert_n_centroids, colbert_sample_documents, default_search_settings
from latelex.index.plaid.search import byte_weight_table, decompress_rows


def clustered(n: int, dim: int, n_clusters: int = 20, noise: float = 0.25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim))
    x = centers[rng.integers(0, n_clusters, n)] + noise * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_pack_unpack_round_trip(nbits):
    rng = np.random.default_rng(nbits)
    buckets = rng.integers(0, 1 << nbits, size=(37, 32)).astype(np.uint8)
    packed = pack_buckets(buckets, nbits)
    assert packed.shape == (37, 32 * nbits // 8) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_buckets(packed, nbits), buckets)


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_unpack_table_reads_most_significant_bits_first(nbits):
    table = unpack_table(nbits)
    for byte in (0, 1, 0b10110100, 255):
        bits = format(byte, "08b")
        expected = [int(bits[i : i + nbits], 2) for i in range(0, 8, nbits)]
        assert table[byte].tolist() == expected


def test_two_bit_packing_layout_is_fixed():
    # dims (3, 0, 2, 1) -> 0b11_00_10_01 = 201: the on-disk format must not drift.
    assert pack_buckets(np.array([[3, 0, 2, 1]], dtype=np.uint8), 2).tolist() == [[201]]


@pytest.fixture(scope="module")
def data():
    x = clustered(6000, 32)
    return x[:5000], x[5000:]


@pytest.fixture(scope="module")
def codecs(data):
    train, heldout = data
    return {nbits: ResidualCodec.train(train, heldout, 64, nbits, niters=4, seed=0) for nbits in (1, 2, 4)}


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_decompression_stays_within_the_bucket_of_each_value(codecs, data, nbits):
    codec = codecs[nbits]
    x = data[0][:500]
    codes, packed = codec.compress(x)
    assert packed.shape == (500, 32 * nbits // 8)
    decoded = codec.decompress(codes, packed)
    centroid = codec.centroids[codes.astype(np.intp)]
    # The decoded residual falls in the same bucket as the true one: the error is at most one bucket's width.
    np.testing.assert_array_equal(codec.bucketize(decoded - centroid), codec.bucketize(x - centroid))
    lower = np.concatenate([np.full((32, 1), -np.inf), codec.cutoffs], axis=1)
    upper = np.concatenate([codec.cutoffs, np.full((32, 1), np.inf)], axis=1)
    assert ((codec.weights >= lower - 1e-6) & (codec.weights <= upper + 1e-6)).all()


def test_error_shrinks_with_more_bits(codecs, data):
    x = data[0][:1000]
    errors = {nbits: float(((c.decompress(*c.compress(x)) - x) ** 2).sum(1).mean()) for nbits, c in codecs.items()}
    assert errors[4] < errors[2] < errors[1]
    centroid_only = float(((codecs[2].centroids[codecs[2].assign(x)] - x) ** 2).sum(1).mean())
    assert errors[1] < centroid_only


def test_codes_are_the_nearest_centroids(codecs, data):
    codec = codecs[2]
    x = data[0][:300]
    codes, _ = codec.compress(x)
    np.testing.assert_array_equal(codes, np.argmax(x @ codec.centroids.T, axis=1))
    assert codes.dtype == np.uint16
    np.testing.assert_allclose(np.linalg.norm(codec.centroids, axis=1), 1.0, atol=1e-3)


def test_approximate_assignment_is_close_to_exact():
    rng = np.random.default_rng(3)
    centroids = rng.standard_normal((5000, 16)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    x = clustered(2000, 16, seed=4)
    approx = assign(x, centroids)  # above EXACT_UP_TO: through the HNSW graph
    exact = assign(x, centroids, exact=True)
    assert (approx == exact).mean() > 0.9
    best = (x * centroids[exact]).sum(1)
    got = (x * centroids[approx]).sum(1)
    assert (got <= best + 1e-6).all() and (best - got).mean() < 0.01


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_search_kernel_decompresses_like_the_codec(codecs, data, nbits):
    codec = codecs[nbits]
    codes, packed = codec.compress(data[1][:200])
    out = np.empty((200, 32), dtype=np.float32)
    table = byte_weight_table(codec.weights, nbits)
    decompress_rows(codes.astype(np.int32), packed, codec.centroids, table, out, np.ones(200, np.float32))
    np.testing.assert_allclose(out, codec.decompress(codes, packed), rtol=0, atol=1e-6)
    unit_codec = replace(codec, unit_norm=True)
    decompress_rows(codes.astype(np.int32), packed, codec.centroids, table, out, SCALE_TABLE[unit_codec.scales(codes, packed)])
    unit = unit_codec.decompress(codes, packed)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=2e-3)
    np.testing.assert_allclose(out, unit, rtol=0, atol=1e-6)


def test_colbert_sizes_and_search_defaults():
    assert colbert_n_centroids(1_000_000) == 2**13  # 16 * 1000 = 16000 = 2^13.97, floored
    assert colbert_n_centroids(10_000_000) == 2**15
    assert colbert_n_centroids(100) == 128
    assert colbert_sample_documents(100) == 100
    assert colbert_sample_documents(1_000_000) == 1 + int(16 * (120 * 1_000_000) ** 0.5)
    assert default_search_settings(10) == (s := default_search_settings(1)) and (s.ncells, s.centroid_score_threshold, s.ndocs) == (1, 0.5, 256)
    s = default_search_settings(100)
    assert (s.ncells, s.centroid_score_threshold, s.ndocs) == (2, 0.45, 1024)
    s = default_search_settings(101)
    assert (s.ncells, s.centroid_score_threshold, s.ndocs) == (4, 0.4, 4096)
    assert default_search_settings(2000).ndocs == 8000


@pytest.mark.parametrize("bad", [{"nbits": 3}, {"n_centroids": 0}, {"kmeans_niters": 0}, {"sample_fraction": 1.5},
                                 {"heldout_fraction": 0}, {"chunk_size": 0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        PlaidConfig(**bad)


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="nbit"):
        config_from_dict(PlaidConfig, {"nbit": 2})


def test_lloyd_max_buckets_lower_the_error_of_plain_quantiles(data):
    train, heldout = data
    refined = ResidualCodec.train(train, heldout, 64, 2, niters=4, seed=0)
    quantiles = ResidualCodec.fit_buckets(refined.centroids, heldout, 2, iters=0)
    x = train[:2000]
    error = {name: float(((c.decompress(*c.compress(x)) - x) ** 2).sum(1).mean()) for name, c in
             (("refined", refined), ("quantiles", quantiles))}
    assert error["refined"] < 0.95 * error["quantiles"]
    assert (np.diff(refined.cutoffs, axis=1) > 0).all()
