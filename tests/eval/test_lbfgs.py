"""Batched L-BFGS: each problem of a batch is solved as if alone, and leaves the batch when done."""

from __future__ import annotations

import torch

from rsssl.eval.lbfgs import batched_lbfgs


def quadratics(curvatures: torch.Tensor, targets: torch.Tensor):
    """f_g(theta) = 1/2 sum_j a_gj (theta_j - t_gj)^2 per problem g: minimiser t_g, known by hand.
    Records which problems each call evaluated."""
    calls: list[list[int]] = []

    def objective(theta: torch.Tensor, problems: torch.Tensor):
        calls.append(problems.tolist())
        a, t = curvatures[problems], targets[problems]
        return 0.5 * (a * (theta - t).square()).sum(1), a * (theta - t)

    return objective, calls


def test_each_problem_reaches_its_minimiser():
    g = torch.Generator().manual_seed(0)
    # Condition numbers 1, 10 and 100: three problems of very different difficulty in one batch.
    curvatures = torch.stack([torch.logspace(0, k, 30, dtype=torch.float64) for k in (0, 1, 2)])
    targets = torch.randn(3, 30, generator=g, dtype=torch.float64)
    objective, _ = quadratics(curvatures, targets)
    result = batched_lbfgs(
        objective, torch.zeros(3, 30, dtype=torch.float64), max_iter=500, tol=1e-9, tolerance_change=0.0
    )
    assert result.converged.all()
    torch.testing.assert_close(result.theta, targets, atol=1e-8, rtol=0)
    assert result.iterations[0] < result.iterations[1] < result.iterations[2]


def test_a_batch_gives_what_each_problem_gives_alone_and_drops_finished_ones():
    g = torch.Generator().manual_seed(1)
    curvatures = torch.stack([torch.logspace(0, k, 20, dtype=torch.float64) for k in (1, 3)])
    targets = torch.randn(2, 20, generator=g, dtype=torch.float64)
    start = torch.zeros(2, 20, dtype=torch.float64)
    objective, calls = quadratics(curvatures, targets)
    together = batched_lbfgs(objective, start, max_iter=300, tol=1e-8, tolerance_change=0.0)
    for problem in range(2):
        alone_objective, _ = quadratics(curvatures[problem : problem + 1], targets[problem : problem + 1])
        alone = batched_lbfgs(
            alone_objective, start[problem : problem + 1], max_iter=300, tol=1e-8, tolerance_change=0.0
        )
        assert torch.equal(alone.theta[0], together.theta[problem])
        assert alone.iterations[0] == together.iterations[problem]
    # Once the easy problem has converged, the calls evaluate the hard one only.
    easy_iterations = int(together.iterations[0])
    assert easy_iterations < int(together.iterations[1])
    last_with_easy = max(i for i, c in enumerate(calls) if 0 in c)
    assert (
        sum(0 in c for c in calls) >= easy_iterations + 1
    )  # its start, then one call per iteration at least
    assert calls[last_with_easy + 1 :] and all(c == [1] for c in calls[last_with_easy + 1 :])


def test_a_problem_at_its_minimiser_runs_no_iteration():
    curvatures = torch.ones(2, 5, dtype=torch.float64)
    targets = torch.stack([torch.zeros(5), torch.ones(5)]).double()
    objective, _ = quadratics(curvatures, targets)
    result = batched_lbfgs(objective, torch.zeros(2, 5, dtype=torch.float64), tol=1e-10, tolerance_change=0.0)
    assert result.iterations.tolist()[0] == 0 and result.iterations[1] > 0
    assert result.converged.all()
    torch.testing.assert_close(result.theta, targets, atol=1e-10, rtol=0)
