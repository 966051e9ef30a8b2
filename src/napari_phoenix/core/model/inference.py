"""The fast inference path: a network wrapped for speed on its device.

:func:`inference_model` wraps an :class:`~.network.InkNet` (or any module with
the same input and output) into a callable that takes a float batch
``(B, 1, 16, 128, 128)`` with values in 0..1 and returns float32 logits
``(B, 32, 32)``, under :func:`torch.inference_mode`, with:

* **mixed precision** (``precision``): ``"fp16"`` or ``"bf16"`` autocast; the
  autocast policy keeps softmax, layer norm and the reductions in float32, and
  the logits are returned in float32 (the sigmoid, the TTA average and the
  tile accumulation happen in float32 outside). ``"auto"`` is fp16 on CUDA,
  as the prize ran; on a CPU bf16 where it has bf16 instructions (3.3x faster
  than float32 with channels-last on this project's CPU, ``docs/benchmarks.md``,
  ``bench_model``), else float32.
* **channels-last memory** (``channels_last``): NDHWC for the UNETR's 3-D
  convolutions, NHWC for the SegFormer's 2-D ones. ``None`` means on (it won
  on the CPU, 1.5x in float32; the usual choice for cuDNN).
* ``torch.compile`` (``compile=True``), off by default: the first batch of
  each new shape pays the compilation.

The options are one :class:`InferenceOptions`; :func:`profile_split` times the
parts of the network (where the time goes).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import PhoenixError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

#: The parts :func:`profile_split` times: label -> module names inside an InkNet.
SPLIT = {
    "UNETR ViT (64 tokens)": ("encoder.transformer",),
    "UNETR decoder, 1/16 to 1/2 resolution": (
        "encoder.decoder12_upsampler", "encoder.decoder9", "encoder.decoder9_upsampler",
        "encoder.decoder6", "encoder.decoder6_upsampler", "encoder.decoder3",
    ),  # fmt: skip
    "UNETR decoder, full resolution (16 x 128 x 128)": (
        "encoder.decoder3_upsampler", "encoder.decoder0", "encoder.decoder0_header",
    ),  # fmt: skip
    "SegFormer MiT encoder": ("encoder_2d.segformer",),
    "SegFormer decode head": ("encoder_2d.decode_head",),
}


class InferenceError(PhoenixError, ValueError):
    """Inference options that cannot work on the chosen device."""


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the network for inference.

    Parameters
    ----------
    precision : {"auto", "fp32", "fp16", "bf16"}
        Autocast dtype; ``"auto"``: fp16 on CUDA, bf16 on CPUs with bf16 instructions, else fp32.
    channels_last : bool or None
        Channels-last memory format; ``None``: on.
    compile : bool
        Wrap the network in ``torch.compile``.
    compile_mode : str or None
        ``torch.compile`` mode (e.g. ``"max-autotune"``); None: the default.
    compile_backend : str
        ``torch.compile`` backend (``"inductor"``; ``"eager"`` checks the
        plumbing without compiling).
    """

    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False
    compile_mode: str | None = None
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")

    def resolved(self, device: torch.device) -> InferenceOptions:
        """The options with "auto" / None decided for ``device`` (what ``bench_model.py`` found fastest)."""
        cuda = device.type == "cuda"
        if self.precision != "auto":
            precision = self.precision
        else:  # the prize ran fp16 on GPUs; on CPUs bf16 pays only where the CPU has bf16 instructions
            precision = "fp16" if cuda else ("bf16" if cpu_has_bf16() else "fp32")
        channels_last = True if self.channels_last is None else self.channels_last
        return InferenceOptions(precision, channels_last, self.compile, self.compile_mode, self.compile_backend)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for provenance)."""
        return asdict(self)


def cpu_has_bf16() -> bool:
    """True if oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class InferenceModel:
    """A network ready for fast inference: ``logits = fast(batch)``.

    Built by :func:`inference_model`. Calling it takes a float tensor
    ``(B, 1, D, H, W)`` (any device: moved to the model's) and returns float32
    logits ``(B, H/4, W/4)`` on the model's device.

    Attributes
    ----------
    module : torch.nn.Module
        The wrapped network (in eval mode, on ``device``).
    device : torch.device
    options : InferenceOptions
        Resolved for ``device`` (no "auto" left).
    """

    def __init__(self, module: nn.Module, device: torch.device, options: InferenceOptions) -> None:
        self.module, self.device, self.options = module, device, options
        self._run = (
            torch.compile(module, mode=options.compile_mode, backend=options.compile_backend)
            if options.compile
            else module
        )

    @property
    def config(self) -> Any:
        return getattr(self.module, "config", None)

    @property
    def provenance(self) -> dict[str, Any]:
        return getattr(self.module, "provenance", {})

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of the chosen precision (a no-op for fp32)."""
        if self.options.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.options.precision])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.options.channels_last and x.ndim == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), self.autocast():
            out = self._run(x)
        return out.float()


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``"auto"`` / None -> the first CUDA device if there is one, else the CPU.

    Raises
    ------
    InferenceError
        For a CUDA device that does not exist.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise InferenceError(
                f"{device} asked for but {'no CUDA device is' if not count else f'only {count} CUDA device(s) are'}"
                " available; choose another device or 'cpu'"
            )
    return device


def inference_model(
    model: nn.Module, device: str | torch.device | None = None, options: InferenceOptions | None = None, **kw: Any
) -> InferenceModel:
    """Wrap ``model`` for fast inference on ``device``.

    Parameters
    ----------
    model : torch.nn.Module
        The network (an :class:`~.network.InkNet`); it is put in eval mode and
        moved to ``device``, and converted to channels-last if asked.
    device : str or torch.device, optional
        ``"cuda"``, ``"cuda:1"``, ``"cpu"``, or ``"auto"`` / None (CUDA if any).
    options : InferenceOptions, optional
        Precision, channels-last and compile settings.
    **kw
        :class:`InferenceOptions` fields, instead of or over ``options``.

    Returns
    -------
    InferenceModel
    """
    device = resolve_device(device)
    options = InferenceOptions(**{**(options or InferenceOptions()).to_dict(), **kw}).resolved(device)
    if options.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InferenceError(f"{torch.cuda.get_device_name(device)} has no bfloat16; use precision='fp16'")
    if options.precision == "fp16" and device.type == "cpu":
        raise InferenceError("float16 autocast is for GPUs; on the CPU use 'bf16' or 'fp32'")
    model = model.to(device).eval()
    if options.channels_last:
        to_channels_last(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: let cuDNN pick its fastest kernels
    return InferenceModel(model, device, options)


def to_channels_last(model: nn.Module) -> nn.Module:
    """NDHWC for 5-D weights (Conv3d), NHWC for 4-D ones (Conv2d), in place; returns ``model``.

    oneDNN's fast layout for the UNETR's 3-D convolutions with few channels: on a
    2-core CPU the demo network trains about 2x faster and infers 2x (demo) / 1.25x
    (b3) faster. Values, keys and saved checkpoints are unchanged.
    """
    for p in model.parameters():
        if p.ndim == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        elif p.ndim == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA); a no-op on the CPU. For timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _timed_modules(model: nn.Module, names: dict[str, tuple[str, ...]], device: torch.device) -> Iterator[dict]:
    modules = dict(model.named_modules())
    totals = dict.fromkeys(names, 0.0)
    handles, started = [], {}
    for label, group in names.items():
        for name in group:
            if name not in modules:
                continue

            def pre(_m, _i, key=(label, name)):
                synchronize(device)
                started[key] = time.perf_counter()

            def post(_m, _i, _o, key=(label, name)):
                synchronize(device)
                totals[key[0]] += time.perf_counter() - started.pop(key)

            handles += [modules[name].register_forward_pre_hook(pre), modules[name].register_forward_hook(post)]
    try:
        yield totals
    finally:
        for h in handles:
            h.remove()


def profile_split(
    fast: InferenceModel, batch: torch.Tensor, repeats: int = 3, split: dict[str, tuple[str, ...]] | None = None
) -> dict[str, float]:
    """Seconds per forward spent in each part of the network (see :data:`SPLIT`).

    The device is synchronised around every part, so the parts add up to the
    forward (the remainder is reported as ``"other"``) but the total is a
    little slower than an unhooked forward. Not for compiled models (hooks
    would break the graph): the eager module is timed.

    Parameters
    ----------
    fast : InferenceModel
        The wrapped network.
    batch : torch.Tensor
        One input batch.
    repeats : int
        Forwards timed after one warm-up; the mean is reported.

    Returns
    -------
    dict
        ``{part: seconds per forward, ..., "other": ..., "total": ...}``.
    """
    eager = InferenceModel(fast.module, fast.device, InferenceOptions(**{**fast.options.to_dict(), "compile": False}))
    eager(batch)
    with _timed_modules(fast.module, split or SPLIT, fast.device) as totals:
        synchronize(fast.device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            eager(batch)
        synchronize(fast.device)
        total = (time.perf_counter() - t0) / repeats
    out = {k: v / repeats for k, v in totals.items()}
    out["other"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    return out


def count_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward of a batch of ``shape`` (a multiply-add is 2).

    Counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions,
    transposed convolutions, matrix products, attention), on the model's
    device, in float32.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(shape, device=device))
    return int(counter.get_total_flops())


def as_callable(model: Any, device: str | torch.device | None = None, **options: Any) -> Callable:
    """``model`` as a batch -> logits callable: modules get :func:`inference_model`, callables pass.

    Parameters
    ----------
    model : torch.nn.Module, InferenceModel or callable
        The model.
    device, **options
        For :func:`inference_model` when ``model`` is a module.
    """
    if isinstance(model, nn.Module):
        return inference_model(model, device, **options)
    if not callable(model):
        raise InferenceError(f"a model must be a torch module or a callable batch -> logits, not {type(model).__name__}")
    return model
