"""Backbone weights sources and the model file's safety checks."""

import pickle
import urllib.error
import zipfile

import pytest
import torch
import torchvision

from hamacho.config import build_config
from hamacho.errors import BackboneError, ModelFileError
from hamacho.model_file import FORMAT_VERSION, load_model_file, read_payload, save_model_file
from hamacho.models.backbone import build_feature_extractor
from hamacho.models.factory import build_model


def test_local_weights_file_gives_torchvision_features(tmp_path):
    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None).eval()
    for module in net.modules():  # non-trivial batch-norm statistics, so folding them is really tested
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_(0, 0.1)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    extractor = build_feature_extractor("resnet18", ["layer1", "layer2"], str(tmp_path / "r18.pth"), seed=0)
    pixels = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        stem = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        layer1 = net.layer1(stem((pixels / 255.0 - mean) / std))  # torchvision's usual preprocessing
        layer2 = net.layer2(layer1)
        ours = extractor(pixels)  # uint8 in: the extractor normalises itself
    assert torch.allclose(ours[0], layer1, atol=1e-4) and torch.allclose(ours[1], layer2, atol=1e-4)
    assert not hasattr(extractor, "layer3")
    assert extractor.out_channels == [64, 128]


def test_random_init_is_seeded():
    a = build_feature_extractor("resnet18", ["layer1"], "none", seed=5)
    b = build_feature_extractor("resnet18", ["layer1"], "none", seed=5)
    c = build_feature_extractor("resnet18", ["layer1"], "none", seed=6)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_weights_of_another_network_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(BackboneError, match="do not fit this backbone: shape of conv1.weight|tensors missing"):
        build_feature_extractor("wide_resnet50_2", ["layer2"], str(tmp_path / "r18.pth"), seed=0)
    (tmp_path / "junk.pth").write_bytes(b"nonsense")
    with pytest.raises(BackboneError, match="not a torch state-dict file"):
        build_feature_extractor("resnet18", ["layer1"], str(tmp_path / "junk.pth"), seed=0)
    with pytest.raises(BackboneError, match="weights file not found"):
        build_feature_extractor("resnet18", ["layer1"], str(tmp_path / "absent.pth"), seed=0)


def test_offline_imagenet_download_fails_in_one_clear_line(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneError) as info:
        build_feature_extractor("resnet18", ["layer1"], "imagenet", seed=0)
    message = str(info.value)
    assert "cannot download ImageNet weights for resnet18" in message
    assert "--backbone-weights PATH" in message and "\n" not in message


def _tiny_model():
    settings = build_config("padim", options={"model.backbone_weights": "none",
                                              "dataset.image_size": 32, "project.seed": 3},
                            overrides=["model.layers=[layer1,layer2]", "model.num_features=10"])
    model = build_model(settings)
    with torch.no_grad():
        model.update(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    model.fit()
    model.calibration.set(image_threshold=1.0, pixel_threshold=2.0, image_min=0.0, image_max=3.0,
                          pixel_min=0.5, pixel_max=4.0)
    return model, settings


def test_model_file_round_trip(tmp_path):
    model, settings = _tiny_model()
    path = save_model_file(tmp_path / "model.pt", model, settings, extra={"note": "x"})
    loaded = load_model_file(path)
    assert loaded.metadata["note"] == "x" and loaded.settings == settings
    assert loaded.model.calibration.as_dict() == model.calibration.as_dict()
    assert torch.equal(loaded.model.feature_indices, model.feature_indices)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        for ours, theirs in zip(loaded.model(x), model.eval()(x), strict=True):
            assert torch.equal(ours, theirs)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


def _rewrite(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_tampered_foreign_and_newer_files_are_refused(tmp_path):
    path = save_model_file(tmp_path / "model.pt", *_tiny_model())
    edited = tmp_path / "edited.pt"
    edited.write_bytes(path.read_bytes())
    _rewrite(edited, lambda p: p["state_dict"]["calibration.image_threshold"].fill_(-5.0))
    with pytest.raises(ModelFileError, match="damaged or was modified"):
        read_payload(edited)
    newer = tmp_path / "newer.pt"
    newer.write_bytes(path.read_bytes())
    _rewrite(newer, lambda p: p.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match=f"uses model format {FORMAT_VERSION + 1}, written by a newer Hamacho"):
        read_payload(newer)
    foreign = tmp_path / "resnet.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), foreign)
    with pytest.raises(ModelFileError, match="is not a Hamacho model file"):
        read_payload(foreign)
    truncated = tmp_path / "half.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="not a Hamacho model file, or it is damaged"):
        read_payload(truncated)


class _Boom:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_pickled_code_in_a_model_file_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hamacho-model", "payload": _Boom()}, evil)
    assert zipfile.is_zipfile(evil)
    with pytest.raises(ModelFileError, match="Python objects other than tensors and plain data, which are never unpickled"):
        read_payload(evil)
    assert not (tmp_path / "PWNED").exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ModelFileError):
        read_payload(raw)
    assert not (tmp_path / "PWNED").exists()
