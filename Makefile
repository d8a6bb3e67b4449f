# medswin: `make demo`, `make test`, `make bench` each create .venv if missing and install into it.
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,demo,dicom,bundle,onnx
BIN := $(VENV)/bin
STAMP := $(VENV)/.medswin-installed
# what was installed: rewritten only when TORCH_SPEC or EXTRAS change, so that the stamp (and the
# install) is redone for `make test TORCH_SPEC=...` on an existing .venv
SPEC := $(VENV)/.medswin-install-spec
INSTALL_SPEC := $(TORCH_SPEC) [$(EXTRAS)]

.PHONY: install demo test notebooks bench bench-full bench-demo clean FORCE

install: $(STAMP)

$(SPEC): FORCE
	@mkdir -p $(VENV)
	@echo '$(INSTALL_SPEC)' | cmp -s - $@ || echo '$(INSTALL_SPEC)' > $@

$(STAMP): pyproject.toml $(SPEC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the CPU wheel (or TORCH_SPEC); installing the project alone would pull a CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medswin demo --out demo_output

test: $(STAMP)
	$(BIN)/python -m pytest -q

# execute every notebooks/*.ipynb top to bottom (about 8 minutes; CI runs it after `make test`);
# `make test` checks that they are stored without outputs and in sync with notebooks/build.py
notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -m notebook tests/test_notebooks.py

# about 22 minutes on 2 CPU cores: the inference/scaling/training benchmarks in their --quick form
bench: $(STAMP)
	$(BIN)/python benchmarks/swin_unetr_vs_monai.py
	$(BIN)/python benchmarks/models_table.py
	$(BIN)/python benchmarks/inference_vs_monai.py --quick
	$(BIN)/python benchmarks/scaling.py --quick
	$(BIN)/python benchmarks/training_throughput.py --quick

# the full whole-volume inference, scaling and training benchmarks (about 40 minutes on 2 CPU cores)
bench-full: $(STAMP)
	$(BIN)/python benchmarks/inference_vs_monai.py
	$(BIN)/python benchmarks/scaling.py
	$(BIN)/python benchmarks/training_throughput.py

# the demo task at equal wall time against MONAI's UNet and SwinUNETR (about 17 minutes)
bench-demo: $(STAMP)
	$(BIN)/python benchmarks/demo_vs_monai_unet.py --budget-minutes 5

clean:
	rm -rf $(VENV) demo_output .pytest_cache
