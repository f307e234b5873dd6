"""MAC and parameter counts: known values, and the same totals whatever format holds the model."""

import torch
from torch import nn

from edgedistill.metrics.complexity import measure_complexity
from edgedistill.metrics.inspection import inspect_model
from edgedistill.models import create


def test_known_conv_macs():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, stride=2))
    cost = measure_complexity(net, (torch.rand(1, 3, 16, 16),))
    conv = 8 * 3 * 9 * 16 * 16
    convt = 8 * 4 * 4 * 16 * 16  # every input pixel scatters into a 2x2 patch of 4 channels
    assert cost.macs == conv + convt
    assert [layer.macs for layer in cost.layers] == [conv, 0, convt]
    assert [layer.output_shape for layer in cost.layers][-1] == [1, 4, 32, 32]
    assert cost.params == (3 * 8 * 9 + 8) + (8 * 4 * 4 + 4)


def test_formats_agree(tmp_path):
    net = create("resnet", ngf=4, n_blocks=1).eval()
    x = torch.rand(1, 3, 32, 32)
    torch.save(net.state_dict(), tmp_path / "g.pth")
    torch.jit.trace(net, x).save(str(tmp_path / "g.ts"))
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "g.pt2"))
    totals = {
        source: (info["params"], info["macs"])
        for source in (f"resnet:{tmp_path / 'g.pth'}", str(tmp_path / "g.ts"), str(tmp_path / "g.pt2"))
        for info in [inspect_model(source, size=(32, 32))]
    }
    assert len(set(totals.values())) == 1, totals
