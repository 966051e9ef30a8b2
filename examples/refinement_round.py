"""One refinement round, headless, on the phantom: predict, propose, edit, save, fine-tune, predict, compare.

    .venv/bin/python examples/refinement_round.py --out /tmp/phoenix-round

The loop the prize team ran by hand, as plain API calls:

1. make the phantom segment and a starting network (the tiny ``demo`` configuration
   of the prize architecture, so that it runs on a CPU in a minute or two);
2. predict one 16-layer window (layers 5..20) over the segment;
3. propose ink (threshold, small specks dropped, holes filled) and an ignore mask
   where the model is unsure;
4. "edit" the proposal as a user would: add the ink the phantom's true label shows
   in one corner, clear the ignore there;
5. save the round (``label.png``, ``ignore.png`` and ``rounds/round-001/``);
6. fine-tune briefly on the saved labels;
7. predict again with the fine-tuned weights and compare the two predictions and
   the two rounds' masks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import napari_phoenix as nx


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="phoenix-round", help="working folder")
    parser.add_argument("--steps", type=int, default=3, help="fine-tuning steps")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # 1. data and a starting network
    seg_dir = out / "segment"
    if not (seg_dir / "layers").is_dir():
        nx.make_phantom(seg_dir, height=384, width=512, seed=2)
    seg = nx.open_segment(seg_dir)
    truth = nx.read_mask(seg_dir / "label.png")
    mask = seg.read("mask")
    start = out / "models" / "start"
    if not start.with_suffix(".json").exists():
        import torch

        torch.manual_seed(0)
        nx.save_model(nx.build_network(nx.ModelConfig.demo()), start, provenance={"note": "untrained demo network"})
    model = nx.load_model(start.with_suffix(".json"))

    # 2. predict window 5 (layers 5..20)
    before = nx.predict(seg.stack, model, windows=[5], mask=mask, stride=1, tta=0, device="cpu")
    prob = np.asarray(before.windows[5])

    # 3. proposals
    ink = nx.propose_ink(prob, threshold=float(np.quantile(prob[mask], 0.9)), min_size=16, max_hole=16)
    ignore = nx.propose_ignore(prob, band=(0.45, 0.55), margin=2, mask=mask)

    # 4. the user's edit: the true ink of the top-left quarter painted in, its ignore cleared
    h, w = ink.shape
    ink[: h // 2, : w // 2] = truth[: h // 2, : w // 2]
    ignore[: h // 2, : w // 2] = False

    # 5. save the round
    first = nx.save_round(seg_dir, ink, ignore, note="proposal + top-left quarter painted",
                          checkpoint=start.with_suffix(".safetensors"), prediction=before.provenance)

    # 6. fine-tune on the saved labels
    run = out / "runs" / f"round-{first.number:03d}"
    result = nx.train(nx.TrainConfig(chunks=(str(seg_dir),), out=str(run), init=str(start.with_suffix(".json")),
                                     epochs=1, steps_per_epoch=args.steps, batch_size=2, augment=False,
                                     device="cpu", val_fraction=0.2))  # fmt: skip
    tuned = nx.load_model(run / "best.json")

    # 7. predict again, compare
    after = nx.predict(seg.stack, tuned, windows=[5], mask=mask, stride=1, tta=0, device="cpu")
    prob2 = np.asarray(after.windows[5])
    second = nx.save_round(seg_dir, nx.propose_ink(prob2, float(np.quantile(prob2[mask], 0.9)), 16, 16), ignore,
                           note="proposal from the fine-tuned model", checkpoint=run / "best.safetensors")  # fmt: skip
    _, stats = nx.compare_rounds(first, second)
    summary = {
        "rounds": [r.number for r in nx.list_rounds(seg_dir)],
        "prediction_change": float(np.abs(prob2 - prob).mean()),
        "before_vs_truth": nx.evaluate(prob, truth, seg.read("ignore"), mask, threshold=0.5)["iou"],
        "after_vs_truth": nx.evaluate(prob2, truth, seg.read("ignore"), mask, threshold=0.5)["iou"],
        "rounds_compared": stats,
        "fine_tune_val_iou": result["best_iou"],
    }
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
