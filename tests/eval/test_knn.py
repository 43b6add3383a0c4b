"""kNN probe: exact agreement with scikit-learn, a hand-loop reference for the weighted vote.

Speed against scikit-learn is a benchmark: tests/bench/test_probe_speed.py (`make slow`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from rsssl.eval.knn import knn_predict
from tests.helpers.problems import NUM_CLASSES, overlapping_blobs

pytestmark = pytest.mark.usefixtures("single_thread")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, ...]:
    return overlapping_blobs(5000, 2000)


def test_uniform_vote_equals_sklearn_cosine_knn(blobs):
    train_x, train_y, test_x, test_y = blobs
    sk = KNeighborsClassifier(n_neighbors=20, metric="cosine").fit(train_x.double().numpy(), train_y.numpy())
    expected = sk.predict(test_x.double().numpy())
    # float64 removes rounding ties at the 20th neighbour: the predictions must agree row for row.
    ours = knn_predict(train_x.double(), train_y, test_x.double(), NUM_CLASSES, k=20, weighting="uniform")
    np.testing.assert_array_equal(ours.argmax(1).numpy(), expected)
    # float32 (what runs in practice) may only swap near-equidistant neighbours.
    ours32 = knn_predict(train_x, train_y, test_x, NUM_CLASSES, k=20, weighting="uniform").argmax(1)
    assert (ours32.numpy() == expected).mean() >= 0.995
    accuracy = (expected == test_y.numpy()).mean()
    print(f"kNN uniform k=20: accuracy ours {(ours32 == test_y).float().mean():.4f}, sklearn {accuracy:.4f}")
    assert 0.6 < accuracy < 0.9  # the problem overlaps: neither trivial nor hopeless


def test_weighted_vote_matches_hand_loop(blobs):
    train_x, train_y, test_x, test_y = blobs
    train = train_x.double().numpy()
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test = test_x.double().numpy()
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    labels = train_y.numpy()
    similarities = test @ train.T
    reference = np.empty(len(test), dtype=np.int64)
    for i, sim in enumerate(similarities):
        top = np.argsort(-sim)[:20]
        votes = np.zeros(NUM_CLASSES)
        np.add.at(votes, labels[top], np.exp(sim[top] / 0.07))
        reference[i] = votes.argmax()

    ours = knn_predict(train_x, train_y, test_x, NUM_CLASSES, k=20, temperature=0.07).argmax(1).numpy()
    acc_ours, acc_ref = (ours == test_y.numpy()).mean(), (reference == test_y.numpy()).mean()
    print(f"kNN weighted k=20 tau=0.07: accuracy ours {acc_ours:.4f}, hand loop {acc_ref:.4f}")
    assert abs(acc_ours - acc_ref) <= 0.01
    assert (ours == reference).mean() >= 0.995


@pytest.mark.parametrize("device", DEVICES)
def test_scores_are_vote_shares_and_chunking_does_not_matter(device):
    train_x, train_y, test_x, _ = (t.to(device) for t in overlapping_blobs(300, 50, seed=1))
    whole = knn_predict(train_x, train_y, test_x, NUM_CLASSES, chunk_size=1000)
    chunked = knn_predict(train_x, train_y, test_x, NUM_CLASSES, chunk_size=7)
    assert whole.device.type == device and whole.shape == (50, NUM_CLASSES)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole.sum(1), torch.ones(50, device=device))


def test_k_beyond_train_set_uses_every_sample():
    train_x = torch.randn(5, 8)
    train_y = torch.tensor([0, 0, 1, 2, 2])
    scores = knn_predict(train_x, train_y, torch.randn(4, 8), 3, k=20, weighting="uniform")
    torch.testing.assert_close(scores, torch.tensor([0.4, 0.2, 0.4]).expand(4, 3))


def test_small_temperature_stays_finite_and_favours_nearest():
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.1]])
    train_y = torch.tensor([0, 1, 1])
    scores = knn_predict(train_x, train_y, torch.tensor([[1.0, 0.9]]), 2, k=3, temperature=1e-3)
    assert torch.isfinite(scores).all()
    assert scores[0, 0] > 0.99  # the single nearest neighbour outvotes two farther ones


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same D"):
        knn_predict(torch.randn(5, 8), torch.zeros(5, dtype=torch.long), torch.randn(2, 4), 2)
