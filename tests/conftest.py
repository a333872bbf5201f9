"""Shared fixtures: offline environment, provisioned models, a launched app, headless chromium."""

import os

# Before gradio or transformers are imported anywhere: no analytics, no hub, no progress bars.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
# Torch's OpenMP threads sleep when they wait instead of spinning. Two pytest-xdist workers, each with a
# thread per core (and their child processes), share the cores: a waiting thread that spins takes a core
# from the other process's work. Measured on this 2-core machine, tests/test_compare.py and test_gguf.py at
# -n 2: 243 s of wall time spinning (OpenMP's default), 164 s passive, 146 s with one thread per worker;
# passive keeps a second thread for a test whose partner worker is idle (its app, its subprocesses).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tempfile  # noqa: E402

# Each test process keeps its training runs apart (parallel workers, and the user's own runs).
os.environ["EXPLORER_RUNS_DIR"] = tempfile.mkdtemp(prefix="explorer-test-runs-")
os.environ["EXPLORER_RACES_DIR"] = tempfile.mkdtemp(prefix="explorer-test-races-")

import functools  # noqa: E402
import inspect  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from explorer import settings  # noqa: E402
from explorer.models import provision  # noqa: E402
from explorer.train import lifecycle, runs  # noqa: E402
from explorer.train.config import TrainConfig  # noqa: E402

CHROMIUM = Path("/usr/lib/chromium/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"
TINY = provision.TINY_NAME
BUNDLED = provision.BUNDLED_NAME


def train_run(method: str, dataset: str = "pirate", options: dict | None = None, model: str = TINY,
              **overrides) -> str:
    """A short run trained in this process through the run lifecycle (as the CLI trains); its run id.
    Defaults suit the tiny model: 3 steps, no task score, held-out loss at the start and the end."""
    values = dict(model=model, method=method, dataset=dataset, steps=3, batch_size=4, seq_len=64,
                  eval_examples=0, eval_every=100)
    values.update(overrides)
    outcome = lifecycle.execute(lifecycle.create(TrainConfig(**values), options or {}))
    assert outcome.state == "done", outcome.error
    return outcome.summary["run_id"]


def copy_run(run_id, edit_config=None, options=None) -> str:
    """A copy of a run under a new valid id, its settings edited: cheap fakes for the error checks."""
    import json

    method = json.loads((runs.run_path(run_id) / "settings.json").read_text())["config"]["method"]
    target = runs.runs_dir() / runs.new_run_id(method)
    shutil.copytree(runs.run_path(run_id), target)
    settings_file = target / "settings.json"
    saved = json.loads(settings_file.read_text())
    saved["config"].update(edit_config or {})
    if options is not None:
        saved["options"] = options
    settings_file.write_text(json.dumps(saved))
    return target.name


def shallow(name: str, layers: int):
    """A catalog model with fewer layers (layer_types cut to match): the same kinds of block, so a per-block
    check (FLOPs against torch's counter) covers the model at a fraction of the cost."""
    import json

    from explorer.costs import specs

    data = json.loads((specs.CATALOG_DIR / f"{name}.json").read_text())
    data.pop("_catalog")
    depth_key = "n_layer" if "n_layer" in data else "num_hidden_layers"
    assert data[depth_key] >= layers
    data[depth_key] = layers
    for key in ("layer_types", "no_rope_layers"):
        if key in data:
            data[key] = data[key][:layers]
    return specs.spec_from_dict(data, f"{name}-{layers}-layers", "upload")


def force_status(run_dir: Path, state: str, **extra) -> None:
    """Put a run in a state directly, as an earlier server or another process may have left it (tests only:
    the app changes a run's status through explorer.train.lifecycle alone)."""
    runs.write_json(run_dir / "status.json", {"state": state, "time": 0, **extra})


@pytest.fixture(scope="session")
def cache() -> Path:
    """The real models_cache with both shipped models provisioned (make test does it first)."""
    folder = settings.models_cache()
    provision.ensure_all(folder)
    return folder


@pytest.fixture(scope="session")
def lora_pirate(cache) -> str:
    """LoRA on pirate, 3 steps at learning rate 0.05 (train_run's other defaults): one training per test process
    for the files that open, compose, serve, mix or rescale it, which only read it."""
    return train_run("lora", "pirate", learning_rate=0.05)


@pytest.fixture(scope="session")
def two_step_loras(cache) -> tuple[str, str]:
    """LoRA on pirate and on french, 2 steps at learning rate 0.05: shared read-only, as lora_pirate."""
    return (train_run("lora", "pirate", steps=2, learning_rate=0.05),
            train_run("lora", "french", steps=2, learning_rate=0.05))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(cache):
    from explorer.ui.app import CSS, build_app

    demo = build_app().queue(default_concurrency_limit=settings.concurrency())  # as app.py launches it
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                            quiet=True, share=False, css=CSS)
    yield url.replace("localhost", "127.0.0.1")
    demo.close()


