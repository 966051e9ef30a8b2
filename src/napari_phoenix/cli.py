"""The ``phoenix`` command line: ``phoenix demo``, ``phoenix phantom``, ``phoenix info``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and not os.environ.get("CI")


def _drain(events, desc: str) -> list:
    """Show a job's progress events as a progress bar; return their results."""
    from tqdm import tqdm

    results = []
    with tqdm(desc=desc, unit="step", disable=None) as bar:
        for ev in events:
            bar.total = ev.total
            bar.n = ev.done
            bar.set_postfix_str(ev.message, refresh=True)
            results.append(ev.result)
    return results


def cmd_demo(args) -> int:
    from .core.preview import iter_previews
    from .core.sample import sample_segment
    from .core.segment import open_segment

    out = Path(args.out).resolve()
    seg_dir = sample_segment(args.dtype, folder=out / f"sample-segment-{args.dtype}")
    segment = open_segment(seg_dir)
    z, h, w = segment.stack.shape
    print(f"sample segment: {seg_dir} ({z} layers of {w} x {h} px, {segment.stack.dtype})")
    written = _drain(iter_previews(segment, out / "previews"), "previews")
    print(f"wrote {len(written)} images of the layers and masks to {out / 'previews'}")
    prediction = _demo_train_and_predict(seg_dir, out, args) if args.train_steps > 0 else None
    if args.viewer == "yes" or (args.viewer == "auto" and _has_display()):
        import napari

        demo_viewer(seg_dir, prediction)
        napari.run()
    else:
        print("no display: not opening napari (use --viewer yes to force it)")
    return 0


def demo_viewer(seg_dir: Path, prediction: Path | None, viewer=None):
    """napari showing the sample segment and, when there is one, the demo's prediction over it."""
    from ._napari.viewer import show_segment

    viewer = show_segment(seg_dir, viewer)
    if prediction is not None:
        import zarr

        group = zarr.open_group(str(prediction), mode="r")
        viewer.add_image(group["composite"], name="prediction", colormap="inferno", blending="additive",
                         opacity=0.7, contrast_limits=(0, 1), metadata={"phoenix": dict(group.attrs["phoenix"])})
    return viewer


