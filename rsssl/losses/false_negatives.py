"""FALSE: false-negative self-determination and confidence calibration (Zhang et al., GRSL 2022).

A wrapper around any NT-Xent or InfoNCE logit matrix (rows = anchors, `targets` = each row's
positive column, −inf = masked or self, never counted). With S_ij = exp(L_ij):

* FNSD picks, among a row's finite negatives, the one whose S_ij is closest to the positive's
  S_{i,t_i}: one global arg-min over all candidate pairs (`scope="batch"`, the official code; exact
  ties are all kept, square logits search only j > i) or one per anchor (`scope="anchor"`).
* A pick is accepted only if the anchor's positive cosine, temperature · L_{i,t_i}, is ≥ `threshold`.
* FNCC moves α·S_ij of each accepted pick from the negatives to the positive (α = `confidence`), and
  the loss is −mean_i log(Pos_i / (Pos_i + Neg_i)), or −mean_i log(Pos_i / Neg_i) without the
  positive in the denominator. With nothing accepted it is exactly `nt_xent` / `info_nce`.

Selection is discrete (no gradient); the loss is differentiable through Pos and Neg. All arithmetic
runs with autocast off in at least float32, and the log-ratio goes through logsumexp.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from rsssl.losses.contrastive import info_nce, info_nce_logits, nt_xent, nt_xent_logits

Scope = Literal["batch", "anchor"]
SCOPES = ("batch", "anchor")


def _check_settings(temperature: float, threshold: float, confidence: float, scope: str) -> None:
    """Raise a ValueError naming the first bad setting."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be 'batch' or 'anchor', got {scope!r}")
    if not 0.0 < float(confidence) <= 1.0:  # also rejects NaN
        raise ValueError(f"confidence must be in (0, 1], got {confidence!r}")
    if not float(temperature) > 0.0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    if math.isnan(float(threshold)):
        raise ValueError("threshold must be a number, got NaN")


def _check_logits(logits: Tensor, targets: Tensor) -> None:
    """Logits must be rows × columns with one in-range integer target per row."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (anchors × candidates), got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must hold one column per logits row: logits {tuple(logits.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer column indices, got {targets.dtype}")
    if targets.numel() and (targets.min() < 0 or targets.max() >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1]}), the logits' columns")


def _full_precision(x: Tensor) -> torch.autocast:
    """A context that turns autocast off, so nothing below is recast to half precision."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def _log_distance(logits: Tensor, positive: Tensor) -> Tensor:
    """log|exp(L_ij) − exp(L_{i,t_i})|, exact in log space (−inf where they are equal).

    A strictly increasing function of the code's unscaled distance |S_ij − Pos_i|, with the same
    scale for every row, so arg-mins (global or per row) and exact ties are those of the raw
    distances, while exp(L) cannot overflow however small τ is.
    """
    high = torch.maximum(logits, positive)
    gap = (logits - positive).abs()
    return high + torch.log(-torch.expm1(-gap))


def select_false_negatives(
    logits: Tensor,
    targets: Tensor,
    temperature: float,
    threshold: float = 0.9,
    scope: Scope = "batch",
    upper_triangle: bool = True,
) -> Tensor:
    """FNSD + gate: the accepted false negatives as a (k, 2) long tensor of (row, column), sorted.

    Candidates are each row's finite non-target columns (and, in batch scope on square logits with
    `upper_triangle`, only j > i, as the official code on NT-Xent logits). Batch scope keeps every
    pair at the global minimum distance, anchor scope each row's first arg-min; a pick then
    survives only if temperature · L_{i,t_i} ≥ threshold. Only the anchor's row is ever selected,
    never its mirror (j, i).
    """
    _check_settings(temperature, threshold, 1.0, scope)
    _check_logits(logits, targets)
    return _select(logits, targets.long(), temperature, threshold, scope, upper_triangle)


def _select(
    logits: Tensor, targets: Tensor, temperature: float, threshold: float, scope: str, upper_triangle: bool
) -> Tensor:
    """`select_false_negatives` on checked inputs, in float64 (see `_log_distance`)."""
    with torch.no_grad(), _full_precision(logits):
        x = logits.detach().to(torch.float64)
        rows = torch.arange(x.shape[0], device=x.device)
        positive = x[rows, targets].unsqueeze(1)
        candidate = torch.isfinite(x)
        candidate[rows, targets] = False
        if scope == "batch" and upper_triangle and x.shape[0] == x.shape[1]:
            candidate &= torch.ones_like(candidate).triu(diagonal=1)
        distance = _log_distance(x, positive).masked_fill(~candidate, float("inf"))
        picked = torch.zeros_like(candidate)
        if scope == "batch":
            best = distance.min() if distance.numel() else distance.new_tensor(float("inf"))
            picked = candidate & (distance == best)
        else:
            column = distance.argmin(dim=1, keepdim=True) if x.shape[1] else None
            if column is not None:
                picked.scatter_(1, column, True)
                picked &= candidate
        gate = temperature * positive >= threshold
        return torch.nonzero(picked & gate)


