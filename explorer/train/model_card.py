"""The adapter's model card (adapter/README.md, in the run's folder and its download zip), filled from the run.

PEFT's save_pretrained writes an empty Hugging Face model-card template ("[More Information Needed]") whose
base_model is the serving machine's folder. The card written here replaces it: the base model by its public
name (the hub id a bundled model was converted from, recorded in its explorer_provenance.json; a local folder
stays a local folder, said so), the dataset's name and size, the method and its settings, the steps, every
number the run's summary holds (losses, task score, forgetting probe, and "what it learned": resemblance to the
held-out answers, facts recalled, the verdict), and three lines of Python that load it with PEFT.

The YAML header follows the Hub's model-card metadata (huggingface_hub's ModelCardData fields: base_model,
library_name, pipeline_tag, tags); base_model is written only when it is a hub id.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

from ..errors import ExplorerError
from . import runs

AUTO_CLASSES = {  # PEFT task_type (adapter_config.json) -> the transformers class its base loads with
    "CAUSAL_LM": "AutoModelForCausalLM", "SEQ_CLS": "AutoModelForSequenceClassification",
    "FEATURE_EXTRACTION": "AutoModel", "TOKEN_CLS": "AutoModelForTokenClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM", "QUESTION_ANS": "AutoModelForQuestionAnswering",
}
PIPELINE_TAGS = {"CAUSAL_LM": "text-generation", "SEQ_CLS": "text-classification",
                 "FEATURE_EXTRACTION": "feature-extraction"}
RESULT_ROWS = (  # (label, base key, after-training key, what it measures)
    ("Training loss", "train_loss_first", "train_loss_last", "first and last step"),
    ("Held-out loss", "eval_loss_first", "eval_loss_last", "before and after training, on rows it never trained on"),
    ("Task score", "task_score_base", "task_score_adapted", "held-out replies scored against their reference"),
    ("Resemblance to the held-out answers", "similarity_base", "similarity_adapted",
     "how close replies to held-out questions are to the file's answers"),
    ("Facts recalled", "fact_recall_base", "fact_recall_adapted",
     "share of the answers' concrete facts (numbers, times, names) reproduced when asked the training questions"),
    ("General questions still answered", "probe_score_base", "probe_score_adapted",
     "the forgetting probe: capitals, arithmetic, colours"),
)
COUNTS = {"fact_recall": ("facts_recalled_base", "facts_recalled_adapted", "facts_checked"),
          "probe_score": ("probe_right_base", "probe_right_adapted", "probe_questions")}


def base_model(name: str) -> tuple[str, bool, str]:
    """(what from_pretrained loads, whether it is a hub id, a sentence on where it comes from)."""
    from ..models import registry

    try:
        entry = registry.resolve(name)
    except ExplorerError:
        return name, False, f"The base model is `{name}` as this app named it; it could not be resolved here."
    if entry.kind == "hub":
        return entry.location, True, f"The base model is the Hugging Face hub model `{entry.location}`."
    folder = Path(entry.location)
    provenance = runs.read_json(folder / "explorer_provenance.json", {}) or {}
    upstream = provenance.get("upstream")
    if upstream:
        return upstream, True, (f"The base model is `{upstream}` on the Hugging Face hub. It was trained on the "
                                f"app's copy `{entry.name}` ({provenance.get('source', 'converted')}), so the hub "
                                "model's weights differ slightly and its replies may differ a little.")
    return str(folder), False, (f"The base model is a local folder, `{folder}` on the machine that trained it "
                                f"(`{entry.name}`), not a Hugging Face hub model: copy that folder along with "
                                "the adapter and give its path below.")


def _dataset_size(run) -> str:
    from ..data import sources

    method = run.method
    try:
        kind = method.data_kind(method.parse_options(run.options)) if method else "chat"
        train, held = sources.load_rows(run.config.dataset, kind)
    except (ExplorerError, OSError):
        return "its rows could not be read here"
    return f"{len(train)} training rows, {len(held)} held out"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.3f}"


def results_table(summary: dict) -> list[str]:
    """Markdown rows of the numbers the summary holds (rows with neither number are left out)."""
    lines = ["| Measure | Base model | After training | What it measures |", "|---|---|---|---|"]
    for label, before_key, after_key, meaning in RESULT_ROWS:
        before = summary.get(before_key)
        after = summary.get(after_key, summary.get("probe_score") if after_key == "probe_score_adapted" else None)
        if before is None and after is None:
            continue
        cells = [_number(before), _number(after)]
        counted = COUNTS.get(before_key.rsplit("_", 1)[0])
        if counted and isinstance(summary.get(counted[2]), int):
            for i, key in enumerate(counted[:2]):
                if isinstance(summary.get(key), int):
                    cells[i] += f" ({summary[key]} of {summary[counted[2]]})"
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {meaning} |")
    return lines if len(lines) > 2 else []


def _settings(run) -> list[str]:
    config, method = run.config, run.method
    try:
        options = dataclasses.asdict(method.parse_options(run.options))
    except (ExplorerError, TypeError):
        options = dict(run.options)
    shown = ", ".join(f"{k}={v}" for k, v in options.items() if v not in ("", None, [], {})) or "the defaults"
    rate = config.learning_rate or method.default_lr
    return [f"- **Method:** {method.title}; options: {shown}",
            f"- **Steps:** {run.steps_trained} of {config.steps}, batch {config.batch_size} × {config.grad_accum} "
            f"accumulation, sequence length {config.seq_len}, learning rate {rate:g}"
            f"{'' if config.learning_rate else ' (the method default)'}, optimizer {config.optimizer}, "
            f"seed {config.seed}, {config.precision}"]


def _load_lines(run, base: str, task_type: str) -> list[str]:
    if not run.method.uses_peft:
        return [f"{run.method.title} is not built by PEFT: this run's weights are saved in PEFT Explorer's own "
                "format (safetensors of the trained modules, with settings beside them), which PEFT Explorer reads "
                "back (Compare); PEFT cannot load them."]
    auto = AUTO_CLASSES.get(task_type, "AutoModelForCausalLM")
    lines = ["Unzip, then load it with PEFT (the base model is named here; the path in adapter_config.json is "
             "the training machine's and is not used):", "", "```python",
             f"from transformers import {auto}", "from peft import PeftModel",
             f"model = PeftModel.from_pretrained({auto}.from_pretrained({json.dumps(base)}), \"adapter\")", "```"]
    if run.method.quantized_base:
        lines.append("It trained on a 4-bit base (bitsandbytes); load the base with "
                     "`quantization_config=BitsAndBytesConfig(load_in_4bit=True)` to match it exactly.")
    return lines


def card_text(run) -> str:
    """The filled model card of a finished run (markdown with the Hub's YAML header)."""
    config, method, summary = run.config, run.method, run.summary
    if config is None or method is None:
        raise ExplorerError(f"Run {run.run_id} has no readable settings, so no model card can be written.")
    adapter_config = runs.read_json(run.folder / runs.ADAPTER_DIR / "adapter_config.json", {}) or {}
    task_type = adapter_config.get("task_type") or "CAUSAL_LM"
    base, on_hub, base_note = base_model(config.model)
    header = ["---", *([f"base_model: {base}"] if on_hub else []), "library_name: peft" if method.uses_peft else
              "library_name: transformers", f"pipeline_tag: {PIPELINE_TAGS.get(task_type, 'text-generation')}",
              "tags:", f"- {method.name}", "- peft-explorer", *([f"- base_model:adapter:{base}"] if on_hub else []),
              "---"]
    title = f"# {method.artifact[:1].upper() + method.artifact[1:]} of {base.rsplit('/', 1)[-1]} " \
            f"trained on {run.dataset_label}"
    body = [title, "",
            f"{method.title} trained by PEFT Explorer (run `{run.run_id}`, {run.state}) on the dataset "
            f"**{run.dataset_label}** ({_dataset_size(run)}).", "", base_note, "", "## Training", "",
            *_settings(run)]
    if run.state == "diverged" or summary.get("diverged") is True:
        why = str(summary.get("divergence") or "its loss ran away from where it started").rstrip(".")
        said = why if why.lower().startswith("diverged") else f"This run diverged: {why}"
        body += ["", f"**{said}.** The adapter is kept as it ended; its replies are likely noise."]
    table = results_table(summary)
    if table:
        body += ["", "## What it learned", "", "Measured by PEFT Explorer on this run (none of these is a claim).",
                 "", *table]
    if isinstance(summary.get("verdict"), str) and summary["verdict"].strip():
        body += ["", f"**In a sentence:** {summary['verdict'].strip()}"]
    body += ["", "## Use it", "", *_load_lines(run, base, task_type), ""]
    return "\n".join(header + [""] + body)


def zip_with_card(run_id: str) -> Path:
    """The adapter zip for download, with the filled model card in place of PEFT's empty README.md."""
    folder = runs.run_path(run_id)
    if (folder / runs.ADAPTER_DIR).is_dir():
        write_card(folder)
    return runs.zip_adapter(run_id)


def write_card(run_dir: Path) -> Path | None:
    """Replace PEFT's empty README.md in the run's adapter folder with the filled card (written whole under a
    temporary name, then renamed). None, and the folder left as it is, when the run's settings are unreadable:
    the adapter still downloads."""
    run = runs.read_run(Path(run_dir))
    target = run.folder / runs.ADAPTER_DIR / "README.md"
    if run.config is None or run.method is None or not target.parent.is_dir():
        return None
    text = card_text(run)
    try:
        descriptor, tmp = tempfile.mkstemp(dir=target.parent, prefix=runs.TMP_PREFIX, suffix=".md")
    except OSError as error:
        raise runs.not_writable(target, error) from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise runs.not_writable(target, error) from None
    return target
