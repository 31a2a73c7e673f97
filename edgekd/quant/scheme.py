"""Quantization schemes: the integer arithmetic each runtime really executes."""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.errors import BadInput


@dataclass(frozen=True)
class QuantScheme:
    """Where Q/DQ pairs go and which integer types they use.

    Weights are int8, symmetric (zero point 0), per output channel, in [-weight_qmax,
    weight_qmax]: 127, or 63 where the runtime's kernels would saturate
    (:mod:`edgekd.quant.weight_bits`).
    """

    name: str
    signed_activations: bool  # int8 symmetric (zero point 0) or uint8 asymmetric
    quantize_outputs: bool  # Q/DQ on conv/linear outputs (after a following ReLU) as well
    int32_bias: bool  # store biases as int32 behind DequantizeLinear (else float)
    description: str
    calibrator: str  # default activation calibrator (edgekd.quant.calibrators)
    quantize_every_op: bool = False  # Q/DQ after every op (pooling, adds...), not just Conv/Gemm
    static_shapes: bool = False  # export with a fixed batch of 1 (no dynamic axes)
    weight_qmax: int = 127

    @property
    def act_range(self) -> tuple[int, int]:
        return (-128, 127) if self.signed_activations else (0, 255)


SCHEMES = {
    "tensorrt": QuantScheme(
        name="tensorrt",
        calibrator="percentile",
        signed_activations=True,
        quantize_outputs=False,
        int32_bias=False,  # TensorRT's DequantizeLinear takes int8 only; it quantizes biases itself
        description=(
            "TensorRT explicit quantization: int8 symmetric activations per tensor, Q/DQ on the "
            "inputs of Conv/Gemm; TensorRT fuses the following ops itself"
        ),
    ),
    "onnxruntime": QuantScheme(
        name="onnxruntime",
        calibrator="percentile",
        signed_activations=False,
        quantize_outputs=True,
        int32_bias=True,  # ORT fuses QLinearConv only when every input comes from a DequantizeLinear
        description=(
            "ONNX Runtime QDQ: uint8 asymmetric activations with Q/DQ around each Conv/Gemm "
            "(after its ReLU), the pattern ONNX Runtime fuses into QLinearConv/QGemm"
        ),
    ),
    "qnn": QuantScheme(
        name="qnn",
        calibrator="percentile",
        signed_activations=False,
        quantize_outputs=True,
        int32_bias=True,
        quantize_every_op=True,
        static_shapes=True,
        description=(
            "ONNX Runtime QNN (Qualcomm Hexagon NPU): uint8 asymmetric activations with Q/DQ "
            "after every op, so that no float op falls back to the CPU; int8 symmetric "
            "per-channel weights, int32 biases; static shapes (batch 1)"
        ),
    ),
}


def get_scheme(name: str) -> QuantScheme:
    """The scheme called ``name``."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise BadInput(
            f"unknown quantization scheme {name!r}; known: {', '.join(sorted(SCHEMES))}"
        ) from None
