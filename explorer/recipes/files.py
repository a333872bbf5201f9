"""The text files of a recipe: accelerate configs, launch.sh, requirements.txt and README.md.

The FSDP and DeepSpeed ZeRO-3 configs follow PEFT's own examples (examples/sft/configs/fsdp_config.yaml and
deepspeed_config_z3.yaml in the PEFT repository): full shard with transformer-layer wrapping, and ZeRO stage 3
with 16-bit weights gathered on save. With transformers' Trainer and a PEFT model, the Trainer swaps in PEFT's
own FSDP wrap policy (adapter layers wrapped apart from frozen ones), hence fsdp_use_orig_params false.
"""

from __future__ import annotations

from importlib import metadata

from .strategy import CONFIG_FILES, GIB, TITLES, Choice

COMMON = """compute_environment: LOCAL_MACHINE
debug: false
machine_rank: 0
main_training_function: main
num_machines: 1
rdzv_backend: static
same_network: true
use_cpu: false
"""


def accelerate_configs(gpus: int, precision: str, layer_class: str) -> dict[str, str]:
    mixed = "bf16" if precision == "bf16" else "'no'"  # quoted: YAML reads a bare no as false
    head = f"mixed_precision: {mixed}\ndowncast_bf16: 'no'\n"
    wrap = (f"  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP\n  fsdp_transformer_layer_cls_to_wrap: {layer_class}\n"
            if layer_class else "  fsdp_auto_wrap_policy: SIZE_BASED_WRAP\n  fsdp_min_num_params: 100000000\n")
    many = max(gpus, 2)
    return {
        CONFIG_FILES["single"]: COMMON + head + "distributed_type: 'NO'\nnum_processes: 1\ngpu_ids: '0'\n",
        CONFIG_FILES["ddp"]: COMMON + head + f"distributed_type: MULTI_GPU\nnum_processes: {many}\ngpu_ids: all\n",
        CONFIG_FILES["fsdp"]: COMMON + head + f"distributed_type: FSDP\nnum_processes: {many}\nfsdp_config:\n"
        "  fsdp_version: 1\n  fsdp_sharding_strategy: FULL_SHARD\n" + wrap +
        "  fsdp_backward_prefetch: BACKWARD_PRE\n  fsdp_forward_prefetch: false\n  fsdp_offload_params: false\n"
        "  fsdp_cpu_ram_efficient_loading: true\n  fsdp_sync_module_states: true\n  fsdp_use_orig_params: false\n"
        "  fsdp_state_dict_type: SHARDED_STATE_DICT\n",
        CONFIG_FILES["zero3"]: COMMON + head + f"distributed_type: DEEPSPEED\nnum_processes: {many}\n"
        "deepspeed_config:\n  deepspeed_multinode_launcher: standard\n  zero_stage: 3\n  zero3_init_flag: true\n"
        "  zero3_save_16bit_model: true\n  offload_optimizer_device: none\n  offload_param_device: none\n",
    }


def launch_script(choice: Choice) -> str:
    single, chosen = CONFIG_FILES["single"], CONFIG_FILES[choice.strategy]
    return f"""#!/usr/bin/env bash
# Train this recipe with accelerate (README.md says why this configuration).
#   bash launch.sh                     accelerate/{chosen} on {choice.gpus} process(es), one per GPU
#   NPROC=4 bash launch.sh             4 processes (GPUs); 1 uses accelerate/{single}
#   CONFIG=accelerate/fsdp.yaml bash launch.sh      another configuration
#   CPU_ONLY=1 NPROC=2 bash launch.sh  no GPU: NPROC processes on the CPU, talking through gloo
# ACCELERATE (default: accelerate) names the launcher; MAIN_PROCESS_PORT (default 29500) its rendezvous port.
set -euo pipefail
cd "$(dirname "$0")"
NPROC="${{NPROC:-{choice.gpus}}}"
ACCELERATE="${{ACCELERATE:-accelerate}}"
PORT="${{MAIN_PROCESS_PORT:-29500}}"
# Without this check, bash's exec falls back to ./accelerate, the folder of configs beside this script:
# "exec: accelerate: cannot execute: Is a directory".
if ! command -v "$ACCELERATE" >/dev/null; then
  echo "launch.sh: $ACCELERATE is not installed here (not found on PATH): install this recipe's requirements" \
    "(torch for your GPU from pytorch.org, then pip install -r requirements.txt), or set ACCELERATE to its path." >&2
  exit 127
fi
if [ "${{CPU_ONLY:-0}}" = "1" ]; then
  export CPU_ONLY=1 CUDA_VISIBLE_DEVICES=""
  if [ "$NPROC" -gt 1 ]; then
    # `accelerate launch --cpu` starts ONE process whatever --num_processes says; the multi-GPU launcher
    # starts NPROC of them, and train.py (CPU_ONLY=1, no GPU visible) joins them with the gloo backend.
    exec "$ACCELERATE" launch --multi_gpu --num_processes "$NPROC" --num_machines 1 --mixed_precision no \\
      --dynamo_backend no --main_process_ip 127.0.0.1 --main_process_port "$PORT" train.py
  fi
  exec "$ACCELERATE" launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \\
    train.py
fi
if [ "$NPROC" = 1 ]; then
  CONFIG="${{CONFIG:-accelerate/{single}}}"
else
  CONFIG="${{CONFIG:-accelerate/{chosen if choice.strategy != 'single' else CONFIG_FILES['ddp']}}}"
fi
exec "$ACCELERATE" launch --config_file "$CONFIG" --num_processes "$NPROC" --main_process_port "$PORT" train.py
"""