def _demo_train_and_predict(seg_dir: Path, out: Path, args) -> Path:
    """Train the demo network on the sample segment (the recipe of ``benchmarks/bench_train.py``),
    predict the segment with its best weights; return the prediction store."""
    from .core.model.checkpoint import load_model
    from .core.overlay import overlay_png
    from .core.predict import PredictParams, iter_predict
    from .core.train.loop import CPU_DEMO, TrainConfig, iter_train

    per_epoch = min(CPU_DEMO["steps_per_epoch"], args.train_steps)
    epochs = -(-args.train_steps // per_epoch)
    config = TrainConfig(**{**CPU_DEMO, "steps_per_epoch": per_epoch}, chunks=(str(seg_dir),), out=str(out / "run"),
                         epochs=epochs, t_max=epochs, device=args.device, cache="memory")  # fmt: skip
    print(f"training the demo network on the sample segment: {epochs} x {per_epoch} steps of {config.batch_size} "
          f"patches (on a CPU about a minute per 80 steps); the run is in {config.out}")
    done = _drain(iter_train(config), "training")[-1]
    print(f"best validation IoU {done['best_iou']:.3f} (random {config.val_fraction:.0%} of the patches)")
    segment_stack, mask, prov = open_for_inference(str(seg_dir), None, False)
    store = out / "prediction.zarr"
    params = PredictParams(windows=(config.first_layer,), stride=args.stride, tta=0, device=args.device,
                           out=str(store), overwrite=True)  # fmt: skip
    result = _drain(iter_predict(segment_stack, load_model(Path(config.out) / "best.json"), params, mask,
                                 provenance=prov), "prediction")[-1]  # fmt: skip
    png = overlay_png(result.composite, out / "previews" / "prediction.png")
    print(f"wrote the ink prediction to {store} and {png}")
    return store


def cmd_phantom(args) -> int:
    from .core.phantom import make_phantom

    dest = make_phantom(
        args.dest, height=args.height, width=args.width, dtype=args.dtype, seed=args.seed, layers=args.layers
    )
    print(f"wrote phantom segment to {dest}")
    return 0


def _chunk_ids(text: str | None) -> tuple[int, ...] | None:
    """``"1,3-5"`` -> (1, 3, 4, 5); empty -> None (all chunks)."""
    from .core.chunks import parse_chunk_ids

    return parse_chunk_ids(text)


def cmd_split(args) -> int:
    from .core.chunks import SplitParams, iter_split

    from .core.contrast import parse_points

    points = parse_points(args.points) if args.points else None
    params = SplitParams(
        segment=args.segment,
        chunks=_chunk_ids(args.chunks),
        chunk_width=args.chunk_width,
        first_chunk_offset=args.offset,
        contrast=not args.no_contrast,
        out=args.out,
        workers=args.workers,
        verify=args.verify,
        overwrite=args.overwrite,
        **({"points": points} if points else {}),
    )
    written = [p for batch in _drain(iter_split(params), "chunks") for p in (batch or [])]
    kind = "parts" if args.no_contrast else "parts_contrasted"
    where = Path(args.out or args.segment) / kind
    print(f"wrote {len(written)} files under {where}" if written else f"nothing to do: {where} is complete")
    return 0


def cmd_info(args) -> int:
    from .core.segment import is_segment, open_segment
    from .core.stack import open_stack

    if is_segment(args.path):
        seg = open_segment(args.path)
        stack, files = seg.stack, seg.files
    else:
        stack, files = open_stack(args.path), {}
    z, h, w = stack.shape
    print(f"{stack.source}: {stack.kind}, {z} layers ({stack.layer_numbers[0]}–{stack.layer_numbers[-1]}), "
          f"{w:,} x {h:,} px, {stack.dtype}, {len(stack.levels)} resolution level(s)")
    for role, path in files.items():
        print(f"  {role}: {path}")
    return 0


def cmd_convert(args) -> int:
    from .core.model.checkpoint import convert_checkpoint

    provenance = {"note": args.note} if args.note else None
    meta = convert_checkpoint(args.checkpoint, args.out, trusted=args.trusted, provenance=provenance)
    weights = meta.with_suffix(".safetensors")
    info = json.loads(meta.read_text())
    print(f"wrote {weights} and {meta.name}: {info['architecture']}, "
          f"{info['weights']['parameters']:,} parameters, from {info['provenance']['parent_name']} "
          f"(sha256 {info['provenance']['parent_sha256'][:12]}…)")
    return 0


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.replace(" ", "").split(",") if t)


def open_for_inference(path: str, mask: str | None, contrast: bool):
    """(stack, layer numbers kept, mask or None, provenance) for ``phoenix infer``."""
    from dataclasses import replace

    from .core.contrast import SEED_POINTS
    from .core.contrast import contrast as apply_contrast
    from .core.masks import read_mask
    from .core.segment import is_segment, open_segment
    from .core.stack import open_stack

    prov = {"input": str(Path(path).resolve())}
    if is_segment(path):
        seg = open_segment(path)
        stack = seg.stack
        mask_path = seg.files.get("mask") if mask in (None, "auto") else (None if mask == "none" else Path(mask))
    else:
        stack = open_stack(path)
        mask_path = None if mask in (None, "auto", "none") else Path(mask)
    mask_arr = read_mask(mask_path) if mask_path else None
    prov["mask_file"] = str(mask_path) if mask_path else None
    if contrast:
        stack = replace(stack, data=apply_contrast(stack.data))
        prov["contrast"] = {"applied_by": "phoenix infer --contrast", "points": [list(p) for p in SEED_POINTS]}
    else:
        prov["contrast"] = "as stored (e.g. parts_contrasted from phoenix split)"
    return stack, mask_arr, prov


