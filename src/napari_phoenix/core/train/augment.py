"""The First Title Prize training augmentations, torch-native and batched.

The prize ran albumentations on each 128 x 128 patch (uint8, 16 layers as channels)::

    HorizontalFlip(p=.5), VerticalFlip(p=.5), Rotate(limit=360, p=.5),
    Perspective(scale=(.03, .03), p=.1), GridDistortion(p=.1), Blur(blur_limit=3, p=.1),
    GaussNoise(p=.1), RandomResizedCrop(size, scale=(.5, 1), ratio=(.75, 1.333), p=.15),
    ShiftScaleRotate(shift_limit=.0625, scale_limit=.1, rotate_limit=360, p=.1),
    RandomGamma(gamma_limit=(30, 80), p=.15),
    RandomBrightnessContrast(brightness_limit=(-.2, .4), contrast_limit=(-.2, .2), p=.15)

:func:`augment_batch` does the same on a whole batch on its device, with the semantics of
albumentations 1.4 (the release whose ``GaussNoise`` default is ``var_limit=(10, 50)``):

* flips: ``torch.flip`` of image, label and keep, exact.
* rotate: angle uniform in ``rotate_limit`` degrees (-360..360), counter-clockwise as
  ``cv2.getRotationMatrix2D``, about the centre ``((W-1)/2, (H-1)/2)``; an angle of 90 is
  ``torch.rot90(k=1)``.
* perspective: corners jittered inwards by ``|N(0, scale)| mod 0.32`` of the size and the
  quadrilateral mapped onto the whole patch.  Deviation: the corners are mapped to pixel
  centres 0 and W-1 (so zero jitter is the identity), where albumentations warps to the
  quad's own size and resizes back.
* grid distortion: ``num_steps`` 5, steps ``1 + U(-0.3, 0.3)``, ``normalized=True``; the
  piecewise-linear map of ``generate_grid`` reproduced value for value.  Its last column
  and row read at x = W, half a pixel past the patch, so keep is 0 there (the 128 -> 32
  shrink never reads them: it takes pixels 4i+2 <= 126).
* random resized crop: area ``U(0.5, 1)``, log-uniform ratio in (0.75, 1.333), ten tries,
  then the central-crop fallback; resized with half-pixel centres.  Deviations: the label
  uses the same half-pixel map (cv2's nearest resize is shifted by half a pixel), and the
  outermost output pixels blend in the pixel just outside the crop where cv2 clamps.
* shift-scale-rotate: shift ``U(-0.0625, 0.0625)`` of the size, scale ``U(0.9, 1.1)``, angle
  ``U(-360, 360)`` (the prize's ``rotate_limit=360``, not the default 45).
* blur: 3 x 3 box filter (``cv2.blur``), reflect-101 border.
* Gaussian noise: variance ``U(10, 50)`` on 0..255, i.e. sigma ``sqrt(var) / 255`` on 0..1,
  independent per pixel and layer, then clipped.
* gamma: ``x ** g`` with g = ``U(30, 80) / 100``.
* brightness / contrast: ``x * (1 + U(-0.2, 0.2)) + U(-0.2, 0.4)`` (``brightness_by_max``),
  clipped.

All geometric transforms but the flips are composed into one per-sample map from output
to source pixels (affine, then grid lookup, then homography), sampled once: bilinear for the
image, nearest (an exact gather) for label and keep.  Deviations this brings: a pixel is
resampled once instead of once per transform, and the border is filled once, at the end,
instead of after each transform.  Border: albumentations 1.4 fills Rotate, ShiftScaleRotate
and GridDistortion with ``BORDER_REFLECT_101`` (Perspective pads with 0 but never samples
outside; albumentations 2.0 switched to constant 0) -- ``border="reflect"`` (default) or
``"zeros"``.  Label follows the image's border.  Improvement over the prize: **keep is 0
wherever the source pixel lay outside the patch**, so padding is never trained on.

The photometric transforms run after the geometric ones in the prize's order (blur, noise,
gamma, brightness/contrast) on the image only; the prize blurred and noised before the crop
and shift-scale-rotate.  The prize rounded to uint8 after each step; this stays in float.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import PhoenixError

Range = tuple[float, float]


class AugmentError(PhoenixError, ValueError):
    """Augmentation parameters or tensors that cannot be used as given."""


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges of the training augmentations; defaults are the prize's.

    Each ``*_p`` is the probability that a sample gets that transform; ranges are
    ``(low, high)`` of a uniform draw.  Angles in degrees; shifts as a fraction of the size;
    ``noise_var`` on the 0..255 scale; ``gamma`` as the exponent (albumentations' 30..80 / 100).
    """

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rotate_p: float = 0.5
    rotate_limit: Range = (-360.0, 360.0)
    perspective_p: float = 0.1
    perspective_scale: Range = (0.03, 0.03)
    grid_p: float = 0.1
    grid_steps: int = 5
    grid_limit: Range = (-0.3, 0.3)
    blur_p: float = 0.1
    blur_kernel: int = 3
    noise_p: float = 0.1
    noise_var: Range = (10.0, 50.0)
    crop_p: float = 0.15
    crop_scale: Range = (0.5, 1.0)
    crop_ratio: Range = (0.75, 1.333)
    ssr_p: float = 0.1
    ssr_shift: Range = (-0.0625, 0.0625)
    ssr_scale: Range = (0.9, 1.1)
    ssr_rotate: Range = (-360.0, 360.0)
    gamma_p: float = 0.15
    gamma: Range = (0.3, 0.8)
    brightness_contrast_p: float = 0.15
    brightness: Range = (-0.2, 0.4)
    contrast: Range = (-0.2, 0.2)
    border: str = "reflect"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") and not 0.0 <= v <= 1.0:
                raise AugmentError(f"{f.name} = {v} is not a probability; give a value in 0..1")
            if isinstance(v, (tuple, list)):
                if len(v) != 2 or v[0] > v[1]:
                    raise AugmentError(f"{f.name} = {v!r} must be a (low, high) pair, low <= high")
                object.__setattr__(self, f.name, (float(v[0]), float(v[1])))
        if self.border not in ("reflect", "zeros"):
            raise AugmentError(f"border = {self.border!r}; use 'reflect' or 'zeros'")
        if self.blur_kernel < 1 or self.blur_kernel % 2 == 0:
            raise AugmentError(f"blur_kernel = {self.blur_kernel} must be odd and positive")
        if self.grid_steps < 1:
            raise AugmentError(f"grid_steps = {self.grid_steps} must be at least 1")
        if self.crop_scale[0] <= 0 or self.crop_ratio[0] <= 0 or self.ssr_scale[0] <= 0:
            raise AugmentError("crop_scale, crop_ratio and ssr_scale must be positive")
        if self.gamma[0] <= 0 or self.noise_var[0] < 0:
            raise AugmentError("gamma must be positive and noise_var non-negative")

    def to_dict(self) -> dict:
        """Return the parameters as a JSON-ready dict (pairs as lists).

        Returns
        -------
        dict
            One key per field; ``AugmentParams.from_dict`` reverses it.
        """
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, d: dict) -> AugmentParams:
        """Build parameters from :meth:`to_dict` output; missing keys keep the prize defaults.

        Parameters
        ----------
        d : dict
            Field names to values.

        Returns
        -------
        AugmentParams
            The parameters.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise AugmentError(f"unknown augmentation parameters {unknown}; known: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


PRIZE = AugmentParams()
NONE = AugmentParams(
    **{f.name: 0.0 for f in dataclasses.fields(AugmentParams) if f.name.endswith("_p")}
)


def _u(gen: torch.Generator, shape, rng: Range) -> torch.Tensor:
    """Uniform float64 draws in ``rng`` on the generator's device."""
    return rng[0] + (rng[1] - rng[0]) * torch.rand(
        shape, generator=gen, dtype=torch.float64, device=gen.device
    )


