"""EQSR: upstream parity, checkpoint detection, scale codes, tiling reach, ONNX parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import asisr.models as M
from asisr.errors import UserError
from asisr.models.base import load_state_dict_strict
from asisr.models.eqsr import asisr_to_upstream, build_eqsr_hat, build_eqsr_light
from asisr.models.hat import overlapping_windows, reflect_index
from asisr.runtime.query import make_query
from asisr.models.scale_code import Conv2DMod, ScaleCode, portable_enc, upstream_pos_enc
from tests.tiny_models import make_tiny_eqsr

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURE = SHARED / "fixtures" / "eqsr_upstream_small"


def tiny_hat(**kw):
    return make_tiny_eqsr("hat", **kw)


def tiny_light(**kw):
    return make_tiny_eqsr("light", **kw)


def mixed_query(h, w, scales):
    """Batch query where sample i is a whole-image upscale by scales[i] = (s_h, s_w), on a common grid."""
    big_h = max(round(h * s[0]) for s in scales)
    big_w = max(round(w * s[1]) for s in scales)
    rows = torch.stack([(torch.arange(big_h, dtype=torch.float64) + 0.5) / s[0] for s in scales]).float()
    cols = torch.stack([(torch.arange(big_w, dtype=torch.float64) + 0.5) / s[1] for s in scales]).float()
    return torch.tensor(scales, dtype=torch.float32), rows, cols


# ---------------------------------------------------------------- upstream fixture parity

@pytest.fixture(scope="module")
def upstream():
    pth = FIXTURE / "eqsr_upstream_small.pth"
    cases = FIXTURE / "eqsr_upstream_small_cases.pt"
    for p in (pth, cases):
        if not p.is_file():
            pytest.skip(f"EQSR upstream fixture missing: {p}")
    model = M.load(pth)
    return model, torch.load(cases, map_location="cpu", weights_only=True)


def _upstream_call(case, name):
    """Our (scale, rows, cols) for a fixture case, as a caller reproduces upstream's call."""
    lq, coord = case["lq"], case["coord"]
    _, _, h, w = lq.shape
    if name.startswith("train"):
        # upstream training batch: cell = 2 / HR size, coords = a window of each sample's HR grid
        hr = 2.0 / case["cell"][:, 0, 0, 0].double()
        scale = torch.stack([hr / h, hr / w], 1).float()
        rows = ((coord[:, :, 0, 0].double() + 1) / 2 * h).float()
        cols = ((coord[:, 0, :, 1].double() + 1) / 2 * w).float()
    else:  # whole-image test call: exactly the standard query
        scale, rows, cols = (torch.from_numpy(a) for a in make_query(h, w, *case["out"].shape[-2:]))
    return scale, rows, cols


CASES = ["sym_2.5", "asym_2x3.5", "train_batch_1.7_3.3"]


@pytest.mark.parametrize("name", CASES)
def test_upstream_fixture_parity(upstream, name):
    """feat and out within 1e-4 of upstream with OUR scale vector and coordinates.

    The fixture's ``scale_vector`` is not needed: the upstream-compatible code rebuilds
    upstream's float32 ``cell`` (2 / snapped HR size) and coordinates bit-exactly, so even
    the aliased high frequencies (i > ~20) agree.  Feeding the fixture vector gives the same.
    """
    model, cases = upstream
    case = cases[name]
    assert model.config["scale_code"] == "upstream" and model.config["offset_code"] == "upstream"
    scale, rows, cols = _upstream_call(case, name)
    with torch.no_grad():
        code = model.backbone.scale_code(scale, case["lq"].shape[2])
        feat = model.backbone(case["lq"], scale)
        feat_sv = model.backbone(case["lq"], scale, code=case["scale_vector"])
        out = model.upsampler(feat, scale, rows, cols)
        out_fixture_feat = model.upsampler(case["feat"], scale, rows, cols)
    assert torch.equal(code, case["scale_vector"])  # all 81 channels, bit for bit
    assert (feat - case["feat"]).abs().max() <= 1e-4
    assert (feat_sv - case["feat"]).abs().max() <= 1e-4
    assert (out_fixture_feat - case["out"]).abs().max() <= 1e-4
    assert (out - case["out"]).abs().max() <= 1e-4
    if "pad_hw" in case:  # the padding we compute in-graph is upstream's
        h, w = case["lq"].shape[-2:]
        assert tuple(case["pad_hw"].tolist()) == ((-h) % 8, (-w) % 8)


