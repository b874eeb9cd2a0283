"""Registry, checkpoint canonicalisation and recognition, and the errors for files that do not fit."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import asisr.models
from asisr.errors import UserError
from asisr.models import canonicalize, create, detect, list_models, load, read_checkpoint, save
from asisr.models import registry
from asisr.models.canonical import CanonicalCheckpoint, strip_prefix
from asisr.models.registry import Detection, register_detector, register_model
from tests.shared_data import SHARED

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(asisr.models.__file__).parent


def tiny_liif():
    torch.manual_seed(0)
    return create("liif", n_resblocks=2, n_feats=8, hidden=[16, 12])


def official_layout(model) -> dict:
    """The LIIF codebase's key names for an asisr LIIF, with the (unused) mean-shift convs it also stores."""
    sd = {}
    for k, v in model.state_dict().items():
        sd[k.removeprefix("backbone.").removeprefix("upsampler.")] = v.clone()
    for m in ("sub_mean", "add_mean"):
        sd[f"encoder.{m}.weight"] = torch.eye(3).view(3, 3, 1, 1)
        sd[f"encoder.{m}.bias"] = torch.zeros(3)
    return sd


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------ registry

def test_registry_lists_and_creates():
    assert "liif" in list_models()
    model = create("liif", n_resblocks=1, n_feats=8, hidden=[8])
    assert model.descriptor.backbone_halo == 4
    with pytest.raises(UserError, match="unknown model 'nope'"):
        create("nope")


def test_list_models_covers_every_architecture_file():
    """Whatever a file in models/ registers is listed: nothing depends on a hand-kept module list."""
    declared = set()
    for f in MODELS_DIR.glob("*.py"):
        declared |= set(re.findall(r"^@?register_model\(\s*[\"']([\w-]+)[\"']\s*\)", f.read_text(), re.M))
    assert {"liif", "eqsr_hat", "eqsr_light"} <= declared
    assert declared == set(list_models())