def _gates(gen: torch.Generator, b: int, probs: list[float]) -> torch.Tensor:
    """(B, len(probs)) booleans: which samples get each transform."""
    f64 = {"dtype": torch.float64, "device": gen.device}
    return torch.rand((b, len(probs)), generator=gen, **f64) < torch.tensor(probs, **f64)


def _rotation(deg: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, c: torch.Tensor):
    """(B, 3, 3) output-to-source map of cv2's ``getRotationMatrix2D`` warp plus a shift."""
    a = torch.deg2rad(deg)
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    m = torch.zeros(deg.shape[0], 3, 3, dtype=torch.float64, device=deg.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1], m[:, 2, 2] = cos, -sin, sin, cos, 1.0
    # p_src = R^T (p_out - c - shift) / scale + c
    d = -c - shift
    m[:, 0, 2] = cos * d[:, 0] - sin * d[:, 1] + c[0]
    m[:, 1, 2] = sin * d[:, 0] + cos * d[:, 1] + c[1]
    return m


def _square_to_quad(q: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) homography taking the unit square's corners tl, tr, br, bl to ``q`` (B, 4, 2)."""
    x0, x1, x2, x3 = q[:, :, 0].unbind(1)
    y0, y1, y2, y3 = q[:, :, 1].unbind(1)
    dx1, dx2, dx3 = x1 - x2, x3 - x2, x0 - x1 + x2 - x3
    dy1, dy2, dy3 = y1 - y2, y3 - y2, y0 - y1 + y2 - y3
    den = dx1 * dy2 - dx2 * dy1
    g, h = (dx3 * dy2 - dx2 * dy3) / den, (dx1 * dy3 - dx3 * dy1) / den
    rows = [x1 - x0 + g * x1, x3 - x0 + h * x3, x0, y1 - y0 + g * y1, y3 - y0 + h * y3, y0]
    return torch.stack(rows + [g, h, torch.ones_like(g)], 1).view(-1, 3, 3)