def test_upstream_high_frequencies_alias(upstream):
    """Why the code is rebuilt bit-exactly: a 1-ulp change of cell_h scrambles frequencies > ~20."""
    model, cases = upstream
    case = cases["sym_2.5"]
    cell = case["cell"][:, 0, 0, 0:1]
    bumped = upstream_pos_enc(torch.nextafter(cell, torch.ones_like(cell)))
    low = 1 + 2 * 16
    assert (bumped[:, :low] - case["scale_vector"][:, :low]).abs().max() < 1e-4
    assert (bumped[:, low:] - case["scale_vector"][:, low:]).abs().max() > 0.1
    with torch.no_grad():
        feat = model.backbone(case["lq"], torch.tensor([[52 / 21, 48 / 19]]), code=bumped)
    assert (feat - case["feat"]).abs().max() > 1e-3


# ------------------------------------------------------------------- paper configuration

def test_paper_config_and_upstream_names():
    model = M.create("eqsr_hat")  # paper configuration, portable codes
    n_params = sum(p.numel() for p in model.parameters())
    assert 13.0e6 < n_params < 14.0e6  # 13,514,606
    assert model.descriptor.backbone_halo is None and model.descriptor.upsampler_hr_reach == 2

    compat = build_eqsr_hat(scale_code="upstream", offset_code="upstream")
    assert 13.5e6 < sum(p.numel() for p in compat.parameters()) < 13.7e6  # 13,619,510
    upstream_sd = asisr_to_upstream(compat.state_dict())
    assert len(upstream_sd) == 529 and "upsample.rbf1.lengthscale" in upstream_sd
    found = M.detect({"params_ema": upstream_sd})
    assert found.name == "eqsr_hat"
    assert found.kwargs["embed_dim"] == 180 and found.kwargs["depths"] == [5] * 6
    assert found.kwargs["num_heads"] == [6] * 6 and found.kwargs["window_size"] == 16
    assert found.kwargs["overlap_ratio"] == 0.5 and found.kwargs["mlp_ratio"] == 2.0
    loaded = M.create(found.name, **found.kwargs)
    load_state_dict_strict(loaded, found.state_dict, "paper EQSR")
    lr = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a = compat.eval().upscale(lr, (24, 24))
        b = loaded.eval().upscale(lr, (24, 24))
    assert a.shape == (1, 3, 24, 24) and torch.equal(a, b)


def test_checkpoint_roundtrip_and_strict_errors(tmp_path):
    model = tiny_light()
    path = tmp_path / "light.pth"
    M.save(model, path)
    loaded = M.load(path)
    assert loaded.name == "eqsr_light" and loaded.config == model.config
    lr = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(model.upscale(lr, (20, 13)), loaded.upscale(lr, (20, 13)))

    hat = tiny_hat()
    M.save(hat, tmp_path / "hat.pth")
    assert M.load(tmp_path / "hat.pth").name == "eqsr_hat"

    sd = asisr_to_upstream(tiny_hat(scale_code="upstream", offset_code="upstream").state_dict())
    sd.pop("layers.1.conv.bias")
    sd["upsample.extra"] = torch.zeros(1)
    torch.save({"params_ema": sd}, tmp_path / "broken.pth")
    with pytest.raises(UserError, match="missing keys .*layers.1.conv.bias.*unexpected keys .*upsampler.extra"):
        M.load(tmp_path / "broken.pth")
    from asisr.models.canonical import canonicalize
    from asisr.models.eqsr import detect_eqsr
    assert detect_eqsr(canonicalize({"state_dict": {"x": torch.zeros(1)}})) is None