def false_negative_loss(
    logits: Tensor,
    targets: Tensor,
    temperature: float,
    threshold: float = 0.9,
    confidence: float = 1.0,
    scope: Scope = "batch",
    upper_triangle: bool = True,
    include_positive_in_denominator: bool = True,
) -> Tensor:
    """FALSE loss on NT-Xent / InfoNCE logits: FNSD picks false negatives, FNCC moves α·S of each
    accepted one from Neg to Pos, then −mean log(Pos / (Pos + Neg)) (or log(Pos / Neg)).

    `temperature` is the one that produced the logits (the gate compares temperature · L_pos, a
    cosine, with `threshold`). Pos + Neg is the row's total, which FNCC conserves; Neg alone is
    logsumexp over the negatives weighted 1 − α where accepted, so no subtraction is ever done.
    A row whose negatives are all accepted with α = 1 and the positive excluded gives −inf.
    """
    _check_settings(temperature, threshold, confidence, scope)
    _check_logits(logits, targets)
    targets = targets.long()
    with _full_precision(logits):
        x = logits.to(torch.promote_types(logits.dtype, torch.float32))
        pairs = _select(x, targets, temperature, threshold, scope, upper_triangle)
        rows = torch.arange(x.shape[0], device=x.device)
        positive = F.one_hot(targets, x.shape[1]).bool()
        accepted = torch.zeros_like(positive)
        accepted[pairs[:, 0], pairs[:, 1]] = True
        # Log-weights of each column in Pos: 1 for the target, α for accepted picks, 0 elsewhere.
        weight_pos = torch.full_like(x, float("-inf"))
        weight_pos[rows, targets] = 0.0
        weight_pos[accepted] = math.log(confidence)
        log_pos = torch.logsumexp(x + weight_pos, dim=1)
        if include_positive_in_denominator:
            log_denominator = torch.logsumexp(x, dim=1)
        else:
            # Log-weights in Neg: 1 for a negative, 1 − α for an accepted pick, 0 for the target.
            weight_neg = torch.zeros_like(x).masked_fill(positive, float("-inf"))
            weight_neg[accepted] = math.log1p(-confidence) if confidence < 1.0 else float("-inf")
            log_denominator = torch.logsumexp(x + weight_neg, dim=1)
        return (log_denominator - log_pos).mean()


@dataclass(frozen=True)
class FalseNegativeSettings:
    """FALSE settings a method holds once (validated here), so call sites pass only logits."""

    threshold: float = 0.9
    confidence: float = 1.0
    scope: Scope = "batch"
    upper_triangle: bool = True

    def __post_init__(self) -> None:
        _check_settings(1.0, self.threshold, self.confidence, self.scope)

    def loss(
        self,
        logits: Tensor,
        targets: Tensor,
        temperature: float,
        include_positive_in_denominator: bool = True,
    ) -> Tensor:
        """`false_negative_loss` with these settings."""
        return false_negative_loss(
            logits,
            targets,
            temperature,
            self.threshold,
            self.confidence,
            self.scope,
            self.upper_triangle,
            include_positive_in_denominator,
        )

    def select(self, logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
        """`select_false_negatives` with these settings: the accepted (row, column) pairs."""
        return select_false_negatives(
            logits, targets, temperature, self.threshold, self.scope, self.upper_triangle
        )


def nt_xent_with(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    include_positive_in_denominator: bool = True,
    false_negatives: FalseNegativeSettings | None = None,
) -> Tensor:
    """NT-Xent of two views, through the FALSE loss when `false_negatives` is set: the one call
    SimCLR, GLCNet and any NT-Xent method make."""
    if false_negatives is None:
        return nt_xent(z1, z2, temperature, include_positive_in_denominator)
    logits, targets = nt_xent_logits(z1, z2, temperature)
    return false_negatives.loss(logits, targets, temperature, include_positive_in_denominator)


def info_nce_with(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None,
    temperature: float,
    exclude: Tensor | None = None,
    false_negatives: FalseNegativeSettings | None = None,
) -> Tensor:
    """InfoNCE (queue or in-batch negatives), through the FALSE loss when `false_negatives` is set:
    the one call MoCo, SauMoCo and any InfoNCE method make."""
    if false_negatives is None:
        return info_nce(query, key, queue, temperature, exclude)
    logits, targets = info_nce_logits(query, key, queue, temperature, exclude)
    return false_negatives.loss(logits, targets, temperature)


def false_negative_settings(settings: Mapping | None) -> FalseNegativeSettings | None:
    """A method's `false_negatives` config (a mapping of FalseNegativeSettings fields, or None/empty
    for off) as settings; a ValueError names an unknown key."""
    if not settings:
        return None
    known = {f.name for f in fields(FalseNegativeSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"false_negatives: unknown setting {unknown}; known: {sorted(known)}")
    return FalseNegativeSettings(**dict(settings))
