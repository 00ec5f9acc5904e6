import pytest
import torch
import torchvision

from selfpose3d.models.pose_resnet import build_pose_resnet


def test_resnet18_heatmaps_at_quarter_resolution():
    net = build_pose_resnet(18, num_joints=15)
    out = net(torch.randn(2, 3, 96, 64))
    assert out.shape == (2, 15, 24, 16)
    out.square().mean().backward()
    assert net.backbone.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("depth", [34, 50])
def test_deeper_trunks_shapes(depth):
    net = build_pose_resnet(depth, num_joints=5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 32)).shape == (1, 5, 16, 8)


def test_sigmoid_output_for_attention():
    net = build_pose_resnet(18, num_joints=3, output_activation="sigmoid").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    assert ((out > 0) & (out < 1)).all()
    # The near-zero initial output layer starts the attention at ~0.5 everywhere.
    assert (out - 0.5).abs().max() < 0.05


def test_loads_local_imagenet_weights(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)  # includes fc.*, which is ignored
    net = build_pose_resnet(18, num_joints=15, pretrained_path=str(path))
    torch.testing.assert_close(net.backbone.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(
        net.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var
    )
    # A wrapped checkpoint from DataParallel training loads too.
    wrapped = tmp_path / "wrapped.pth"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped
    )
    build_pose_resnet(18, num_joints=15, pretrained_path=str(wrapped))


def test_bad_weight_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="pretrained weights not found"):
        build_pose_resnet(18, 15, pretrained_path=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot be read"):
        build_pose_resnet(18, 15, pretrained_path=str(junk))
    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), other)
    with pytest.raises(
        ValueError, match=r"resnet34.pth: not the weights of a torchvision ResNet-18"
    ):
        build_pose_resnet(18, 15, pretrained_path=str(other))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="expected a state dict"):
        build_pose_resnet(18, 15, pretrained_path=str(tensor))


def test_unknown_depth_is_an_error():
    with pytest.raises(ValueError, match="depth must be one of"):
        build_pose_resnet(101, 15)  # type: ignore[arg-type]