# ------------------------------------------------------------------ components vs upstream

def test_modulated_conv_equals_grouped_per_sample_weights():
    torch.manual_seed(0)
    conv = Conv2DMod(6, 5, style_dim=7)
    x, code = torch.randn(3, 6, 9, 8), torch.randn(3, 7)
    s = conv.to_style(code)
    w = conv.weight[None] * (s[:, None, :, None, None] + 1)
    w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    ref = F.conv2d(x.reshape(1, -1, 9, 8), w.reshape(-1, 6, 3, 3), padding=1, groups=3).reshape(3, 5, 9, 8)
    assert (conv(x, code) - ref).abs().max() < 1e-5


def test_overlapping_windows_and_reflect_pad_match_torch_ops():
    x = torch.randn(2, 16, 24, 5)
    ws, ows = 8, 12
    unfold = F.unfold(x.permute(0, 3, 1, 2), ows, stride=ws, padding=(ows - ws) // 2)  # (B, C*ows*ows, nW)
    ref = unfold.view(2, 5, ows * ows, -1).permute(0, 3, 2, 1).reshape(-1, ows * ows, 5)
    assert torch.equal(overlapping_windows(x, ws, ows), ref)
    img = torch.randn(1, 3, 13, 11)
    padded = img.index_select(2, reflect_index(13, 16, None)).index_select(3, reflect_index(11, 16, None))
    assert torch.equal(padded, F.pad(img, (0, 5, 0, 3), mode="reflect"))


# ---------------------------------------------------------------------------- scale codes

def test_portable_scale_code_fp16_and_upstream_does_not():
    scale = torch.tensor([[1.0, 1.0], [2.0, 3.5], [4.0, 4.0], [7.3, 1.2], [8.0, 8.0]])
    code = ScaleCode("portable")
    c32 = code(scale, 17)
    c16 = portable_enc((1.0 / scale).half(), code.num_frequencies)
    assert torch.isfinite(c16).all() and c32.shape == (5, code.dim)
    assert (c16.float() - c32).abs().max() < 2e-2
    assert not torch.equal(c32[1], c32[3])  # per-axis: asymmetric scales are distinct
    assert torch.equal(code(scale, 17), code(scale, 400))  # independent of the tile size
    # the 40-frequency upstream code does not survive fp16: its arguments overflow (inf -> NaN)
    u16 = upstream_pos_enc((2.0 / (scale[:, :1] * 17)).half())
    assert not torch.isfinite(u16).all()


# ------------------------------------------------------------------- batches and geometry

def test_light_mixed_scale_batch():
    torch.manual_seed(0)
    model = tiny_light()
    lr = torch.rand(3, 3, 10, 9)
    scale, rows, cols = mixed_query(10, 9, [(2.0, 2.0), (3.0, 1.5), (1.7, 3.9)])
    with torch.no_grad():
        out = model(lr, scale, rows, cols)
        for i in range(3):
            single = model(lr[i:i + 1], scale[i:i + 1], rows[i:i + 1], cols[i:i + 1])
            assert (single - out[i:i + 1]).abs().max() < 1e-5
        other = scale.clone()
        other[0] = torch.tensor([3.0, 3.0])
        feat_a, feat_b = model.backbone(lr, scale), model.backbone(lr, other)
        assert (feat_a[0] - feat_b[0]).abs().max() > 1e-4 and torch.equal(feat_a[1:], feat_b[1:])
        out_b = model(lr, other, rows, cols)
        assert (out_b[0] - out[0]).abs().max() > 1e-4 and torch.equal(out_b[1:], out[1:])


def test_light_backbone_tiles_exactly_with_its_halo():
    torch.manual_seed(0)
    model = tiny_light()
    halo = model.descriptor.backbone_halo
    assert halo == model.backbone.receptive_radius() == 1 + 2 * (1 + 2) + 1
    lr = torch.rand(1, 3, 40, 40)
    scale = torch.tensor([[2.5, 3.0]])
    with torch.no_grad():
        full = model.backbone(lr, scale)
        y0, y1, x0, x1 = 14, 26, 13, 27  # interior region of interest
        for margin, exact in ((halo, True), (halo - 1, False)):
            tile = model.backbone(lr[:, :, y0 - margin:y1 + margin, x0 - margin:x1 + margin], scale)
            err = (tile[:, :, margin:-margin, margin:-margin] - full[:, :, y0:y1, x0:x1]).abs().max()
            assert (err < 1e-5) if exact else (err > 1e-5)


@pytest.mark.parametrize("head_kernel,lr_skip,lr_reach", [(1, False, 0), (3, True, 1), (1, True, 1)])
def test_light_upsampler_hr_reach(head_kernel, lr_skip, lr_reach):
    """Without ECA an output pixel depends on its +-2 HR neighbours only (descriptor value)."""
    torch.manual_seed(0)
    model = tiny_light(head_kernel=head_kernel, lr_skip=lr_skip)
    reach = model.descriptor.upsampler_hr_reach
    assert reach == 2 and model.descriptor.upsampler_lr_reach == lr_reach
    feat = torch.randn(1, 16, 12, 12)
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(12, 12, 30, 30))
    with torch.no_grad():
        full = model.upsampler(feat, scale, rows, cols)
        a, b = 10, 20
        for margin, exact in ((reach, True), (reach - 1, False)):
            part = model.upsampler(feat, scale, rows[:, a - margin:b + margin], cols[:, a - margin:b + margin])
            err = (part[:, :, margin:-margin, margin:-margin] - full[:, :, a:b, a:b]).abs().max()
            assert (err < 1e-5) if exact else (err > 1e-5)


