"""The Ray engine against the local engine: throughput, start-up and memory on this machine, and a projection.

    python benchmarks/ray_inference.py [--work /tmp/hamacho-ray-bench] [--images 2000] [--small 200]

1. Images: ``--images`` PNGs made from every MVTec bottle image (train and test, 292 of them): each a seeded
   horizontal and vertical flip, a crop of 85-100 % of the side resized back to 900 px, and a colour
   jitter (brightness, contrast, saturation +-15 %); nothing is downloaded. Two text file lists name the
   first ``--small`` and all of them.
2. The model: PaDiM, mobilenet_v2 with the ImageNet weights of ../shared/data/weights, 256 px, trained on
   bottle's train/good (as docs/benchmark.md), or ``--model``.
3. Runs, each in a fresh process, of both lists: ``hamacho inference`` as a library call (no pictures, no
   report: an archive run) on the local engine, then ``--engine ray`` (a new local Ray) with 1 and 2
   actors of one CPU; ``--repeat`` rounds, interleaved, so that other work on a shared machine falls on
   every engine alike. The parent samples every process of a run (``/proc/<pid>``: the driver, its Ray
   system processes, the actors) for its peak resident memory (VmHWM) and CPU time, and the machine's
   CPU time (``/proc/stat``) for the share other work took meanwhile.
4. Figures (the fastest run of each): throughput from the difference of the two sizes
   (``(N - n) / (wall_N - wall_n)``: fixed costs cancel), start-up as the rest of the small run's wall
   time, peak RSS per process for both sizes, and the decode rate of one core (decode, crop, resize: the
   part of scoring that stays on the CPU when a GPU runs the model). Targets: Ray with 2 actors at least
   0.9x the local engine's images/s, and each process's peak RSS on N images within 10 % of that on n.
5. A projection: nodes for one million images in one hour, on CPU nodes and on one-GPU nodes, from the
   per-actor rate measured here; the assumptions are printed with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec" / "bottle"
WEIGHTS = ROOT.parent / "shared" / "data" / "weights" / "mobilenet_v2-imagenet.pth"
THROUGHPUT_TARGET = 0.9  # Ray with 2 actors against the local engine
MEMORY_TARGET = 0.10  # a process's peak RSS on N images against n images
GOAL_IMAGES, GOAL_SECONDS = 1_000_000, 3600.0


# ---- images -------------------------------------------------------------------------------------------------

def _augment(job: tuple[int, str, str]) -> None:
    """Write one derived image: flips, a crop resized back, and a colour jitter, seeded by its number."""
    import cv2
    import numpy as np

    number, source, target = job
    rng = np.random.default_rng(number)
    image = cv2.imread(source, cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = image[::-1]
    side = rng.uniform(0.85, 1.0)
    h, w = int(height * side), int(width * side)
    y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    image = cv2.resize(np.ascontiguousarray(image[y:y + h, x:x + w]), (width, height), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 1] *= rng.uniform(0.85, 1.15)  # saturation
    hsv[..., 2] *= rng.uniform(0.85, 1.15)  # brightness
    image = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    mean = image.mean()
    image = np.clip((image - mean) * rng.uniform(0.85, 1.15) + mean, 0, 255).astype(np.uint8)  # contrast
    cv2.imwrite(target, image, [cv2.IMWRITE_PNG_COMPRESSION, 1])


def make_images(folder: Path, count: int, small: int) -> tuple[Path, Path]:
    """``count`` derived bottle images in ``folder`` (kept between runs) and the two file lists."""
    sources = sorted(BOTTLE.glob("train/good/*.png")) + sorted(BOTTLE.glob("test/*/*.png"))
    if not sources:
        raise SystemExit(f"MVTec bottle not found at {BOTTLE}")
    folder.mkdir(parents=True, exist_ok=True)
    targets = [folder / f"{number:05d}.png" for number in range(count)]
    jobs = [(n, str(sources[n % len(sources)]), str(t)) for n, t in enumerate(targets) if not t.is_file()]
    if jobs:
        print(f"making {len(jobs)} image(s) in {folder} ...", file=sys.stderr)
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(_augment, jobs, chunksize=16))
    lists = folder.parent / f"list-{small}.txt", folder.parent / f"list-{count}.txt"
    for path, chosen in zip(lists, (targets[:small], targets)):
        path.write_text("".join(f"{t}\n" for t in chosen))
    return lists


def train_model(work: Path) -> Path:
    """PaDiM, mobilenet_v2 (ImageNet), 256 px, on bottle's train/good (made once in ``work``)."""
    model = work / "results" / "padim" / "bottle" / "model.pt"
    if not model.is_file():
        if not WEIGHTS.is_file():
            raise SystemExit(f"the backbone weights are not at {WEIGHTS} (see its README)")
        print("training the model ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "hamacho", "train", "--model", "padim", "--dataset-root", str(BOTTLE),
                        "--backbone", "mobilenet_v2", "--backbone-weights", str(WEIGHTS), "--seed", "0",
                        "--result-path", str(work / "results"), "--no-report", "--quiet"], check=True,
                       stdout=subprocess.DEVNULL)
    return model


