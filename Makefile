# normtut: `make test` runs every test, `make book` renders the book into _build/html.
# Both work from a fresh clone: they create .venv and install what is missing first.

PYTHON_BOOTSTRAP ?= python3
VENV             ?= .venv
PY               := $(VENV)/bin/python
# Which torch to install, as pip arguments (split on spaces, so options work). The default is
# the CPU wheel that these build machines carry. Elsewhere, plain `torch==2.13.0` from PyPI is a
# CUDA build of several GB on Linux; for the CPU build ask PyTorch's CPU index:
#   make test TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
# and to keep the torch already installed in .venv: TORCH_SPEC="". Changing it reinstalls.
TORCH_SPEC       ?= torch==2.13.0
MATHJAX_VERSION  ?= 3.2.2
MATHJAX_DIR      := book/_static/mathjax
STAMP            := $(VENV)/.installed
TORCH_STAMP      := $(VENV)/.torch-spec
# `make lower-bounds`: the oldest numpy/matplotlib/tqdm/cloudpickle that normtut allows, with this torch
LOWER_VENV       ?= .venv-lower
LOWER_TORCH_SPEC ?= torch==2.13.0
# `make d2l-check`: d2l 1.0.3 needs torchvision, whose wheels on this disk need torch 2.14.1
D2L_VENV         ?= .venv-d2l
D2L_TORCH_SPEC   ?= torch==2.14.1 torchvision==0.29.1
D2L_SPEC         ?= d2l==1.0.3
PYTEST_ARGS      ?=
# OpenMP threads that spin while waiting make small CPU kernels up to ~100x slower when the
# cores are shared (measured on BatchNorm1d calls in chapter 04): the tests, which run
# processes side by side, wait passively. Passive waiting is not free either: alone on the
# machine, a BN-LeNet training step of chapter 04 took 1.3-1.9x as long with it. The chapters
# execute one at a time (nbmake, the book; Part IV's ranks use one thread each), so they run
# with libgomp's (torch's OpenMP) spin shortened instead: alone as fast as the default spin,
# shared about half as slow (measured with two BN-LeNet trainings side by side).
export OMP_WAIT_POLICY ?= PASSIVE
CHAPTER_OMP      ?= -u OMP_WAIT_POLICY GOMP_SPINCOUNT=10000

.PHONY: all install test unit notebooks book browser assignments lint strip clean distclean \
	lower-bounds d2l-check d2l-clean spawn-check FORCE

all: test book

# --- environment -----------------------------------------------------------------------
$(PY):
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the package metadata or TORCH_SPEC changes. torch goes first, as TORCH_SPEC
# says, so that the `torch>=...` requirement of normtut is already satisfied and pip never
# pulls a CUDA build. $(TORCH_STAMP) holds the TORCH_SPEC of the last install; it is rewritten
# (and so triggers a reinstall) only when TORCH_SPEC differs.
$(TORCH_STAMP): FORCE | $(PY)
	@printf '%s\n' '$(TORCH_SPEC)' | cmp -s - $@ || printf '%s\n' '$(TORCH_SPEC)' > $@

$(STAMP): pyproject.toml $(TORCH_STAMP) | $(PY)
ifneq ($(strip $(TORCH_SPEC)),)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
endif
	$(PY) -m pip install --quiet -e ".[book,test,instructor]"
	@touch $@

install: $(STAMP)

# MathJax 3 is served by the built site itself, so math renders with no network.
$(MATHJAX_DIR)/tex-chtml.js:
	mkdir -p $(VENV)/mathjax
	cd $(VENV)/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	rm -rf $(MATHJAX_DIR) && mkdir -p $(MATHJAX_DIR)
	tar -xzf $(VENV)/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C $(MATHJAX_DIR) --strip-components=2 package/es5
	test -f $@

# --- tests ------------------------------------------------------------------------------
# Unit tests first, then every chapter under nbmake in quick mode. The browser test needs
# the built book and runs in `make browser` (after `make book`).
test: unit notebooks

unit: $(STAMP)
	$(PY) -m pytest -q -m "not browser and not spawn" $(PYTEST_ARGS)

# Part IV's chapters with every rank spawned and its function sent by cloudpickle, as on GPUs
# (NCCL), here on gloo (NORMTUT_DIST_START_METHOD=spawn): slow, each rank imports torch afresh.
spawn-check: $(STAMP)
	$(PY) -m pytest -q -m spawn tests/test_spawn_chapters.py $(PYTEST_ARGS)