@pytest.mark.parametrize("head_kernel,lr_skip", [(1, False), (3, False), (1, True), (3, True)])
def test_light_upsampler_lr_reach(head_kernel, lr_skip):
    """Features cropped to the queries' LR span plus ``upsampler_lr_reach`` give the same output; one less does not."""
    torch.manual_seed(0)
    model = tiny_light(head_kernel=head_kernel, lr_skip=lr_skip)
    lr_reach, hr_reach = model.descriptor.upsampler_lr_reach, model.descriptor.upsampler_hr_reach
    feat = torch.randn(1, 16, 12, 12)
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(12, 12, 30, 30))
    a, b = 10, 20
    qa, qb = a - hr_reach, b + hr_reach  # the HR neighbours read their own nearest features
    with torch.no_grad():
        full = model.upsampler(feat, scale, rows, cols)[:, :, a:b, a:b]
        # the 3x3 head's reach is tight; the skip's extra pixel is already inside the HR halo at x2.5
        margins = [lr_reach] + ([lr_reach - 1] if head_kernel == 3 else [])
        for margin in margins:
            lo = int(torch.floor(rows[0, qa])) - margin
            hi = int(torch.floor(rows[0, qb - 1])) + margin + 1
            part = model.upsampler(feat[:, :, lo:hi, lo:hi], scale, rows[:, qa:qb] - lo, cols[:, qa:qb] - lo)
            err = (part[:, :, hr_reach:-hr_reach, hr_reach:-hr_reach] - full).abs().max()
            assert (err < 1e-5) if margin == lr_reach else (err > 1e-5)


