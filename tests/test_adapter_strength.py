"""Adapter strength (Compare): PEFT's scale rescaling multiplies a LoRA update; 0 is the base exactly, 1 the
trained adapter exactly, 2 doubles the update; methods without such a scale refuse anything but 1."""

import pytest
import torch
from conftest import train_run

from explorer.compare import variants
from explorer.errors import ExplorerError

IDS = torch.tensor([[1, 5, 9, 14, 3, 7]])


@pytest.fixture(scope="module")
def lora_run(lora_pirate):
    return lora_pirate


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_strength_0_is_the_base_and_1_the_adapter(lora_run):
    s = variants.session(lora_run)
    adapted = logits(s.adapted)
    with s.adapted.disable_adapter():
        bare = logits(s.adapted)
    assert not torch.allclose(adapted, bare, atol=1e-4), "the adapter changes the logits"
    with variants.adapter_strength(s.adapted, 0.0):
        assert torch.equal(logits(s.adapted), bare)
        assert torch.equal(logits(s.adapted), logits(s.base)), "the shared base copy too"
    with variants.adapter_strength(s.adapted, 1.0):
        assert torch.equal(logits(s.adapted), adapted)
    assert torch.equal(logits(s.adapted), adapted), "the scaling is restored afterwards"

    # Strength 2 doubles each layer's update: W·x + 2·(alpha/r)·B·A·x.
    from peft.tuners.lora import LoraLayer

    layer = next(m for m in s.adapted.modules() if isinstance(m, LoraLayer))
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        base_out, one = layer.base_layer(x), layer(x)
        with variants.adapter_strength(s.adapted, 2.0):
            two = layer(x)
    assert torch.allclose(two - base_out, 2 * (one - base_out), atol=1e-6)


def test_compare_replies_follow_the_strength(lora_run):
    at_zero = variants.run_comparison(lora_run, "Ahoy there", 6, measure_latency=False, strength=0)
    assert at_zero["outputs"]["adapted"] == at_zero["outputs"]["base"] and at_zero["strength"] == 0.0
    trained = variants.run_comparison(lora_run, "Ahoy there", 6, measure_latency=False)
    assert trained["outputs"]["merged"] == at_zero["outputs"]["merged"], "the merged column stays as trained"
    assert at_zero["greedy_match"] is True, "merge fidelity is measured at strength 1"


def test_bad_strength_is_one_clear_line(lora_run, cache):
    prompt = train_run("prompt", "pirate", {"num_virtual_tokens": 2}, steps=1)
    for value, message in ((5, "from -1 to 3"), (float("nan"), "from -1 to 3"), ("1", "from -1 to 3"),
                           (True, "from -1 to 3")):
        with pytest.raises(ExplorerError, match=message):
            variants.run_comparison(lora_run, "hi", 2, measure_latency=False, strength=value)
    with pytest.raises(ExplorerError, match="Prompt tuning has no such scale: leave the strength at 1"):
        variants.run_comparison(prompt, "hi", 2, measure_latency=False, strength=0.5)
    assert variants.run_comparison(prompt, "hi", 2, measure_latency=False, strength=1)["strength"] == 1.0
