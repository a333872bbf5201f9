"""PEFT Explorer: explore the tradeoffs of parameter-efficient fine-tuning.

Pure logic lives in this package; only ``explorer.ui`` imports gradio.
"""

import logging

__version__ = "0.1.0"

# PEFT imports bitsandbytes whenever it is installed (peft/helpers.py, at `import peft`), and on a CPU with
# AVX512-BF16 bitsandbytes then logs "Failed to load CPU gemm_4bit_forward from kernels-community: No module
# named 'kernels'" (bitsandbytes/backends/cpu/ops.py): before every command and at every start. That kernel
# only serves 4-bit weights repacked for AVX512-BF16 in eval mode, which QLoRA here turns off
# (explorer.methods.qlora.use_portable_cpu_kernels); the portable CPU path needs no `kernels` package
# (tests/test_quiet_imports.py). So that one record is dropped; the logger's other records still show.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not str(record.msg).startswith("Failed to load CPU gemm_4bit_forward from kernels-community"))
