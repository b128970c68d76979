# Two commands do all the set-up (each creates or reuses what it needs):
#   make demo   - check the bundled example model: static rules, tracing, export smoke test at every
#                 target (ONNX Runtime, a real Caffe2, ORT mobile, ExecuTorch, LiteRT, ncnn, Core ML)
#   make test   - the whole test suite (real torch, torchvision, ONNX Runtime, Caffe2, pre-commit,
#                 a loopback Ray cluster, headless Chromium)
# `make test-fast` runs only the quick tests (no real exporter or runtime); `make fuzz` fuzzes the
# static pass and the fixers for 10 minutes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.modelcheck-installed

.PHONY: demo test test-fast caffe2 browser targets venv lint bench fuzz

venv: $(STAMP)

# constraints.txt pins this project's own machines (torch 2.14.1 + torchvision 0.29.1 + timm, see
# its comment); the package itself only sets lower bounds.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

# The Caffe2 runtime (Debian bullseye's python3-torch 1.7.1 in its own root file system).
# Idempotent: a complete install returns at once.
caffe2: $(STAMP)
	@$(BIN)/modelcheck --install-caffe2 || { \
	  if [ "$$MODELCHECK_REQUIRE_CAFFE2" = 1 ]; then exit 1; fi; \
	  echo "Caffe2 runtime unavailable: its stages and tests will be skipped (CI requires it)"; }

# Chromium for the HTML report's headless-browser tests (Debian's package, about 25 s the first time).
browser:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium) || { \
	  if [ "$$MODELCHECK_REQUIRE_BROWSER" = 1 ]; then exit 1; fi; \
	  echo "chromium unavailable: the HTML report's browser tests will be skipped (CI requires it)"; }

# The mobile targets that live in environments of their own (ExecuTorch, LiteRT, ncnn, Core ML: one venv
# each under ~/.cache/modelcheck/envs/, beside torch 2.13.0), pinned by constraints-targets.txt.
# Idempotent: complete environments return at once.
targets: $(STAMP)
	@for name in $$($(BIN)/python -c "from modelcheck.targets import PROFILES; print(*(n for n, p in PROFILES.items() if p.env))"); do \
	  PIP_CONSTRAINT=$(CURDIR)/constraints-targets.txt $(BIN)/modelcheck --install $$name || { \
	    if [ "$$MODELCHECK_REQUIRE_TARGETS" = 1 ]; then exit 1; fi; \
	    echo "the $$name target is unavailable: its stages and tests will be skipped (CI requires it)"; }; \
	done

# every target, caffe2 (the seed's) first: the report ends with the models × targets matrix
DEMO_TARGETS = $$($(BIN)/python -c "from modelcheck.targets import TARGET_NAMES as t; print(','.join(['caffe2', *(n for n in t if n != 'caffe2')]))")

demo: caffe2 targets
	@$(BIN)/modelcheck examples/seed_model.py --target $(DEMO_TARGETS); status=$$?; \
	  if [ $$status -gt 1 ]; then exit $$status; fi; \
	  echo; echo "modelcheck exited $$status (1 = it found problems that break deployment: the example has them on purpose)"

test: caffe2 browser targets
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --minutes 10

# The operator compatibility table (linter/ops/table.json), measured again on ONNX Runtime, the real Caffe2,
# ORT mobile and the mobile targets' own converters and runtimes (in their environments).
.PHONY: optable
optable: caffe2 targets
	$(BIN)/python -m modelcheck.ops
