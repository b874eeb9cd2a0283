"""LIIF against an independent transcription of the published algorithm, and on the official weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from asisr.models import create
from asisr.runtime.query import make_query


def official_query_rgb(model, lr: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """LIIF's query_rgb as published (normalised coords, grid_sample nearest, 1e-6 shift), written from the paper's code."""
    feat = model.backbone(lr, None)
    imnet = model.upsampler.imnet
    b, c, h, w = feat.shape
    H, W = out_hw
    ys = -1 + (2 * torch.arange(H, dtype=torch.float32) + 1) / H
    xs = -1 + (2 * torch.arange(W, dtype=torch.float32) + 1) / W
    coord = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(1, -1, 2).expand(b, -1, -1)
    cell = torch.tensor([2 / H, 2 / W]).view(1, 1, 2).expand(b, H * W, 2)
    feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
    fy = -1 + (2 * torch.arange(h, dtype=torch.float32) + 1) / h
    fx = -1 + (2 * torch.arange(w, dtype=torch.float32) + 1) / w
    feat_coord = torch.stack(torch.meshgrid(fy, fx, indexing="ij"), 0)[None].expand(b, 2, h, w)
    preds, areas = [], []
    for vx in (-1, 1):
        for vy in (-1, 1):
            c_ = coord.clone()
            c_[:, :, 0] += vx / h + 1e-6
            c_[:, :, 1] += vy / w + 1e-6
            c_.clamp_(-1 + 1e-6, 1 - 1e-6)
            grid = c_.flip(-1).unsqueeze(1)
            q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            q_coord = F.grid_sample(feat_coord, grid, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            rel = coord - q_coord
            rel = rel * torch.tensor([h, w], dtype=torch.float32)
            rel_cell = cell * torch.tensor([h, w], dtype=torch.float32)
            pred = imnet(torch.cat([q_feat, rel, rel_cell], -1))
            preds.append(pred)
            areas.append(torch.abs(rel[:, :, 0] * rel[:, :, 1]) + 1e-9)
    tot = torch.stack(areas).sum(0)
    areas[0], areas[3] = areas[3], areas[0]
    areas[1], areas[2] = areas[2], areas[1]
    ret = sum(p * (a / tot).unsqueeze(-1) for p, a in zip(preds, areas))
    return ret.view(b, H, W, 3).permute(0, 3, 1, 2) * 0.5 + 0.5


@pytest.mark.parametrize("out_hw", [(40, 52), (74, 46), (25, 31)])
def test_matches_published_algorithm(out_hw):
    torch.manual_seed(1)
    model = create("liif", n_resblocks=2, n_feats=8, hidden=[16, 16]).eval()
    lr = torch.rand(1, 3, 20, 13)
    with torch.no_grad():
        expected = official_query_rgb(model, lr, out_hw)
        for fast in (False, True):
            model.upsampler.fast = fast
            sc, rows, cols = (torch.from_numpy(a) for a in make_query(20, 13, *out_hw))
            got = model(lr, sc, rows, cols)
            assert got.shape == expected.shape
            assert (got - expected).abs().max().item() < 2e-5, f"fast={fast}"


def test_fast_path_equals_reference_path():
    torch.manual_seed(2)
    model = create("liif", n_resblocks=2, n_feats=16, hidden=[32, 32]).eval()
    ref = model.reference()
    lr = torch.rand(2, 3, 15, 17)
    sc, rows, cols = (torch.from_numpy(a) for a in make_query(15, 17, 47, 29, batch=2))
    with torch.no_grad():
        assert (model(lr, sc, rows, cols) - ref(lr, sc, rows, cols)).abs().max().item() < 1e-5
    assert model.upsampler.fast and not ref.upsampler.fast


def test_per_sample_scale_is_used():
    torch.manual_seed(3)
    model = create("liif", n_resblocks=1, n_feats=8, hidden=[16]).eval()
    lr = torch.rand(1, 3, 10, 10).repeat(2, 1, 1, 1)
    _, rows, cols = (torch.from_numpy(a) for a in make_query(10, 10, 20, 20, batch=2))
    scale = torch.tensor([[2.0, 2.0], [4.0, 4.0]])
    with torch.no_grad():
        out = model(lr, scale, rows, cols)
    assert (out[0] - out[1]).abs().max() > 1e-4  # the cell term differs per sample
