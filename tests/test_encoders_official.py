"""The official LIIF/LTE encoders (EDSR-baseline, RDN, SwinIR) as plain modules: official keys, official numbers.

The fixtures in ``../shared/fixtures/encoders_official_small/`` were made by running the upstream
classes (yinboc/liif, jaewon-lee-b/lte) in small configurations; ``official_key_manifests.json``
lists the full-size checkpoint layouts. See ``shared/README.md``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings

import numpy as np
import pytest
import torch

from asisr.errors import UserError
from asisr.models.edsr import EDSREncoder
from asisr.models.hat import shifted_window_mask
from asisr.models.rdn import RDN_CONFIGS, RDNEncoder, rdn_args_from_state
from asisr.models.swinir import SwinIREncoder, swinir_args_from_state, window_test_pad
from tests.shared_data import SHARED, need

FIXTURES = SHARED / "fixtures" / "encoders_official_small"
MANIFESTS = SHARED / "fixtures" / "official_key_manifests.json"
ENCODERS = ("edsr-baseline", "rdn", "swinir")
CASES = ("h20w28", "h16w16")
TOL = 1e-4
MEAN_SHIFT = ("sub_mean.", "add_mean.")  # in EDSR's official state dict, never used by forward()


@pytest.fixture(autouse=True)
def _one_thread():
    """Fixtures were made with 1 thread; 2 threads change sums only at ~1e-7, but keep it deterministic."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _config() -> dict:
    return json.loads(need(FIXTURES / "encoders_official_small_config.json").read_text())


def _state(name: str) -> dict[str, torch.Tensor]:
    sd = torch.load(need(FIXTURES / f"{name}.pth"), map_location="cpu", weights_only=True)
    return {k: v for k, v in sd.items() if not k.startswith(MEAN_SHIFT)} if name == "edsr-baseline" else sd


def _fixture_args(name: str) -> dict:
    """Our constructor kwargs for the fixture's official constructor call."""
    entry = _config()[name]
    if name == "edsr-baseline":
        a = entry["built_as"]["args"]
        return {"n_resblocks": a["n_resblocks"], "n_feats": a["n_feats"]}
    if name == "rdn":
        a = entry["built_as"]["args"]
        table = entry["rdn_table_override"] or dict(zip("DCG", RDN_CONFIGS[a["RDNconfig"]]))
        return {"G0": a["G0"], "D": table["D"], "C": table["C"], "G": table["G"], "kernel_size": a["RDNkSize"],
                "in_channels": 3}
    a = entry["built_as"]["args"]
    assert (a["patch_size"], a["upsampler"], a["resi_connection"], a["ape"], a["patch_norm"]) == (1, "none", "1conv",
                                                                                                False, True)
    return {k: a[k] for k in ("img_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio")}


def _build(name: str, args: dict) -> torch.nn.Module:
    cls = {"edsr-baseline": EDSREncoder, "rdn": RDNEncoder, "swinir": SwinIREncoder}[name]
    return cls(**args)


def _loaded(name: str) -> torch.nn.Module:
    model = _build(name, _fixture_args(name)).eval()
    model.load_state_dict(_state(name), strict=True)
    return model


