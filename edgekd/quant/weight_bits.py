"""How many bits int8 weights may use: 7 where the runtime's integer kernels would saturate.

ONNX Runtime runs uint8 activations x int8 weights (u8s8) on x86-64 CPUs without VNNI with
vpmaddubsw, which adds pairs of products into int16 lanes and saturates: 2 x 255 x 127 = 64770
does not fit in 32767. Weights in [-63, 63] keep every pair sum in range (2 x 255 x 63 = 32130),
as ONNX Runtime's own ``reduce_range`` does. CPUs with VNNI or AMX, ARM CPUs, NPUs and TensorRT
accumulate in int32 and keep all 8 bits.
"""

from __future__ import annotations

from edgekd.device.fingerprint import x86_int8_dot
from edgekd.errors import BadInput
from edgekd.targets import Target

WEIGHT_BITS = (7, 8)


def weight_qmax(bits: int) -> int:
    """The largest int8 weight magnitude at ``bits`` (symmetric, zero point 0)."""
    if bits not in WEIGHT_BITS:
        raise BadInput(f"--weight-bits {bits}: valid: {', '.join(map(str, WEIGHT_BITS))}")
    return 2 ** (bits - 1) - 1


def default_weight_bits(target: Target, int8_dot: str | None = None) -> tuple[int, str]:
    """Bits for ``target``'s int8 weights and why. Only a host target running ONNX Runtime's
    uint8 scheme on this machine's CPU depends on the CPU: ``int8_dot`` is its int8 dot-product
    extension (default: read from this machine; "none" on an x86-64 CPU without one)."""
    if target.family != "host" or target.quant_scheme != "onnxruntime":
        return 8, f"{target.name} accumulates int8 products in int32"
    dot = int8_dot if int8_dot is not None else x86_int8_dot()
    if dot == "none":
        return 7, (
            "this x86-64 CPU has no VNNI: ONNX Runtime's u8s8 kernels (vpmaddubsw) saturate "
            "int16 pair sums unless weights stay in [-63, 63]"
        )
    return 8, f"this CPU's int8 kernels accumulate in int32 ({dot or 'not x86-64'})"