def test_discovery_imports_a_new_architecture_file_without_a_list(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_DETECTORS", list(registry._DETECTORS))
    monkeypatch.setattr(registry, "_DISCOVERED", set(registry._DISCOVERED))
    pkg = tmp_path / "toyzoo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "toy_arch.py").write_text(
        "from asisr.models.registry import Detection, register_detector, register_model\n"
        "@register_model('toy_net')\n"
        "def toy_net(width=4):\n    return ('toy', width)\n"
        "@register_detector(name='toy', requires=('toy.weight',))\n"
        "def detect_toy(ckpt):\n    return Detection('toy_net', ckpt.state_dict, {'width': ckpt.shape('toy.weight')[0]})\n")
    (pkg / "_private.py").write_text("raise RuntimeError('private modules are not architectures')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry.discover("toyzoo_pkg")
        registry.discover("toyzoo_pkg")  # once only: a second import would register twice
        assert "toy_net" in list_models()
        assert create("toy_net", width=3) == ("toy", 3)
        found = detect({"params": {"toy.weight": torch.zeros(5, 2)}})
        assert (found.name, found.kwargs) == ("toy_net", {"width": 5})
    finally:
        for name in [m for m in sys.modules if m.startswith("toyzoo_pkg")]:
            del sys.modules[name]


def test_architectures_are_imported_lazily_and_pretrained_without_torch():
    code = ("import sys\n"
            "import asisr.models.registry as r\n"
            "assert 'asisr.models.liif' not in sys.modules and 'asisr.models.eqsr' not in sys.modules\n"
            "r.list_models()\n"
            "assert 'asisr.models.liif' in sys.modules and 'asisr.models.eqsr' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    torch_free = ("import sys\n"
                  "sys.modules['torch'] = None  # any 'import torch' now fails\n"
                  "from asisr.models.pretrained import DEFAULT_MODEL, bundled_path, default_checkpoint\n"
                  "from asisr.models.canonical import canonicalize\n"
                  "assert default_checkpoint() == bundled_path(DEFAULT_MODEL) and default_checkpoint().is_file()\n")
    subprocess.run([sys.executable, "-c", torch_free], check=True, cwd=REPO)


# ---------------------------------------------------------------------- canonicalisation

WRAPPERS = {
    "bare": lambda sd: sd,
    "params_ema": lambda sd: {"params_ema": sd, "iter": 7},
    "params": lambda sd: {"params": sd},
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 1e-4}},
    "state_dict/model": lambda sd: {"state_dict": {"model": sd}},
    "liif": lambda sd: {"model": {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline"}}, "sd": sd},
                        "optimizer": {"name": "adam", "sd": {}}, "epoch": 1000},
    "liif (no args)": lambda sd: {"model": {"name": "liif", "sd": sd}},
    "liif (wrong name)": lambda sd: {"model": {"name": "swinir", "args": {}, "sd": sd}},
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("data_parallel", [False, True])
def test_every_wrapper_loads_the_same_official_liif(tmp_path, wrapper, data_parallel):
    model = tiny_liif()
    sd = official_layout(model)
    if data_parallel:
        sd = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / "w.pth"
    torch.save(WRAPPERS[wrapper](sd), path)

    ckpt = canonicalize(read_checkpoint(path), source=str(path))
    assert ckpt.format == wrapper.split(" ")[0]
    assert set(ckpt.state_dict) == {k.removeprefix("module.") for k in sd}
    if wrapper.startswith("liif"):
        assert ckpt.name == ("swinir" if "wrong" in wrapper else "liif")
        assert (ckpt.args is None) == ("no args" in wrapper)
    loaded = load(path)
    assert loaded.name == "liif" and loaded.config == model.config
    assert_same_weights(model, loaded)


def test_params_ema_is_preferred_over_params():
    ema, raw = {"w": torch.ones(2)}, {"w": torch.zeros(2)}
    assert torch.equal(canonicalize({"params": raw, "params_ema": ema}).state_dict["w"], ema["w"])


def test_own_format_carries_name_config_and_card(tmp_path):
    model = tiny_liif()
    ckpt = canonicalize(read_checkpoint(save(model, tmp_path / "m.pt", card={"data": "toy"})))
    assert (ckpt.format, ckpt.name, ckpt.config, ckpt.card) == ("asisr", "liif", model.config, {"data": "toy"})
    assert set(ckpt.state_dict) == set(model.state_dict())
    dp = {"asisr": {"name": "liif", "config": model.config},
          "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(dp, tmp_path / "dp.pt")
    assert_same_weights(model, load(tmp_path / "dp.pt"))


def test_round_trip_own_format(tmp_path):
    model = tiny_liif()
    assert_same_weights(model, load(save(model, tmp_path / "m.pt")))


def test_module_prefix_is_stripped_only_when_every_key_has_it():
    t = torch.zeros(1)
    assert strip_prefix({"module.a": t, "module.b.c": t}) == {"a": t, "b.c": t}
    assert strip_prefix({"module.module.a": t}) == {"a": t}
    mixed = {"module.a": t, "b": t}  # a submodule really called "module"
    assert strip_prefix(mixed) == mixed
    assert set(canonicalize({"state_dict": {"module.x": t}}).state_dict) == {"x"}


def test_canonicalize_is_idempotent_and_detect_takes_either_form(liif_ckpt):
    raw = read_checkpoint(liif_ckpt)
    ckpt = canonicalize(raw)
    assert canonicalize(ckpt) is ckpt
    assert isinstance(ckpt, CanonicalCheckpoint) and ckpt.format == "liif" and len(ckpt.state_dict) == 82
    a, b = detect(raw), detect(ckpt)
    assert a.name == b.name == "liif" and a.kwargs == b.kwargs
    assert a.kwargs == {"n_resblocks": 16, "n_feats": 64, "hidden": [256, 256, 256, 256]}


@pytest.mark.parametrize("obj, fragment", [
    ({"epoch": 3, "optimizer": {"lr": 1.0}}, "no state dict (a dict of tensors)"),
    ({"state_dict": {}}, "no state dict"),
    ({"asisr": {"name": "liif", "config": {}}}, "has no 'state_dict'"),
    ([torch.zeros(1)], "holds a list"),
])
def test_objects_without_a_state_dict(obj, fragment):
    with pytest.raises(UserError) as e:
        canonicalize(obj)
    assert fragment in one_line_error(e)


# ------------------------------------------------------------------------------ detection

def test_detector_order_is_priority_then_name(monkeypatch):
    monkeypatch.setattr(registry, "_DETECTORS", list(registry._DETECTORS))
    ckpt = {"conv.weight": torch.zeros(2, 3, 3, 3)}

    def claim(model):
        return lambda c: Detection(model, c.state_dict)

    register_detector(claim("low"), name="zz_low", priority=-5)
    register_detector(claim("b"), name="zz_b")
    register_detector(claim("a"), name="zz_a")
    assert detect(ckpt).name == "a"  # same priority: by name
    register_detector(claim("high"), name="zz_high", priority=50)
    assert detect(ckpt).name == "high"
    order = [d.name for d in registry.detectors()]
    assert order[0] == "asisr" and order.index("zz_high") < order.index("zz_a") < order.index("zz_b")
    assert order[-1] == "zz_low"
    with pytest.raises(ValueError, match="registered twice"):
        register_detector(claim("x"), name="zz_a")


def test_own_format_runs_before_key_based_detectors(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_DETECTORS", list(registry._DETECTORS))
    register_detector(lambda c: Detection("eqsr_hat", c.state_dict), name="greedy", priority=99)
    model = tiny_liif()
    assert load(save(model, tmp_path / "m.pt")).name == "liif"


def test_detector_requires_keys_before_it_runs(monkeypatch):
    monkeypatch.setattr(registry, "_DETECTORS", list(registry._DETECTORS))
    calls = []
    det = register_detector(lambda c: calls.append(c) or None, name="picky", requires=("a.weight", "b.weight"))
    assert det(canonicalize({"a.weight": torch.zeros(1)})) is None and calls == []
    det(canonicalize({"a.weight": torch.zeros(1), "b.weight": torch.zeros(1)}))
    assert len(calls) == 1


def test_unknown_architecture_error_says_what_the_keys_look_like(tmp_path):
    path = tmp_path / "other.pth"
    sd = {"conv_first.weight": torch.zeros(3), "conv_first.bias": torch.zeros(3)}
    sd.update({f"body.{i}.weight": torch.zeros(3) for i in range(4)})
    torch.save({"params": sd}, path)
    with pytest.raises(UserError) as e:
        load(path)
    msg = one_line_error(e)
    assert msg.startswith("unknown architecture: not a checkpoint of a known architecture (arbrcan, eqsr_hat, eqsr_light, liif, lmf, lte, metardn, metasr): ")
    assert f"{path} ('params' wrapper)" in msg
    assert "keys look like conv_first.weight, body.N.weight (6 tensors)" in msg
    assert msg.endswith("top-level modules: conv_first (2), body (4)")


def test_asisr_checkpoint_of_a_model_this_install_lacks(tmp_path):
    torch.save({"asisr": {"name": "future_net", "config": {}}, "state_dict": {"w": torch.zeros(1)}}, tmp_path / "f.pt")
    with pytest.raises(UserError, match="asisr checkpoint of model 'future_net'.*known: arbrcan, eqsr_hat"):
        load(tmp_path / "f.pt")


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


# Full-size official layouts (shapes only, on the meta device): recognised, or unknown.
MANIFESTS = SHARED / "fixtures" / "official_key_manifests.json"
EXPECTED = {f"{arch}_{enc}": arch for arch in ("liif", "lte", "metasr") for enc in ("edsr-baseline", "rdn", "swinir")}
EXPECTED["metardn_official"] = "metardn"  # issue 14: MetaRDN
EXPECTED["arbrcan_official"] = "arbrcan"  # issue 14: ArbRCAN
MEAN_SHIFT = ("encoder.sub_mean.", "encoder.add_mean.")  # in EDSR's state dict, never applied (shared/README.md)


@pytest.mark.parametrize("entry", list(EXPECTED))
def test_official_layouts(entry):
    """Detection maps every official tensor (but EDSR's unused mean shift) onto a model of exactly that layout."""
    if not MANIFESTS.is_file():
        pytest.skip(f"needs {MANIFESTS}")
    spec = json.loads(MANIFESTS.read_text())[entry]
    sd = {k: torch.empty(shape, device="meta") for k, shape in spec["state_dict"].items()}
    obj = ({"model": {"name": spec["checkpoint_model_name"], "args": spec["checkpoint_model_args"], "sd": sd}}
           if "checkpoint_model_name" in spec else sd)
    if EXPECTED[entry] == "unknown architecture":
        with pytest.raises(UserError) as e:
            detect(obj)
        assert EXPECTED[entry] in one_line_error(e)
        return
    found = detect(obj)
    assert found.name == EXPECTED[entry]
    with torch.device("meta"):
        model = create(found.name, **found.kwargs)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {k: tuple(v.shape) for k, v in found.state_dict.items()}
    assert mapped == own
    kept = [k for k in sd if not k.startswith(MEAN_SHIFT)]
    assert len(mapped) == len(kept) == spec["n_state_dict_keys"] - (4 if "edsr" in entry else 0)
    assert sum(int(torch.tensor(s).prod()) for s in own.values()) == spec["n_state_dict_elements"] - (
        sum(int(torch.tensor(sd[k].shape).prod()) for k in sd if k.startswith(MEAN_SHIFT)))


def test_official_liif_checkpoint_is_recognised(liif_ckpt):
    model = load(liif_ckpt)
    assert model.name == "liif"
    assert model.config == {"n_resblocks": 16, "n_feats": 64, "hidden": [256, 256, 256, 256]}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(1.57e6, rel=0.01)
    assert model.checkpoint_sha256 == "1cf77e16f33ee17bd04049f497eaea1e06f25585dbb1919e4c7cd1d9d4d23d57"


# ------------------------------------------------------------------------ unreadable files

def _zip_not_torch(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")


NOT_CHECKPOINTS = {
    "text": lambda p: p.write_bytes(b"not a checkpoint at all"),
    "png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4),
    "zip": _zip_not_torch,
    "truncated": lambda p: (torch.save({"w": torch.zeros(100)}, p), p.write_bytes(p.read_bytes()[:200])),
    "python object": lambda p: torch.save({"args": argparse.Namespace(lr=1), "sd": {"w": torch.zeros(1)}}, p),
}


@pytest.mark.parametrize("kind", list(NOT_CHECKPOINTS))
def test_non_checkpoint_files_give_one_clear_line(tmp_path, kind):
    path = tmp_path / "x.pth"
    NOT_CHECKPOINTS[kind](path)
    with pytest.raises(UserError) as e:
        load(path)
    msg = one_line_error(e)
    assert msg.startswith(f"cannot read checkpoint {path}: ")
    assert "weights_only" not in msg and "arbitrary code" not in msg and "\x1b" not in msg
    if kind == "python object":
        assert "argparse.Namespace" in msg and "state dict" in msg
    elif kind in ("text", "png"):
        assert "not a PyTorch checkpoint" in msg


@pytest.mark.parametrize("content, message", [(b"", "empty (0 bytes)"), (b"not a checkpoint at all", "cannot read")])
def test_corrupt_checkpoint(tmp_path, content, message):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(message)):
        load(path)
    with pytest.raises(UserError, match="checkpoint not found"):
        load(tmp_path / "missing.pth")


# ------------------------------------------------------------------------------ pretrained

def test_bundled_liif_is_the_official_checkpoint(liif_ckpt):
    bundled = create("liif", pretrained=True)
    official = load(liif_ckpt)
    for k, v in official.state_dict().items():
        assert torch.equal(v, bundled.state_dict()[k]), k


def test_pretrained_goes_through_one_builder(monkeypatch):
    from asisr.models import pretrained

    assert create("eqsr_light", pretrained=True).name == "eqsr_light"
    with pytest.raises(UserError, match="no bundled weights for 'eqsr_hat'"):
        create("eqsr_hat", pretrained=True)
    with pytest.raises(UserError, match=r"fixed configuration.*\(n_feats\)"):
        create("liif", pretrained=True, n_feats=8)
    with pytest.raises(UserError, match="unknown model 'nope'"):
        create("nope", pretrained=True)
    # a model registered later gets pretrained weights from the same builder, with no code of its own
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setitem(pretrained.BUNDLED, "liif_copy", pretrained.BUNDLED["liif"])
    register_model("liif_copy")(lambda **kw: None)
    with pytest.raises(UserError, match="hold a 'liif' model, not 'liif_copy'"):
        create("liif_copy", pretrained=True)
