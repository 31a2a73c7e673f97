"""Engine inspector layer information (JSON) as TensorRT writes it, for the INT8 coverage tests.

Samples follow the engine inspector's JSON (ProfilingVerbosity DETAILED) as the TensorRT
developer guide ("Engine Inspector") shows it, and TensorRT 10's forms: formats such as
"Row major linear FP32", "N/A due to dynamic shapes" without an execution context, Myelin
"gemm" layers, and names-only layers (strings) at lower verbosity.
"""

INT8_CONV = {
    "Name": "/stem/conv/Conv + /stem/act/Relu",
    "LayerType": "CaskConvolution",
    "Inputs": [
        {
            "Name": "input_quantized",
            "Location": "Device",
            "Dimensions": [1, 3, 32, 32],
            "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format",
        }
    ],
    "Outputs": [
        {
            "Name": "/stem/act/Relu_output_0",
            "Location": "Device",
            "Dimensions": [1, 16, 32, 32],
            "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format",
        }
    ],
    "ParameterType": "Convolution",
    "Kernel": [3, 3],
    "PaddingMode": "kEXPLICIT_ROUND_DOWN",
    "PrePadding": [1, 1],
    "PostPadding": [1, 1],
    "Stride": [1, 1],
    "Dilation": [1, 1],
    "OutMaps": 16,
    "Groups": 1,
    "Weights": {"Type": "Int8", "Count": 432},
    "Bias": {"Type": "Float", "Count": 16},
    "HasBias": 1,
    "HasReLU": 1,
    "Activation": "RELU",
    "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs"
    "_vect_c_32_nchw_vect_c_32_tilesize32x32x64_stage4_warpsize2x1x1_g1_tensor16x8x32",
    "TacticValue": "0x2b3a1a4e0c1f0a21",
}
FLOAT_CONV = {
    "Name": "/head/conv/Conv",
    "LayerType": "CaskConvolution",
    "Inputs": [
        {"Name": "a", "Dimensions": [1, 16, 8, 8], "Format/Datatype": "Row major linear FP32"}
    ],
    "Outputs": [
        {"Name": "b", "Dimensions": [1, 8, 8, 8], "Format/Datatype": "Row major linear FP32"}
    ],
    "ParameterType": "Convolution",
    "Weights": {"Type": "Float", "Count": 1152},
    "TacticName": "sm80_xmma_fprop_implicit_gemm_tf32f32_tf32f32_f32_nhwckrsc_nchw",
}
DYNAMIC_INT8_CONV = {
    "Name": "/block/conv/Conv",
    "LayerType": "CaskConvolution",
    "Inputs": [{"Name": "c", "Format/Datatype": "N/A due to dynamic shapes"}],
    "Outputs": [{"Name": "d", "Format/Datatype": "N/A due to dynamic shapes"}],
    "ParameterType": "Convolution",
    "Weights": {"Type": "Int8", "Count": 2304},
}
HALF_GEMM = {
    "Name": "/fc/Gemm",
    "LayerType": "gemm",
    "Inputs": [{"Name": "e", "Format/Datatype": "Half(128,1)"}],
    "Outputs": [{"Name": "logits", "Format/Datatype": "Half(10,1)"}],
    "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_nn_n_tilesize32x32x64",
}
OTHERS = [
    {
        "Name": "Reformatting CopyNode for Input Tensor 0 to /stem/conv/Conv",
        "LayerType": "Reformat",
        "Inputs": [{"Name": "input", "Format/Datatype": "Row major linear FP32"}],
        "Outputs": [{"Name": "q", "Format/Datatype": "Row major Int8 format"}],
        "ParameterType": "Reformat",
        "Origin": "REFORMAT",
        "TacticValue": "0x0",
    },
    {
        "Name": "PWN(/block/Add)",
        "LayerType": "PointWiseV2",
        "Inputs": [{"Name": "f", "Format/Datatype": "Row major linear FP32"}],
        "ParameterType": "PointWise",
    },
    {"Name": "/pool/GlobalAveragePool", "LayerType": "CaskPooling", "ParameterType": "Pooling"},
]