# ---- one run in its own process -----------------------------------------------------------------------------

def child(engine: str, actors: int, model: str, images: str, out: str) -> dict[str, Any]:
    """Score ``images`` in this process (``engine`` local or ray) and describe the run."""
    from hamacho.resources import wait_passively

    wait_passively()  # as the CLI does
    from hamacho.inference import InferenceRequest, score_locally

    request = InferenceRequest(model, images, out, visualization={"report_images": False}, report=False)
    if engine == "local":
        result = score_locally(request, log=lambda _: None)
    else:
        from hamacho.ray_engine.options import RayOptions
        from hamacho.ray_engine.run import run_ray_inference

        result = run_ray_inference(request, RayOptions(actors=actors), log=lambda _: None)
    return {"images": len(result.rows), "timings": result.summary["timings"], "ray": result.summary.get("ray")}


def _descendants(root: int) -> dict[int, tuple[str, float, float]]:
    """``pid: (command, VmHWM MiB, CPU seconds)`` of ``root`` and every process below it (Linux /proc)."""
    parents, stats, found = {}, {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stats[int(entry.name)][1])
            except (OSError, IndexError, ValueError):
                continue
    family, grew = {root}, True
    while grew:
        below = {pid for pid, parent in parents.items() if parent in family} - family
        family |= below
        grew = bool(below)
    tick = os.sysconf("SC_CLK_TCK")
    for pid in family & stats.keys():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        peak = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
        cpu = (int(stats[pid][11]) + int(stats[pid][12])) / tick  # utime + stime
        if peak:
            found[pid] = (os.path.basename(command) or "?", int(peak[0]) / 1024, cpu)
    return found


