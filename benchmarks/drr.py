"""Speed and memory of ct2x.drr's backends against DiffDRR and nanodrr, one 256 x 256 view.

One table, one run: median seconds per view (of ``--runs`` runs after one warm-up) and
peak resident-memory growth for

* ours: the full polyenergetic DRR (``render_drr``, 3 materials, 60KV_AL35) with the
  ``numba`` kernel and the ``torch`` marcher, at step 0.1 and 0.5 voxel, as a user calls
  it (materials from the HU, rays, marching, attenuation: everything);
* DiffDRR's Siddon line integral (exact voxel walk, no step) and its trilinear renderer;
* nanodrr (pure-PyTorch renderer on the CPU);

the peers on the density volume (precomputed, outside the timing) at the same source and
detector pixels, the trilinear ones with as many samples per ray as our step 0.1 takes
(its longest ray). Each measurement runs in its own process, so its memory is
``ru_maxrss`` after rendering minus before loading the renderer's inputs. ``agree`` is
the Pearson correlation of the peer's line integral with ours (density x mm, same rays).
GPU rows are added when CUDA is available (peak = ``torch.cuda.max_memory_allocated``).

Then the kernel's first-call compile time (fresh numba cache) and the cached load time,
and what bounds it: samples and cells per second against this machine's memory
bandwidth (a numpy copy of 1 GiB).

CTs: a synthetic 128^3 phantom (2 mm voxels) and the two largest CTs of ../shared/data/ct.

    .venv/bin/python benchmarks/drr.py [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))  # the peer renderers (DiffDRR) live beside the tests

from machine import cpu_name  # noqa: E402
from peer_renderers import diffdrr_projector  # noqa: E402

from ct2x.drr.materials import hu_to_density  # noqa: E402
from ct2x.geometry import CArm  # noqa: E402
from ct2x.volume import CTVolume, read_ct  # noqa: E402

SHARED_CT = ROOT.parent / "shared" / "data" / "ct"
RENDERERS = ("numba", "torch", "diffdrr-siddon", "diffdrr-trilinear", "nanodrr")


def phantom128() -> CTVolume:
    """128^3, 2 mm: water cylinder along S, a bone rod and air around (HU)."""
    size, spacing = 128, 2.0
    k, j, i = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 3, indexing="ij")
    c = (size - 1) / 2
    x, y = (i - c) * spacing, (j - c) * spacing
    hu = np.full((size,) * 3, -1000.0, dtype=np.float32)
    hu[x**2 + y**2 <= (0.4 * size * spacing) ** 2] = 0.0
    hu[(x - 40) ** 2 + y**2 <= 15**2] = 1000.0
    return CTVolume(hu, np.full(3, spacing), np.full(3, -c * spacing), np.eye(3))


def largest_cts(count: int = 2) -> list[Path]:
    """The ``count`` CTs of ../shared/data/ct with the most voxels."""
    if not SHARED_CT.exists() or count < 1:
        return []

    def voxels(path: Path) -> int:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return int(np.prod(reader.GetSize()))

    return sorted(SHARED_CT.glob("*.nii.gz"), key=voxels)[-count:][::-1]


def load(name: str) -> CTVolume:
    return phantom128() if name == "phantom128" else read_ct(name)


def nanodrr_projector(volume: CTVolume, values: np.ndarray, view: CArm, samples: int, device: str):  # noqa: ANN201
    """nanodrr's renderer over ``values`` through the source and pixels of ``view`` (camera as DiffDRR's)."""
    from nanodrr.camera import make_k_inv
    from nanodrr.data import Subject
    from nanodrr.drr import render

    ras_from_lps = np.diag([-1.0, -1.0, 1.0])
    voxel_to_world = np.eye(4)
    voxel_to_world[:3] = ras_from_lps @ volume.ijk_to_lps[:3]
    image = torch.as_tensor(values, dtype=torch.float32)[None, None]  # (1, 1, D, H, W) = (K, J, I)
    v2w = torch.as_tensor(voxel_to_world, dtype=torch.float64)
    subject = Subject(
        image,
        torch.zeros_like(image),
        v2w.float(),
        v2w.inverse().float(),
        Subject._make_voxel_to_grid(image.shape),
        torch.as_tensor(ras_from_lps @ np.asarray(volume.center_lps), dtype=torch.float32),
        convert_to_mu=False,
    ).to(device)
    (height, width), (dely, delx) = view.detector_shape, view.pixel_spacing
    k_inv = make_k_inv(view.sdd, delx, dely, 0.0, 0.0, height, width).to(device)
    pose = np.eye(4)
    pose[:3, :3] = ras_from_lps @ view.rotation
    pose[:3, 3] = ras_from_lps @ view.source
    rt_inv = torch.as_tensor(pose, dtype=torch.float32)[None].to(device)
    sdd = torch.tensor([view.sdd], dtype=torch.float32, device=device)

    def run() -> torch.Tensor:
        return render(subject, k_inv, rt_inv, sdd, height, width, n_samples=samples)[0, 0]

    return run


def worker(ct: str, renderer: str, step: float, device: str, runs: int) -> dict:
    """Time one configuration in this process; seconds per view, memory growth in MiB, agreement with ours."""
    from ct2x.drr import line_integral, render_drr
    from ct2x.drr.projector import ray_samples

    volume = load(ct)
    view = CArm(primary=20.0, isocenter=tuple(volume.center_lps))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    agree = None
    if renderer in ("numba", "torch"):

        def run() -> torch.Tensor:
            return render_drr(volume, view, step=step, device=device, backend=renderer)

    else:
        density = hu_to_density(torch.from_numpy(volume.array)).numpy()
        samples = int(ray_samples(volume, [view], 0.1)[2].max())
        if renderer == "nanodrr":
            run = nanodrr_projector(volume, density, view, samples, device)
        else:
            kind = renderer.split("-")[1]
            extra = {"renderer": kind} if kind == "trilinear" else {}
            drr, pose = diffdrr_projector(volume, density, view, device, **extra)
            options = {"n_points": samples} if kind == "trilinear" else {}

            def run() -> torch.Tensor:
                return drr(pose, **options)[0, 0]

    with torch.no_grad():
        image = run()  # warm-up: caches, compiled kernels
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device == "cuda"
        else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    )
    if renderer not in ("numba", "torch"):
        ours = line_integral(volume, view, values=density, step=0.1, device=device).cpu().numpy().ravel()
        agree = float(np.corrcoef(ours, image.cpu().numpy().ravel())[0, 1])
    return {"seconds": statistics.median(times), "peak_mib": peak, "shape": list(volume.array.shape), "agree": agree}


def measure(ct: str, renderer: str, step: float, device: str, runs: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", ct, renderer, str(step), device, str(runs), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:60]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_times() -> tuple[float, float]:
    """Seconds for the kernel's first call in a new process: with an empty numba cache, then with it filled."""
    # imports (torch, numba) come before the clock starts
    code = "import time; from ct2x.drr import kernel; t = time.perf_counter(); kernel.warm_up(); "
    code += "print(time.perf_counter() - t)"
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            out.append(float(done.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def bounds(threads: int) -> str:
    """Samples and cells per second of the kernel on the largest CT against the machine's memory bandwidth."""
    import numba

    from ct2x.drr import kernel
    from ct2x.drr.projector import ray_samples

    src = np.ones(2**28, dtype=np.float32)  # 1 GiB
    dst = np.empty_like(src)
    copies = []
    for _ in range(3):
        start = time.perf_counter()
        np.copyto(dst, src)
        copies.append(time.perf_counter() - start)
    bandwidth = 2 * src.nbytes / min(copies) / 1e9  # read + write, GB/s
    del src, dst
    cts = largest_cts(1)
    volume = load(str(cts[0])) if cts else phantom128()
    view = CArm(primary=20.0, isocenter=tuple(volume.center_lps))
    samples = ray_samples(volume, [view], 0.1)
    density, material = kernel.material_cells(volume.array)
    cells = float((samples[2][:, None] * np.abs(samples[1])).sum())  # cell faces crossed ~ cells visited
    numba.set_num_threads(threads)
    kernel.project(density[..., None], samples, False, material, 3)
    start = time.perf_counter()
    kernel.project(density[..., None], samples, False, material, 3)
    seconds = time.perf_counter() - start
    n = float(samples[2].sum())
    touched = cells * 8 * 5 / seconds / 1e9  # 8 corners x (4 B density + 1 B label) per cell, if nothing were cached
    return (
        f"# kernel on {volume.array.shape[::-1]} at step 0.1, {threads} threads: {seconds:.2f} s for {n / 1e6:.0f} M "
        f"samples ({n / seconds / 1e6:.0f} M samples/s) in {cells / 1e6:.0f} M cells ({cells / seconds / 1e6:.0f} M "
        f"cells/s); reading every corner from memory would need {touched:.1f} GB/s against a measured "
        f"{bandwidth:.1f} GB/s (numpy copy)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cts", type=int, default=2, help="how many of the largest shared CTs (default: %(default)s)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        ct, renderer, step, device, runs, threads = args.worker
        torch.set_num_threads(int(threads))
        print(json.dumps(worker(ct, renderer, float(step), device, int(runs))))
        return

    import numba

    cts = ["phantom128"] + [str(p) for p in largest_cts(args.cts)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"# CPU: {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, numba {numba.__version__}, "
          f"median of {args.runs} runs, {args.threads} threads unless stated")  # fmt: skip
    if torch.cuda.is_available():
        print(f"# GPU: {torch.cuda.get_device_name()}")
    print("# one 256x256 view, LAO 20; ours = render_drr (3 materials, 60KV_AL35); peers = density line integrals")
    print("| CT | device | renderer | step | threads | s / view | vs DiffDRR Siddon | peak MiB | agree r |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ct in cts:
        for device in devices:
            t = args.threads
            configs = [("diffdrr-siddon", 0.0, t), ("diffdrr-trilinear", 0.1, t), ("nanodrr", 0.1, t)]
            configs += [("numba", 0.1, t), ("numba", 0.1, 1), ("numba", 0.5, t), ("torch", 0.1, t), ("torch", 0.5, t)]
            if device == "cuda":
                configs = [c for c in configs if c[0] != "numba"]
            reference = None
            for renderer, step, threads in configs:
                result = measure(ct, renderer, step, device, args.runs, threads)
                label = "phantom 128^3" if ct == "phantom128" else Path(ct).name.replace(".nii.gz", "")
                if "error" in result:
                    failed = f"failed: {result['error']}"
                    print(f"| {label} | {device} | {renderer} | {step:g} | {threads} | {failed} | | | |")
                    continue
                seconds = result["seconds"]
                reference = reference or seconds
                agree = "" if result["agree"] is None else f"{result['agree']:.4f}"
                shape = "x".join(map(str, result["shape"][::-1]))
                print(
                    f"| {label} {shape} | {device} | {renderer} | {step:g} | {threads} | {seconds:.2f} | "
                    f"{reference / seconds:.1f}x | {result['peak_mib']:.0f} | {agree} |",
                    flush=True,
                )
    cold, warm = compile_times()
    print(f"# numba kernel first call in a new process: {cold:.1f} s compiling (empty cache), {warm:.2f} s cached")
    print(bounds(args.threads))


if __name__ == "__main__":
    main()