notebooks: $(STAMP)
	env $(CHAPTER_OMP) NORMTUT_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest -q --nbmake --nbmake-timeout=300 chapters $(PYTEST_ARGS)

# --- the book ---------------------------------------------------------------------------
book: $(STAMP) $(MATHJAX_DIR)/tex-chtml.js
	# MPLBACKEND=Agg in the environment would stop plt.show() from putting figures in the pages
	# the execution cache keys on the notebooks only: drop it when normtut (or torch) changed
	$(PY) book/_ext/package_cache.py check
	env -u MPLBACKEND $(CHAPTER_OMP) NORMTUT_QUICK=0 $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@test -f _build/html/index.html
	$(PY) book/_ext/package_cache.py stamp
	@echo "The book is in _build/html/index.html"

browser: $(STAMP)
	@test -f _build/html/index.html || { echo "run 'make book' first"; exit 1; }
	rm -rf _build/screenshots
	$(PY) -m pytest -q -m browser tests/test_book_browser.py tests/test_pages.py $(PYTEST_ARGS)

# --- dependency checks ----------------------------------------------------------------------
# The unit tests (not the notebooks) on the lower bounds of numpy, matplotlib, tqdm, cloudpickle
# (.ci/lower-bounds.txt, equal to pyproject.toml's bounds), in a venv of their own. The tests of
# the repository itself (test_repo: lint, notebooks), of the assignments (otter-grader) and of
# the browser need tools the package does not, and are left to `make test`.
lower-bounds:
	rm -rf $(LOWER_VENV)
	$(PYTHON_BOOTSTRAP) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/python -m pip install --quiet $(LOWER_TORCH_SPEC)
	$(LOWER_VENV)/bin/python -m pip install --quiet -c .ci/lower-bounds.txt -e . \
		pytest hypothesis nbclient nbformat ipykernel
	$(LOWER_VENV)/bin/python .ci/check_pins.py .ci/lower-bounds.txt
	MPLBACKEND=Agg $(LOWER_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "not browser and not spawn" \
		--ignore=tests/test_repo.py --ignore=tests/test_assignments.py \
		--ignore=tests/test_book_browser.py tests $(PYTEST_ARGS)

# d2l 1.0.3 beside normtut: torch and torchvision first (the CUDA build that pip takes from
# this machine's disk, about 5.5 GB; it runs on the CPU), then exactly what a user types,
# `pip install -e . d2l==1.0.3`, which must resolve d2l's pins (numpy==1.23.5, pandas, scipy,
# matplotlib, ...) and normtut's bounds in one environment; `pip check` confirms it. Then the
# interop tests of tests/test_d2l.py, which fail (not skip) when something is missing.
$(D2L_VENV)/.installed: pyproject.toml
	rm -rf $(D2L_VENV)
	$(PYTHON_BOOTSTRAP) -m venv $(D2L_VENV)
	$(D2L_VENV)/bin/python -m pip install --quiet $(D2L_TORCH_SPEC)
	$(D2L_VENV)/bin/python -m pip install --quiet -e . $(D2L_SPEC)
	# d2l's pinned matplotlib 3.7.2 imports IPython's backend2gui, which IPython 9 removed
	# (d2l.train_ch6 then fails with an ImportError): keep IPython 8
	$(D2L_VENV)/bin/python -m pip install --quiet "ipython<9" "pytest>=8"
	$(D2L_VENV)/bin/python -m pip check
	@touch $@

d2l-check: $(D2L_VENV)/.installed
	NORMTUT_D2L_CHECK=1 MPLBACKEND=Agg $(D2L_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		-m d2l tests/test_d2l.py $(PYTEST_ARGS)

d2l-clean:
	rm -rf $(D2L_VENV)

# --- for instructors ----------------------------------------------------------------------
# Student notebooks (no solutions, no hidden tests) and otter-grader autograder zips, one folder
# per assignment: _build/assignments/NN_name/{student,autograder}. otter assign also runs every
# test against the solutions, so a broken master notebook fails here.
assignments: $(STAMP)
	$(PY) assignments/build.py --out _build/assignments

# --- housekeeping -----------------------------------------------------------------------
lint: $(STAMP)
	$(VENV)/bin/ruff check .

strip: $(STAMP)
	$(VENV)/bin/nbstripout chapters/*.ipynb

clean:
	rm -rf _build

distclean: clean
	rm -rf $(VENV) $(LOWER_VENV) $(D2L_VENV) $(MATHJAX_DIR)

FORCE:
