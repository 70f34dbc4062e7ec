"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) at batch level. OPT-IN.

Labels stay integers: a mixed batch carries
    "label"       int32 [B]    the first label of each row (unchanged)
    "label_mix"   int32 [B]    the label of the row it was mixed with
    "mix_weight"  float32 [B]  weight w of "label" (1 - w for "label_mix")
and the loss must be  w * CE(logits, label) + (1 - w) * CE(logits, label_mix).
An engine that only reads "label" would silently train on wrong targets, so the
pipeline adds mixing only when make_pipeline(mixup_alpha=..., cutmix_alpha=...) asks.
The partner of row i is row perm[i] of the SAME per-process batch; the
permutation and lambda come from rng([seed, process_index, batch_number]).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def mixup(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
          alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """images [B, h, w, c] -> (mixed images, label_a [B], label_b [B], lam).

    mixed = lam * images + (1 - lam) * images[perm], lam ~ Beta(alpha, alpha).
    """
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(images.shape[0])
    mixed = (lam * images.astype(np.float32)
             + (1.0 - lam) * images[perm].astype(np.float32)).astype(images.dtype)
    return mixed, labels, labels[perm], lam


def cutmix(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
           alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Pastes a random box of images[perm] into images; lam = kept area fraction.

    Returns (mixed images [B, h, w, c], label_a [B], label_b [B], lam) where lam
    is recomputed from the clipped box, as in the paper's code.
    """
    batch, height, width = images.shape[:3]
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(batch)
    cut = np.sqrt(1.0 - lam)
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
    top, bottom = np.clip([cy - box_h // 2, cy + box_h // 2], 0, height)
    left, right = np.clip([cx - box_w // 2, cx + box_w // 2], 0, width)
    mixed = images.copy()
    mixed[:, top:bottom, left:right] = images[perm, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, labels, labels[perm], float(lam)


@dataclasses.dataclass(frozen=True)
class BatchMixer:
    """Applies mixup or cutmix (chosen 50/50 when both alphas > 0) to a batch."""

    mixup_alpha: float
    cutmix_alpha: float
    seed: int
    process_index: int

    def __post_init__(self):
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0; got "
                             f"{self.mixup_alpha}, {self.cutmix_alpha}")

    def __call__(self, batch: dict[str, np.ndarray], batch_number: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.process_index, batch_number, 0x313])
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or rng.uniform() < 0.5)
        mix = cutmix if use_cutmix else mixup
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        images, label_a, label_b, lam = mix(batch["image"], batch["label"], rng, alpha)
        size = label_a.shape[0]
        return {**batch, "image": images, "label": label_a, "label_mix": label_b,
                "mix_weight": np.full((size,), lam, np.float32)}
