"""ONNX export: every registered segmentation model exports with dynamic axes and matches eager PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import unetkit
import unetkit.models.base as model_base
from unetkit.export import ONNXCheckError, ParityCheck, export_onnx
from unetkit.models.base import SegmentationModel

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

# depth 2 (output stride 4) keeps the symbolic-shape tracing of the exporter short
TINY = {"width": 4, "depth": 2}
ATOL = 1e-4


def _segmentation_models() -> list[str]:
    unetkit.list_models()
    names, stack = set(), [SegmentationModel]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("registry_name"):
            names.add(cls.registry_name)
    return sorted(names & set(unetkit.list_models()))


def _tiny(name: str, *, dims: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = unetkit.create_model(name, in_channels=2, classes=3, spatial_dims=dims, **TINY)
    with torch.no_grad():  # non-trivial BN running statistics, so eval-mode BN is really exercised
        model.train()(torch.randn(2, 2, *([24] * dims)) * 2 + 0.5)
    return model


def _run_onnx(path, x: torch.Tensor):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _default_opset(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _slow_if(condition: bool):
    return pytest.mark.slow if condition else []


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=_slow_if(n == "unetplusplus")) for n in _segmentation_models()]
)
def test_model_exports_with_dynamic_axes_and_matches_eager(name, tmp_path):
    model = _tiny(name)
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(
        model, path, example_shape=(1, 2, 64, 64), check=ParityCheck(shapes=[(1, 2, 64, 64), (2, 2, 97, 131)])
    )
    assert model.training and all(m.training for m in model.modules())  # mode restored
    assert set(report.max_abs_diff) == {"1x2x64x64", "2x2x97x131"}
    assert all(0 <= d < ATOL for d in report.max_abs_diff.values())
    assert report.file_size_bytes == path.stat().st_size > 0
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp or external-data files

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert _default_opset(proto) == report.opset == 18 >= 17
    assert [i.name for i in proto.graph.input] == ["image"]
    assert _dims(proto.graph.input[0]) == ["batch", 2, "height", "width"]
    assert [o.name for o in proto.graph.output] == ["logits"]

    # a batch and size that neither the trace nor the check used, odd and not a multiple of the stride
    x = torch.randn(3, 2, 50, 75)
    (got,) = _run_onnx(path, x)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    assert got.shape == expected.shape == (3, 3, 50, 75)
    assert abs(got - expected).max() < ATOL


@pytest.mark.slow
def test_3d_plain_unet_exports(tmp_path):
    model = _tiny("unet", dims=3)
    report = export_onnx(model, tmp_path / "unet3d.onnx", example_shape=(1, 2, 16, 16, 16))
    # default second check shape: batch + 1, sizes not a multiple of the stride 4
    assert list(report.max_abs_diff) == ["1x2x16x16x16", "2x2x23x23x23"]
    assert max(report.max_abs_diff.values()) < ATOL
    proto = onnx.load(str(tmp_path / "unet3d.onnx"))
    assert _dims(proto.graph.input[0]) == ["batch", 2, "depth", "height", "width"]
    x = torch.randn(1, 2, 9, 13, 11)
    (got,) = _run_onnx(tmp_path / "unet3d.onnx", x)
    with torch.no_grad():
        assert abs(got - model.eval()(x).numpy()).max() < ATOL


class _Pipeline(nn.Module):
    """What a deployment wrapper looks like: normalise, run the network, return logits and probabilities."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.5, 0.2]).view(1, 2, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.1]).view(1, 2, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net((x - self.mean) / self.std)
        return logits, logits.softmax(dim=1)


