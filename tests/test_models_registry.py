"""Registry, checkpoint recognition and the error messages for checkpoints that do not fit."""

from __future__ import annotations

import pytest
import torch

from asisr.errors import UserError
from asisr.models import create, list_models, load, save


def test_registry_lists_and_creates():
    assert "liif" in list_models()
    model = create("liif", n_resblocks=1, n_feats=8, hidden=[8])
    assert model.descriptor.backbone_halo == 4
    with pytest.raises(UserError, match="unknown model 'nope'"):
        create("nope")


def test_official_liif_checkpoint_is_recognised(liif_ckpt):
    model = load(liif_ckpt)
    assert model.name == "liif"
    assert model.config == {"n_resblocks": 16, "n_feats": 64, "hidden": [256, 256, 256, 256]}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(1.57e6, rel=0.01)
    assert model.checkpoint_sha256 == "1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57"


def test_round_trip_own_format(tmp_path):
    torch.manual_seed(0)
    model = create("liif", n_resblocks=1, n_feats=8, hidden=[8])
    loaded = load(save(model, tmp_path / "m.pt"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_unknown_architecture_names_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv_first.weight": torch.zeros(3), "body.0.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match=r"unknown architecture.*conv_first\.weight"):
        load(path)


def test_mismatched_checkpoint_names_missing_and_unexpected(tmp_path):
    model = create("liif", n_resblocks=1, n_feats=8, hidden=[8])
    sd = model.state_dict()
    sd.pop("upsampler.imnet.layers.0.bias")
    sd["upsampler.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"asisr": {"name": "liif", "config": model.config}, "state_dict": sd}, path)
    with pytest.raises(UserError) as e:
        load(path)
    msg = str(e.value)
    assert "missing keys (1): upsampler.imnet.layers.0.bias" in msg
    assert "unexpected keys (1): upsampler.extra.weight" in msg


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"not a checkpoint at all", "cannot read checkpoint")])
def test_corrupt_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load(path)


def test_bundled_liif_is_the_official_checkpoint(liif_ckpt):
    bundled = create("liif", pretrained=True)
    official = load(liif_ckpt)
    for k, v in official.state_dict().items():
        assert torch.equal(v, bundled.state_dict()[k]), k