def _grid_tables(steps: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """(B, size) source coordinate per output pixel of albumentations' normalised grid."""
    step = size // n
    if step < 1:
        raise AugmentError(f"grid distortion with {n} steps needs patches of at least {n} px")
    steps = steps.clone()
    steps[:, -1] *= (min(size, (n + 1) * step) - n * step) / step
    steps *= (size / math.floor(size / n)) / steps.sum(1, keepdim=True)
    table = torch.zeros(steps.shape[0], size, dtype=torch.float64, device=steps.device)
    prev = torch.zeros(steps.shape[0], dtype=torch.float64, device=steps.device)
    for idx in range(n + 1):
        start, end = idx * step, min(idx * step + step, size)
        cur = prev + step * steps[:, idx]
        if end > start:
            lin = torch.arange(end - start, dtype=torch.float64, device=steps.device)
            lin = lin / max(end - start - 1, 1)
            table[:, start:end] = prev[:, None] + (cur - prev)[:, None] * lin
        prev = cur
    return table


def _crop_boxes(gen: torch.Generator, b: int, h: int, w: int, p: AugmentParams) -> torch.Tensor:
    """(B, 4) crops ``(top, left, height, width)`` drawn as ``RandomResizedCrop`` does."""
    target = h * w * _u(gen, (b, 10), p.crop_scale)
    ratio = torch.exp(_u(gen, (b, 10), (math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1]))))
    cw, ch = torch.round(torch.sqrt(target * ratio)), torch.round(torch.sqrt(target / ratio))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = ok.to(torch.int8).argmax(1, keepdim=True)
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    pos = torch.rand((b, 2), generator=gen, dtype=torch.float64, device=gen.device)
    top = torch.minimum(torch.floor(pos[:, 0] * (h - ch + 1)), h - ch)
    left = torch.minimum(torch.floor(pos[:, 1] * (w - cw + 1)), w - cw)
    # no valid try: the central crop with the ratio clamped into range
    lo, hi = p.crop_ratio
    fw, fh = float(w), float(h)
    if w / h < lo:
        fh = float(round(w / lo))
    elif w / h > hi:
        fw = float(round(h * hi))
    fb = torch.tensor(
        [(h - fh) // 2, (w - fw) // 2, fh, fw], dtype=torch.float64, device=gen.device
    )
    box = torch.stack([top, left, ch, cw], 1)
    return torch.where(ok.any(1, keepdim=True), box, fb)


def _geometry(gen: torch.Generator, b: int, h: int, w: int, p: AugmentParams):
    """Draw the warps; return (which samples warp (B,), affine (B,3,3), x/y tables, homography)."""
    f64 = {"dtype": torch.float64, "device": gen.device}
    on = _gates(gen, b, [p.rotate_p, p.perspective_p, p.grid_p, p.crop_p, p.ssr_p])
    eye = torch.eye(3, **f64).expand(b, 3, 3)
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2], **f64)
    ones = torch.ones(b, **f64)
    # rotate
    rot = _rotation(_u(gen, b, p.rotate_limit), ones, torch.zeros(b, 2, **f64), c)
    rot = torch.where(on[:, 0, None, None], rot, eye)
    # perspective: corners tl, tr, br, bl jittered inwards, in pixel-centre units
    sigma = _u(gen, b, p.perspective_scale)
    jit = torch.remainder(
        torch.abs(torch.randn((b, 4, 2), generator=gen, **f64) * sigma[:, None, None]), 0.32
    )
    flip = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], **f64)
    quad = (flip + (1 - 2 * flip) * jit) * torch.tensor([w - 1, h - 1], **f64)
    norm = torch.diag(torch.tensor([1 / (w - 1), 1 / (h - 1), 1.0], **f64))
    persp = torch.where(on[:, 1, None, None], _square_to_quad(quad) @ norm, eye)
    # grid distortion: separable tables, identity where off
    n = p.grid_steps
    steps = 1 + _u(gen, (b, 2, n + 1), p.grid_limit)
    if p.grid_p > 0:
        tx, ty = _grid_tables(steps[:, 0], w, n), _grid_tables(steps[:, 1], h, n)
    else:
        tx, ty = torch.zeros(b, w, **f64), torch.zeros(b, h, **f64)
    tx = torch.where(on[:, 2, None], tx, torch.arange(w, **f64))
    ty = torch.where(on[:, 2, None], ty, torch.arange(h, **f64))
    # random resized crop: output pixel centre x -> left + (x + .5) * cw / w - .5
    top, left, ch, cw = _crop_boxes(gen, b, h, w, p).unbind(1)
    crop = torch.zeros(b, 3, 3, **f64)
    crop[:, 0, 0], crop[:, 0, 2] = cw / w, left + 0.5 * cw / w - 0.5
    crop[:, 1, 1], crop[:, 1, 2], crop[:, 2, 2] = ch / h, top + 0.5 * ch / h - 0.5, 1.0
    crop = torch.where(on[:, 3, None, None], crop, eye)
    # shift-scale-rotate
    shift = _u(gen, (b, 2), p.ssr_shift) * torch.tensor([w, h], **f64)
    scale, angle = _u(gen, b, p.ssr_scale), _u(gen, b, p.ssr_rotate)
    ssr = torch.where(on[:, 4, None, None], _rotation(angle, scale, shift, c), eye)
    # applied in the prize's order, so the output-to-source map runs backwards
    return on.any(1), crop @ ssr, tx, ty, rot @ persp


