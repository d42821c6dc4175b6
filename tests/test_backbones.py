"""Backbones beyond ResNet: layers by name at the documented strides, weights checks, a round trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torchvision

from hamacho.errors import BackboneError
from hamacho.models.backbone import build_feature_extractor, default_layers, layer_table
from tests.conftest import make_dataset

LISTED = ["resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
          "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "convnext_tiny"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


@pytest.mark.parametrize("backbone", LISTED)
def test_backbone_builds_and_extracts_at_the_documented_strides(backbone):
    padim, patchcore = default_layers(backbone, (4, 8, 16)), default_layers(backbone, (8, 16))
    assert patchcore == padim[1:]
    extractor = build_feature_extractor(backbone, padim, "none", seed=0)
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = extractor(images)
    table = {info.name: info for info in layer_table(backbone)}
    for layer, feature, stride in zip(padim, features, (4, 8, 16), strict=True):
        assert table[layer].stride == stride
        assert feature.shape == (2, table[layer].channels, 64 // stride, 64 // stride), layer
        assert torch.isfinite(feature).all()
    assert extractor.out_channels == [table[layer].channels for layer in padim]
    assert extractor.strides == [4, 8, 16]


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"])
def test_features_equal_torchvisions_with_folded_batch_norms(tmp_path, backbone):
    """A weights file with non-trivial batch-norm statistics: the folded extractor gives the plain network's
    features at the chosen layers (ImageNet normalisation done by the extractor on uint8 input)."""
    torch.manual_seed(1)
    net = torchvision.models.get_model(backbone, weights=None).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_(0, 0.1)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    layers = default_layers(backbone, (4, 8, 16))
    extractor = build_feature_extractor(backbone, layers, str(tmp_path / "w.pth"), seed=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in extractor.modules())  # all folded
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    wanted = {int(layer.split(".")[1]) for layer in layers}
    expected, x = [], (images / 255.0 - mean) / std
    with torch.no_grad():
        for i, block in enumerate(net.features[: max(wanted) + 1]):
            x = block(x)
            if i in wanted:
                expected.append(x)
        ours = extractor(images)
    for a, b in zip(ours, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_the_backbone_table_in_the_docs_is_the_real_one():
    text = DOCS.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", text, flags=re.MULTILINE)
    documented = {name: (padim.strip(), patchcore.strip(), channels.strip()) for name, padim, patchcore, channels in rows}
    assert set(LISTED) <= set(documented)
    for backbone in LISTED:
        table = {info.name: info for info in layer_table(backbone)}
        padim = default_layers(backbone, (4, 8, 16))
        expected = (", ".join(padim), ", ".join(default_layers(backbone, (8, 16))),
                    " + ".join(str(table[layer].channels) for layer in padim))
        assert documented[backbone] == expected, backbone


def test_a_wrong_layer_name_lists_the_valid_ones():
    with pytest.raises(BackboneError) as info:
        build_feature_extractor("mobilenet_v2", ["features.3", "layer2"], "none", seed=0)
    message = str(info.value)
    assert "has no layer 'layer2' in mobilenet_v2" in message
    assert "features.3 (stride 4, 24 ch)" in message and "features.18 (stride 32, 1280 ch)" in message


def test_weights_of_another_network_name_the_first_mismatched_key(tmp_path):
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(BackboneError) as info:
        build_feature_extractor("efficientnet_b0", ["features.2"], str(tmp_path / "mnv2.pth"), seed=0)
    assert str(info.value).count("\n") == 0
    assert re.search(r"do not fit this backbone: (shape of features\.\S+ is|\d+ tensors missing .first: features)",
                     str(info.value))


@pytest.mark.parametrize("model", ["padim", "patchcore"])
def test_mobilenet_v2_round_trip(cli, tmp_path, model):
    root = make_dataset(tmp_path / "parts")
    options = ["--image-size", "64", "--backbone", "mobilenet_v2", "--backbone-weights", "none", "--quiet",
               "--no-report"]
    result = cli("train", "--model", model, "--dataset-root", root, "--result-path", tmp_path / "out", *options)
    assert result.exit_code == 0, result.err
    run_dir = tmp_path / "out" / model / "parts"
    config = (run_dir / "config.yaml").read_text()
    assert "backbone: mobilenet_v2" in config
    assert ("- features.3" in config) == (model == "padim") and "- features.13" in config
    result = cli("inference", "--model-path", run_dir / "model.pt", "--image-path", root, "--save-path",
                 tmp_path / "inf", "--quiet", "--no-report")
    assert result.exit_code == 0, result.err
    assert "6 image(s)" in result.out


PEER_PYTHON = Path("/work/peer/bin/python")
PEER_CHECK = """
import json, sys
sys.path.insert(0, {bench!r})
import peer_anomalib as peer
from anomalib.models.components import TimmFeatureExtractor
layers = ["features.3", "features.6", "features.13"]
extractor = TimmFeatureExtractor("mobilenetv2_100", layers=[peer.TIMM_LAYERS["mobilenet_v2"][l] for l in layers],
                                 pre_trained=False)
print(json.dumps(peer.load_backbone(extractor, "mobilenet_v2", layers, {weights!r})))
"""


def test_anomalib_gets_the_same_mobilenet_v2_features(tmp_path):
    """benchmarks/peer_anomalib.py maps torchvision's mobilenet_v2 onto timm's mobilenetv2_100: anomalib's
    features must equal torchvision's. Runs where anomalib is installed (here, or in the peer venv)."""
    import importlib.util
    import json
    import subprocess
    import sys

    python = sys.executable if importlib.util.find_spec("anomalib") else str(PEER_PYTHON)
    if python != sys.executable and not PEER_PYTHON.exists():
        pytest.skip("anomalib is not installed (benchmarks/run.py --peer anomalib sets up /work/peer)")
    torch.manual_seed(3)
    net = torchvision.models.mobilenet_v2(weights=None).eval()
    for module in net.modules():  # non-trivial batch norms, so that a wrong mapping cannot pass
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), tmp_path / "mnv2.pth")
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    code = PEER_CHECK.format(bench=bench, weights=str(tmp_path / "mnv2.pth"))
    result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=600, check=False,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    check = json.loads(result.stdout.strip().splitlines()[-1])
    assert check["tensors_loaded"] == 306 and set(check["max_feature_difference"]) == {
        "features.3", "features.6", "features.13"}
    assert max(check["max_feature_difference"].values()) <= 1e-4
