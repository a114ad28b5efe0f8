# qfx: two commands on a fresh machine, `make demo` and `make test`; each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The CPU build of torch, installed before the project so that the project's
# `torch>=2.3` range is already met and no multi-GB CUDA build is pulled in.
TORCH  ?= torch==2.13.0

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job on the embedded digits data: train, quantize, export, generate the Ultra96-V2
# HLS project, C-simulate it bit for bit against PyTorch.
demo: $(STAMP)
	$(PY) examples/digits_to_fpga.py --out out/digits_fpga --force

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_quantize.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_train.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_train_profile.py
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_emulator.py
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_bnn.py
	$(PY) benchmarks/bench_hls.py
	$(PY) benchmarks/bench_rtl.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
