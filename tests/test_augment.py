"""Batched tensor augmentations: shapes, determinism, and what each op does."""
import dataclasses

import torch

import math

from trainables.augment import (Augmenter, ViewRecipe, augment, color_jitter, gaussian_blur, grayscale,
                                hue_rotation, recipe, resized_crop_flip)

PLAIN = ViewRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)


def images(n=8, c=3, size=32, seed=0):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_views_are_deterministic_given_generator_and_differ_between_views():
    aug = Augmenter(recipe("cifar10", "simclr"), 32, (0.5,) * 3, (0.25,) * 3, "cpu")
    x = images()
    a1, a2 = aug.views(x, gen(1))
    b1, b2 = aug.views(x, gen(1))
    assert a1.shape == (8, 3, 32, 32) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.allclose(a1, a2)
    c1, _ = aug.views(x, gen(2))
    assert not torch.allclose(a1, c1)


def test_identity_recipe_only_normalizes():
    aug = Augmenter((PLAIN, PLAIN), 32, (0.5,) * 3, (0.25,) * 3, "cpu")
    x = images()
    v1, v2 = aug.views(x, gen())
    torch.testing.assert_close(v1, (x.float() / 255 - 0.5) / 0.25)
    torch.testing.assert_close(v2, v1)


def test_full_crop_with_forced_flip_mirrors_the_image():
    x = images().float() / 255
    flipped = resized_crop_flip(x, dataclasses.replace(PLAIN, flip_p=1.0), 32, gen())
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)


def test_crop_zooms_into_the_image():
    # A horizontal ramp: a crop of a fraction of the width spans a smaller range of values.
    ramp = torch.linspace(0, 1, 64).expand(4, 1, 64, 64).contiguous()
    r = dataclasses.replace(PLAIN, crop_scale=(0.25, 0.25))
    out = resized_crop_flip(ramp, r, 32, gen())
    spans = out[:, 0, 16].max(dim=1).values - out[:, 0, 16].min(dim=1).values
    assert out.shape == (4, 1, 32, 32) and (spans < 0.6).all() and (spans > 0.4).all()


def test_grayscale_has_equal_channels_with_luma_weights():
    x = images().float() / 255
    g = grayscale(x)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    torch.testing.assert_close(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])


def test_hue_rotation_is_a_colour_wheel_rotation():
    third = hue_rotation(torch.tensor([2 * math.pi / 3]))[0]
    red = torch.tensor([1.0, 0.2, 0.0])
    torch.testing.assert_close(third @ red, torch.tensor([0.0, 1.0, 0.2]), atol=1e-6, rtol=0)  # red -> green
    angles = torch.rand(5, generator=gen()) * 2 - 1
    rot = hue_rotation(angles)
    torch.testing.assert_close(rot @ torch.ones(5, 3, 1), torch.ones(5, 3, 1))  # greys stay
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(5, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(hue_rotation(torch.zeros(1))[0], torch.eye(3))


def test_color_jitter_keeps_range_and_skips_unchosen_samples():
    x = torch.rand(16, 3, 8, 8, generator=gen())
    out = color_jitter(x, (0.8, 0.8, 0.8, 0.2), 1.0, gen())
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)
    assert torch.equal(color_jitter(x, (0.8, 0.8, 0.8, 0.2), 0.0, gen()), x)


def test_blur_keeps_constant_images_and_smooths_noise():
    const = torch.full((4, 3, 32, 32), 0.3)
    torch.testing.assert_close(gaussian_blur(const, 1.0, (0.1, 2.0), gen()), const)
    noise = torch.rand(4, 3, 32, 32, generator=gen())
    blurred = gaussian_blur(noise, 1.0, (1.5, 2.0), gen())
    assert blurred.std() < 0.6 * noise.std()


def test_solarize_inverts_bright_pixels_only():
    x = torch.tensor([0.2, 0.6, 0.9]).view(1, 1, 1, 3).repeat(2, 3, 1, 1)
    out = augment(x, dataclasses.replace(PLAIN, solarize_p=1.0), 3, gen())
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.2, 0.4, 0.1]))


def test_noise_has_requested_std():
    x = torch.zeros(64, 1, 8, 8)
    out = augment(x, dataclasses.replace(PLAIN, noise_std=0.1), 8, gen())
    assert abs(float(out.std()) - 0.1) < 0.005


def test_byol_recipe_is_asymmetric():
    v1, v2 = recipe("stl10", "byol")
    assert v1.blur_p == 1.0 and v2.blur_p == 0.1 and v1.solarize_p == 0.0 and v2.solarize_p == 0.2
    assert recipe("cifar10", "simclr")[0].blur_p == 0.0