def _lookup(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Interpolate per-sample tables (k, n) at x (k, H, W), extrapolating with the end slopes."""
    n = table.shape[1]
    i0 = torch.floor(x).clamp(0, max(n - 2, 0)).long()
    flat = i0.view(i0.shape[0], -1)
    v0 = table.gather(1, flat).view_as(x)
    v1 = table.gather(1, (flat + 1).clamp(max=n - 1)).view_as(x)
    return v0 + (x - i0) * (v1 - v0)


def _reflect(x: torch.Tensor, n: int) -> torch.Tensor:
    """Fold coordinates into 0..n-1 as ``BORDER_REFLECT_101`` does."""
    if n == 1:
        return torch.zeros_like(x)
    period = 2 * (n - 1)
    x = torch.remainder(x, period)
    return torch.where(x > n - 1, period - x, x)


def _project(m: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """Apply per-sample (k, 3, 3) homographies to coordinates (k, H, W)."""
    m = m[:, :, :, None, None]
    z = m[:, 2, 0] * x + m[:, 2, 1] * y + m[:, 2, 2]
    return (m[:, 0, 0] * x + m[:, 0, 1] * y + m[:, 0, 2]) / z, (
        m[:, 1, 0] * x + m[:, 1, 1] * y + m[:, 1, 2]
    ) / z


def _warp(image, masks, affine, tx, ty, homog, border: str):
    """Sample image (k, L, H, W) bilinearly and masks (k, 2, H, W) nearest through the map."""
    k, _, h, w = image.shape
    f32 = {"device": image.device, "dtype": torch.float32}
    yy, xx = torch.meshgrid(torch.arange(h, **f32), torch.arange(w, **f32), indexing="ij")
    x, y = _project(affine, xx, yy)
    x, y = _project(homog, _lookup(tx, x), _lookup(ty, y))
    ix, iy = torch.round(x), torch.round(y)
    inside = (ix >= 0) & (ix <= w - 1) & (iy >= 0) & (iy <= h - 1)
    if border == "reflect":
        x, y = _reflect(x, w), _reflect(y, h)
        ix, iy = torch.round(x), torch.round(y)
    grid = torch.stack([x * (2 / max(w - 1, 1)) - 1, y * (2 / max(h - 1, 1)) - 1], -1)
    pad = "border" if border == "reflect" else "zeros"
    # coordinates stay float32 (half precision would blur them to 1/16 px on 128 px)
    src = image if image.dtype == torch.float64 else image.float()
    grid = grid.to(src.dtype)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode=pad, align_corners=True)
    idx = (iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1)).long().view(k, 1, -1).expand(k, 2, -1)
    sampled = masks.reshape(k, 2, -1).gather(2, idx).view(k, 2, h, w)
    label = sampled[:, 0] * inside if border == "zeros" else sampled[:, 0]
    return out.to(image.dtype), label, sampled[:, 1] * inside


def augment_batch(image, label, keep, generator: torch.Generator, params: AugmentParams = PRIZE):
    """Augment a training batch the way the prize did, on the batch's device.

    Parameters
    ----------
    image : torch.Tensor
        Float (B, L, H, W) in 0..1, the L layers as channels.
    label : torch.Tensor
        Ink, float or bool (B, H, W), 0/1.
    keep : torch.Tensor
        Pixels to train on, float or bool (B, H, W), 0/1.
    generator : torch.Generator
        Source of every random draw (any device; a CPU one is fine).  The result is a pure
        function of the inputs, ``params`` and this generator's state.
    params : AugmentParams
        Probabilities and ranges; :data:`PRIZE` by default, :data:`NONE` for none.

    Returns
    -------
    tuple of torch.Tensor
        ``(image, label, keep)``: new tensors on the image's device and of its dtype, image
        clipped to 0..1, label and keep 0/1 (keep 0 where the source lay outside the patch).
    """
    if image.ndim != 4 or not image.is_floating_point():
        raise AugmentError(
            f"image must be a float (B, L, H, W) tensor, got {tuple(image.shape)} {image.dtype}"
        )
    b, _, h, w = image.shape
    for name, m in (("label", label), ("keep", keep)):
        if tuple(m.shape) != (b, h, w):
            raise AugmentError(f"{name} is {tuple(m.shape)}; it must be (B, H, W) = {(b, h, w)}")
    if h < 2 or w < 2:
        raise AugmentError(f"patches of {h} x {w} px are too small to augment; use at least 2 x 2")
    p, dev, dt, gen = params, image.device, image.dtype, generator
    image = image.clone()
    masks = torch.stack([label.to(dev, dt), keep.to(dev, dt)], 1)

    flips = _gates(gen, b, [p.hflip_p, p.vflip_p]).to(dev)
    for i, dim in ((0, -1), (1, -2)):
        if (s := flips[:, i].nonzero()[:, 0]).numel():
            image[s], masks[s] = image[s].flip(dim), masks[s].flip(dim)

    warped, affine, tx, ty, homog = _geometry(gen, b, h, w, p)
    if (s := warped.nonzero()[:, 0]).numel():
        maps = [t[s].to(dev, torch.float32) for t in (affine, tx, ty, homog)]
        s = s.to(dev)
        image[s], masks[s, 0], masks[s, 1] = _warp(image[s], masks[s], *maps, p.border)

    gate = _gates(gen, b, [p.blur_p, p.noise_p, p.gamma_p, p.brightness_contrast_p]).to(dev)
    sigma = torch.sqrt(_u(gen, b, p.noise_var)) / 255.0
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    gamma, alpha, beta = _u(gen, b, p.gamma), 1 + _u(gen, b, p.contrast), _u(gen, b, p.brightness)

    def per_sample(t, s):
        return t.to(dev, dt)[s].view(-1, 1, 1, 1)

    if (s := gate[:, 0].nonzero()[:, 0]).numel():
        r = p.blur_kernel // 2
        x = F.pad(image[s], (r, r, r, r), mode="reflect") if r else image[s]
        image[s] = F.avg_pool2d(x, p.blur_kernel, stride=1)
    if (s := gate[:, 1].nonzero()[:, 0]).numel():
        g = torch.Generator(device=dev).manual_seed(seed)
        noise = torch.randn(image[s].shape, generator=g, device=dev, dtype=dt)
        image[s] = (image[s] + noise * per_sample(sigma, s)).clamp(0, 1)
    if (s := gate[:, 2].nonzero()[:, 0]).numel():
        image[s] = image[s].clamp(0, 1) ** per_sample(gamma, s)
    if (s := gate[:, 3].nonzero()[:, 0]).numel():
        image[s] = image[s] * per_sample(alpha, s) + per_sample(beta, s)
    return image.clamp_(0, 1), masks[:, 0].contiguous(), masks[:, 1].contiguous()
