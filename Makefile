# zprl: `make demo` runs the main job on a built-in default, `make test` runs the tests.
# Both create .venv (Python 3.11) with the pinned dependencies on first use.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.zprl-installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: install test test-slow demo system-deps clean-venv

install: $(STAMP)

# Re-installs whenever the pins change. --no-cache-dir: torch's CUDA wheels are ~3 GB; cached beside
# the ~5.5 GB they install to, they filled a CI machine's disk (no space left on device).
$(STAMP): requirements.txt requirements-lock.txt pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -r requirements.txt -c requirements-lock.txt
	$(PY) -m pip install --quiet --no-cache-dir --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Headless OpenGL (EGL on Mesa, OSMesa as fallback) and ffmpeg's runtime for robosuite rendering.
# Installed from Debian's packages when missing and we are root with apt-get; otherwise a hint.
system-deps:
	@if ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libOSMesa.so'; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's headless GL libraries (libegl1 libgl1 libosmesa6)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libglx-mesa0 libegl-mesa0 libosmesa6 >/dev/null; \
	else echo "warning: headless GL libraries missing; install libegl1 libgl1 libosmesa6 (Debian/Ubuntu) for rendering"; fi

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# Re-running continues where an interrupted demo stopped; DEMO_ARGS=--fast makes a minutes-long smoke run.
demo: $(STAMP)
	$(PY) -m zprl.demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)
