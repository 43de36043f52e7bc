"""Tests for keras_unet.training.precision: which dtype policy a run uses."""

import logging

import pytest

from keras_unet.training.config import ConfigError, TrainConfig
from keras_unet.training.precision import PRECISIONS, cpu_has_bfloat16, training_policy

XEON = "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n"
LAPTOP = "flags\t\t: fpu sse avx2 fma\n"


@pytest.mark.parametrize("text, expected", [(XEON, True), (EPYC, True), (LAPTOP, False),
                                            ("processor : 0\n", False)])
def test_bfloat16_instructions_are_read_from_the_cpu_flags(tmp_path, text, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: some cpu\n" + text)
    assert cpu_has_bfloat16(str(cpuinfo)) is expected


def test_a_system_without_proc_cpuinfo_has_no_bfloat16(tmp_path):
    assert cpu_has_bfloat16(str(tmp_path / "absent")) is False


@pytest.mark.parametrize("setting, gpu, cpu_bf16, policy", [
    ("auto", True, False, "mixed_float16"),
    ("auto", False, True, "mixed_bfloat16"),  # a plain U-Net on a CPU with bfloat16
    ("auto", False, False, "float32"),
    ("on", True, True, "mixed_float16"),
    ("on", False, True, "mixed_bfloat16"),
    ("off", True, True, "float32"),
    ("float16", False, True, "mixed_float16"),
    ("bfloat16", True, False, "mixed_bfloat16"),
])
def test_each_setting_picks_its_policy(setting, gpu, cpu_bf16, policy):
    assert training_policy(setting, gpu=gpu, cpu_bfloat16=cpu_bf16) == policy


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_b0", "resnet50"])
def test_auto_keeps_encoder_backbones_in_float32_on_a_cpu(backbone):
    # MobileNetV2 trained at 0.76x in bfloat16; the others were not measured.
    assert training_policy("auto", gpu=False, backbone=backbone, cpu_bfloat16=True) == "float32"
    assert training_policy("on", gpu=False, backbone=backbone,
                           cpu_bfloat16=True) == "mixed_bfloat16"
    assert training_policy("auto", gpu=True, backbone=backbone) == "mixed_float16"


@pytest.mark.parametrize("cpu_bf16, warned", [(False, True), (True, False)])
def test_bfloat16_on_a_cpu_without_its_instructions_warns(caplog, cpu_bf16, warned):
    for setting in ("on", "bfloat16"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="keras_unet.training.precision"):
            assert training_policy(setting, gpu=False,
                                   cpu_bfloat16=cpu_bf16) == "mixed_bfloat16"
        assert ("emulated" in caplog.text) is warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_unet.training.precision"):
        training_policy("bfloat16", gpu=True, cpu_bfloat16=False)
    assert not caplog.text


def test_an_unknown_setting_is_refused_by_the_policy_and_the_config():
    with pytest.raises(ValueError, match="float8"):
        training_policy("float8", gpu=False)
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainConfig(data="x", mixed_precision="float8").validate()
    for setting in PRECISIONS:
        TrainConfig(data="x", mixed_precision=setting).validate()
