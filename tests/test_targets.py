"""Target profiles: bundled files load, user files load, every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.errors import BadInput
from edgekd.targets import DEFAULT_TARGET, Target, list_targets, load_target

BUNDLED = [
    "android-snapdragon-8gen3",
    "host-cpu",
    "iphone-a17",
    "jetson-agx-orin-64gb",
    "jetson-nano",
    "jetson-orin-nano-8gb",
    "jetson-orin-nx-16gb",
    "jetson-xavier-nx",
    "raspberry-pi-5",
]

PROFILE = """\
name = "my-board"
description = "a user's board"
family = "jetson"
runtime = "tensorrt"
execution_providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
precision = "int8"
quant_scheme = "tensorrt"

[hardware]
gpu = "some GPU"
int8_tops = 20
fp16_tflops = 10
memory_gb = 8
bandwidth_gbs = 68
source = "a datasheet"

[budgets]
p90_latency_ms = 2.0
max_params = 5_000_000
max_model_mb = 8
max_memory_mb = 512

[latency]
warmup = 10
min_queries = 64
min_duration_s = 1.0
threads = 0
"""


def write(tmp_path: Path, text: str, name: str = "board.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def edit(old: str, new: str) -> str:
    assert old in PROFILE, old
    return PROFILE.replace(old, new)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profile_loads(name: str) -> None:
    target = load_target(name)
    assert isinstance(target, Target)
    assert target.name == name == target.path.stem
    assert target.hardware.source
    assert target.latency.batch == 1
    assert target.peak_ops_per_s(target.precision) is not None
    assert target.bytes_per_s > 0


def test_list_targets_returns_all_bundled_sorted() -> None:
    assert [t.name for t in list_targets()] == BUNDLED


def test_default_target_is_the_host() -> None:
    target = load_target(DEFAULT_TARGET)
    assert (target.family, target.runtime, target.quant_scheme) == (
        "host",
        "onnxruntime",
        "onnxruntime",
    )
    assert target.execution_providers == ("CPUExecutionProvider",)


def test_jetson_nano_has_no_int8() -> None:
    nano = load_target("jetson-nano")
    assert nano.hardware.int8_tops is None
    assert (nano.precision, nano.quant_scheme) == ("fp16", "none")
    assert nano.peak_ops_per_s("int8") is None
    assert nano.peak_ops_per_s("fp16") == pytest.approx(0.47e12)


def test_peak_ops_and_bandwidth() -> None:
    orin = load_target("jetson-orin-nano-8gb")
    assert orin.peak_ops_per_s("int8") == pytest.approx(20e12)
    assert orin.peak_ops_per_s("fp16") == pytest.approx(10e12)
    assert orin.peak_ops_per_s("fp32") == pytest.approx(1.28e12)
    assert orin.bytes_per_s == pytest.approx(68e9)
    assert orin.hardware.dla_cores == 0
    assert load_target("jetson-agx-orin-64gb").hardware.dla_cores == 2
    assert load_target("iphone-a17").peak_ops_per_s("fp32") is None


def test_user_profile_loads_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILE)
    for ref in (path, str(path)):
        target = load_target(ref)
        assert target.name == "my-board"
        assert target.path == path
        assert target.execution_providers == ("TensorrtExecutionProvider", "CPUExecutionProvider")
        assert target.hardware.memory_gb == 8.0 and isinstance(target.hardware.memory_gb, float)
        assert target.hardware.cpu is None and target.hardware.dla_cores == 0
        assert target.budgets.max_params == 5_000_000


def test_name_defaults_to_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, edit('name = "my-board"\n', ""), name="edge-box.toml")
    assert load_target(path).name == "edge-box"


def test_host_may_leave_int8_throughput_unknown(tmp_path: Path) -> None:
    text = edit('family = "jetson"', 'family = "host"').replace("int8_tops = 20\n", "")
    target = load_target(write(tmp_path, text))
    assert target.precision == "int8" and target.peak_ops_per_s("int8") is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("p90_latency_ms = 2.0\n", "", "missing required field budgets.p90_latency_ms"),
        ("[latency]", "[latency_method]", "unknown key(s) latency_method; did you mean latency?"),
        (
            "p90_latency_ms = 2.0",
            "p90_latency = 2.0",
            "unknown key(s) budgets.p90_latency; did you mean budgets.p90_latency_ms?",
        ),
        ('source = "a datasheet"', 'source = "x"\npath = "y"', "unknown key(s) hardware.path"),
        (
            "p90_latency_ms = 2.0",
            'p90_latency_ms = "fast"',
            'budgets.p90_latency_ms must be a positive number, got "fast"',
        ),
        ("p90_latency_ms = 2.0", "p90_latency_ms = -1", "budgets.p90_latency_ms must be a pos"),
        ("bandwidth_gbs = 68", "bandwidth_gbs = 0", "hardware.bandwidth_gbs must be a positive"),
        ("bandwidth_gbs = 68", "bandwidth_gbs = nan", "hardware.bandwidth_gbs must be a positive"),
        ("memory_gb = 8", "memory_gb = true", "hardware.memory_gb must be a positive number, got"),
        ("max_params = 5_000_000", "max_params = 2.5", "budgets.max_params must be a positive int"),
        ('gpu = "some GPU"', "gpu = 3", "hardware.gpu must be a non-empty string, got 3"),
        ('description = "a user\'s board"', 'description = ""', "description must be a non-empty"),
        ("[hardware]", "hardware = 3\n[hardware_]", "unknown key(s) hardware_"),
        ("min_queries = 64", "min_queries = 10", "latency.min_queries must be an integer >= 64"),
        ("warmup = 10", "warmup = -1", "latency.warmup must be an integer >= 0, got -1"),
        ("threads = 0", "threads = 0\nbatch = 0", "latency.batch must be a positive integer"),
        (
            'precision = "int8"',
            'precision = "int4"',
            'precision must be one of "int8", "fp16", got "int4"',
        ),
        ('family = "jetson"', 'family = "phone"', 'family must be one of "jetson", "mobile"'),
        ('runtime = "tensorrt"', 'runtime = "tflite"', "runtime must be one of"),
        ('quant_scheme = "tensorrt"', 'quant_scheme = "qnnpack"', "quant_scheme must be one of"),
        (
            'execution_providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]',
            "execution_providers = []",
            "execution_providers must be a non-empty list of strings, got []",
        ),
        (
            'execution_providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]',
            'execution_providers = "CPUExecutionProvider"',
            "execution_providers must be a non-empty list of strings",
        ),
        (
            '["TensorrtExecutionProvider", "CPUExecutionProvider"]',
            '["TensorRTExecutionProvider"]',
            "unknown provider TensorRTExecutionProvider; did you mean TensorrtExecutionProvider?",
        ),
        ("int8_tops = 20\n", "", 'hardware.int8_tops is needed for precision "int8"'),
        ('quant_scheme = "tensorrt"', 'quant_scheme = "none"', 'quant_scheme must be "none" exac'),
        ('precision = "int8"', 'precision = "fp16"', 'got precision "fp16" with quant_scheme "t'),
        (
            'quant_scheme = "tensorrt"',
            'quant_scheme = "onnxruntime"',
            'quant_scheme must be "tensorrt" or "none" for runtime "tensorrt"',
        ),
    ],
)
def test_bad_profile_names_file_and_field(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    path = write(tmp_path, edit(old, new))
    with pytest.raises(BadInput) as info:
        load_target(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
    assert info.value.exit_code == 2


def test_hardware_must_be_a_table(tmp_path: Path) -> None:
    text = edit("[hardware]\n", 'hardware = "big"\n[unused]\n')
    text = text[: text.index("[unused]")] + text[text.index("[budgets]") :]
    with pytest.raises(BadInput, match='hardware must be a table, got "big"'):
        load_target(write(tmp_path, text))


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    text = edit("max_params = 5_000_000", "max_params = ")
    line = text.splitlines().index("max_params = ") + 1
    path = write(tmp_path, text)
    with pytest.raises(BadInput, match=rf"invalid TOML: .*line {line}\b") as info:
        load_target(path)
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize("what", ["missing.toml", "folder.toml"])
def test_unreadable_file(tmp_path: Path, what: str) -> None:
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(BadInput, match=f"{what}: cannot read target profile: "):
        load_target(tmp_path / what)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(BadInput, match="latin1.toml: cannot read target profile: "):
        load_target(path)


def test_unknown_name_suggests_near_names() -> None:
    with pytest.raises(BadInput) as info:
        load_target("jetson-orin")
    assert str(info.value) == (
        'unknown target "jetson-orin"; did you mean: jetson-orin-nano-8gb, jetson-orin-nx-16gb?'
        " (edgekd targets list shows all)"
    )
    with pytest.raises(BadInput, match="did you mean: raspberry-pi-5[?]"):
        load_target("raspbery-pi-5")
    with pytest.raises(BadInput, match=r'^unknown target "zzz" \(edgekd targets list'):
        load_target("zzz")
