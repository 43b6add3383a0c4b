"""Pure loss functions (no state, no Lightning), each tested against a plain-loop reference."""

from rsssl.losses.contrastive import info_nce, info_nce_logits, nt_xent, nt_xent_logits

__all__ = ["info_nce", "info_nce_logits", "nt_xent", "nt_xent_logits"]