def _cases() -> dict:
    return torch.load(need(FIXTURES / "encoders_official_small_cases.pt"), map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------- fixture parity

@pytest.mark.parametrize("name", ENCODERS)
def test_fixture_state_dict_has_exactly_our_keys(name):
    model = _build(name, _fixture_args(name))
    ours = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    theirs = {k: (tuple(v.shape), v.dtype) for k, v in _state(name).items()}
    assert ours == theirs
    assert list(model.state_dict()) == list(_state(name))  # even the order
    assert model.out_dim == _config()[name]["out_dim"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ENCODERS)
def test_features_match_official(name, case):
    model = _loaded(name)
    c = _cases()[name][case]
    with torch.no_grad():
        feat = model(c["inp"])
    assert feat.shape == c["feat"].shape == tuple(_config()[name]["feat_shapes"][case])
    diff = (feat - c["feat"]).abs().max().item()
    print(f"{name} {case}: max abs diff {diff:.3g}")
    assert diff <= TOL


def test_swinir_buffers_equal_official():
    """The stored buffers (int64 index, img_size mask) are the official values, and the mask
    forward() builds in-graph for an img_size square is exactly the stored one."""
    ours, theirs = _loaded("swinir").state_dict(), _state("swinir")
    args = _fixture_args("swinir")
    ws, img = args["window_size"], args["img_size"]
    masks = [k for k in theirs if k.endswith("attn_mask")]
    assert masks == [f"layers.{i}.residual_group.blocks.1.attn_mask" for i in range(len(args["depths"]))]
    for key in [k for k in theirs if k.endswith(("attn_mask", "relative_position_index"))]:
        assert ours[key].dtype == theirs[key].dtype
        assert torch.equal(ours[key], theirs[key]), key
    assert theirs[masks[0]].shape == ((img // ws) ** 2, ws * ws, ws * ws)
    assert torch.equal(shifted_window_mask(img, img, ws, ws // 2, "cpu"), theirs[masks[0]])


@pytest.mark.parametrize("case", CASES)
def test_swinir_window_test_pad_matches_lte_test(case):
    model = _loaded("swinir")
    c = _cases()["swinir"][case]
    padded = window_test_pad(c["inp"], 8)
    assert torch.equal(padded, c["inp_testpad"])
    h, w = c["inp"].shape[-2:]
    assert tuple(c["testpad_hw"].tolist()) == (padded.shape[-2] - h, padded.shape[-1] - w)
    with torch.no_grad():
        feat, ref = model(padded), model(c["inp_testpad"])
    diff = (feat - ref).abs().max().item()
    print(f"swinir {case} testpad: max abs diff {diff:.3g}")
    assert feat.shape[-2:] == padded.shape[-2:]  # already a window multiple: no further padding
    assert diff <= TOL


def test_window_test_pad_sizes():
    """Always 1..ws extra pixels, mirrored with the edge repeated, on the bottom and right."""
    x = torch.arange(2 * 16 * 20, dtype=torch.float32).reshape(1, 2, 16, 20)
    y = window_test_pad(x, 8)
    assert y.shape == (1, 2, 24, 24)
    ref = torch.cat([x, x.flip(2)], 2)[:, :, :24]
    ref = torch.cat([ref, ref.flip(3)], 3)[:, :, :, :24]
    assert torch.equal(y, ref)
    assert window_test_pad(torch.zeros(1, 3, 7, 9), 8).shape[-2:] == (8, 16)


# ---------------------------------------------------------------------- layout -> config

def test_args_from_state_recover_fixture_configs():
    rdn = rdn_args_from_state({k: v.shape for k, v in _state("rdn").items()}, prefix="")
    assert rdn == _fixture_args("rdn")
    prefixed = {"encoder." + k: tuple(v.shape) for k, v in _state("swinir").items()}
    assert swinir_args_from_state(prefixed) == _fixture_args("swinir")


def _manifests(encoder: str) -> list[tuple[str, dict]]:
    data = json.loads(need(MANIFESTS).read_text())
    out = [(k, v) for k, v in data.items()
           if isinstance(v, dict) and v.get("checkpoint_model_args", {}).get("encoder_spec", {}).get("name") == encoder]
    assert out, f"no {encoder} entry in {MANIFESTS.name}"
    return out


def _encoder_shapes(entry: dict) -> dict[str, tuple[int, ...]]:
    return {k[len("encoder."):]: tuple(v) for k, v in entry["state_dict"].items() if k.startswith("encoder.")}


FULL_RDN = {"G0": 64, "D": 16, "C": 8, "G": 64, "kernel_size": 3, "in_channels": 3}  # LIIF's RDN, config 'B'
FULL_SWINIR = {"img_size": 48, "in_chans": 3, "embed_dim": 180, "depths": [6] * 6, "num_heads": [6] * 6,
               "window_size": 8, "mlp_ratio": 2.0}  # LTE's make_swinir(): SwinIR() defaults


@pytest.mark.parametrize("encoder, args_from_state, full", [
    ("rdn", rdn_args_from_state, FULL_RDN), ("swinir", swinir_args_from_state, FULL_SWINIR)])
def test_full_size_official_layouts(encoder, args_from_state, full):
    """Every LIIF/LTE/MetaSR checkpoint layout: the config is read back, and the module built
    from it (on the meta device) has exactly the checkpoint's encoder keys, shapes and size."""
    for label, entry in _manifests(encoder):
        args = args_from_state({k: tuple(v) for k, v in entry["state_dict"].items()})
        assert args == full, label
        with torch.device("meta"):
            model = _build(encoder, args)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert ours == _encoder_shapes(entry), label
        assert sum(p.numel() for p in model.parameters()) == entry["encoder_n_params"], label
        dtypes = {k: str(v.dtype) for k, v in model.state_dict().items()}
        for key, dtype in (entry.get("buffers") or {}).items():
            assert dtypes[key[len("encoder."):]] == dtype, (label, key)


def test_full_size_edsr_layout():
    for label, entry in _manifests("edsr-baseline"):
        with torch.device("meta"):
            model = EDSREncoder(16, 64)
        want = {k: v for k, v in _encoder_shapes(entry).items() if not k.startswith(MEAN_SHIFT)}
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want, label


def test_args_from_state_reject_other_layouts():
    rdn = {"encoder." + k: tuple(v.shape) for k, v in _state("rdn").items()}
    swin = {"encoder." + k: tuple(v.shape) for k, v in _state("swinir").items()}
    edsr = {"encoder." + k: tuple(v.shape) for k, v in _state("edsr-baseline").items()}
    for shapes in (swin, edsr, {}):
        with pytest.raises(UserError, match="not an RDN encoder"):
            rdn_args_from_state(shapes)
    for shapes in (rdn, edsr, {}):
        with pytest.raises(UserError, match="not a SwinIR encoder"):
            swinir_args_from_state(shapes)
    with pytest.raises(UserError, match="not an RDN encoder"):  # right prefix matters
        rdn_args_from_state(rdn, prefix="model.")
    broken = dict(rdn)
    broken["encoder.RDBs.1.LFF.weight"] = (16, 80, 3, 3)  # a 3x3 local fusion: not RDN
    with pytest.raises(UserError, match="keys or shapes differ"):
        rdn_args_from_state(broken)
    extra = dict(swin, **{"encoder.upsample.0.weight": (256, 64, 3, 3)})  # an upsampler: not the encoder
    with pytest.raises(UserError, match="keys or shapes differ"):
        swinir_args_from_state(extra)
    no_buffers = {k: v for k, v in swin.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    assert swinir_args_from_state(no_buffers)["img_size"] == 48  # buffers are derivable: may be absent
    with pytest.raises(UserError) as err:
        rdn_args_from_state(swin)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------ receptive radius

@pytest.mark.parametrize("source", ["fixture", "kernel5"])
def test_rdn_receptive_radius_is_exact(source):
    """Perturb one input pixel: outputs farther than the radius (Chebyshev, in LR pixels) are
    bit-identical and outputs at exactly the radius change. float64, since the influence at the
    edge of the field is tiny (~1e-14 with the default init)."""
    if source == "fixture":
        model = _loaded("rdn")
        assert model.receptive_radius == 15  # 3 * 1 + D * C = 3 + 3 * 4
    else:  # the shallow / global convs at 5x5 (the dense convs stay 3x3, as upstream)
        torch.manual_seed(0)
        model = RDNEncoder(G0=8, D=2, C=3, G=8, kernel_size=5).eval()
        assert model.receptive_radius == 12  # 3 * 2 + 2 * 3
    model = model.double()
    r = model.receptive_radius
    n = 2 * r + 11
    c = n // 2
    x = torch.randn(1, 3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bumped = x.clone()
    bumped[0, :, c, c] += 1.0
    with torch.no_grad():
        change = (model(bumped) - model(x)).abs().amax(1)[0]
    i = torch.arange(n)
    dist = torch.maximum((i[:, None] - c).abs(), (i[None, :] - c).abs())
    assert change[dist > r].max().item() == 0.0
    assert change[dist == r].max().item() > 0.0
    assert RDNEncoder().receptive_radius == 131  # LIIF's RDN: 3 + 16 * 8


def test_swinir_has_no_receptive_radius():
    model = SwinIREncoder(embed_dim=12, depths=[2], num_heads=[2])
    assert model.receptive_radius is None and model.out_dim == 64 and model.window_size == 8


# ----------------------------------------------------------------------------- ONNX export

# The fixture configs, written out so the export checks run without ../shared.
SMALL = {"edsr-baseline": {"n_resblocks": 4, "n_feats": 32},
         "rdn": {"G0": 16, "D": 3, "C": 4, "G": 16, "kernel_size": 3, "in_channels": 3},
         "swinir": {"img_size": 48, "in_chans": 3, "embed_dim": 30, "depths": [2, 2], "num_heads": [3, 3],
                    "window_size": 8, "mlp_ratio": 2.0}}


def test_small_configs_are_the_fixtures():
    for name in ENCODERS:
        assert SMALL[name] == _fixture_args(name)


class _TestPad(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_test_pad(x, 8)


def _export(module: torch.nn.Module, x: torch.Tensor, path) -> None:
    """As export/onnx.py: dynamo exporter, opset 18, symbolic batch/H/W, graph optimizer off."""
    dims = {0: torch.export.Dim("batch", min=1, max=1 << 16), 2: torch.export.Dim("height", min=2, max=1 << 16),
            3: torch.export.Dim("width", min=2, max=1 << 16)}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (x,), dynamo=True, opset_version=18, input_names=["x"],
                                    output_names=["y"], dynamic_shapes=(dims,), optimize=False, verbose=False)
    program.save(str(path))


@pytest.mark.parametrize("name", [*ENCODERS, "window_test_pad"])
def test_onnx_export_serves_other_sizes(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if name == "window_test_pad":
        module = _TestPad()
    else:
        torch.manual_seed(0)
        module = _build(name, SMALL[name]).eval()
    _export(module, torch.rand(2, 3, 19, 23) * 2 - 1, tmp_path / "m.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), options, providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 13, 37), (1, 3, 16, 16)]:  # not a window multiple, and one (no padding)
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
        with torch.no_grad():
            ref = module(x).numpy()
        out = session.run(None, {"x": x.numpy()})[0]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= TOL, (name, shape)