def requirements(quantized: bool) -> str:
    names = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers"] + (
        ["bitsandbytes"] if quantized else [])
    lines = [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]
    return ("# The versions PEFT Explorer trains with. Install torch for your CUDA first (pytorch.org), then the\n"
            "# rest. DeepSpeed (accelerate/zero3.yaml) needs `pip install deepspeed` as well.\n" + "\n".join(lines)
            + "\n")


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def readme(config, method, choice: Choice, model_note: str, run, train_rows: int, heldout_rows: int) -> str:
    origin = f"run `{run.run_id}`" if run else "the Fine-tune tab's settings (before training)"
    sizes = "\n".join(f"| {TITLES[name]} | {_gib(size)} |" for name, size in choice.per_gpu_bytes.items())
    modelled = ("" if choice.sharded_model or choice.gpus == 1 else
                "\nThe Calculator does not split memory across GPUs yet, so every strategy shows the single-GPU "
                "total: exact for DDP, an upper bound for FSDP and ZeRO-3 (which split weights, gradients and "
                "optimizer states across the GPUs).\n")
    verdict = "fits" if choice.fits else "does NOT fit"
    return f"""# Recipe: {method.title} on {config.model}, from PEFT Explorer

Reproduces {origin} with the standard tools (transformers' Trainer, PEFT, accelerate), not with the app:
{config.steps} steps, batch {config.batch_size} × {config.grad_accum} accumulation, learning rate
{config.learning_rate or method.default_lr:g}, sequence length {config.seq_len}, seed {config.seed}, precision
{config.precision}, {method.title} with PEFT's configuration as the app built it (train.py, `SETTINGS`).

- Model: {model_note}. `MODEL=... bash launch.sh` loads another.
- Data: data/train.jsonl ({train_rows} conversations) and data/heldout.jsonl ({heldout_rows}), formatted with
  the model's chat template; only the assistant's replies are trained on (train.py says how).
- The data order comes from the Trainer's sampler (seeded), not the app's, so losses match the app's run
  in size, not step by step.

## Run it

```bash
pip install -r requirements.txt          # torch for your CUDA first
bash launch.sh                           # accelerate/{choice.config_file}, {choice.gpus} process(es)
NPROC=8 bash launch.sh                   # 8 GPUs
CONFIG=accelerate/zero3.yaml NPROC=8 bash launch.sh
CPU_ONLY=1 NPROC=2 bash launch.sh        # try it without a GPU: 2 CPU processes (gloo)
```

Afterwards `output/` holds a standard PEFT adapter (adapter_config.json + adapter_model.safetensors):

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{config.model}"), "output")
```

and `output/metrics.json` the training losses and the held-out loss before and after. Bring it back into
PEFT Explorer (Compare, export, compose): `python -m explorer import-run path/to/this/folder`.

## Why this configuration

Chosen for {choice.gpus} GPU(s) of {choice.gpu_memory_gb:g} GiB: {choice.reason} ({verdict}). The Calculator's
training memory per GPU (weights, gradients, optimizer states, activations):

| configuration | per GPU |
|---|---|
{sizes}
{modelled}
accelerate/ holds all four: single_gpu.yaml, ddp.yaml (each GPU a full replica; fastest when it fits),
fsdp.yaml (PyTorch FSDP full shard, one decoder layer at a time) and zero3.yaml (DeepSpeed ZeRO-3; needs
`pip install deepspeed`). Checked by PEFT Explorer's tests: the CPU path (2 processes, gloo) end to end;
the GPU configurations follow PEFT's own example configs and were not run here.
"""
