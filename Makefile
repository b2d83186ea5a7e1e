# normtut: `make test` runs every test, `make book` renders the book into _build/html.
# Both work from a fresh clone: they create .venv and install what is missing first.

PYTHON_BOOTSTRAP ?= python3
VENV             ?= .venv
PY               := $(VENV)/bin/python
# Which torch to install. The default is the CPU build that these build machines carry; on a
# CUDA box use e.g. `make test TORCH_SPEC="torch"` (or keep the torch you already have with
# TORCH_SPEC="").
TORCH_SPEC       ?= torch==2.13.0
MATHJAX_VERSION  ?= 3.2.2
MATHJAX_DIR      := book/_static/mathjax
STAMP            := $(VENV)/.installed
PYTEST_ARGS      ?=
# OpenMP threads that spin while waiting make small CPU kernels up to ~100x slower when the
# cores are shared (measured on BatchNorm1d calls in chapter 04); passive waiting costs nothing.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: all install test unit notebooks book browser assignments lint strip clean distclean

all: test book

# --- environment -----------------------------------------------------------------------
$(PY):
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the package metadata changes. torch goes first, pinned, so that the
# `torch>=...` requirement of normtut is already satisfied and pip never pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
ifneq ($(strip $(TORCH_SPEC)),)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
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
	$(PY) -m pytest -q -m "not browser" $(PYTEST_ARGS)

notebooks: $(STAMP)
	NORMTUT_QUICK=1 MPLBACKEND=Agg $(PY) -m pytest -q --nbmake --nbmake-timeout=300 chapters $(PYTEST_ARGS)

# --- the book ---------------------------------------------------------------------------
book: $(STAMP) $(MATHJAX_DIR)/tex-chtml.js
	# MPLBACKEND=Agg in the environment would stop plt.show() from putting figures in the pages
	# the execution cache keys on the notebooks only: drop it when normtut (or torch) changed
	$(PY) book/_ext/package_cache.py check
	env -u MPLBACKEND NORMTUT_QUICK=0 $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@test -f _build/html/index.html
	$(PY) book/_ext/package_cache.py stamp
	@echo "The book is in _build/html/index.html"

browser: $(STAMP)
	@test -f _build/html/index.html || { echo "run 'make book' first"; exit 1; }
	rm -rf _build/screenshots
	$(PY) -m pytest -q -m browser tests/test_book_browser.py tests/test_pages.py $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(MATHJAX_DIR)