def test_wrapper_module_with_two_outputs_and_static_spatial_axes(tmp_path):
    wrapper = _Pipeline(_tiny("unet"))
    path = tmp_path / "pipeline.onnx"
    report = export_onnx(wrapper, path, example_shape=(2, 2, 40, 52), dynamic_hw=False, names=("image", "out"))
    assert report.output_names == ["out_0", "out_1"]
    assert report.dynamic_axes == {0: "batch"}
    assert list(report.max_abs_diff) == ["2x2x40x52", "3x2x40x52"]
    proto = onnx.load(str(path))
    assert _dims(proto.graph.input[0]) == ["batch", 2, 40, 52]
    logits, probs = _run_onnx(path, torch.rand(1, 2, 40, 52))
    assert logits.shape == probs.shape == (1, 3, 40, 52)
    assert abs(probs.sum(axis=1) - 1).max() < 1e-5


def _old_branching_pad(x: torch.Tensor, multiple: int):
    # The first version of _pad_to_multiple: it returned early when no padding was needed, an `if` on the
    # input size that torch.export resolves once at trace time.
    spatial = x.shape[2:]
    totals = [(multiple - s % multiple) % multiple for s in spatial]
    if not any(totals):
        return x, tuple(slice(None) for _ in spatial)
    flat = [p for t in reversed(totals) for p in (t // 2, t - t // 2)]
    return F.pad(x, flat), tuple(slice(t // 2, t // 2 + s) for t, s in zip(totals, spatial, strict=True))


def test_check_catches_a_size_baked_into_the_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(model_base, "_pad_to_multiple", _old_branching_pad)
    path = tmp_path / "baked.onnx"
    with pytest.raises(ONNXCheckError, match="2x2x"):
        export_onnx(_tiny("unet"), path, example_shape=(1, 2, 64, 64))
    assert list(tmp_path.iterdir()) == []  # nothing published, temp file removed


class _DiffersWhenExported(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1 if torch.compiler.is_exporting() else x


def test_check_raises_on_numeric_mismatch_and_writes_nothing(tmp_path):
    with pytest.raises(ONNXCheckError, match=r"differs from eager by 1 > atol=0.0001"):
        export_onnx(_DiffersWhenExported(), tmp_path / "m.onnx", example_shape=(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []
    # without the check the (wrong) file is written: the check is what caught it
    report = export_onnx(_DiffersWhenExported(), tmp_path / "m.onnx", example_shape=(1, 1, 8, 8), check=None)
    assert report.max_abs_diff == {}
    (got,) = _run_onnx(tmp_path / "m.onnx", torch.zeros(1, 1, 8, 8))
    assert (got == 1).all()


def test_bad_arguments_are_refused_before_exporting(tmp_path):
    model = nn.Identity()
    with pytest.raises(ValueError, match="opset 17 is not supported"):
        export_onnx(model, tmp_path / "m.onnx", example_shape=(1, 1, 8, 8), opset=17)
    with pytest.raises(ValueError, match=r"\(N, C, \*spatial\)"):
        export_onnx(model, tmp_path / "m.onnx", example_shape=(8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, C, D, H, W\)"):
        export_onnx(model, tmp_path / "m.onnx", example_shape=(1, 1, 8))
    with pytest.raises(ValueError, match="atol"):
        export_onnx(model, tmp_path / "m.onnx", example_shape=(1, 1, 8, 8), check=ParityCheck(atol=0))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        export_onnx(lambda x: x, tmp_path / "m.onnx", example_shape=(1, 1, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_strided_backbone_with_input_skip_exports(tmp_path):
    torch.manual_seed(0)
    # resnet18's first feature is at stride 2 too (Lite0, the planner's default: tests/infer/test_export_lite0.py)
    model = unetkit.create_model("unet", in_channels=1, classes=2, encoder="resnet18", input_skip=True)
    assert model.final_up is not None and model.final_up.input_skip
    model.eval()
    export_onnx(model, tmp_path / "m.onnx", example_shape=(1, 1, 64, 96))  # checks parity itself, at several sizes
    x = torch.randn(1, 1, 70, 90)
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(_run_onnx(tmp_path / "m.onnx", x)[0] - expected).max() < ATOL
