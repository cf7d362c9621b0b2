"""The ``diffusion_unet`` denoiser: shapes, size errors, conditioning, gradients, registry round trip."""

from __future__ import annotations

import json
import math

import pytest
import torch

import unetkit.models.diffusion  # noqa: F401  (registers diffusion_unet until models/__init__ imports it)
from unetkit.models.diffusion import DiffusionUNet, timestep_embedding
from unetkit.models.factory import create_model, list_models, supported_spatial_dims

TINY = {"base_channels": 8, "channel_mults": [1, 2, 2], "num_res_blocks": 1, "attention_levels": [2]}


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    # Zero-initialised output layers make an untrained model predict exactly 0; perturb every weight so
    # that shape, conditioning and gradient checks see a generic network.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_registered_for_2d_only() -> None:
    assert "diffusion_unet" in list_models()
    assert supported_spatial_dims("diffusion_unet") == (2,)


@pytest.mark.parametrize(("height", "width"), [(16, 16), (32, 24), (8, 40)])
def test_forward_keeps_shape_for_multiples_of_four(height: int, width: int) -> None:
    model = create_model("diffusion_unet", in_channels=3, **TINY)
    assert model.size_multiple == 4  # three levels: two downsamplings
    x = torch.randn(2, 3, height, width)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_untrained_model_predicts_zero() -> None:
    model = create_model("diffusion_unet", in_channels=1, **TINY)
    assert torch.count_nonzero(model(torch.randn(1, 1, 16, 16), 500)) == 0


@pytest.mark.parametrize(("height", "width"), [(17, 16), (16, 30), (6, 8)])
def test_sizes_not_divisible_raise_a_clear_error(height: int, width: int) -> None:
    model = create_model("diffusion_unet", in_channels=1, **TINY)
    with pytest.raises(ValueError, match=f"divisible by 4, got {height}x{width}"):
        model(torch.zeros(1, 1, height, width), 10)


def test_timestep_changes_the_output_and_scalar_t_broadcasts() -> None:
    model = _randomise(create_model("diffusion_unet", in_channels=1, **TINY)).eval()
    x = torch.randn(1, 1, 16, 16).repeat(2, 1, 1, 1)
    out = model(x, torch.tensor([3, 900]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    assert torch.allclose(model(x, 900), model(x, torch.tensor([900, 900])))


def test_class_conditioning() -> None:
    model = _randomise(create_model("diffusion_unet", in_channels=1, num_classes=3, **TINY)).eval()
    x = torch.randn(1, 1, 16, 16).repeat(2, 1, 1, 1)
    out = model(x, 100, class_labels=torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    with pytest.raises(ValueError, match="pass class_labels"):
        model(x, 100)
    with pytest.raises(ValueError, match=r"labels must be in 0 \.\. 2"):
        model(x, 100, class_labels=torch.tensor([0, 3]))
    unconditional = create_model("diffusion_unet", in_channels=1, **TINY)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(x, 100, class_labels=torch.tensor([0, 1]))


def test_gradients_reach_the_first_layer_and_the_embeddings() -> None:
    model = _randomise(create_model("diffusion_unet", in_channels=1, num_classes=2, **TINY))
    out = model(torch.randn(2, 1, 16, 16), torch.tensor([5, 700]), class_labels=torch.tensor([0, 1]))
    out.square().mean().backward()
    for name in ("conv_in.weight", "time_mlp.0.weight", "class_emb.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_attention_only_where_asked() -> None:
    from unetkit.models.diffusion import SelfAttention

    with_attn = create_model("diffusion_unet", in_channels=1, **TINY)
    without = create_model("diffusion_unet", in_channels=1, **{**TINY, "attention_levels": []})
    count = sum(isinstance(m, SelfAttention) for m in with_attn.modules())
    # level 2: 1 encoder block + 2 decoder blocks, plus the bottleneck's
    assert count == 4
    assert sum(isinstance(m, SelfAttention) for m in without.modules()) == 1


def test_default_attention_levels_are_the_low_resolutions() -> None:
    from unetkit.models.diffusion import SelfAttention

    model = DiffusionUNet(base_channels=8, channel_mults=[1, 2, 2, 2], num_res_blocks=1)
    # levels 2 and 3 (1/4 and 1/8 resolution): 3 each, plus the bottleneck
    assert sum(isinstance(m, SelfAttention) for m in model.modules()) == 7


def test_kwargs_are_json_and_rebuild_the_same_model() -> None:
    model = create_model("diffusion_unet", in_channels=1, num_classes=4, **TINY)
    kwargs = json.loads(json.dumps(model.init_kwargs))
    rebuilt = create_model("diffusion_unet", **kwargs)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="attention_levels"):
        DiffusionUNet(channel_mults=[1, 2], attention_levels=[2])
    with pytest.raises(ValueError, match="even"):
        DiffusionUNet(base_channels=9)
    with pytest.raises(TypeError):
        DiffusionUNet(1)  # type: ignore[misc]  (keyword-only)


def test_timestep_embedding_hand_values() -> None:
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 4)
    # dim 4: frequencies 1 and 10000 ** -0.5 = 0.01
    expected = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [math.cos(2.0), math.cos(0.02), math.sin(2.0), math.sin(0.02)]]
    )
    assert torch.allclose(emb, expected, atol=1e-6)
