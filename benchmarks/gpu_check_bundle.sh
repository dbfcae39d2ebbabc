#!/usr/bin/env bash
# Gather what benchmarks/gpu_check.py and benchmarks/gpu_e2e.sh need on the lent GPU machine into
# build/gpu_bundle/ (git-ignored): that machine has Python 3.12, torch 2.11, accelerate, einops, h5py,
# imageio (no ffmpeg), no network and takes at most 64 MiB of carried files. So: the missing wheels,
# built for it, a slim robosuite (sim_lite.txz) and Lift's scene for the render row.
#
#   bash benchmarks/gpu_check_bundle.sh [OUT]            # here, with the project's .venv (robosuite for the scene)
#   then on the GPU machine, from the repository root:   bash benchmarks/gpu_check_run.sh [OUT]
#
# GPU_PYTHON (3.12) and GPU_TORCHVISION (0.26.0, the release paired with torch 2.11; torchvision must match
# torch's minor version or it does not import) describe the GPU machine. Versions are the project's pins.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/gpu_bundle}
PY=${PYTHON:-.venv/bin/python}
PYV=${GPU_PYTHON:-3.12}
TORCHVISION=${GPU_TORCHVISION:-0.26.0}
pin() { grep -i "^$1==" requirements-lock.txt; }

rm -rf "$OUT" && mkdir -p "$OUT/wheels"
# Pure-python wheels (hydra, omegaconf, diffusers and what diffusers needs beyond accelerate's
# dependencies, requests included: newer huggingface_hub releases no longer bring it) and the compiled ones (regex, mujoco, torchvision) for CPython $PYV on manylinux x86_64.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$OUT/wheels" \
    "$(pin hydra-core)" "$(pin omegaconf)" "$(pin diffusers)" "$(pin regex)" "$(pin importlib_metadata)" \
    "$(pin zipp)" "$(pin requests)" "$(pin urllib3)" "$(pin idna)" "$(pin certifi)" "$(pin charset-normalizer)" \
    "$(pin mujoco)" "$(pin PyOpenGL)" "$(pin absl-py)" "$(pin etils)" "$(pin glfw)" "torchvision==$TORCHVISION"
# The rest of the training stack, for benchmarks/gpu_e2e.sh (the entry points end to end): the envs'
# and datasets' packages and what they import beyond the machine's own.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$OUT/wheels" \
    "$(pin gymnasium)" "$(pin farama-notifications)" "$(pin zarr)" "$(pin numcodecs)" "$(pin google-crc32c)" \
    "$(pin donfig)" "$(pin termcolor)"
# antlr4-python3-runtime 4.9.3 (what omegaconf 2.3 needs) and robomimic 0.3.0 are published only as
# sdists: build their pure-python wheels here.
"$PY" -m pip wheel --quiet --no-deps -w "$OUT/wheels" "$(pin antlr4-python3-runtime)" "$(pin robomimic)"
# robosuite's wheel is 185 MiB, almost all of it other robots' meshes: the package's code and XML with
# only the asset files that Lift and PickPlaceCan with a Panda load, plus egl_probe as built here (its
# two small programs, not Python extensions; robomimic imports it to render), as one .txz (~11 MiB).
"$PY" - "$OUT/sim_lite.list" <<'PYEOF'
import os, re, sys
import egl_probe, robosuite
site = os.path.dirname(os.path.dirname(robosuite.__file__))
root = os.path.dirname(robosuite.__file__)
keep = set()
for dirpath, _, names in os.walk(root):
    if "__pycache__" in dirpath or "/demonstrations" in dirpath or "/bullet_data" in dirpath:
        continue
    keep.update(os.path.join(dirpath, n) for n in names if n.endswith((".py", ".xml", ".json", ".yaml")))
for env_name in ("Lift", "PickPlaceCan"):
    env = robosuite.make(env_name, robots="Panda", has_renderer=False, has_offscreen_renderer=False,
                         use_camera_obs=False)
    keep.update(re.findall(r'file="([^"]+)"', env.model.get_xml()))
    env.close()
for dirpath, _, names in os.walk(os.path.dirname(egl_probe.__file__)):
    if "CMakeFiles" not in dirpath and "__pycache__" not in dirpath:
        keep.update(os.path.join(dirpath, n) for n in names)
with open(sys.argv[1], "w") as f:
    f.write("\n".join(sorted(os.path.relpath(k, site) for k in keep)) + "\n")
PYEOF
tar cJf "$OUT/sim_lite.txz" -C "$("$PY" -c 'import os, robosuite; print(os.path.dirname(os.path.dirname(robosuite.__file__)))')" \
    -T "$OUT/sim_lite.list"
# Lift's scene as robosuite builds it (MJCF + meshes, textures shrunk to 256 px), for the EGL render row;
# its meshes are OBJ text (40 MiB), so it travels as a .tgz (~7 MiB) that gpu_check_run.sh unpacks.
scene=$(mktemp -d)
MUJOCO_GL=${MUJOCO_GL:-egl} PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-egl} \
    "$PY" benchmarks/gpu_check.py --export-scene "$scene/lift_scene" >"$OUT/export_scene.log" 2>&1 \
    || { tail -n 5 "$OUT/export_scene.log"; exit 1; }
tail -n 1 "$OUT/export_scene.log"
tar czf "$OUT/lift_scene.tgz" -C "$scene" lift_scene && rm -rf "$scene"

ls -1 "$OUT/wheels"
total=$(du -sb "$OUT" | cut -f1)
tracked=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
echo "bundle: $OUT $((total / 1024 / 1024)) MiB; tracked files of the tree $((tracked / 1024)) KiB (64 MiB carried at most, all together)"
