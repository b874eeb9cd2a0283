"""Files asisr writes get ordinary modes, and model directories stay inside themselves."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asisr.errors import UserError
from asisr.runtime.manifest import MANIFEST, read_manifest
from tests.cli_helpers import assert_user_error, invoke


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """In a real process with that umask: an image, a checkpoint and an exported directory."""
    code = (
        "import os, sys, numpy as np; os.umask(int(sys.argv[2], 8));"
        "from asisr.imageio import write_image; write_image(sys.argv[1] + '/img.png', np.zeros((4, 4, 3), np.uint8));"
        "from asisr.models import create, save; save(create('liif', n_resblocks=1, n_feats=8, hidden=[8]),"
        " sys.argv[1] + '/m.pt');"
        "from asisr.export.publish import staging_dir\n"
        "with staging_dir(sys.argv[1] + '/exported') as work: (work / 'out' / 'f.txt').write_text('x')"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path), oct(umask)[2:]], check=True)
    assert _mode(tmp_path / "img.png") == 0o666 & ~umask
    assert _mode(tmp_path / "m.pt") == 0o666 & ~umask
    assert _mode(tmp_path / "exported") == 0o777 & ~umask


@pytest.fixture()
def copied_model(tiny_liif_onnx, tmp_path) -> Path:
    target = tmp_path / "zoo" / "model"
    shutil.copytree(tiny_liif_onnx, target)
    return target


def _rename_graph(directory: Path, name: str) -> None:
    data = json.loads((directory / MANIFEST).read_text())
    data["graphs"]["backbone"]["file"] = name
    (directory / MANIFEST).write_text(json.dumps(data))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_manifest_cannot_point_outside_its_directory(copied_model, tmp_path, how, capsys):
    """The sha256 matches in every case: only where the file lies makes it wrong."""
    outside = tmp_path / "zoo" / "other.onnx"
    shutil.copy2(copied_model / "backbone.onnx", outside)
    if how == "dotdot":
        _rename_graph(copied_model, "../other.onnx")
    elif how == "absolute":
        _rename_graph(copied_model, str(outside))
    else:
        (copied_model / "backbone.onnx").unlink()
        os.symlink(outside, copied_model / "backbone.onnx")
    with pytest.raises(UserError, match="outside the model directory"):
        read_manifest(copied_model)
    from asisr.cli.run import main
    from asisr.imageio import write_image

    image, out = tmp_path / "in.png", tmp_path / "out.png"
    write_image(image, np.zeros((8, 8, 3), np.uint8))
    code, _, err = invoke(main, [image, "--scale", "2", "--out", out, "--model", copied_model], capsys)
    assert_user_error(code, err, "outside the model directory")
    assert not out.exists()


def test_a_link_inside_the_directory_is_fine(copied_model):
    (copied_model / "graphs").mkdir()
    shutil.move(copied_model / "backbone.onnx", copied_model / "graphs" / "backbone.onnx")
    os.symlink("graphs/backbone.onnx", copied_model / "backbone.onnx")
    assert read_manifest(copied_model).graph_path("backbone").resolve().parent == (copied_model / "graphs").resolve()


def test_external_data_outside_the_directory_is_refused_by_one_line(tmp_path):
    """A graph whose weights live in ``../secret.bin``: ONNX Runtime refuses it; asisr says so in one line."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from asisr.runtime.backends.onnxrt import SessionFromOnnx

    (tmp_path / "m").mkdir()
    np.ones(4, np.float32).tofile(tmp_path / "secret.bin")
    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [weight])
    path = tmp_path / "m" / "model.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    del onnx
    with pytest.raises(UserError, match="cannot load ONNX graph .*escapes model directory") as info:
        SessionFromOnnx(path)()
    assert "\n" not in str(info.value)
