import pytest
import torch

from selfpose3d.models.v2v import V2VNet


@pytest.mark.parametrize("size", [(8, 8, 8), (10, 10, 6), (9, 5, 4)])
def test_output_shape_matches_input_for_any_cube(size):
    net = V2VNet(3, 2, width=4)
    assert net(torch.rand(2, 3, *size)).shape == (2, 2, *size)


def test_gradients_reach_input_and_every_parameter():
    net = V2VNet(2, 2, width=4)
    x = torch.rand(3, 2, 8, 8, 8, requires_grad=True)
    net(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_channels_last_is_the_same_function():
    torch.manual_seed(0)
    plain = V2VNet(3, 3, width=4, channels_last=False)
    fast = V2VNet(3, 3, width=4, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 8, 8, 8)
    for net in (plain, fast):
        net.eval()
        for m in net.modules():  # non-trivial BN statistics so the output is not ~0
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_var.fill_(1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_width_must_be_even():
    with pytest.raises(ValueError, match="even"):
        V2VNet(1, 1, width=5)
