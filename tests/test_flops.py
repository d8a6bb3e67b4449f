"""FLOPs counted on the path the models really run (oneDNN convolutions and CPU flash attention included)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from medswin.models import create_model, list_models, model_kind
from medswin.models.flops import count_flops


def _inputs(model, name):
    if model_kind(name) == "biplanar":
        return tuple(torch.randn(1, 1, *model.img_size) for _ in range(2))
    return (torch.randn(1, 1, 64, 64, 32),)


def test_medswin_and_monai_count_the_same_swin_unetr():
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    torch.manual_seed(0)
    x = torch.randn(1, 1, 64, 64, 64)
    ours = create_model("swin_unetr_tiny", in_channels=1, out_channels=14).eval()
    monai = MonaiSwinUNETR(in_channels=1, out_channels=14, feature_size=12).eval()
    with torch.no_grad():
        counted = count_flops(lambda: ours(x))
        with FlopCounterMode(display=False) as monai_counter:
            monai(x)
        with FlopCounterMode(display=False) as plain_counter:  # PyTorch's counter alone
            ours(x)
    assert counted["total"] == monai_counter.get_total_flops() == 14_077_941_792
    assert counted["aten.mkldnn_convolution"] > 0.7 * counted["total"]  # the direct oneDNN calls do most of the work
    assert (
        counted["aten._scaled_dot_product_flash_attention_for_cpu"]
        == monai_counter.get_flop_counts()["Global"][torch.ops.aten.bmm]
    )
    assert plain_counter.get_total_flops() < 0.1 * counted["total"]  # what models_table reported before: ~15x low


@pytest.mark.parametrize("name", list_models("*_tiny"))
def test_a_training_step_counts_about_three_forwards(name):
    """Backward costs two forwards (input and weight gradients): a forward or backward kernel left uncounted
    would move the ratio far from 3 (the attention backward recomputes its logits: slightly above)."""
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, out_channels=3)
    x = _inputs(model, name)
    with torch.no_grad():
        forward = count_flops(lambda: model.eval()(*x))["total"]

    def step():
        out = model.train()(*x)
        outputs = out.values() if isinstance(out, dict) else [out]
        sum(o.float().square().mean() for o in outputs).backward()

    ratio = count_flops(step)["total"] / forward
    assert 2.9 <= ratio <= 3.15, ratio
