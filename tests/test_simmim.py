"""SimMIM core: mask generator, masked L1 loss, target normalisation, mask token and encoder hand-over."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import hf_simmim, randomize, tiny
from swinv2.models import MaskGenerator, SimMIM, masked_l1, normalize_targets


def test_mask_generator_counts_shapes_and_paper_setting():
    gen = MaskGenerator(192, 32, 4, 0.6)  # the paper: 22 of 6 x 6 cells, on the 48 x 48 token grid
    masks = gen(5, torch.Generator().manual_seed(0))
    assert masks.shape == (5, 48, 48) and masks.dtype == torch.bool
    assert gen.count == 22 == math.ceil(36 * 0.6)
    assert (masks.flatten(1).sum(1) == 22 * 8 * 8).all()
    cells = masks[:, ::8, ::8]  # every 8 x 8 token block is all masked or all visible
    assert torch.equal(cells.repeat_interleave(8, 1).repeat_interleave(8, 2), masks)


def test_mask_generator_is_deterministic_with_a_seed_and_random_without():
    gen = MaskGenerator(64, 16, 4, 0.5)
    a = gen(8, torch.Generator().manual_seed(3))
    assert torch.equal(a, gen(8, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, gen(8, torch.Generator().manual_seed(4)))
    assert not all(torch.equal(a[0], a[i]) for i in range(1, 8)), "each image gets its own mask"


def test_mask_generator_for_small_images_crops_partial_cells():
    gen = MaskGenerator(28, 8, 4, 0.5)  # Fashion-MNIST: 7 x 7 tokens, 4 x 4 cells of 2 x 2 tokens
    masks = gen(64, torch.Generator().manual_seed(0))
    assert masks.shape == (64, 7, 7) and gen.count == 8
    assert 0 < masks.float().mean() < 1
    with pytest.raises(ValueError, match="multiple of the model patch"):
        MaskGenerator(28, 6, 4, 0.5)
    with pytest.raises(ValueError, match="mask ratio"):
        MaskGenerator(28, 8, 4, 1.0)


def test_loss_counts_masked_pixels_only():
    target = torch.randn(2, 3, 8, 8)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    recon = torch.randn(2, 3, 8, 8)
    loss = masked_l1(target, recon, mask)
    expected = (target - recon).abs()[:, :, :4].mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    changed = recon.clone()
    changed[:, :, 4:] += 10  # unmasked pixels: no effect
    assert torch.equal(masked_l1(target, changed, mask), loss)
    changed[:, :, 0] += 10  # masked pixels: the loss moves
    assert masked_l1(target, changed, mask) > loss


def test_normalize_targets():
    flat = torch.full((1, 3, 20, 20), 0.5)  # exact in binary: window means are exact, so exactly 0
    assert torch.allclose(normalize_targets(flat, 5), torch.zeros_like(flat))
    x = torch.randn(2, 3, 32, 32)
    y = normalize_targets(x, 63)  # every window covers the whole image: global standardisation per channel
    ref = (x - x.mean((2, 3), keepdim=True)) / (x.var((2, 3), keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(y, ref, atol=1e-4)
    with pytest.raises(ValueError, match="odd"):
        normalize_targets(x, 4)


def _simmim(**kw) -> SimMIM:
    encoder = randomize(tiny("swinv2_pico_window7_28", in_chans=1, num_classes=0))
    return SimMIM(encoder, **kw)


def test_mask_token_replaces_masked_embeddings_and_learns():
    model = _simmim()
    images = torch.randn(4, 1, 28, 28)
    mask = model.mask_generator(28, 8, 0.5)(4, torch.Generator().manual_seed(0))
    loss, recon = model(images, mask)
    assert recon.shape == images.shape and loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert model.decoder[0].weight.grad.abs().sum() > 0
    # Every masked token's content is erased: changing masked pixels does not change the features.
    edited = images.clone()
    pixel_mask = mask.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :28, :28]
    edited[pixel_mask.unsqueeze(1)] = 5.0
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode(images, mask), model.encode(edited, mask), atol=1e-5)
    with pytest.raises(ValueError, match="token grid"):
        model(images, mask[:, :6])


def test_without_mask_the_encoder_is_the_plain_model_and_its_weights_hand_over(tmp_path):
    from swinv2.weights.checkpoint import save_weights

    model = _simmim(norm_target_window=7).eval()
    images = torch.randn(2, 1, 28, 28)
    none = torch.zeros(2, 7, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model.encode(images, none), model.encoder.forward_features(images))
    save_weights(model.encoder, tmp_path / "encoder.safetensors")
    tuned = tiny("swinv2_pico_window7_28", pretrained=str(tmp_path / "encoder.safetensors"), in_chans=1).eval()
    with torch.no_grad():
        assert torch.equal(tuned.forward_features(images), model.encoder.forward_features(images))


def test_study_table_reports_both_arms_per_seed_and_the_gain():
    from swinv2.tools.studies import spread, verdict
    from swinv2.tools.studies.simmim import FINETUNE, PRETRAIN, table

    assert FINETUNE.labels_per_class * 10 == 1000 and PRETRAIN.train_limit is None  # all 60,000 images
    scratch, simmim = spread([69.0, 71.0]), spread([74.0, 75.0])
    assert verdict(simmim, scratch) == "higher"  # 4.5 apart, spreads 1.41 + 0.71
    text = table(
        {
            "labels": 1000,
            "scratch_top1": 70.0,
            "simmim_top1": 74.5,
            "gain": 4.5,
            "scratch": scratch,
            "simmim": simmim,
            "verdict": verdict(simmim, scratch),
            "seeds": [0, 1],
            "scratch_top1_per_seed": [69.0, 71.0],
            "simmim_top1_per_seed": [74.0, 75.0],
            "pretrain": {"epochs": 10, "seconds": 300},
            "seconds": 600,
        }
    )
    assert "| scratch | 1000 | 70.00 ± 1.41 | 69.00 | 71.00 |" in text
    assert "| 1000 | 74.50 ± 0.71 | 74.00 | 75.00 |" in text and "**+4.50** (higher) | +5.00 | +4.00 |" in text
    assert "10.0 minutes in all (5.0 pretraining)" in text


def test_hugging_face_masked_image_modeling_weights_give_the_same_reconstruction_and_loss():
    pytest.importorskip("transformers")
    from swinv2 import SwinV2Config
    from swinv2.models import SwinV2
    from swinv2.weights.convert import convert_state_dict

    hf = hf_simmim(32, 4).eval()
    cfg = SwinV2Config(
        img_size=32,
        patch_size=4,
        embed_dim=16,
        depths=(2, 2),
        num_heads=(1, 2),
        window_size=4,
        in_chans=1,
        num_classes=0,
    )
    ours = SimMIM(SwinV2(cfg)).eval()
    ours.load_converted(convert_state_dict(hf.state_dict()))
    images = torch.randn(2, 1, 32, 32)
    mask = ours.mask_generator(32, 8, 0.5)(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = hf(pixel_values=images, bool_masked_pos=mask.flatten(1))
        loss, recon = ours(images, mask)
    err = (theirs.reconstruction - recon).abs()
    print("HF SimMIM reconstruction max |diff|", err.max().item(), "mean", err.mean().item())
    assert torch.allclose(theirs.reconstruction, recon, atol=1e-4)
    assert torch.allclose(theirs.loss, loss, atol=1e-5)