def _busy_seconds() -> float:
    """CPU seconds every process of the machine has used since boot (``/proc/stat``: user, nice, system, irq,
    softirq)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def _role(command: str, pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    if "MapWorker" in command or "BlockScorer" in command:
        return "actor"
    return command.split(" ")[0].removeprefix("ray::")[:40]


def measure(engine: str, actors: int, model: Path, images: Path, out: Path) -> dict[str, Any]:
    """One run in a fresh process: wall seconds, its figures, every process's peak RSS (MiB), and the CPU share
    other work on the machine took meanwhile (a shared machine: the runs compete with it)."""
    busy, load = _busy_seconds(), os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "_child", engine, str(actors), str(model), str(images),
                                str(out)], stdout=subprocess.PIPE, text=True)
    seen: dict[int, tuple[str, float, float]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid, (command, peak, cpu) in _descendants(process.pid).items():
                before = seen.get(pid, ("", 0.0, 0.0))
                seen[pid] = (command, max(peak, before[1]), max(cpu, before[2]))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode:
        raise SystemExit(f"{engine} run failed ({process.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    by_role: dict[str, list[float]] = {}
    for pid, (command, peak, _) in seen.items():
        by_role.setdefault(_role(command, pid, process.pid), []).append(round(peak, 1))
    ours = sum(cpu for _, _, cpu in seen.values())
    others = max(0.0, _busy_seconds() - busy - ours)
    result.update(wall_seconds=wall, peak_rss_mb=by_role, load_at_start=load,
                  others_cpu_share=others / (wall * (os.cpu_count() or 1)))
    return result


# ---- figures ------------------------------------------------------------------------------------------------

def decode_rate(model: Path, images: Path, count: int = 60) -> float:
    """Images/s one core decodes, crops and resizes into the model's frame (what a GPU node's CPU does)."""
    from hamacho.data.dataset import AnomalyDataset
    from hamacho.data.discovery import discover_inference_inputs
    from hamacho.predictor import Predictor

    framing = Predictor.load(model, device="cpu").framing
    samples, _ = discover_inference_inputs(images)
    dataset = AnomalyDataset(samples[:count], framing)
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]  # one thread: decode, then crop and resize
    return len(dataset) / (time.perf_counter() - start)


def summarize(runs: dict[str, dict[str, dict[str, Any]]], small: int, big: int) -> dict[str, Any]:
    """Throughput, start-up and memory per engine, and the verdicts."""
    rows = {}
    for name, pair in runs.items():
        rate = (big - small) / (pair["big"]["wall_seconds"] - pair["small"]["wall_seconds"])
        memory = {}
        for role, peaks in pair["big"]["peak_rss_mb"].items():
            before = pair["small"]["peak_rss_mb"].get(role)
            if before:
                memory[role] = {"small": max(before), "big": max(peaks), "ratio": max(peaks) / max(before)}
        rows[name] = {"images_per_second": rate, "startup_seconds": pair["small"]["wall_seconds"] - small / rate,
                      "memory": memory, "others_cpu_share": pair["big"]["others_cpu_share"]}
    ratio = rows["ray-2"]["images_per_second"] / rows["local"]["images_per_second"] if "ray-2" in rows else None
    flat = all(abs(m["ratio"] - 1) <= MEMORY_TARGET for row in rows.values() for role, m in row["memory"].items()
               if role in ("driver", "actor"))
    return {"engines": rows, "ray2_over_local": ratio, "throughput_ok": ratio is not None and ratio >= THROUGHPUT_TARGET,
            "memory_flat": flat}


def projection(per_actor: float, decode_per_core: float, startup: float) -> dict[str, Any]:
    """Nodes for :data:`GOAL_IMAGES` in :data:`GOAL_SECONDS`, on CPU nodes and on one-GPU nodes."""
    seconds = GOAL_SECONDS - startup
    needed = GOAL_IMAGES / seconds
    cpu_cores, gpu_cores, gpu_forward = 16, 8, 1000.0
    cpu_node = cpu_cores * per_actor
    gpu_node = min(gpu_cores * decode_per_core, gpu_forward)
    return {
        "needed_images_per_second": needed,
        "cpu_node": {"cores": cpu_cores, "images_per_second": cpu_node, "nodes": math.ceil(needed / cpu_node)},
        "gpu_node": {"cpu_cores": gpu_cores, "images_per_second": gpu_node, "nodes": math.ceil(needed / gpu_node)},
        "assumptions": [
            f"one hour less the start-up measured here ({startup:.0f} s) for {GOAL_IMAGES:,} images",
            (f"CPU node: {cpu_cores} cores of this machine's speed, one actor of one CPU per core, each at the "
            f"{per_actor:.1f} images/s measured per actor here (2 actors on 2 cores), scaling linearly"),
            (f"one-GPU node: {gpu_cores} such cores; the CPU decodes, crops and resizes "
             f"({decode_per_core:.1f} images/s per core measured here, 900 px PNG) and the GPU runs the model, "
             f"assumed not the limit below {gpu_forward:.0f} images/s (mobilenet_v2 at 256 px on a T4-class "
             "GPU; not measured: this machine has no GPU); two actors share the GPU "
             "(--gpus-per-actor 0.5 --cpus-per-actor 4: an actor decodes on at most 4 threads)"),
            ("images on shared storage that delivers the rate (about 700 KB an image: "
            f"{needed * 0.7:.0f} MB/s), results written by one driver (rows only, --no-pictures)"),
        ],
    }


def report(summary: dict[str, Any], plan: dict[str, Any], small: int, big: int, load: tuple[float, ...]) -> str:
    """The figures as markdown."""
    lines = [f"Load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a shared machine: 2 cores)", "",
             (f"| engine | images/s | start-up s | driver peak RSS MiB ({small} / {big}) | "
              f"actor peak RSS MiB ({small} / {big}) | other work's CPU share ({big}) |"),
             "|---|---|---|---|---|---|"]
    for name, row in summary["engines"].items():
        memory = row["memory"]
        cells = [f"{memory[r]['small']:.0f} / {memory[r]['big']:.0f}" if r in memory else "-" for r in ("driver", "actor")]
        lines.append(f"| {name} | {row['images_per_second']:.1f} | {row['startup_seconds']:.1f} | {cells[0]} | "
                     f"{cells[1]} | {row['others_cpu_share']:.0%} |")
    ratio = summary["ray2_over_local"]
    lines += ["", (f"Ray with 2 actors / local: {ratio:.2f}x (target >= {THROUGHPUT_TARGET}x: "
              f"{'PASS' if summary['throughput_ok'] else 'MISS'}); memory flat within {MEMORY_TARGET:.0%}: "
              f"{'PASS' if summary['memory_flat'] else 'MISS'}"), "",
              (f"Projection: {GOAL_IMAGES:,} images in one hour need {plan['needed_images_per_second']:.0f} images/s: "
              f"{plan['cpu_node']['nodes']} CPU nodes of {plan['cpu_node']['cores']} cores "
              f"({plan['cpu_node']['images_per_second']:.0f} images/s each), or {plan['gpu_node']['nodes']} one-GPU "
              f"nodes ({plan['gpu_node']['images_per_second']:.0f} images/s each). Assumptions:")]
    lines += [f"- {text}" for text in plan["assumptions"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/hamacho-ray-bench"))
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--model", type=Path, help="model.pt or export folder [PaDiM mobilenet_v2 256 px, trained]")
    parser.add_argument("--engines", default="local,ray-1,ray-2", help="of local, ray-1, ray-2")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each configuration; the fastest counts")
    parser.add_argument("--output", type=Path, help="JSON file of every figure [WORK/ray_inference.json]")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    small_list, big_list = make_images(args.work / "images", args.images, args.small)
    model = args.model or train_model(args.work)
    names = args.engines.split(",")
    tries: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for attempt in range(args.repeat):  # interleaved: load from other work falls on every engine alike
        for name in names:
            engine, _, actors = name.partition("-")
            for size, listing in (("small", small_list), ("big", big_list)):
                print(f"run {attempt + 1}: {name}, {listing.name} ...", file=sys.stderr)
                tries.setdefault((name, size), []).append(
                    measure(engine, int(actors or 0), model, listing, args.work / "out" / f"{name}-{size}"))
    runs: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in names}
    for (name, size), done in tries.items():
        runs[name][size] = dict(min(done, key=lambda run: run["wall_seconds"]))
        runs[name][size]["all_runs"] = [{key: run[key] for key in ("wall_seconds", "load_at_start", "others_cpu_share")}
                                        for run in done]
    summary = summarize(runs, args.small, args.images)
    per_actor = summary["engines"].get("ray-2", summary["engines"].get("ray-1", {})).get("images_per_second", 0.0)
    per_actor /= 2 if "ray-2" in summary["engines"] else 1
    startup = summary["engines"].get("ray-2", {}).get("startup_seconds", 0.0)
    plan = projection(per_actor, decode_rate(model, big_list), startup)
    text = report(summary, plan, args.small, args.images, load)
    print(text)
    output = args.output or args.work / "ray_inference.json"
    output.write_text(json.dumps({"runs": runs, "summary": summary, "projection": plan, "load_average": load,
                                  "markdown": text}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), *sys.argv[4:7])))
    else:
        sys.exit(main())