def test_light_lr_skip_is_bilinear_at_init():
    """With ``lr_skip`` a fresh upsampler outputs the bilinear interpolation of its LR RGB map plus the mean."""
    torch.manual_seed(0)
    model = build_eqsr_light(n_feats=16, n_groups=1, n_resblocks=1, upsampler_width=16).eval()
    feat = torch.randn(1, 16, 7, 9)
    scale, rows, cols = (torch.from_numpy(a) for a in make_query(7, 9, 14, 18))  # x2: centres at k + 0.25 / 0.75
    with torch.no_grad():
        out = model.upsampler(feat, scale, rows, cols)
        lr_rgb = model.upsampler.lr_skip(feat) + model.upsampler.rgb_mean
        ref = torch.nn.functional.interpolate(lr_rgb, size=(14, 18), mode="bilinear", align_corners=False)
    assert (out - ref).abs().max() < 1e-5


# ------------------------------------------------------------------------------------ ONNX

@pytest.mark.parametrize("which", ["light", "hat"])
def test_onnx_dynamic_shapes_mixed_scales(which, tiny_eqsr):
    ort = pytest.importorskip("onnxruntime")

    model, out_dir = tiny_eqsr(which)  # exported with batch 2, 19x23 -> 41x67
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    backbone = ort.InferenceSession(str(out_dir / "backbone.onnx"), opts, providers=["CPUExecutionProvider"])
    upsampler = ort.InferenceSession(str(out_dir / "upsampler.onnx"), opts, providers=["CPUExecutionProvider"])
    # sizes other than the export's; a window multiple and a side smaller than the window
    for b, h, w, scales in ((3, 16, 5, [(2.0, 2.0), (3.5, 1.5), (1.3, 4.0)]), (1, 9, 30, [(2.5, 1.0)])):
        lr = torch.rand(b, 3, h, w)
        scale, rows, cols = mixed_query(h, w, scales)
        with torch.no_grad():
            feat = model.backbone(lr, scale)
            out = model.upsampler(feat, scale, rows, cols)
        feat_o = backbone.run(None, {"lr": lr.numpy(), "scale": scale.numpy()})[0]
        out_o = upsampler.run(None, {"features": feat.numpy(), "scale": scale.numpy(), "rows": rows.numpy(),
                                     "cols": cols.numpy()})[0]
        assert np.abs(feat_o - feat.numpy()).max() <= 1e-4
        assert np.abs(out_o - out.numpy()).max() <= 1e-4


def test_light_backbone_starts_as_edsr_baseline():
    """With gamma = 0 the light backbone is EDSR-baseline: pretrained encoder weights transfer exactly."""
    from asisr.models.edsr import EDSREncoder

    model = build_eqsr_light(n_feats=16, n_groups=2, n_resblocks=2).eval()
    edsr = EDSREncoder(n_resblocks=4, n_feats=16).eval()
    sd = {"conv_first.weight": edsr.head[0].weight, "conv_first.bias": edsr.head[0].bias,
          "conv_after_body.weight": edsr.body[4].weight, "conv_after_body.bias": edsr.body[4].bias}
    for i in range(4):
        for j in (0, 2):
            for t in ("weight", "bias"):
                sd[f"groups.{i // 2}.blocks.{i % 2}.body.{j}.{t}"] = getattr(edsr.body[i].body[j], t)
    model.backbone.load_state_dict(sd, strict=False)
    lr = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        assert torch.allclose(model.backbone(lr, torch.tensor([[2.0, 2.0], [3.0, 3.5]])), edsr((lr - 0.5) / 0.5),
                              atol=1e-6)


def test_light_trains_one_step():
    torch.manual_seed(0)
    model = tiny_light().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lr = torch.rand(2, 3, 12, 12)
    scale, rows, cols = mixed_query(12, 12, [(2.0, 2.0), (3.0, 2.5)])
    target = torch.rand(2, 3, rows.shape[1], cols.shape[1])
    loss = (model(lr, scale, rows, cols) - target).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.upsampler.rbf1.lengthscale.grad.abs() > 0  # the kriging length scale learns
    opt.step()
