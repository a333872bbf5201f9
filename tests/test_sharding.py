"""Memory per GPU under data parallelism and ZeRO: the paper's worked example and the calculator's use of it."""

import dataclasses
import json

import pytest
from test_cli import run_cli_in_process

from explorer import calculator
from explorer.costs import memory, sharding
from explorer.costs.specs import catalog_spec
from explorer.methods import METHODS


def test_zero_paper_worked_example():
    """Rajbhandari et al. 2020, Figure 1: Ψ = 7.5B, N_d = 64, K = 12: 120, 31.4, 16.6 and 1.9 GB per GPU."""
    psi, n = 7.5e9, 64
    states = {s: sharding.model_states(2 * psi, 2 * psi, 12 * psi, s, n)[0] / 1e9
              for s in ("ddp", "zero1", "zero2", "zero3")}
    assert round(states["ddp"], 1) == 120.0
    assert round(states["zero1"], 1) == 31.4
    assert round(states["zero2"], 1) == 16.6
    assert round(states["zero3"], 1) == 1.9
    assert sharding.model_states(2 * psi, 2 * psi, 12 * psi, "fsdp", n) == sharding.model_states(
        2 * psi, 2 * psi, 12 * psi, "zero3", n)


def test_mixed_precision_full_fine_tuning_is_two_two_twelve_bytes_sharded_by_zero3():
    spec = catalog_spec("llama-2-7b")
    psi = spec.arch.total_params()
    settings = {"mixed_precision": "bf16", "num_gpus": 8, "sharding": "zero3"}
    r = calculator.from_request("llama-2-7b", "full", settings, exact_mode="skip")
    m = r.training
    assert (m.weights_bytes, m.gradients_bytes, m.optimizer_bytes) == (2 * psi, 2 * psi, 12 * psi)
    gpu = r.as_json()["memory"]["per_gpu"]
    assert gpu["model_states_bytes"] == 16 * psi / 8
    block = spec.arch.main.param_count
    embeddings = spec.arch.vocab * spec.arch.hidden
    assert gpu["gathered_bytes"] == 2 * 2 * max(block, embeddings)  # weights and gradients, 16-bit
    assert gpu["total_bytes"] == gpu["model_states_bytes"] + gpu["activations_bytes"] + gpu["gathered_bytes"]
    offloaded = calculator.from_request("llama-2-7b", "full", {**settings, "offload": "optimizer"},
                                        exact_mode="skip").as_json()["memory"]["per_gpu"]
    assert offloaded["model_states_bytes"] == 4 * psi / 8 and offloaded["offloaded_bytes"] == 12 * psi / 8


@pytest.mark.parametrize("method", list(METHODS))
def test_one_gpu_without_sharding_is_the_single_device_figure(method):
    # a method PEFT builds for some architectures only (Method.model_refusal) is checked on a Llama instead
    model = "smollm2-135m" if METHODS[method].model_refusal(catalog_spec("qwen2.5-0.5b")) else "qwen2.5-0.5b"
    out = calculator.from_request(model, method, {}, exact_mode="skip").as_json()
    gpu = out["memory"]["per_gpu"]
    assert gpu["total_bytes"] == out["memory"]["total_bytes"]
    assert gpu["activations_bytes"] == out["memory"]["activations_bytes"]


def test_more_gpus_never_need_more_memory_each_and_the_table_says_where_it_fits():
    spec = catalog_spec("llama-3.1-70b")
    options = METHODS["full"].parse_options({})
    totals = {}
    for strategy in sharding.SHARDINGS:
        for n in sharding.GPU_COUNTS:
            s = memory.TrainSettings(mixed_precision="bf16", num_gpus=n, sharding=strategy)
            totals[strategy, n] = calculator.calculate(spec, "full", options, s, exact_mode="skip").per_gpu.total_bytes
    for strategy in ("zero1", "zero2", "zero3"):
        assert [totals[strategy, n] for n in (2, 4, 8)] == sorted([totals[strategy, n] for n in (2, 4, 8)],
                                                                   reverse=True)
    assert totals["zero3", 8] < totals["zero2", 8] < totals["zero1", 8] < totals["ddp", 8] == totals["none", 1]
    r = calculator.calculate(spec, "full", options, memory.TrainSettings(mixed_precision="bf16", sharding="zero3"),
                             exact_mode="skip")
    table = r.fits_gpus()
    assert set(table) == set(sharding.GPU_SIZES_GB) and set(table[80]) == set(sharding.GPU_COUNTS)
    # 70B in full: 16 bytes per parameter is 1.1 TB; even 8 × 141 GiB cannot hold it
    assert not table[141][8] and not table[24][1]
    fits_8x80 = calculator.calculate(spec, "qlora", METHODS["qlora"].parse_options({}), memory.TrainSettings(
        num_gpus=8, sharding="zero3"), exact_mode="skip").fits_gpus()
    assert fits_8x80[80][8]


def test_cli_gpu_settings_and_json_per_gpu(capsys):
    from explorer.cli.main import main

    code = main(["calc", "--model", "llama-2-7b", "--method", "full", "--set", "num_gpus=4", "--set", "sharding=zero2",
                 "--set", "mixed_precision=bf16", "--set", "offload=optimizer", "--json"])
    assert not code
    out = json.loads(capsys.readouterr().out)
    gpu = out["memory"]["per_gpu"]
    assert set(gpu) >= {"model_states_bytes", "activations_bytes", "total_bytes"}
    assert gpu["num_gpus"] == 4 and gpu["sharding"] == "zero2"
    assert set(out["fits_gpus"]["80GiB"]) == {"1", "2", "4", "8"}
    code, err = run_cli_in_process(capsys, "calc", "--model", "llama-2-7b", "--method", "lora", "--set",
                                   "sharding=zero9")
    assert code == 2 and "sharding must be one of" in err and "Traceback" not in err


def test_settings_are_plain_dataclass_fields():
    names = {f.name for f in dataclasses.fields(memory.TrainSettings)}
    assert {"num_gpus", "sharding", "mixed_precision", "offload"} <= names <= calculator.SETTING_KEYS
