"""Masked reconstruction loss (MAE-style): squared error on the masked tokens only."""

from __future__ import annotations

from torch import Tensor


def masked_mse(prediction: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean of (prediction − target)² over the entries `valid` marks (all when None).

    The caller passes the masked tokens alone, so visible tokens never count; `valid` leaves out
    padding (bands beyond the sensor's, in the last band group)."""
    error = (prediction.float() - target.float()) ** 2
    if valid is None:
        return error.mean()
    valid = valid.expand_as(error)
    return error[valid].sum() / valid.sum().clamp_min(1)
