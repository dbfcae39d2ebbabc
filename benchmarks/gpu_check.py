"""GPU check: what one GPU does for zprl, in one table (issue 12). Needs no robosuite and no data.

    python benchmarks/gpu_check.py --device cuda:0                 # the paper's sizes, < 8 min on one GPU
    python benchmarks/gpu_check.py --device cpu --tiny             # tiny sizes on CPU (tests); numbers mean little
    python benchmarks/gpu_check.py --export-scene DIR              # (needs robosuite) Lift's scene for the render row

Rows, each measured on random inputs of the right shapes with the project's own classes, built from
its Hydra configs (benchmarks/builders.py):
- offline training step of the image policy (square_image_abs: two 84x84 cameras cropped to 76, ResNet18
  per camera, U-Net [128,256,512], VIB): forward + backward + AdamW + EMA, batch 64 and 256, fp32 and
  bf16 autocast, in samples/s; no data loading (a batch already on the device);
- inference, one action chunk (encoder + VIB + sampler): flow-2 (the authors' sampler) vs diffusers'
  DDIM-10 on the same U-Net, for 1 and 25 observations, in ms;
- SAC updates/s at the authors' settings (10 critics, 3x256 MLPs, batch 256, ZPRL's state and latent
  sizes for square_image), and the env steps/s that learner sustains at UTD 5 (updates/s / 5 x n_action_steps);
- peak GPU memory of each row (torch.cuda.max_memory_allocated);
- MuJoCo EGL rendering: frames/s of two 84x84 cameras (Lift's scene when --scene is given, else a built-in
  scene), in a subprocess, on the EGL device zprl's rule picks for --device (zprl/env/render_patch.py);
  it prints EGL's device table (index -> CUDA number) too.

A row that cannot run (a missing package, no EGL) says why in its note; the others still run. Rows
past --budget-s are skipped. The last line is `headline: gpu_check_rows_ok=<ok>/<rows>`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

TASK_IMAGE = "square_image_abs"
CAMERAS = ("agentview", "robot0_eye_in_hand")


def _stub_torchvision_if_missing() -> str | None:
    """The policy module imports torchvision (ResNet18). Where it cannot be imported, a stub lets the
    rows that need no ResNet run; the image rows then fail with the import error."""
    try:
        import torchvision  # noqa: F401
        return None
    except Exception as err:  # noqa: BLE001 (a torchvision built for another torch raises RuntimeError)
        import types

        reason = f"torchvision: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchvision")

        def missing(attr):
            raise ImportError(reason)

        stub.__getattr__ = missing
        sys.modules["torchvision"] = stub
        return reason


class Table:
    def __init__(self, device, budget_s: float):
        self.device, self.budget_s, self.t0 = device, budget_s, time.perf_counter()
        self.rows: list[list[str]] = []
        self.ok = 0

    def over_budget(self) -> bool:
        return time.perf_counter() - self.t0 > self.budget_s

    def add(self, check, setting, value, unit, peak_mib=None, note=""):
        ok = value is not None
        self.ok += ok
        self.rows.append([check, setting, "-" if value is None else _fmt(value), unit,
                          "-" if peak_mib is None else f"{peak_mib:,.0f}", note])
        print(f"# {check} | {setting} | {self.rows[-1][2]} {unit} | {note}", flush=True)

    def run(self, check, setting, unit, fn):
        """fn() -> (value, note); peak memory reset around it; failures and the budget become notes."""
        if self.over_budget():
            return self.add(check, setting, None, unit, note=f"skipped: past --budget-s {self.budget_s:.0f}")
        torch = sys.modules["torch"]
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            value, note = fn()
        except Exception as err:  # noqa: BLE001 (one row's failure must not hide the others)
            traceback.print_exc(file=sys.stderr)
            msg = str(err).splitlines()[0] if str(err) else ""
            return self.add(check, setting, None, unit, note=f"failed: {type(err).__name__}: {msg}"[:160])
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None
        self.add(check, setting, value, unit, peak, note)

    def print(self):
        from timing import markdown_table

        print()
        print(markdown_table(["check", "setting", "value", "unit", "peak GPU MiB", "note"], self.rows))


def _fmt(v) -> str:
    if isinstance(v, str):
        return v
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _timed(fn, n: int, device) -> float:
    from timing import time_calls

    return time_calls(fn, n, device)


# ---- offline training step ---------------------------------------------------------------------
def training_step_fn(policy, cfg, batch: int, dtype_name: str, device, steps: int, warmup: int):
    import hydra
    import torch
    from builders import random_obs
    from omegaconf import OmegaConf

    from zprl.model.ema import make_ema

    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    g = torch.Generator().manual_seed(batch)
    data = {"obs": random_obs(shape_meta, batch, policy.n_obs_steps, device, g),
            "action": (torch.rand(batch, policy.horizon, policy.action_dim, generator=g) * 2 - 1).to(device)}
    optimizer = hydra.utils.instantiate(cfg.optimizer, params=policy.parameters())
    ema = make_ema(policy, power=cfg.ema.power, max_value=cfg.ema.max_value)
    autocast = dtype_name == "bf16"

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = policy.compute_loss(data)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(policy)

    def run():
        policy.train()
        for _ in range(warmup):
            step()
        seconds = _timed(step, steps, device)
        return batch / seconds, f"{1e3 * seconds:.1f} ms/step over {steps} steps"

    return run


# ---- inference ---------------------------------------------------------------------------------
def inference_fns(policy, cfg, batch: int, device, target_s: float, reps: int):
    """(flow-2 chunk ms, DDIM-10 chunk ms) measured together, interleaved (bench_inference.py's variants)."""
    import torch
    from bench_inference import calibrate, make_variants
    from builders import random_obs
    from omegaconf import OmegaConf
    from timing import interleaved, median

    shape_meta = OmegaConf.to_container(cfg.shape_meta, resolve=True)
    result = {}

    def measure():
        if not result:
            policy.eval()
            obs = random_obs(shape_meta, batch, policy.n_obs_steps, device, torch.Generator().manual_seed(batch))
            names = ("encoder", "flow-2", "DDIM-10")
            calls = {n: 1 for n in ("encoder", "flow-1", "flow-2", "flow-4", "flow-10", "DDIM-10", "DDPM-100")}
            variants = {n: v for n, v in make_variants(policy, obs, device, calls).items() if n in names}
            calls.update(calibrate(variants, target_s))
            med = {n: median(v) for n, v in interleaved(variants, reps, warmup=False).items()}
            result["flow"] = 1e3 * (med["encoder"] + med["flow-2"])
            result["ddim"] = 1e3 * (med["encoder"] + med["DDIM-10"])
            result["enc"] = 1e3 * med["encoder"]
        return result

    def flow():
        r = measure()
        return r["flow"], f"encoder+VIB {r['enc']:.2f} ms of it; flow-2/DDIM-10 = {r['flow'] / r['ddim']:.3f}"

    def ddim():
        r = measure()
        return r["ddim"], "same U-Net, diffusers DDIMScheduler, 10 steps"

    return flow, ddim


# ---- SAC ---------------------------------------------------------------------------------------
def sac_fn(state_dim: int, action_dim: int, sac_cfg, batch: int, utd: int, n_action_steps: int, device,
           steps: int, warmup: int):
    import torch

    from zprl.rl.sac import SAC

    def run():
        sac = SAC(state_dim, action_dim, device, gamma=0.99 ** n_action_steps, tau=sac_cfg.tau,
                  actor_lr=sac_cfg.actor_lr, critic_lr=sac_cfg.critic_lr, alpha_lr=sac_cfg.alpha_lr,
                  alpha_init=sac_cfg.alpha_init, n_critics=sac_cfg.n_critics, n_target_min=sac_cfg.n_target_min,
                  actor_update_every=sac_cfg.actor_update_every, grad_clip=sac_cfg.grad_clip,
                  actor_hidden=tuple(sac_cfg.actor_hidden), critic_hidden=tuple(sac_cfg.critic_hidden))
        g = torch.Generator().manual_seed(0)
        data = {"state": torch.randn(batch, state_dim, generator=g), "next_state": torch.randn(batch, state_dim, generator=g),
                "action": torch.rand(batch, action_dim, generator=g) * 2 - 1,
                "reward": (torch.rand(batch, generator=g) < 0.1).float(), "terminal": torch.zeros(batch)}
        data = {k: v.to(device) for k, v in data.items()}
        for _ in range(warmup):
            sac.update(data)
        seconds = _timed(lambda: sac.update(data), steps, device)
        per_s = 1.0 / seconds
        return per_s, (f"learner alone sustains {per_s / utd * n_action_steps:,.0f} env steps/s at UTD {utd} "
                       f"(n_action_steps {n_action_steps}); one update includes the actor every "
                       f"{sac_cfg.actor_update_every}")

    return run


# ---- EGL rendering (subprocess) ----------------------------------------------------------------
BUILTIN_SCENE = """
<mujoco model="gpu_check">
  <visual><global offwidth="84" offheight="84"/><quality offsamples="0"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="256" height="256" rgb1=".2 .3 .4" rgb2=".1 .2 .3"/>
    <material name="grid" texture="grid" texrepeat="4 4"/>
  </asset>
  <worldbody>
    <light pos="0 0 3" dir="0 0 -1" castshadow="true"/>
    <geom type="plane" size="2 2 .1" material="grid"/>
    <geom type="box" pos="0.5 0 0.4" size="0.4 0.6 0.02" rgba=".7 .6 .5 1"/>
    <body name="cube" pos="0.5 0 0.45"><freejoint/><geom type="box" size=".02 .02 .02" rgba="1 0 0 1"/></body>
    <body name="arm" pos="0 0 0.4">
      <joint type="hinge" axis="0 0 1"/><geom type="capsule" fromto="0 0 0 .3 0 .3" size=".04"/>
      <body pos=".3 0 .3"><joint type="hinge" axis="0 1 0"/><geom type="capsule" fromto="0 0 0 .2 0 -.1" size=".03"/>
        <camera name="robot0_eye_in_hand" pos=".2 0 -.1" xyaxes="0 -1 0 1 0 0"/></body>
    </body>
    <camera name="agentview" pos="1.6 0 1.4" xyaxes="0 1 0 -0.6 0 0.8"/>
  </worldbody>
</mujoco>
"""


def _gpu_memory_used_mib() -> float | None:
    """Memory used on all GPUs (nvidia-smi), None without nvidia-smi; on a machine running nothing else
    its change is what this process allocated, graphics contexts included (torch cannot see those)."""
    import shutil

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return float(sum(float(x) for x in out.split()))
    except (subprocess.SubprocessError, ValueError):
        return None


def render_probe(args) -> None:
    """Run in a subprocess: EGL table, zprl's pick for --device, frames/s of two 84x84 cameras. Prints JSON."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    out = {}
    from mujoco.egl import egl_ext as EGL

    from zprl.env.render_patch import _egl_device_functions, egl_cuda_numbers, select_egl_devices

    devices = EGL.eglQueryDevicesEXT()
    numbers = egl_cuda_numbers(EGL, devices)
    _, query_string = _egl_device_functions(EGL)
    out["egl"] = [{"index": i, "cuda": c,
                   "extensions": (query_string(d, 0x3055) or b"").decode()[:120] if query_string else ""}
                  for i, (d, c) in enumerate(zip(devices, numbers))]
    choice = select_egl_devices(os.environ, numbers, -1, args.device if args.device.startswith("cuda") else None)
    out["choice"], out["note"] = choice.devices, choice.note
    os.environ["MUJOCO_EGL_DEVICE_ID"] = str(choice.devices[0])  # mujoco's own EGL backend: an EGL index
    import mujoco

    if args.scene:
        xml = os.path.join(args.scene, "scene.xml")
        model, scene = mujoco.MjModel.from_xml_path(xml), f"Lift ({os.path.basename(os.path.normpath(args.scene))})"
    else:
        model, scene = mujoco.MjModel.from_xml_string(BUILTIN_SCENE), "built-in (a table, a cube, a 2-link arm)"
    model.vis.global_.offwidth = model.vis.global_.offheight = 84
    model.vis.quality.offsamples = 0  # zprl's fast render path: no MSAA (render_patch.py)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    used_before = _gpu_memory_used_mib()
    renderer = mujoco.Renderer(model, 84, 84)
    renderer.update_scene(data)
    renderer.render()
    used_after = _gpu_memory_used_mib()
    if used_before is not None and used_after is not None:
        out["gl_context_mib"] = used_after - used_before  # one env worker's GL context + buffers on the GPU
    from OpenGL import GL

    out["gl_renderer"] = (GL.glGetString(GL.GL_RENDERER) or b"").decode()
    renderer._scene_option.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    cams = [c for c in CAMERAS if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) >= 0]

    def frame_pair():
        for cam in cams:
            renderer.update_scene(data, camera=cam)
            renderer.render()

    for _ in range(5):
        frame_pair()
    t0 = time.perf_counter()
    for i in range(args.frames):
        data.qpos[:] += 1e-4  # a moving scene, as in rollouts
        mujoco.mj_forward(model, data)
        frame_pair()
    seconds = time.perf_counter() - t0
    out.update(scene=scene, cameras=cams, pairs_per_s=args.frames / seconds, ngeom=model.ngeom,
               nmeshvert=int(model.nmeshvert))
    print("RENDER_JSON " + json.dumps(out), flush=True)


def render_row(table: Table, args) -> None:
    def run():
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, os.path.abspath(__file__), "--render-probe", "--device", args.device,
               "--frames", str(args.frames)] + (["--scene", args.scene] if args.scene else [])
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.render_timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RENDER_JSON ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"render probe exited {proc.returncode}: {tail}")
        r = json.loads(lines[-1][len("RENDER_JSON "):])
        print("# EGL devices (index -> CUDA number from EGL_CUDA_DEVICE_NV; None: EGL cannot say):", flush=True)
        for d in r["egl"]:
            print(f"#   EGL {d['index']} -> {d['cuda']}  [{d['extensions']}]", flush=True)
        print(f"# zprl's pick for {args.device}: EGL {r['choice'][0]}; {r['note'] or 'no GPU asked for'}", flush=True)
        ctx = f"; GL context +{r['gl_context_mib']:.0f} MiB GPU (nvidia-smi)" if "gl_context_mib" in r else ""
        return r["pairs_per_s"], (f"{r['scene']}, {r['ngeom']} geoms, {r['nmeshvert']:,} mesh vertices{ctx}; "
                                  f"GL_RENDERER {r['gl_renderer']}; EGL {r['choice'][0]} of {len(r['egl'])}")

    setting = "two 84x84 cameras (" + ", ".join(CAMERAS) + "), no MSAA/reflections"
    table.run("MuJoCo EGL render", setting, "frame pairs/s", run)


# ---- scene export (run where robosuite is installed) -------------------------------------------
def export_scene(out_dir: str, texture_px: int = 256) -> None:
    """Lift's MJCF with its meshes and textures (textures shrunk to texture_px) under out_dir, paths relative."""
    import re
    import shutil

    from PIL import Image

    from zprl.env.robomimic_env import create_env, make_env_meta

    meta = make_env_meta("lift", obs="image", image_size=84, abs_action=True)
    env = create_env(meta, render_offscreen=True)
    env.reset()
    xml = env.env.sim.model.get_xml()
    os.makedirs(os.path.join(out_dir, "assets"), exist_ok=True)
    mapping = {}
    for path in sorted(set(re.findall(r'file="([^"]+)"', xml))):
        rel = os.path.join("assets", f"{len(mapping):03d}_{os.path.basename(path)}")
        if path.lower().endswith(".png"):
            img = Image.open(path).convert("RGB")
            scale = min(1.0, texture_px / max(img.size))
            img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale)))).save(os.path.join(out_dir, rel))
        else:
            shutil.copyfile(path, os.path.join(out_dir, rel))
        mapping[path] = rel
    xml = re.sub(r'file="([^"]+)"', lambda m: f'file="{mapping[m.group(1)]}"', xml)
    xml = re.sub(r'\s(meshdir|texturedir|assetdir)="[^"]*"', "", xml)  # asset paths are relative to scene.xml now
    with open(os.path.join(out_dir, "scene.xml"), "w") as f:
        f.write(xml)
    import mujoco

    model = mujoco.MjModel.from_xml_path(os.path.join(out_dir, "scene.xml"))  # loads as shipped
    size = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(out_dir) for n in ns)
    print(f"exported Lift's scene to {out_dir}: {len(mapping)} asset files, {size / 2**20:.1f} MiB, "
          f"{model.ngeom} geoms, cameras {[model.camera(i).name for i in range(model.ncam)]}")


