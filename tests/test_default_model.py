"""The bundled default model passes ONNX parity like every other model (asisr-parity with no arguments)."""

from __future__ import annotations

from asisr.cli.parity import main as parity_main
from tests.cli_helpers import invoke


def test_default_model_passes_parity(capsys, tmp_path):
    code, out, err = invoke(parity_main, ["--shapes", "17x23,30x26,41x19", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, out + err
    assert "13/13 cases pass" in out
    assert (tmp_path / "p.json").is_file()
