"""L-BFGS over a batch of independent smooth problems, one tensor op per step for all of them.

Each problem keeps its own curvature history, step length and stopping test, so the answer for a
problem is what a lone L-BFGS run on it would give; what the problems share is the objective call,
which evaluates every still-running problem in one batched operation (on a GPU: one kernel instead
of one per problem; on a CPU: one pass over the data instead of one per problem). A problem leaves
the batch as soon as it has converged, so the batch shrinks as the cheap problems finish.

The step length comes from a backtracking Armijo search started at 1 (at the first iteration at
min(1, 1 / ||g||_1), as `torch.optim.LBFGS` does); a curvature pair with s.y <= 0 is not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# objective(theta (A x P), problems (A,) int64 indices into the batch) -> (loss (A,), gradient (A x P))
BatchedObjective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

ARMIJO_C1 = 1e-4
MAX_HALVINGS = 40


@dataclass
class BatchedResult:
    """The minimisers (G x P), the iterations each problem ran, and whether its gradient test passed."""

    theta: Tensor
    iterations: Tensor
    converged: Tensor


@dataclass
class _History:
    """The running problems' last `size` curvature pairs, in one ring shared by all of them (every
    running problem adds one pair per iteration; a rejected pair is stored with rho = 0, a no-op)."""

    steps: Tensor  # A x size x P
    grad_changes: Tensor  # A x size x P
    rho: Tensor  # A x size
    gamma: Tensor  # A: the initial inverse-Hessian scale
    count: int = 0

    @classmethod
    def empty(cls, running: int, size: int, width: int, like: Tensor) -> _History:
        zeros = like.new_zeros((running, size, width))
        return cls(zeros, zeros.clone(), like.new_zeros((running, size)), like.new_ones(running))

    def keep(self, rows: Tensor) -> None:
        self.steps, self.grad_changes = self.steps[rows], self.grad_changes[rows]
        self.rho, self.gamma = self.rho[rows], self.gamma[rows]

    def add(self, step: Tensor, grad_change: Tensor) -> None:
        slot = self.count % self.steps.shape[1]
        curvature = (step * grad_change).sum(1)
        accepted = curvature > 1e-10
        self.steps[:, slot], self.grad_changes[:, slot] = step, grad_change
        self.rho[:, slot] = torch.where(accepted, 1.0 / curvature.clamp_min(1e-10), 0.0)
        scale = curvature / grad_change.square().sum(1).clamp_min(1e-30)
        self.gamma = torch.where(accepted, scale, self.gamma)
        self.count += 1

    def direction(self, grad: Tensor) -> Tensor:
        """-H grad by the two-loop recursion, H the L-BFGS inverse-Hessian estimate per problem."""
        size = self.steps.shape[1]
        slots = [(self.count - 1 - i) % size for i in range(min(self.count, size))]  # newest first
        q = -grad
        alphas = []
        for slot in slots:
            alpha = self.rho[:, slot] * (self.steps[:, slot] * q).sum(1)
            q = q - alpha[:, None] * self.grad_changes[:, slot]
            alphas.append(alpha)
        r = self.gamma[:, None] * q
        for slot, alpha in zip(reversed(slots), reversed(alphas), strict=True):
            beta = self.rho[:, slot] * (self.grad_changes[:, slot] * r).sum(1)
            r = r + (alpha - beta)[:, None] * self.steps[:, slot]
        return r


def batched_lbfgs(
    objective: BatchedObjective,
    theta: Tensor,
    max_iter: int = 200,
    tol: float = 1e-4,
    history_size: int = 20,
    tolerance_change: float = 1e-12,
) -> BatchedResult:
    """Minimise G independent problems from `theta` (G x P).

    A problem stops when its largest gradient entry is <= `tol` (converged), after `max_iter`
    iterations, when its loss changes by less than `tolerance_change`, or when no step along its
    direction decreases the loss.
    """
    result = theta.detach().clone()
    count = theta.shape[0]
    iterations = torch.zeros(count, dtype=torch.long, device=theta.device)
    converged = torch.zeros(count, dtype=torch.bool, device=theta.device)
    running = torch.arange(count, device=theta.device)
    current = result.clone()
    loss, grad = objective(current, running)
    history = _History.empty(count, history_size, theta.shape[1], theta)
    for iteration in range(max_iter):
        done = grad.abs().amax(1) <= tol
        converged[running[done]] = True
        keep = torch.nonzero(~done).flatten()
        running, current, loss, grad = running[keep], current[keep], loss[keep], grad[keep]
        history.keep(keep)
        if running.numel() == 0:
            break
        if iteration == 0:
            history.gamma = torch.clamp(1.0 / grad.abs().sum(1), max=1.0)
        direction = history.direction(grad)
        new_loss, new_grad, step, moved = _armijo(objective, running, current, loss, grad, direction)
        iterations[running] += 1
        history.add(step, new_grad - grad)
        stalled = ~moved | ((loss - new_loss).abs() < tolerance_change)
        current, loss, grad = current + step, new_loss, new_grad
        result[running] = current
        if stalled.any():
            keep = torch.nonzero(~stalled).flatten()
            running, current, loss, grad = running[keep], current[keep], loss[keep], grad[keep]
            history.keep(keep)
    if running.numel():
        converged[running] = grad.abs().amax(1) <= tol
    return BatchedResult(result, iterations, converged)


def _armijo(
    objective: BatchedObjective, running: Tensor, theta: Tensor, loss: Tensor, grad: Tensor, direction: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-problem backtracking from step 1 until loss(theta + t d) <= loss + c1 t g.d; returns the new
    loss and gradient, the step taken and whether a decreasing step was found (else the step is 0
    and the loss and gradient are the old ones)."""
    slope = (grad * direction).sum(1)
    direction = torch.where((slope < 0)[:, None], direction, -grad)  # a non-descent direction: steepest
    slope = (grad * direction).sum(1)
    length = torch.ones_like(loss)
    new_loss, new_grad = loss.clone(), grad.clone()
    moved = torch.zeros_like(loss, dtype=torch.bool)
    pending = torch.arange(len(running), device=theta.device)
    for _ in range(MAX_HALVINGS):
        trial_loss, trial_grad = objective(
            theta[pending] + length[pending, None] * direction[pending], running[pending]
        )
        ok = trial_loss <= loss[pending] + ARMIJO_C1 * length[pending] * slope[pending]
        accepted = pending[ok]
        new_loss[accepted], new_grad[accepted], moved[accepted] = trial_loss[ok], trial_grad[ok], True
        pending = pending[~ok]
        if pending.numel() == 0:
            break
        length[pending] *= 0.5
    length = torch.where(moved, length, 0.0)
    return new_loss, new_grad, length[:, None] * direction, moved