# ---- main --------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU smoke test): U-Net [16,32], batches 1/2, one timed step")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip rows that would start after this many seconds")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--scene", default=None, help="a directory written by --export-scene (default: a built-in scene)")
    p.add_argument("--frames", type=int, default=None, help="frame pairs rendered (default 500; --tiny 10)")
    p.add_argument("--render-timeout", type=float, default=180.0)
    p.add_argument("--no-render", action="store_true")
    p.add_argument("--render-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--export-scene", metavar="DIR", default=None)
    args = p.parse_args(argv)
    args.frames = args.frames or (10 if args.tiny else 500)
    if args.render_probe:
        return render_probe(args)
    if args.export_scene:
        return export_scene(args.export_scene)

    torchvision_missing = _stub_torchvision_if_missing()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from zprl.devices import resolve_device

    device = resolve_device(args.device, "--device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    print(f"# {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    total = f", {torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB" if device.type == "cuda" else ""
    print(f"# device {device}: {gpu}{total}; torch {torch.__version__} (CUDA {torch.version.cuda}), "
          f"python {platform.python_version()}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}, "
          f"threads {torch.get_num_threads()}, tiny={args.tiny}")
    if torchvision_missing:
        print(f"# {torchvision_missing} -> image rows fail; the others run")

    from builders import build_policy, compose

    table = Table(device, args.budget_s)
    tiny = args.tiny
    overrides = ("policy.down_dims=[16,32]", "policy.diffusion_step_embed_dim=16") if tiny else ()
    # tiny: the smallest run that still executes every row's code path (bf16 autocast on CPU is ~4 s a step)
    batches = (1, 2) if tiny else (64, 256)
    steps, warmup = (1, 1) if tiny else (20, 3)
    built = {}

    def policy():
        if "policy" not in built:
            built["policy"] = build_policy(TASK_IMAGE, overrides=overrides, device=device)
        return built["policy"]

    def size_note():
        pol, cfg = policy()
        n = sum(q.numel() for q in pol.parameters())
        return f"{TASK_IMAGE}, U-Net {list(cfg.policy.down_dims)}, {n / 1e6:.1f}M params"

    for batch in batches:
        for dtype_name in ("fp32", "bf16"):
            label = f"batch {batch}, {dtype_name}" + (" autocast" if dtype_name == "bf16" else "")

            def train_row(batch=batch, dtype_name=dtype_name):
                pol, cfg = policy()
                value, note = training_step_fn(pol, cfg, batch, dtype_name, device, steps, warmup)()
                return value, f"{note}; {size_note()}"

            table.run("offline train step (image)", label, "samples/s", train_row)

    for batch in ((1, 2) if tiny else (1, 25)):
        fns = {}

        def lazy(kind, batch=batch):
            if batch not in fns:
                pol, cfg = policy()
                fns[batch] = inference_fns(pol, cfg, batch, device, 0.02 if tiny else 0.3, 1 if tiny else 5)
            return fns[batch][0 if kind == "flow" else 1]()

        table.run("inference chunk (image)", f"{batch} obs, flow-2 (authors')", "ms", lambda: lazy("flow"))
        table.run("inference chunk (image)", f"{batch} obs, DDIM-10", "ms", lambda: lazy("ddim"))
    built.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    online = compose("train_online_vib_robomimic_workspace", [f"online_task={TASK_IMAGE}"])
    sac_cfg = online.sac
    if tiny:
        from omegaconf import OmegaConf

        sac_cfg = OmegaConf.merge(sac_cfg, {"n_critics": 2, "actor_hidden": [32, 32], "critic_hidden": [32, 32]})
    # ZPRL on square_image: state = obs embedding (2 cameras x 256 + 9 low-dim) + latent 16, action = latent 16
    offline = compose("train_flow_match_vib_unet_image_workspace", [f"task={TASK_IMAGE}"])
    latent = int(offline.task.vib_latent_dim)
    lowdim = sum(int(s["shape"][0]) for s in offline.task.shape_meta.obs.values() if s.get("type", "low_dim") == "low_dim")
    cams = sum(1 for s in offline.task.shape_meta.obs.values() if s.get("type") == "rgb")
    state_dim = cams * int(offline.task.obs_encoder.feature_dim) + lowdim + latent
    sac_batch = 32 if tiny else int(online.training.batch_size)
    utd, n_act = int(online.training.utd), int(offline.task.n_action_steps)
    table.run("SAC update (ZPRL)", f"{sac_cfg.n_critics} critics, MLP {list(sac_cfg.critic_hidden)}, batch {sac_batch}, "
              f"state {state_dim}, action {latent}", "updates/s",
              sac_fn(state_dim, latent, sac_cfg, sac_batch, utd, n_act, device, 5 if tiny else 300, 2 if tiny else 20))

    if not args.no_render:
        render_row(table, args)

    table.print()
    print(f"\nelapsed {time.perf_counter() - table.t0:.0f} s")
    print(f"headline: gpu_check_rows_ok={table.ok}/{len(table.rows)}", flush=True)


if __name__ == "__main__":
    main()