def cmd_infer(args) -> int:
    import time

    from tqdm import tqdm

    from .core.model.checkpoint import load_model
    from .core.model.inference import resolve_device
    from .core.predict import PredictParams, iter_predict

    stack, mask, prov = open_for_inference(args.input, args.mask, args.contrast)
    model = load_model(args.checkpoint, trusted=args.trusted)
    params = PredictParams(
        windows=_ints(args.windows), stride=args.stride, tta=args.tta, batch_size=args.batch_size,
        device=args.device, precision=args.precision, region=args.region, composite=args.composite,
        out=args.out, overwrite=args.overwrite,
    )  # fmt: skip
    if resolve_device(params.device).type == "cpu":
        print("phoenix: running on the CPU; expect about a second per patch for the prize model", file=sys.stderr)
    started, patches, result = time.perf_counter(), 0, None
    with tqdm(desc="regions", unit="region", disable=None) as bar:
        for ev in iter_predict(stack, model, params, mask, provenance=prov):
            bar.total, bar.n = ev.total, ev.done
            if isinstance(ev.result, dict):
                patches += ev.result["patches"]
                rate = patches / max(1e-9, time.perf_counter() - started)
                bar.set_postfix_str(f"{rate:,.1f} patches/s", refresh=True)
            else:
                bar.refresh()
            result = ev.result
    print(f"wrote {result.store}: windows {', '.join(map(str, params.windows))} + composite "
          f"({result.provenance['patches']:,} patches in {result.provenance['seconds']:.1f} s on "
          f"{result.provenance['device']})")
    if args.png:
        from .core.overlay import overlay_png

        overlay_png(result.composite, args.png)
        print(f"wrote {args.png}")
    return 0


def cmd_train(args) -> int:
    from .core.train.loop import TrainConfig, iter_train

    config = TrainConfig.from_toml(args.config)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("device", args.device), ("out", args.out)) if v}
    if overrides:
        config = TrainConfig(**{**config.to_dict(), **overrides})
    from tqdm import tqdm

    last, quiet = None, os.environ.get("RANK", "0") != "0"  # under torchrun: rank 0 reports
    with tqdm(desc="training", unit="step", disable=True if quiet else None) as bar:
        for ev in iter_train(config):
            bar.total, bar.n = ev.total, ev.done
            bar.set_postfix_str(ev.message, refresh=True)
            if ev.result and ev.result.get("kind") == "epoch" and not quiet:
                tqdm.write(ev.message)
            last = ev
    if not quiet:
        print(f"{last.message}; run folder {config.out}")
    return 0


def cmd_download(args) -> int:
    from tqdm import tqdm

    from .core.download import (
        DownloadError,
        DownloadParams,
        DownloadStatus,
        iter_download,
        parse_layer_range,
    )

    params = DownloadParams(
        url=args.url, dest=args.dest, layers=parse_layer_range(args.layers), subfolder=args.subfolder,
        include=tuple(args.include), exclude=tuple(args.exclude), allow_hosts=tuple(args.allow_host),
        netrc=args.netrc, workers=args.workers, max_depth=args.max_depth, max_files=args.max_files,
        retries=args.retries, timeout=args.timeout,
    )  # fmt: skip
    events, result, transfer = iter_download(params), None, False
    try:
        with tqdm(desc="listing", unit="B", unit_scale=True, unit_divisor=1000, disable=None) as bar:
            for ev in events:
                st = ev.result
                if isinstance(st, DownloadStatus) and st.phase == "downloading":
                    if not transfer:  # bytes already here count as the start, not as speed
                        transfer = True
                        bar.set_description("download")
                        bar.reset(total=st.bytes_total)
                        bar.initial = bar.n = st.bytes_done
                    bar.update(st.bytes_done - bar.n)
                    bar.set_postfix_str(f"{st.files_done}/{st.files_total} files", refresh=True)
                elif isinstance(st, DownloadStatus):
                    bar.set_postfix_str(ev.message, refresh=True)
                else:
                    result = st
    except KeyboardInterrupt:
        events.close()  # stops the threads, keeps the .partial files, records what is complete
        print(f"\nphoenix: interrupted; complete files and .partial files are kept in {params.dest}: "
              "run the same command again to resume", file=sys.stderr)  # fmt: skip
        return 130
    except DownloadError as err:
        if err.result is not None:
            _download_notes(err.result)
        raise
    finally:
        events.close()
    _download_notes(result)
    if result.cancelled:
        return 130
    print(f"{len(result.files)} files in {result.dest}: {len(result.downloaded)} downloaded, "
          f"{len(result.skipped)} already complete")  # fmt: skip
    from .core.segment import is_segment

    if is_segment(result.dest):
        print(f"next: phoenix info {result.dest}   (or open it in napari: napari {result.dest})")
    return 0


def _download_notes(result) -> None:
    for href, reason in result.rejected_links[:5]:
        print(f"phoenix: ignored an unsafe link {href!r}: {reason}", file=sys.stderr)
    if len(result.rejected_links) > 5:
        print(f"phoenix: … and {len(result.rejected_links) - 5} more unsafe links", file=sys.stderr)
    if result.too_deep:
        print(f"phoenix: not read (deeper than --max-depth): {', '.join(result.too_deep[:5])}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="phoenix", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="make the sample segment, write previews, open napari if there is a display")
    demo.add_argument("--out", default="phoenix-demo", help="output folder (default: ./phoenix-demo)")
    demo.add_argument("--dtype", choices=["uint8", "uint16"], default="uint8")
    demo.add_argument("--viewer", choices=["auto", "yes", "no"], default="auto")
    demo.add_argument("--train-steps", type=int, default=400,
                      help="train the demo network this many steps, then predict the segment (0: skip both)")
    demo.add_argument("--stride", type=int, default=2, help="prediction stride (tiles overlap by 1 - 1/stride)")
    demo.add_argument("--device", default="auto")
    demo.set_defaults(func=cmd_demo)

    ph = sub.add_parser("phantom", help="write a synthetic scroll segment in the real layout")
    ph.add_argument("dest")
    ph.add_argument("--height", type=int, default=1024)
    ph.add_argument("--width", type=int, default=1536)
    ph.add_argument("--layers", type=int, default=21)
    ph.add_argument("--dtype", choices=["uint8", "uint16"], default="uint8")
    ph.add_argument("--seed", type=int, default=0)
    ph.set_defaults(func=cmd_phantom)

    sp = sub.add_parser("split", help="cut a segment into full-height chunks, contrasted (resumable)")
    sp.add_argument("segment", help="segment folder (with layers/)")
    sp.add_argument("--chunks", help="chunk ids, e.g. 1,3-5 (default: all)")
    sp.add_argument("--chunk-width", type=int, default=10_000)
    sp.add_argument("--offset", type=int, default=0, help="first chunk is chunk-width - offset wide")
    sp.add_argument("--no-contrast", action="store_true", help="copy pixels into parts/ instead")
    sp.add_argument("--points", help='contrast control points in 8-bit codes, e.g. "0,0;128,64;255,255"')
    sp.add_argument("--out", help="folder receiving parts[_contrasted]/ (default: the segment)")
    sp.add_argument("--workers", type=int, default=0, help="processes (default: one per core)")
    sp.add_argument("--verify", action="store_true", help="check finished files by CRC, not only size")
    sp.add_argument("--overwrite", action="store_true", help="replace chunk folders holding other data")
    sp.set_defaults(func=cmd_split)

    cv = sub.add_parser("convert", help="convert a prize / Lightning .ckpt into safetensors + JSON")
    cv.add_argument("checkpoint", help="the .ckpt file")
    cv.add_argument("out", help="destination (NAME, NAME.safetensors or NAME.json; both files are written)")
    cv.add_argument("--trusted", action="store_true",
                    help="allow full unpickling (runs code from the file: only for files you trust)")
    cv.add_argument("--note", help="free text stored in the provenance")
    cv.set_defaults(func=cmd_convert)

    inf = sub.add_parser("infer", help="predict ink with a checkpoint: per-window maps + composite in a zarr store")
    inf.add_argument("input", help="segment or chunk folder (with layers/), layers folder, or zarr")
    inf.add_argument("checkpoint", help="prize .ckpt or napari-phoenix .safetensors/.json")
    inf.add_argument("--out", required=True, help="zarr store to write (resumed if interrupted)")
    inf.add_argument("--windows", default="3,4,5", help="first layer number of each 16-layer window")
    inf.add_argument("--stride", type=int, default=2, help="grid step is 128 / stride px (2, 4, 8...)")
    inf.add_argument("--tta", type=int, default=3, help="0 none ... 3 flips + rot90")
    inf.add_argument("--batch-size", type=int, default=32)
    inf.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1...")
    inf.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    inf.add_argument("--region", type=int, default=2048, help="side of an output region (px)")
    inf.add_argument("--composite", default="mean", choices=["mean", "max"])
    inf.add_argument("--mask", default="auto", help="mask image; auto: the segment's mask.png; none: every tile")
    inf.add_argument("--contrast", action="store_true", help="apply the prize contrast to raw layers first")
    inf.add_argument("--overwrite", action="store_true", help="replace a store made with other settings")
    inf.add_argument("--trusted", action="store_true", help="allow full unpickling of the checkpoint")
    inf.add_argument("--png", help="also write the composite as an 8-bit PNG")
    inf.set_defaults(func=cmd_infer)

    tr = sub.add_parser("train", help="train or fine-tune from a TOML config (resumes an interrupted run)")
    tr.add_argument("config", help="TOML file whose keys are TrainConfig fields (see docs/training.md)")
    tr.add_argument("--epochs", type=int, help="override the number of epochs (e.g. to extend a finished run)")
    tr.add_argument("--device", help="override the device")
    tr.add_argument("--out", help="override the run folder")
    tr.set_defaults(func=cmd_train)

    from dataclasses import fields

    from .core.download import DownloadParams

    dflt = {f.name: f.default for f in fields(DownloadParams)}  # one copy of the defaults
    dl = sub.add_parser("download", help="mirror a folder of the scroll data server (resumable, parallel)")
    dl.add_argument("url", help="folder URL, e.g. https://dl.ash2txt.org/community-uploads/USER/scrolls/s5/autogens/SEGMENT/")
    dl.add_argument("dest", help="local folder that receives the files (same layout as below the URL)")
    dl.add_argument("--layers", help="only these layer files of layers/, e.g. 5-20 (default: all)")
    dl.add_argument("--subfolder", help="only this sub-folder of the URL, e.g. layers")
    dl.add_argument("--include", action="append", default=[], metavar="GLOB",
                    help="only files matching (repeatable; with a '/' the pattern matches the path)")
    dl.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="skip files and folders matching, e.g. '*.ppm' (repeatable)")
    dl.add_argument("--workers", type=int, default=dflt["workers"], help="parallel connections (%(default)s)")
    dl.add_argument("--max-depth", type=int, default=dflt["max_depth"],
                    help="folder levels read below the URL (%(default)s)")
    dl.add_argument("--max-files", type=int, default=dflt["max_files"],
                    help="refuse selections of more files (%(default)s)")
    dl.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                    help="follow links to this other host too (repeatable)")
    dl.add_argument("--retries", type=int, default=dflt["retries"],
                    help="retries after timeouts, dropped connections, 5xx (%(default)s)")
    dl.add_argument("--timeout", type=float, default=dflt["timeout"],
                    help="seconds to wait for the server (%(default)s)")
    dl.add_argument("--netrc", help="netrc file with the login (default: $NETRC or ~/.netrc; "
                    "or set PHOENIX_HTTP_USER and PHOENIX_HTTP_PASSWORD)")
    dl.set_defaults(func=cmd_download)

    info = sub.add_parser("info", help="describe a segment, layers folder, TIFF or zarr")
    info.add_argument("path")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .core.errors import PhoenixError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PhoenixError as err:
        print(f"phoenix: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
