"""The prize's training augmentations, batched in torch: what each one does to image, label, keep."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import numpy as np
import pytest
import torch

from napari_phoenix.core.train.augment import (
    NONE,
    PRIZE,
    AugmentError,
    AugmentParams,
    augment_batch,
)

GEOMETRIC = {
    "rotate": {"rotate_p": 1.0},
    "perspective": {"perspective_p": 1.0, "perspective_scale": (0.1, 0.1)},
    "grid": {"grid_p": 1.0},
    "crop": {"crop_p": 1.0},
    "shift_scale_rotate": {"ssr_p": 1.0},
    "all": {"rotate_p": 1.0, "perspective_p": 1.0, "grid_p": 1.0, "crop_p": 1.0, "ssr_p": 1.0},
}
PHOTOMETRIC = {
    "blur": {"blur_p": 1.0},
    "noise": {"noise_p": 1.0},
    "gamma": {"gamma_p": 1.0},
    "brightness_contrast": {"brightness_contrast_p": 1.0},
    "all": {"blur_p": 1.0, "noise_p": 1.0, "gamma_p": 1.0, "brightness_contrast_p": 1.0},
}


def only(**kw) -> AugmentParams:
    return dataclasses.replace(NONE, **kw)


def batch(b=4, layers=3, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, layers, h, w, generator=g)
    label = torch.rand(b, h, w, generator=g) > 0.6
    keep = torch.rand(b, h, w, generator=g) > 0.2
    return image, label, keep


def run(image, label, keep, params, seed=1):
    return augment_batch(image, label, keep, torch.Generator().manual_seed(seed), params)


def smooth(h=64, w=64):
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.25 * np.sin(xx / 5.0) + 0.2 * np.cos(yy / 3.0 + xx / 7.0)
    return torch.from_numpy(img.astype(np.float32))


def test_none_returns_the_inputs_unchanged_as_new_tensors():
    image, label, keep = batch()
    out = run(image, label, keep, NONE)
    assert torch.equal(out[0], image) and out[0].data_ptr() != image.data_ptr()
    assert torch.equal(out[1], label.float()) and torch.equal(out[2], keep.float())
    assert all(t.dtype == torch.float32 for t in out)


@pytest.mark.parametrize(("params", "dim"), [({"hflip_p": 1.0}, -1), ({"vflip_p": 1.0}, -2)])
def test_forced_flip_is_exactly_torch_flip(params, dim):
    image, label, keep = batch()
    out = run(image, label, keep, only(**params))
    assert torch.equal(out[0], image.flip(dim))
    assert torch.equal(out[1], label.float().flip(dim))
    assert torch.equal(out[2], keep.float().flip(dim))


def test_rotate_by_90_degrees_is_rot90():
    image, label, keep = batch()
    out = run(image, label, keep, only(rotate_p=1.0, rotate_limit=(90, 90)))
    turned = image.rot90(1, (-2, -1))
    torch.testing.assert_close(out[0][..., 2:-2, 2:-2], turned[..., 2:-2, 2:-2], atol=1e-5, rtol=0)
    assert torch.equal(out[1], label.float().rot90(1, (-2, -1)))
    assert torch.equal(out[2], keep.float().rot90(1, (-2, -1)))


@pytest.mark.parametrize("angle", [33.0, -147.0])
def test_rotation_matches_opencv_warp_with_reflect_101_border(angle):
    cv2 = pytest.importorskip("cv2")
    img = smooth()
    label = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(3)) > 0.5
    out = run(
        img[None, None],
        label,
        torch.ones(1, 64, 64),
        only(rotate_p=1.0, rotate_limit=(angle, angle)),
    )
    m = cv2.getRotationMatrix2D((31.5, 31.5), angle, 1.0)
    ref = cv2.warpAffine(
        img.numpy(), m, (64, 64), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )
    np.testing.assert_allclose(out[0][0, 0].numpy(), ref, atol=1e-4)
    ref_label = cv2.warpAffine(
        label[0].numpy().astype(np.uint8),
        m,
        (64, 64),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    assert (out[1][0].numpy() != ref_label).mean() < 0.002
    inside = cv2.warpAffine(np.ones((64, 64), np.uint8), m, (64, 64), flags=cv2.INTER_NEAREST)
    assert (out[2][0].numpy() != inside).mean() < 0.002  # keep is 0 in the corners


@pytest.mark.parametrize("name", GEOMETRIC)
def test_label_and_keep_stay_binary_after_geometric_transforms(name):
    image, label, keep = batch(b=6)
    out = run(image, label, keep, only(**GEOMETRIC[name]))
    for t in out[1:]:
        assert set(torch.unique(t).tolist()) <= {0.0, 1.0}
    assert not torch.equal(out[0], image)
    # nearest sampling keeps the label's share of ink roughly where it was
    assert abs(out[1].mean().item() - label.float().mean().item()) < 0.05
    assert 0.0 <= out[0].min() and out[0].max() <= 1.0


def test_keep_is_zero_where_a_shift_pulled_pixels_from_outside():
    image, label, keep = batch(b=2)
    shift = only(ssr_p=1.0, ssr_shift=(0.25, 0.25), ssr_scale=(1.0, 1.0), ssr_rotate=(0.0, 0.0))
    out = run(image, label, torch.ones_like(keep), shift)
    assert torch.all(out[2][:, :16, :] == 0) and torch.all(out[2][:, :, :16] == 0)
    assert torch.all(out[2][:, 16:, 16:] == 1)
    torch.testing.assert_close(out[0][..., 16:, 16:], image[..., :-16, :-16], atol=1e-5, rtol=0)
    assert torch.equal(out[1][:, 16:, 16:], label[:, :-16, :-16].float())
    # the default border reflects the image into the gap; "zeros" leaves it black with no ink
    assert out[0][..., :16, :].abs().sum() > 0
    zeros = run(image, label, keep, dataclasses.replace(shift, border="zeros"))
    assert torch.all(zeros[0][..., :15, :] == 0) and torch.all(zeros[1][:, :16, :] == 0)
    assert torch.equal(zeros[2][:, 16:, 16:], keep[:, :-16, :-16].float())


def test_random_resized_crop_zooms_in_by_the_square_root_of_the_area():
    ramp = torch.arange(64.0).expand(64, 64) / 64
    out = run(
        ramp[None, None],
        torch.zeros(1, 64, 64),
        torch.ones(1, 64, 64),
        only(crop_p=1.0, crop_scale=(0.5, 0.5), crop_ratio=(1.0, 1.0)),
    )
    side = round(math.sqrt(0.5 * 64 * 64))  # 45 px, resized to 64
    steps = out[0][0, 0, :, 1:-1].diff(dim=-1)
    torch.testing.assert_close(steps, torch.full_like(steps, side / 64 / 64), atol=1e-5, rtol=0)
    assert torch.all(out[2] == 1)  # a crop never reaches outside the patch


def test_grid_distortion_and_perspective_stay_inside_the_patch():
    image, label, keep = batch(b=8, h=128, w=128)
    ones = torch.ones_like(keep)
    grid = run(image, label, ones, only(grid_p=1.0))
    # albumentations' grid ends at x = W, half a pixel past the last one: only row/column 127
    assert torch.all(grid[2][:, :127, :127] == 1)
    persp = run(image, label, ones, only(perspective_p=1.0))
    assert torch.all(persp[2] == 1)
    assert not torch.equal(persp[0], image) and not torch.equal(grid[0], image)


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_transforms_touch_only_the_image_and_keep_it_in_range(name):
    image, label, keep = batch()
    image[:, 0, :8] = 0.0
    image[:, 1, :8] = 1.0
    out = run(image, label, keep, only(**PHOTOMETRIC[name]))
    assert torch.equal(out[1], label.float()) and torch.equal(out[2], keep.float())
    assert 0.0 <= out[0].min() and out[0].max() <= 1.0
    assert not torch.equal(out[0], image)


def test_gamma_with_a_fixed_exponent_is_a_power():
    image, label, keep = batch()
    out = run(image, label, keep, only(gamma_p=1.0, gamma=(0.5, 0.5)))
    torch.testing.assert_close(out[0], image**0.5)


def test_brightness_contrast_with_fixed_values_is_a_linear_map_clipped():
    image, label, keep = batch()
    out = run(
        image,
        label,
        keep,
        only(brightness_contrast_p=1.0, brightness=(0.1, 0.1), contrast=(0.2, 0.2)),
    )
    torch.testing.assert_close(out[0], (image * 1.2 + 0.1).clamp(0, 1))


def test_blur_is_a_3x3_box_filter_with_reflect_101_border():
    image, label, keep = batch(b=1, layers=1, h=8, w=8)
    out = run(image, label, keep, only(blur_p=1.0))
    padded = np.pad(image[0, 0].numpy(), 1, mode="reflect")  # numpy's reflect is cv2's 101
    ref = sum(padded[i : i + 8, j : j + 8] for i in range(3) for j in range(3)) / 9
    np.testing.assert_allclose(out[0][0, 0].numpy(), ref, atol=1e-6)


def test_gauss_noise_has_the_albumentations_sigma_on_0_to_1_data():
    image = torch.full((2, 4, 64, 64), 0.5)
    keep = torch.ones(2, 64, 64)
    out = run(image, keep, keep, only(noise_p=1.0, noise_var=(50.0, 50.0)))
    assert abs((out[0] - image).std().item() - math.sqrt(50) / 255) < 0.002
    assert abs((out[0] - image).mean().item()) < 0.002


@pytest.mark.parametrize(
    ("params", "changed"),
    [
        (only(hflip_p=0.5), lambda o, i: torch.equal(o, i.flip(-1))),
        (only(gamma_p=0.15), lambda o, i: not torch.equal(o, i)),
    ],
)
def test_each_sample_gets_a_transform_with_its_probability(params, changed):
    n = 2000
    image = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(n, 4, 4)
    out = run(image, zeros, zeros, params)
    rate = np.mean([changed(out[0][i], image[i]) for i in range(n)])
    p = params.hflip_p or params.gamma_p
    assert abs(rate - p) < 0.035


def test_same_seed_same_result_other_seed_other_result():
    image, label, keep = batch(b=8, layers=4)
    a, b, c = (run(image, label, keep, PRIZE, seed=s) for s in (5, 5, 6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_prize_params_augment_a_batch_quickly_with_the_right_shapes():
    image, label, keep = batch(b=8, layers=16, h=128, w=128)
    run(image, label, keep, PRIZE)
    start = time.perf_counter()
    out = run(image, label, keep, PRIZE, seed=2)
    assert time.perf_counter() - start < 1.0
    assert [tuple(t.shape) for t in out] == [(8, 16, 128, 128), (8, 128, 128), (8, 128, 128)]
    assert set(torch.unique(out[1]).tolist()) <= {0.0, 1.0}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_and_agrees_with_the_cpu():
    image, label, keep = batch(b=16, layers=4, h=128, w=128)
    params = dataclasses.replace(PRIZE, noise_p=0.0)  # noise is drawn on the image's device
    cpu = run(image, label, keep, params)
    gpu = run(image.cuda(), label.cuda(), keep.cuda(), params)
    assert all(t.is_cuda for t in gpu)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    for g, c in zip(gpu[1:], cpu[1:], strict=True):
        assert (g.cpu() != c).float().mean() < 1e-3
    noisy = run(image.cuda(), label.cuda(), keep.cuda(), only(noise_p=1.0))
    assert noisy[0].is_cuda and 0 <= noisy[0].min() and noisy[0].max() <= 1


def test_params_round_trip_through_json_and_default_to_the_prize_list():
    d = json.loads(json.dumps(PRIZE.to_dict()))
    assert AugmentParams.from_dict(d) == PRIZE
    assert (PRIZE.hflip_p, PRIZE.rotate_p, PRIZE.crop_p, PRIZE.gamma) == (
        0.5,
        0.5,
        0.15,
        (0.3, 0.8),
    )
    assert all(v == 0 for k, v in NONE.to_dict().items() if k.endswith("_p"))


@pytest.mark.parametrize(
    "bad", [{"hflip_p": 1.5}, {"gamma": (0.8, 0.3)}, {"border": "wrap"}, {"blur_kernel": 4}]
)
def test_bad_params_are_refused_with_a_message(bad):
    with pytest.raises(AugmentError):
        AugmentParams(**bad)
    with pytest.raises(AugmentError, match="unknown"):
        AugmentParams.from_dict({"flip_p": 0.5})


def test_masks_of_the_wrong_shape_are_refused():
    image, label, keep = batch()
    with pytest.raises(AugmentError, match="label"):
        run(image, label[:, :32], keep, PRIZE)
