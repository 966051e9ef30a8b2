"""The prize loss and the validation metrics, over kept pixels.

Loss (``seed-conventions.md``, "Loss and training"): on ``p = sigmoid(logits)``
with targets smoothed to ``0.9 t + 0.1 (1 - t)``, ``0.5 * dice + 0.5 * BCE``,
both over kept pixels only; dice over the whole batch
``1 - (2 sum p t k + 1e-8) / (sum p k + sum t k + 1e-8)``; BCE averaged over
kept pixels in float32; zero when no pixel is kept.

Metrics count a pixel as ink when ``p > 0.5``. The **kept** metrics use kept
pixels only. The **prize** variant reproduces the prize's ``val_iou``: every
pixel of the patch counts, with the ink target set to 0 where ignored and the
prediction left as it is (an ignored pixel the model calls ink is a false
positive, one it calls background a true negative).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prize_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The prize's smoothed dice + BCE over kept pixels (float32).

    Parameters
    ----------
    logits, target, keep : torch.Tensor
        ``(B, 32, 32)``; target and keep 0/1.

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    logits, target, keep = logits.float(), target.float(), keep.float()
    kept = keep.sum()
    if kept == 0:
        return logits.sum() * 0.0  # keeps the graph: a zero gradient
    t = 0.9 * target + 0.1 * (1 - target)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * t * keep).sum() + 1e-8) / ((p * keep).sum() + (t * keep).sum() + 1e-8)
    bce = (F.binary_cross_entropy_with_logits(logits, t, reduction="none") * keep).sum() / kept
    return 0.5 * dice + 0.5 * bce


class Counts:
    """Running confusion counts for the kept and the prize-style metrics."""

    FIELDS = ("tp", "fp", "fn", "tn", "tp_all", "fp_all", "fn_all", "tn_all")

    def __init__(self) -> None:
        self.values = dict.fromkeys(self.FIELDS, 0)

    def add(self, logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> None:
        pred = logits.float() > 0  # sigmoid > 0.5
        t, k = target > 0.5, keep > 0.5
        ink = t & k  # the target is 0 where ignored
        v = self.values
        v["tp"] += int((pred & ink & k).sum())
        v["fp"] += int((pred & ~ink & k).sum())
        v["fn"] += int((~pred & ink & k).sum())
        v["tn"] += int((~pred & ~ink & k).sum())
        v["tp_all"] += int((pred & ink).sum())
        v["fp_all"] += int((pred & ~ink).sum())
        v["fn_all"] += int((~pred & ink).sum())
        v["tn_all"] += int((~pred & ~ink).sum())

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.values[f] for f in self.FIELDS], dtype=torch.float64)

    def load_tensor(self, t: torch.Tensor) -> None:
        self.values = {f: int(x) for f, x in zip(self.FIELDS, t.tolist(), strict=True)}

    def metrics(self) -> dict[str, float]:
        """IoU, F1, precision, recall (kept pixels) and the same with the ``_prize`` suffix."""
        out = {}
        for suffix, (tp, fp, fn) in (("", ("tp", "fp", "fn")), ("_prize", ("tp_all", "fp_all", "fn_all"))):
            a, b, c = (self.values[k] for k in (tp, fp, fn))
            out[f"iou{suffix}"] = a / (a + b + c) if a + b + c else 1.0
            out[f"precision{suffix}"] = a / (a + b) if a + b else 1.0
            out[f"recall{suffix}"] = a / (a + c) if a + c else 1.0
            p, r = out[f"precision{suffix}"], out[f"recall{suffix}"]
            out[f"f1{suffix}"] = 2 * p * r / (p + r) if p + r else 0.0
        return out
