"""7-bit weights where ONNX Runtime's u8s8 kernels would saturate (x86-64 without VNNI)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config import CompressConfig
from edgekd.device.fingerprint import fingerprint, x86_int8_dot
from edgekd.errors import BadInput
from edgekd.export.onnx_export import export_onnx
from edgekd.quant.prepare import calibrate, freeze, prepare_qat
from edgekd.quant.scheme import get_scheme
from edgekd.quant.weight_bits import default_weight_bits, weight_qmax
from edgekd.targets import load_target

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (AVX2, "none"),
        (AVX2.replace("avx2", "avx2 avx512f avx512_vnni"), "avx512_vnni"),
        (AVX2.replace("avx2", "avx2 avx_vnni"), "avx_vnni"),
        (AVX2.replace("avx2", "avx2 avx512_vnni amx_int8"), "amx_int8"),
        ("processor\t: 0\nFeatures\t: fp asimd asimddp\n", None),  # no x86 flags line
        ("", None),
    ],
)
def test_the_cpus_int8_dot_product_extension_is_read_from_its_flags(cpuinfo, expected) -> None:
    assert x86_int8_dot(cpuinfo) == expected


def test_the_fingerprint_says_whether_an_x86_cpu_has_int8_dot_products() -> None:
    env = fingerprint()
    assert env.get("int8_dot") == x86_int8_dot()


@pytest.mark.parametrize(
    ("target", "dot", "bits"),
    [
        ("host-cpu", "none", 7),
        ("host-cpu", "avx512_vnni", 8),
        ("host-cpu", "amx_int8", 8),
        ("jetson-orin-nano-8gb", "none", 8),  # TensorRT on the GPU: int32 accumulators
        ("raspberry-pi-5", "none", 8),  # the device's CPU is ARM, whatever this host is
        ("android-snapdragon-8gen3", "none", 8),
    ],
)
def test_only_a_host_without_vnni_gets_7_bit_weights(target: str, dot: str, bits: int) -> None:
    got, why = default_weight_bits(load_target(target), int8_dot=dot)
    assert got == bits and why
    if bits == 7:
        assert "VNNI" in why and "[-63, 63]" in why


def test_resolved_config_fixes_the_bits_so_a_replay_keeps_them() -> None:
    expected = default_weight_bits(load_target("host-cpu"))[0]
    assert CompressConfig().resolved().weight_bits == expected
    assert CompressConfig(weight_bits=8).resolved().weight_bits == 8
    assert weight_qmax(7) == 63 and weight_qmax(8) == 127
    with pytest.raises(BadInput, match="--weight-bits 6"):
        CompressConfig(weight_bits=6).resolved()


def test_bad_weight_bits_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["compress", "--weight-bits", "9", "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 2, result.output
    assert "--weight-bits 9: valid: 7, 8" in result.output
    assert not (tmp_path / "run").exists()


class Saturating(nn.Module):
    """One 3x3 conv whose positive weights, on a bright image, make every u8s8 pair sum
    255 x 127 x 2 = 64770 with 8-bit weights: past int16, where vpmaddubsw saturates."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(0.5, 1.0, 36).reshape(4, 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def _export(qmax: int, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(16, 1, 8, 8) * 0.1 + 0.9  # near the top of the calibrated range: uint8 ~255
    scheme = replace(get_scheme("onnxruntime"), weight_qmax=qmax)
    q = prepare_qat(Saturating().eval(), scheme)
    calibrate(q, [x])
    freeze(q)
    export_onnx(q.eval(), x[:1], path, scheme=scheme)
    with torch.no_grad():
        return x, q(x)


def _ort(path: Path, x: torch.Tensor, optimize: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fused QLinearConv: integer kernels
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # DQ -> float Conv -> Q: the reference
    )
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def _int8_weights(path: Path) -> np.ndarray:
    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    return np.concatenate([a.ravel() for a in arrays if a.dtype == np.int8])


def test_7_bit_weights_export_in_range_and_integer_kernels_match_the_reference(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w7.onnx"
    x, fake = _export(63, path)
    weights = _int8_weights(path)
    assert weights.size and np.abs(weights).max() == 63
    reference, fused = _ort(path, x, optimize=False), _ort(path, x, optimize=True)
    scale = np.abs(reference).max()
    assert np.abs(fused - reference).max() <= 0.02 * scale
    assert np.abs(reference - fake.numpy()).max() <= 0.02 * scale


@pytest.mark.skipif(
    x86_int8_dot() != "none", reason="needs an x86-64 CPU without VNNI (where u8s8 saturates)"
)
def test_on_this_cpu_8_bit_weights_saturate_and_7_bit_do_not(tmp_path: Path) -> None:
    errors = {}
    for qmax in (127, 63):
        path = tmp_path / f"w{qmax}.onnx"
        x, _ = _export(qmax, path)
        reference, fused = _ort(path, x, optimize=False), _ort(path, x, optimize=True)
        errors[qmax] = np.abs(fused - reference).max() / np.abs(reference).max()
    assert errors[127] > 0.1, errors  # clamped pair sums: far from the reference
    assert errors[63] < 0.02, errors
