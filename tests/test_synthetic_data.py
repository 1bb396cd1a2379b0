"""The generated and composite datasets: shapes, determinism by seed, the statistics that define
each of them, their view makers, their options, and trials on them."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from trainables import ConfigError, train
from trainables.config import trial_config
from trainables.contract import PROVENANCE_KEY, TRIAL_KINDS
from trainables.data import load_data
from trainables.data.digit_worlds import DigitsOnNaturalOptions, background_crops, digit_sources
from trainables.diagnostics import SPECTRA_FILE


def bundle(name, split_seed=0, **options):
    return load_data(trial_config({"data": {"name": name, "split_seed": split_seed, "options": options}}).data)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def restore_threads():
    # Trials here run with cpus=1 (tiny models); torch's thread count is process-wide.
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# --- sparse_coding ---------------------------------------------------------------------------------
def test_sparse_coding_shapes_dictionary_and_sparse_codes():
    b = bundle("sparse_coding")
    m = b.dictionary
    assert b.input_shape == (50,) and b.train.samples.shape == (3000, 50) and b.test.samples.shape == (1000, 50)
    assert m.shape == (50, 10)
    torch.testing.assert_close(m.T @ m, torch.eye(10), atol=1e-5, rtol=0)
    # Noise-free by default: x = M z exactly, so z = M^T x.
    x = torch.cat([b.train.samples, b.test.samples])
    z = x @ m
    torch.testing.assert_close(z @ m.T, x, atol=1e-5, rtol=0)
    assert torch.all((z.round() - z).abs() < 1e-5) and set(z.round().unique().tolist()) == {-1.0, 0.0, 1.0}
    assert torch.all((z.round() != 0).sum(dim=1) == 2), "sparsity 0.2 of d = 10: two active latents per sample"
    labels = torch.cat([b.train.labels, b.test.labels])
    assert torch.all(z.round().gather(1, labels.view(-1, 1)) != 0), "label = an active latent"
    assert b.num_classes == 10 and len(labels.unique()) == 10


def test_sparse_coding_is_fixed_by_split_seed_and_options_apply():
    a, b, c = bundle("sparse_coding"), bundle("sparse_coding"), bundle("sparse_coding", split_seed=1)
    assert torch.equal(a.train.samples, b.train.samples) and torch.equal(a.dictionary, b.dictionary)
    assert not torch.allclose(a.dictionary, c.dictionary)
    noisy = bundle("sparse_coding", p=20, d=20, n=500, n_test=100, sparsity=0.3, noise_std=0.1)
    x = noisy.train.samples
    z = x @ noisy.dictionary
    assert x.shape == (500, 20) and noisy.dictionary.shape == (20, 20)
    # p = d: M is orthogonal, so M^T x = z + M^T noise, with noise std 0.1 in every direction.
    residual = z - z.round()
    assert abs(float(residual.std()) - 0.1) < 0.01
    assert torch.all((z.round() != 0).sum(dim=1) == 6)


def test_mask_views_keep_half_the_coordinates_independently_and_replay():
    b = bundle("sparse_coding")
    x = b.train.samples[:512]
    v1, v2 = b.view_maker.views(x, gen(3))
    w1, w2 = b.view_maker.views(x, gen(3))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    nonzero = x != 0
    kept1, kept2 = (v1 == x) & nonzero, (v2 == x) & nonzero
    assert torch.all((v1 == 0) | (v1 == x)) and torch.all((v2 == 0) | (v2 == x)), "kept coordinates are not rescaled"
    assert abs(float(kept1.sum() / nonzero.sum()) - 0.5) < 0.02
    assert abs(float((kept1 & kept2).sum() / nonzero.sum()) - 0.25) < 0.02, "the two masks are independent"
    torch.testing.assert_close(b.view_maker.normalize(x), x)


# --- Gaussian worlds ------------------------------------------------------------------------------
def test_gaussian_aug_noise_only_on_the_chosen_coordinates():
    b = bundle("gaussian_aug", noise=1.5)
    x = b.train.samples
    assert x.shape == (8192, 16) and b.test.samples.shape == (1024, 16) and b.input_shape == (16,)
    assert float(x.mean().abs()) < 0.02
    torch.testing.assert_close(torch.cov(x.T), torch.eye(16), atol=0.05, rtol=0)
    v1, v2 = b.view_maker.views(x, gen())
    d1, d2 = v1 - x, v2 - x
    assert torch.all(d1[:, :8] == 0) and torch.all(d2[:, :8] == 0)
    stds = d1[:, 8:].std(dim=0)
    assert torch.all((stds - 1.5).abs() < 0.05)
    assert float(torch.corrcoef(torch.stack([d1[:, 8], d2[:, 8]]))[0, 1].abs()) < 0.05, "independent per view"
    assert torch.equal(b.train.labels, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long())


def test_gaussian_aug_chosen_set_and_isotropic_sigma():
    b = bundle("gaussian_aug", noise=0.5, noisy=[0, 3], dim=4, n=4000)
    d = b.view_maker.views(b.train.samples, gen())[0] - b.train.samples
    stds = d.std(dim=0)
    assert abs(float(stds[0]) - 0.5) < 0.03 and abs(float(stds[3]) - 0.5) < 0.03 and torch.all(stds[1:3] == 0)
    iso = bundle("isotropic", sigma=0.7, dim=8, n=4000)
    d = iso.view_maker.views(iso.train.samples, gen())[1] - iso.train.samples
    assert torch.all((d.std(dim=0) - 0.7).abs() < 0.03)
    assert torch.equal(bundle("isotropic").train.samples, bundle("isotropic").train.samples)
    assert not torch.equal(bundle("isotropic").train.samples, bundle("isotropic", split_seed=5).train.samples)


# --- options are validated with the trial config -------------------------------------------------------
@pytest.mark.parametrize("data,fragment", [
    ({"name": "sparse_coding", "options": {"q": 3}}, "data.options.q: not an option of sparse_coding; allowed: n, n_test, p, d"),
    ({"name": "sparse_coding", "options": {"d": 60}}, "data.options.d: need 0 < d <= p"),
    ({"name": "sparse_coding", "options": {"keep_prob": 1.0}}, "data.options.keep_prob"),
    ({"name": "gaussian_aug", "options": {"noisy": [3, 16]}}, "data.options.noisy: must be distinct coordinates in [0, 16)"),
    ({"name": "isotropic", "options": {"sigma": "wide"}}, "data.options.sigma"),
    ({"name": "digits", "options": {"bits": 2}}, "data.options.bits: not an option of digits; allowed: none"),
    ({"name": "randbit", "options": {"base": "digitz"}}, "data.options.base: unknown value 'digitz'"),
    ({"name": "randbit", "options": {"base_options": {"lnes": 2}}}, "data.options.base_options.lnes: not an option of digits_clutter"),
    ({"name": "digits_on_natural", "options": {"contrast": 2.0}}, "data.options.contrast: must be in [0, 1]"),
    ({"name": "digits_clutter", "options": {"composites": 1}}, "data.options.pair_views: needs composites >= 2"),
])
def test_bad_options_are_one_line_config_errors(data, fragment):
    with pytest.raises(ConfigError) as info:
        TRIAL_KINDS["ssl"].validate({"data": data})
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_conv_backbone_on_vectors_is_a_config_error():
    with pytest.raises(ConfigError, match="convnet needs images"):
        train({"data": {"name": "isotropic"}, "model": {"backbone": "convnet"}, "epochs": 1, "optim": {"warmup_epochs": 0}})


# --- digit composites ---------------------------------------------------------------------------------
def test_digits_clutter_split_by_source_digit_and_deterministic():
    b = bundle("digits_clutter")
    _, y_train, _, y_test = digit_sources(trial_config({}).data)
    n = len(y_train)
    # The kNN bank and probes: two composites of every training source; held out: one of every
    # held-out source. SSL trains on the pairs of composites of one source.
    assert b.eval_train.samples.shape == (2 * n, 1, 24, 24) and b.test.samples.shape == (len(y_test), 1, 24, 24)
    assert torch.equal(b.eval_train.labels, y_train.repeat(2)) and torch.equal(b.test.labels, y_test)
    assert b.train.samples.shape == (n, 2, 1, 24, 24) and torch.equal(b.train.labels, y_train)
    assert torch.equal(b.train.samples[:, 0], b.eval_train.samples[:n]) and torch.equal(b.train.samples[:, 1], b.eval_train.samples[n:])
    assert b.eval_train.samples.min() >= 0 and b.eval_train.samples.max() <= 1
    assert torch.equal(b.eval_train.samples, bundle("digits_clutter").eval_train.samples)
    assert not torch.equal(b.eval_train.samples, bundle("digits_clutter", split_seed=1).eval_train.samples)


def test_pair_views_are_two_different_composites_of_one_source():
    b = load_data(trial_config({"data": {"name": "digits_clutter", "augment": "none", "options": {"composites": 3}}}).data)
    x = b.train.samples[:100]
    v1, v2 = b.view_maker.views(x, gen())
    normalized = b.view_maker.normalize(x.flatten(0, 1)).view(100, 3, 1, 24, 24)
    # Which composite each view shows: exactly one matches, and the two views show different ones.
    match1 = (normalized == v1.unsqueeze(1)).flatten(2).all(dim=2)
    match2 = (normalized == v2.unsqueeze(1)).flatten(2).all(dim=2)
    assert torch.all(match1.sum(dim=1) == 1) and torch.all(match2.sum(dim=1) == 1)
    assert not torch.any(match1 & match2)
    single = bundle("digits_clutter", pair_views=False)
    assert single.train is single.eval_train and single.train.samples.shape[1:] == (1, 24, 24)


def test_digits_clutter_digit_size_and_clutter():
    clean = bundle("digits_clutter", lines=0, noise_std=0.0, digit_min=10, digit_max=15).eval_train.samples[:200]
    rows = (clean[:, 0] > 0.25).any(dim=2)
    heights = rows.float().argmax(dim=1).neg() + (rows.shape[1] - rows.flip(1).float().argmax(dim=1))
    assert heights.min() >= 6 and heights.max() <= 16, "an 8x8 digit drawn 10-15 px high, inside the canvas"
    lines = bundle("digits_clutter", noise_std=0.0).eval_train.samples[:200]
    assert float((lines > 0.05).float().mean()) > float((clean > 0.05).float().mean()) + 0.05


def test_digits_dominant_shares_one_large_companion_across_a_sources_composites():
    alone = bundle("digits_dominant", dominant=False, noise_std=0.0)
    crowded = bundle("digits_dominant", noise_std=0.0)
    assert crowded.train.samples.shape[1:] == (2, 1, 24, 24)  # two composites per source digit
    assert torch.equal(alone.train.labels, crowded.train.labels)  # the label is the small digit's
    ink_alone = (alone.eval_train.samples > 0.25).float().sum(dim=(1, 2, 3))
    ink_crowded = (crowded.eval_train.samples > 0.25).float().sum(dim=(1, 2, 3))
    # A 16-20 px companion has several times the ink of the 7-10 px labeled digit.
    assert float(ink_crowded.mean()) > 3 * float(ink_alone.mean())
    # The companion is one digit in both composites of a source, at another place: with a 1 px
    # labeled digit and a fixed companion size, the composites' sorted pixels nearly agree, unlike
    # those of two sources' composites.
    fixed = bundle("digits_dominant", noise_std=0.0, digit_min=1, digit_max=1, dominant_min=18, dominant_max=18)
    pixels = fixed.train.samples.flatten(2).sort(dim=2).values  # (sources, 2, 576)
    same = (pixels[:, 0] - pixels[:, 1]).abs().mean(dim=1)
    other = (pixels[:-1, 0] - pixels[1:, 1]).abs().mean(dim=1)
    assert float(same.median()) < 0.3 * float(other.median())
    with pytest.raises(ConfigError, match="dominant_min"):
        bundle("digits_dominant", dominant_min=30)


def test_digits_on_natural_backgrounds_and_contrast_knob():
    b = bundle("digits_on_natural", composites=1)
    assert b.train.samples.shape[1:] == (3, 32, 32) and b.input_shape == (3, 32, 32)
    assert len(b.test) == len(digit_sources(trial_config({}).data)[3])  # one composite per held-out digit
    flat = background_crops(16, DigitsOnNaturalOptions(contrast=0.0), gen())
    textured = background_crops(16, DigitsOnNaturalOptions(contrast=1.0), gen())
    assert float(flat.std(dim=(2, 3)).max()) < 1e-6
    assert float(textured.std(dim=(2, 3)).mean()) > 0.03
    torch.testing.assert_close(flat.mean(dim=(2, 3)), textured.clamp(0, 1).mean(dim=(2, 3)), atol=0.02, rtol=0)


# --- randbit --------------------------------------------------------------------------------------
def test_randbit_appends_constant_unaugmented_bits_shared_by_both_views():
    base = bundle("digits")
    b = bundle("randbit", base="digits", bits=3)
    assert b.input_shape == (4, 8, 8) and b.num_classes == 10
    x = b.train.samples[:64]
    assert torch.equal(x[:, :1], base.train.samples[:64])
    v1, v2 = b.view_maker.views(x, gen(1))
    b1, b2 = base.view_maker.views(base.train.samples[:64], gen(1))
    assert torch.equal(v1[:, :1], b1) and torch.equal(v2[:, :1], b2), "image channels: the base dataset's views"
    bits = x[:, 1:, 0, 0] * 2 - 1
    for v in (v1, v2, b.view_maker.normalize(x)):
        assert torch.equal(v[:, 1:], bits.view(64, 3, 1, 1).expand(-1, -1, 8, 8))
    assert 0.3 < float(x[:, 1:, 0, 0].mean()) < 0.7, "random bits"
    assert bundle("randbit", base="digits", bits=0).input_shape == (1, 8, 8)


def test_randbit_on_composite_pairs_gives_both_composites_the_same_bits():
    b = bundle("randbit", bits=4)
    assert b.input_shape == (5, 24, 24) and b.train.samples.shape[1:] == (2, 5, 24, 24)
    x = b.train.samples[:32]
    assert torch.equal(x[:, 0, 1:], x[:, 1, 1:])
    v1, v2 = b.view_maker.views(x, gen())
    assert v1.shape == (32, 5, 24, 24) and torch.equal(v1[:, 1:], v2[:, 1:])
    assert torch.equal(v1[:, 1:, 0, 0], x[:, 0, 1:, 0, 0] * 2 - 1)


# --- trials on vectors ----------------------------------------------------------------------------
VECTOR_TRIAL = {"method": "byol", "method_kwargs": {"predictor": "linear"}, "data": {"name": "sparse_coding"},
                "model": {"backbone": "symrelu", "width": 50, "projector": "none"}, "batch_size": 256, "epochs": 4,
                "optim": {"lr": 0.1, "scale_lr": False, "warmup_epochs": 1}, "cpus": 1, "seed": 2}


def test_vector_trial_resumes_exactly_and_writes_spectra(tmp_path):
    straight, spectra = [], {}

    def keep(metrics, directory):
        straight.append(metrics)
        spectra[metrics["epoch"]] = json.loads((Path(directory) / SPECTRA_FILE).read_text())
        if metrics["epoch"] == 2:
            shutil.copytree(directory, tmp_path / "epoch2")

    train(VECTOR_TRIAL, report=keep)
    resumed = []
    train(VECTOR_TRIAL, report=lambda m, d: resumed.append(m), resume_from=str(tmp_path / "epoch2"))
    drop = ("samples_per_s",)
    assert [{k: v for k, v in m.items() if k not in drop} for m in straight[2:]] == \
           [{k: v for k, v in m.items() if k not in drop} for m in resumed]
    final = straight[-1]
    ssl = TRIAL_KINDS["ssl"]
    assert set(final) - {PROVENANCE_KEY} <= set(ssl.epoch_metrics) | set(ssl.final_metrics)
    for key in ("recovery_max", "recovery_median", "recovery_min", "weight_norm", "n_collapsed",
                "predictor_asymmetry", "predictor_alignment", "fewshot_acc"):
        assert key in final and math.isfinite(final[key]), key
    assert 0 <= final["recovery_min"] <= final["recovery_median"] <= final["recovery_max"] <= 1
    last = spectra[4]
    assert last["epoch"] == 4 and len(last["embedding_covariance"]) == 50 and len(last["layer_singular_values"][0]) == 50
    assert len(last["predictor_gains"]) == 50 and last["embedding_covariance"] == sorted(last["embedding_covariance"], reverse=True)
