"""Who may use what on a hosted server: which models may be named (EXPLORER_MODEL_SOURCES, the allowed root)
and the login (EXPLORER_AUTH, EXPLORER_AUTH_FILE) (README: "Hosting for a class"). The caps, the queue and the
disk budget are in tests/test_hosting.py."""

import importlib.util
import shutil
from pathlib import Path

import httpx
import pytest
from conftest import TINY, free_port

from explorer import settings
from explorer.errors import ExplorerError
from explorer.models import loading, provision
from explorer.models import registry as models
from explorer.train import lifecycle
from explorer.train import loop as training
from explorer.train.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- model sources


@pytest.fixture
def model_folders(cache, tmp_path, monkeypatch):
    """root/ok (a model), outside/m (a model elsewhere), a symlink into outside, a folder with a linked file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(cache / TINY, root / "ok")
    shutil.copytree(cache / TINY, outside / "m")
    (root / "link").symlink_to(outside / "m", target_is_directory=True)
    shutil.copytree(cache / TINY, root / "sneaky")
    (root / "sneaky" / "config.json").unlink()
    (root / "sneaky" / "config.json").symlink_to(outside / "m" / "config.json")
    monkeypatch.setenv("EXPLORER_ALLOWED_MODEL_ROOT", str(root))
    return {"ok": root / "ok", "outside": outside / "m", "link": root / "link", "sneaky": root / "sneaky",
            "dotdot": root / "ok" / ".." / "ok", "escape": root / ".." / "outside" / "m"}


def test_unset_sources_allow_any_folder_as_before(monkeypatch, model_folders):
    monkeypatch.delenv("EXPLORER_MODEL_SOURCES", raising=False)
    assert models.resolve(str(model_folders["outside"])).kind == "local"
    assert models.resolve(TINY).kind == "tiny"


def test_registry_sources_allow_registry_names_only(monkeypatch, model_folders):
    monkeypatch.setenv("EXPLORER_MODEL_SOURCES", "registry")
    assert models.resolve(TINY).kind == "tiny"
    assert models.resolve(provision.BUNDLED_NAME).kind == "bundled"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    for name in (str(model_folders["ok"]), str(model_folders["outside"]), "/", "HuggingFaceTB/SmolLM2-135M-Instruct",
                 "../../etc"):
        with pytest.raises(ExplorerError, match=r"This server only allows the models of its registry: .*"
                                                rf"{TINY}.*\(EXPLORER_MODEL_SOURCES=registry\)"):
            models.resolve(name)


def test_local_sources_allow_folders_under_the_root_only(monkeypatch, model_folders):
    monkeypatch.setenv("EXPLORER_MODEL_SOURCES", "local")
    entry = models.resolve(str(model_folders["ok"]))
    assert entry.kind == "local" and Path(entry.location) == model_folders["ok"].resolve()
    assert loading.load(str(model_folders["ok"])).entry == entry, "an allowed folder loads"
    assert models.resolve(TINY).kind == "tiny", "registry names stay allowed"
    refused = {
        "outside": "is outside",
        "link": "is outside",  # a symlink inside the root that leads out
        "sneaky": "config.json in .* is a link to a file outside",
        "dotdot": r"'\.\.' is not allowed",
        "escape": r"'\.\.' is not allowed",
    }
    for key, reason in refused.items():
        with pytest.raises(ExplorerError, match=rf"EXPLORER_MODEL_SOURCES=local\); .*{reason}"):
            models.resolve(str(model_folders[key]))
    for name in ("/", "/etc", str(model_folders["ok"].parent), "no-such-folder", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        with pytest.raises(ExplorerError, match="EXPLORER_MODEL_SOURCES=local"):
            models.resolve(name)


def test_hub_sources_also_allow_hub_ids_when_online(monkeypatch, model_folders):
    monkeypatch.setenv("EXPLORER_MODEL_SOURCES", "hub")
    with pytest.raises(ExplorerError, match="offline"):
        models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")  # conftest sets HF_HUB_OFFLINE
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    assert models.resolve(str(model_folders["ok"])).kind == "local"
    for key in ("outside", "link", "dotdot"):
        with pytest.raises(ExplorerError, match="EXPLORER_MODEL_SOURCES=hub"):
            models.resolve(str(model_folders[key]))


def test_training_goes_through_the_model_policy(monkeypatch, model_folders, tmp_path):
    monkeypatch.setenv("EXPLORER_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("EXPLORER_MODEL_SOURCES", "registry")
    cfg = TrainConfig(model=str(model_folders["ok"]), method="lora", dataset="pirate", steps=1, eval_examples=0,
                      batch_size=2, seq_len=64)
    run_dir = lifecycle.create(cfg, {})
    with pytest.raises(ExplorerError, match="only allows the models of its registry"):
        training.train(cfg, {}, run_dir)


# --------------------------------------------------------------------------- login


def test_auth_parsing(monkeypatch, tmp_path):
    monkeypatch.delenv("EXPLORER_AUTH_FILE", raising=False)
    monkeypatch.setenv("EXPLORER_AUTH", "alice:pw1, bob:p:w2 ,")
    assert settings.auth() == [("alice", "pw1"), ("bob", "p:w2")]
    logins = tmp_path / "logins.txt"
    logins.write_text("# the class\n\nstudent1:one,two\nstudent2: spaced \n")
    monkeypatch.setenv("EXPLORER_AUTH_FILE", str(logins))
    assert settings.auth() == [("alice", "pw1"), ("bob", "p:w2"), ("student1", "one,two"), ("student2", " spaced")]
    monkeypatch.delenv("EXPLORER_AUTH")
    assert settings.auth() == [("student1", "one,two"), ("student2", " spaced")]


@pytest.mark.parametrize("auth, file_text, message", [
    ("alice", None, "EXPLORER_AUTH entry 1 must be user:password"),
    ("alice:ok,:secret-pw", None, "EXPLORER_AUTH entry 2 must be user:password"),
    ("alice:", None, "EXPLORER_AUTH entry 1 must be user:password"),
    ("alice:a,alice:b", None, "name the user\\(s\\) alice more than once"),
    ("", "ok:1\nno-password-here\n", "EXPLORER_AUTH_FILE line 2 must be user:password"),
    ("", "# only a comment\n", "holds no user:password line"),
    ("", "MISSING", "EXPLORER_AUTH_FILE .* cannot be read"),
])
def test_auth_mistakes_stop_the_app_without_echoing_passwords(monkeypatch, tmp_path, auth, file_text, message):
    monkeypatch.setenv("EXPLORER_AUTH", auth)
    if file_text is None:
        monkeypatch.delenv("EXPLORER_AUTH_FILE", raising=False)
    else:
        path = tmp_path / "logins.txt"
        if file_text != "MISSING":
            path.write_text(file_text)
        monkeypatch.setenv("EXPLORER_AUTH_FILE", str(path))
    with pytest.raises(SystemExit, match=message) as raised:
        settings.auth()
    assert "secret-pw" not in str(raised.value)


def load_launcher():
    spec = importlib.util.spec_from_file_location("explorer_launcher", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_app_with_a_login_refuses_requests_without_one(monkeypatch, cache):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    monkeypatch.setenv("EXPLORER_AUTH", "teacher:s3cret-pw")
    monkeypatch.delenv("EXPLORER_AUTH_FILE", raising=False)
    demo, (_, url, _) = load_launcher().launch(server_name="127.0.0.1", server_port=free_port(),
                                               prevent_thread_lock=True, quiet=True)
    url = url.replace("localhost", "127.0.0.1").rstrip("/")
    try:
        assert httpx.get(f"{url}/config", timeout=30).status_code == 401
        assert httpx.get(f"{url}/gradio_api/info", timeout=30).status_code == 401
        call = httpx.post(f"{url}/gradio_api/call/calc", json={"data": ["llama-2-7b", "lora", "{}", ""]}, timeout=30)
        assert call.status_code == 401, "the API refuses calls without a login"
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, verbose=False, auth=("teacher", "wrong"))
        with httpx.Client(timeout=30) as browser:  # what the login form does
            assert browser.post(f"{url}/login", data={"username": "teacher", "password": "s3cret-pw"}).status_code == 200
            assert browser.get(f"{url}/config").status_code == 200
        client = Client(url, verbose=False, auth=("teacher", "s3cret-pw"))
        result = client.predict("llama-2-7b", "lora", '{"r": 8}', "", api_name="/calc")
        from explorer import calculator

        assert result["trainable_params"] == calculator.from_request("llama-2-7b", "lora", {"r": 8}).trainable_formula
    finally:
        demo.close()


def test_a_hosted_calculator_reads_no_config_path_a_user_names(tmp_path, monkeypatch, cache):
    from explorer import calculator
    from explorer.errors import ExplorerError
    from explorer.models import specs as model_specs

    config = tmp_path / "config.json"
    config.write_text((cache / "tiny-random-llama" / "config.json").read_text())
    assert model_specs.resolve(str(config)).arch.hidden == 32, "one user on their own machine: any config.json"
    monkeypatch.setenv("EXPLORER_MODEL_SOURCES", "registry")
    with pytest.raises(ExplorerError, match="only allows the models of its registry"):
        calculator.from_request(str(config), "lora")
    assert calculator.from_request("llama-2-7b", "lora", exact_mode="skip").trainable > 0, "the catalog still works"
