"""The examples in examples/ run (on a CPU, in seconds) and print what they promise."""
import os
import runpy

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _main(name):
    return runpy.run_path(os.path.join(EXAMPLES, name), run_name="example")["main"]


def test_conv_cost_seeds(capsys):
    rows = _main("conv_cost_seeds.py")([])
    assert list(rows.values()) == [81, 27, 36, 1_228_800, 53_952, 3, 7, 15]
    assert "53,952" in capsys.readouterr().out


@pytest.mark.parametrize("torchvision", [True, False])
def test_deeplabv3_aspp(torchvision):
    if torchvision:
        pytest.importorskip("torchvision")
    out = _main("deeplabv3_aspp.py")(["--size", "64"] + ([] if torchvision else ["--no-torchvision"]))
    assert out["output_shape"][-2:] == (64, 64)
    assert out["output_stride"] == (16, 16)
    # the atrous branches and the image pooling reach well beyond the backbone's receptive field
    backbone_rf = [e for e in out["fields"] if e.name.startswith("backbone")][-1].receptive_field[0]
    assert out["receptive_field"][0] > backbone_rf + 2 * 12 * 16
    if torchvision:
        assert out["torchvision_head_macs"] > 4 * out["head_macs"]  # separable atrous branches are cheaper


def test_tcn_streaming():
    out = _main("tcn_streaming.py")(["--length", "40", "--layers", "4", "--kernel", "2"])
    assert out["receptive_field"] == out["expected_receptive_field"] == 16
    assert out["max_error"] < 1e-10


def test_checkerboard(tmp_path):
    png = tmp_path / "checkerboard.png"
    scores = _main("checkerboard.py")(["--out", str(png)])
    assert png.stat().st_size > 1000
    assert scores["transposed"] > 1e-2 and scores["resize"] < 1e-3  # visible vs none
