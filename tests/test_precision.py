"""The precision and layout rule on every CPU kind, simulated by flags (so each machine runs every branch)."""

from __future__ import annotations

import pytest
import torch

from _cpu_kinds import CPU_KINDS
from _cpu_kinds import NATIVE_BF16_KINDS as NATIVE
from unetkit.precision import CPU_FLAGS, choose_precision, cpu_kind, parse_cpu_flags


@pytest.fixture(params=sorted(CPU_KINDS))
def kind(request: pytest.FixtureRequest, simulate_cpu) -> str:  # type: ignore[no-untyped-def]
    """Make unetkit believe it runs on this CPU kind (flags and machine name)."""
    simulate_cpu(request.param)
    return str(request.param)


def test_each_kind_is_recognised_from_its_flags(kind: str) -> None:
    assert cpu_kind() == kind


def test_parse_reads_x86_flags_and_arm_features_and_nothing_else() -> None:
    flags = parse_cpu_flags("processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16x\nbugs\t\t: amx_bf16\n")
    assert set(flags) == set(CPU_FLAGS)
    assert [f for f, on in flags.items() if on] == ["avx2", "avx512f"]  # a prefix is no flag; other lines ignored
    assert not any(parse_cpu_flags("").values())


def test_auto_training_is_bf16_only_where_native_and_the_reason_says_so(kind: str) -> None:
    choice = choose_precision("auto", torch.device("cpu"), spatial_dims=2, inference=False)
    if kind in NATIVE:
        assert choice.dtype is torch.bfloat16 and choice.layout is torch.channels_last
        assert "auto: bf16, native on this" in choice.describe()
    else:
        assert choice.dtype is None
        assert "auto: fp32 on this" in choice.describe() and "native on" not in choice.describe()
    assert f"this {kind} CPU" in choice.reason


def test_the_emulated_bf16_kind_trains_fp32_even_where_onednn_offers_bf16(
    monkeypatch: pytest.MonkeyPatch, simulate_cpu  # type: ignore[no-untyped-def]
) -> None:
    # The bug of an Ice Lake Xeon: oneDNN answers "bf16 supported" on any AVX-512 CPU (emulated), but the flags decide.
    simulate_cpu("x86-avx512")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    choice = choose_precision("auto", torch.device("cpu"), spatial_dims=2, inference=False)
    assert choice.dtype is None
    assert choice.reason == ("auto: fp32 on this x86-avx512 CPU (AVX-512 without avx512_bf16/amx_bf16: bf16 would be "
                             "emulated, slower than fp32; CPU flags: avx2 avx512f)")


def test_fp32_training_layout_follows_the_measured_table(kind: str) -> None:
    for spatial_dims, layout in ((2, torch.channels_last), (3, torch.channels_last_3d)):
        choice = choose_precision("fp32", torch.device("cpu"), spatial_dims=spatial_dims, inference=False)
        expected = layout if kind == "x86-avx2" else None  # channels_last was measured 1.33x faster only there
        assert choice.layout is expected


def test_inference_always_uses_channels_last_and_cuda_ignores_the_cpu(kind: str) -> None:
    infer = choose_precision("auto", torch.device("cpu"), spatial_dims=2, inference=True)
    assert infer.layout is torch.channels_last
    assert (infer.dtype is torch.bfloat16) == (kind in NATIVE)
    cuda_train = choose_precision("auto", torch.device("cuda"), spatial_dims=2, inference=False)
    cuda_infer = choose_precision("auto", torch.device("cuda"), spatial_dims=2, inference=True)
    assert (cuda_train.dtype, cuda_infer.dtype, cuda_train.reason) == (torch.float16, torch.bfloat16, "auto: CUDA")


def test_explicit_precisions_are_obeyed_and_fp16_needs_cuda(kind: str) -> None:
    cpu = torch.device("cpu")
    assert choose_precision("bf16", cpu, spatial_dims=2, inference=False).dtype is torch.bfloat16
    assert choose_precision("fp32", cpu, spatial_dims=2, inference=True).dtype is None
    assert choose_precision("bf16", cpu, spatial_dims=2, inference=False).reason == "--precision bf16"
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        choose_precision("fp16", cpu, spatial_dims=2, inference=False)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        choose_precision("half", cpu, spatial_dims=2, inference=False)