@pytest.fixture(scope="session")
def browser_type_launch_args():
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing; `make test` installs it with apt-get")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return {
        "executable_path": str(CHROMIUM),
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
    }


@pytest.fixture
def page(page):
    """pytest-playwright's page, with a generous wait (a wait, not a limit on speed): on a loaded 2-core machine
    the renderer of this many-component page can be busy for more than playwright's default 30 s before a
    click lands (seen on CI-like runs: a tab click waiting while 'scrolling into view')."""
    page.set_default_timeout(120_000)
    return page


@pytest.fixture
def screenshot(page):
    """Save a full-page screenshot under tests/screenshots/ (git-ignored) and return its path."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def wait_for_text(page, selector: str, text: str, timeout: int = 60_000) -> None:
    """Wait until the element exists and its visible text (or a textarea's value) contains ``text``."""
    page.wait_for_function(
        """([selector, text]) => { const e = document.querySelector(selector);
             return !!e && ((e.value !== undefined && e.value.includes(text)) || e.innerText.includes(text)); }""",
        arg=[selector, text], timeout=timeout)


@pytest.fixture(autouse=True)
def exact_builds_back_in_this_process():
    """A test that launches app.py turns on the Calculator's build process; later tests build here again
    (a monkeypatched build must be the one that runs), and the child is stopped by its pid."""
    yield
    from explorer.calculator import exact

    if exact._use_child:
        exact.build_in_child_process(False)


# --------------------------------------------------------------------------- lanes (pytest.ini defines the markers)
# `make test-fast` runs the tests that carry none of browser, system and slow; `make test` runs them all. A test
# is marked by the fixtures it uses (item.fixturenames is the closure: a fixture's own fixtures count), by
# whether it or one of its fixtures trains through train_run above, and else by name in MARKED below. Slow
# means seconds or more each on a quiet 2-core machine (a real training run, even on the tiny model, takes
# several): the fast lane keeps the calculators, parsers, messages and loaders.
MARKER_FIXTURES = {
    "browser": {"page", "app_url"},
    "system": {"ray_cluster", "manager"},
}
TRAINS = re.compile(r"\btrain_run\(")
# "file" (every test in it; a subfolder's file by its path under tests/), "file::test" (every parametrization)
# or "file::test[id]" (one) -> its lane, where neither fixtures nor train_run tell. Measured with
# `--durations` in the fast lane: what took seconds there came here.
MARKED = {
    "system": [  # a child process: a worker, app.py, the CLI, a recipe's launcher, the Calculator's builder
        "test_ray_backend.py",
        "test_cli.py::test_models_json", "test_cli.py::test_an_error_in_a_real_process_is_one_line_and_exit_2",
        "test_calculator_io.py::test_cli_calc_json_has_the_documented_fields",
        "test_quiet_imports.py::test_a_command_that_imports_peft_starts_without_the_kernels_notice",
        "test_hosting.py::test_the_queue_size_comes_from_the_setting",
        "test_hosting.py::test_concurrent_jobs_run_side_by_side_up_to_the_setting",
        "test_hosting.py::test_a_worker_that_cannot_start_fails_its_run_and_the_queue_goes_on",
        "test_hosting_access.py::test_the_app_with_a_login_refuses_requests_without_one",
        "test_load_and_faults.py::test_twenty_users_at_once_while_a_run_trains",
        "test_load_and_faults.py::test_killed_workers_leave_nothing_that_loads_and_the_queue_moves_on",
        "test_load_and_faults.py::test_a_restart_mid_training_marks_runs_interrupted_and_new_runs_work",
        "test_load_and_faults.py::test_out_of_memory_in_a_worker_names_the_settings_to_lower",
        "test_shared_answers.py::test_the_servers_builds_run_in_one_child_process_at_the_lowest_priority",
    ],
    "slow": [
        # the bundled model, benches, GGUF exports
        "test_benches.py", "test_gguf.py",
        "test_cli.py::test_generate_json_on_bundled_model",
        "test_provision.py::test_bundled_model_reloads_from_cache_and_knows_paris",
        "test_provision.py::test_interrupted_conversion_leaves_nothing_loadable_then_converts_cleanly",
        # training without train_run: the loop itself, the CLI, races, a helper of the file's own
        "test_training.py", "test_lora_variants.py", "test_race.py", "test_scoring.py",
        "test_heads.py::test_on_real_features_both_heads_beat_their_baselines",
        "test_heads.py::test_an_uploaded_pair_set_trains_an_embedding_head_and_compare_retrieves",
        "test_cli_learn.py::test_demo_runs_json_gives_four_run_ids",
        "test_cli_learn.py::test_learn_weights_prints_progress_and_the_weights",
        "test_finetune_tab.py::test_the_estimate_before_start_gives_memory_and_time_from_measured_runs",
        "test_finetune_tab.py::test_stop_and_discard_act_on_the_selected_run_and_say_so",
        # real models built whole, catalog-wide checks against PEFT and torch's FLOP counter
        "test_calculator.py::test_flop_formula_equals_torch_flop_counter",
        "test_calculator.py::test_non_default_options_match_peft",
        "test_calculator.py::test_total_parameters_formula_equals_meta_model",
        "test_any_model.py::test_target_matching_equals_peft_on_every_catalog_model",
        "test_any_model.py::test_flop_formulas_equal_torch_on_the_new_architectures",
        "test_any_model.py::test_where_peft_refuses_the_defaults_the_calculator_says_so_in_peft_words",
        "test_calculator_io.py::test_any_numeric_input_gives_a_result_or_a_clear_error",
        "test_shared_answers.py::test_a_changed_option_never_gets_another_questions_answer",
        "test_shared_answers.py::test_exact_counts_built_in_the_background_once",
        "test_sharding.py::test_more_gpus_never_need_more_memory_each_and_the_table_says_where_it_fits",
        "hostile/test_numbers.py::test_calculator_from_request_gives_a_result_or_a_clear_error",
        "hostile/test_model_files.py::test_weights_whose_shapes_disagree_with_the_config",
        "test_data.py::test_plain_fallback_without_chat_template",
        "test_learn.py::test_side_by_side_lists_real_runs_of_each_method",
        "test_compose.py::test_demo_runs_are_trained_once_then_reused",
        "test_guard_rails.py",
        "test_load_and_faults.py::test_a_disk_that_fills_mid_training_fails_the_run_with_that_reason",
        "test_compare.py::test_loaded_models_keep_the_most_recent_within_the_budget",
        "test_gpu_check.py::test_a_cpu_dry_run_fills_every_column_from_real_runs",
        "test_gpu_check.py::test_on_a_bare_machine_a_missing_package_is_a_row_and_nothing_pulls_the_app_extras",
        "test_gpu_check.py::test_hidden_packages_are_neither_importable_nor_installed_as_far_as_transformers_can_tell",
        "test_gpu_check.py::test_an_import_error_is_a_missing_package_only_when_the_plain_base_loads",
        "test_peft_tuners.py::test_non_default_options_match_peft_and_torchs_flop_counter",
        "test_calculator.py::test_parameter_formula_equals_peft[deepseek-v2-lite-prompt]",
        "test_calculator.py::test_vera_counts_out_plus_r_per_layer_and_shows_its_shared_matrices_frozen",
        "test_calculator.py::test_ln_tuning_defaults_come_from_the_model_where_peft_has_no_table",
        "test_calculator_io.py::test_cli_peft_option_names",
        "test_any_model.py::test_gpt2_peft_style_targets_adapt_both_c_proj",
        "test_any_model.py::test_new_catalog_totals_equal_the_published_counts",
        "test_shared_answers.py::test_identical_requests_share_one_result",
        "test_ui_handlers.py::test_a_stale_exact_count_never_carries_the_verified_mark",
        "test_data.py::test_too_large_and_too_many_rows",
        "test_data_shapes.py::test_a_valid_upload_never_shows_an_error_in_the_estimate_line",
        "hostile/test_model_files.py::test_config_field_of_the_wrong_type",
    ],
}


def _trains(item) -> bool:
    """Whether the test or one of its fixtures calls train_run (the source is read once per function)."""
    functions = [item.function] + [definition.func for definitions in item._fixtureinfo.name2fixturedefs.values()
                                   for definition in definitions]
    return any(TRAINS.search(_source(function)) for function in functions)


@functools.cache
def _source(function) -> str:
    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def lanes_of(item) -> set[str]:
    where = item.path.relative_to(Path(__file__).parent).as_posix()
    lanes = {lane for lane, fixtures in MARKER_FIXTURES.items() if fixtures & set(item.fixturenames)}
    named = (where, f"{where}::{item.originalname}", f"{where}::{item.name}")
    lanes |= {lane for lane, targets in MARKED.items() if any(name in targets for name in named)}
    if "slow" not in lanes and _trains(item):
        lanes.add("slow")
    return lanes


def pytest_collection_modifyitems(config, items):
    for item in items:
        for lane in sorted(lanes_of(item)):
            item.add_marker(lane)
