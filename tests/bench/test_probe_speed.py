"""kNN and linear probe against scikit-learn on one thread: same answers, less time (`make slow`).

Speed is a benchmark, not a unit test: on a shared machine a timing can flip under load, so
these run under `make slow` only. The unit tests (tests/eval/test_knn.py, test_linear.py)
check that the answers equal scikit-learn's.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from rsssl.eval.knn import knn_predict
from rsssl.eval.linear import (
    fit_linear_probe,
    fit_logistic_regression,
    sklearn_c,
    split_train_val,
    standardisation,
)
from tests.helpers.problems import NUM_CLASSES, best_times, overlapping_blobs

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, ...]:
    return overlapping_blobs(5000, 2000)


def test_knn_faster_than_sklearn(blobs):
    train_x, train_y, test_x, _ = blobs
    xtr, ytr, xte = train_x.numpy(), train_y.numpy(), test_x.numpy()
    ours_fn = lambda: knn_predict(train_x, train_y, test_x, NUM_CLASSES, weighting="uniform")  # noqa: E731
    theirs_fn = lambda: KNeighborsClassifier(n_neighbors=20, metric="cosine").fit(xtr, ytr).predict(xte)  # noqa: E731
    assert (ours_fn().argmax(1).numpy() == theirs_fn()).mean() >= 0.995  # the same computation
    ours, theirs = best_times(ours_fn, theirs_fn)
    print(f"kNN 5000x128 -> 2000 test, 1 thread: ours {ours * 1e3:.1f} ms, sklearn {theirs * 1e3:.1f} ms")
    assert ours < theirs


def test_logistic_regression_faster_than_sklearn(blobs):
    train_x, train_y, _, _ = blobs
    train_idx, val_idx = split_train_val(train_y, 0.2, seed=0)
    l2 = fit_linear_probe(
        train_x[train_idx], train_y[train_idx], train_x[val_idx], train_y[val_idx], NUM_CLASSES
    ).l2
    mean, std = standardisation(train_x)
    x = (train_x - mean) / std
    x_np, y_np, c = x.numpy(), train_y.numpy(), sklearn_c(l2, len(x))
    ours_fn = lambda: fit_logistic_regression(x, train_y, NUM_CLASSES, l2, max_iter=200)  # noqa: E731
    theirs_fn = lambda: LogisticRegression(C=c, max_iter=200).fit(x_np, y_np)  # noqa: E731
    weight, bias = ours_fn()
    assert (
        torch.as_tensor(theirs_fn().predict(x_np)) == (x @ weight.T + bias).argmax(1)
    ).float().mean() >= 0.99
    ours, theirs = best_times(ours_fn, theirs_fn)
    print(f"logistic regression 5000x128, 1 thread: ours {ours * 1e3:.1f} ms, sklearn {theirs * 1e3:.1f} ms")
    assert ours < theirs
