"""Benchmark: train + test PaDiM and PatchCore on MVTec-layout categories, optionally beside anomalib.

Every (model, category, implementation) runs in its own process, so peak RSS is per run. Hamacho runs
under this python (``benchmarks/hamacho_side.py``); with ``--peer anomalib`` the same category runs
through anomalib under the peer environment's python (``benchmarks/peer_anomalib.py``), which dumps
raw scores and maps; every metric of both sides is then computed with Hamacho's functions
(``benchmarks/scoring.py``). The backbone-forward floor is timed in a process of its own too.

This process never imports torch: on Linux a child starts with its parent's peak RSS (``ru_maxrss``
survives fork and exec), so a large parent would inflate every run's peak. See docs/benchmark.md.

    python benchmarks/run.py --make-weights W.pth --backbone resnet18 --seed 0
    python benchmarks/run.py --dataset ../shared/data/mvtec/bottle --backbone-weights resnet18=W.pth ...
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR.parent) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(BENCH_DIR.parent))

from benchmarks import report, startup
from hamacho.settings import BACKBONES  # torch-free: this process never imports torch

MODELS = ("padim", "patchcore")
DEFAULT_PEER_PYTHON = "/work/peer/bin/python"


def make_weights(path: str | Path, backbone: str, seed: int) -> Path:
    """Save a seeded random-init torchvision state-dict (``torch.manual_seed(seed)``, then the network)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    state = getattr(torchvision.models, backbone)(weights=None).state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def parse_weights(values: list[str]) -> dict[str | None, str]:
    """``[BACKBONE=]PATH`` items -> {backbone or None (any backbone): path-or-keyword}."""
    out: dict[str | None, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in BACKBONES:
            out[name] = path
        else:
            out[None] = value
    return out


def weights_for(table: dict[str | None, str], backbone: str) -> str:
    """The weights of one backbone: its own entry, else the catch-all, else Hamacho's seeded ``none``."""
    return table.get(backbone, table.get(None, "none"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", action="append", default=[], metavar="DIR",
                   help="category folder in MVTec AD layout (repeatable)")
    p.add_argument("--mvtec-root", metavar="DIR", help="folder holding categories, used with --categories")
    p.add_argument("--categories", nargs="+", default=[], metavar="NAME", help="categories under --mvtec-root")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--backbone", choices=BACKBONES,
                   help="backbone for every model [each model's default: padim resnet18, patchcore wide_resnet50_2]")
    p.add_argument("--backbone-weights", action="append", default=[], metavar="[BACKBONE=]PATH",
                   help="torchvision state-dict file, per backbone as resnet18=PATH (repeatable); 'none' "
                        "(Hamacho's seeded init, no peer) [none]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coreset-ratio", type=float, default=0.01,
                   help="PatchCore coreset ratio used on both sides [0.01]")
    p.add_argument("--extra-coreset-ratio", type=float, action="append", default=[], metavar="R",
                   help="also run Hamacho's PatchCore at R and show it beside (repeatable), e.g. 0.1")
    p.add_argument("--batch-size", type=int, help="images per forward pass, both sides [Hamacho's default]")
    p.add_argument("--num-workers", type=int, default=0, help="data-loading workers, both sides [0]")
    p.add_argument("--no-visualization", action="store_true",
                   help="no report images on either side (compare the algorithms only)")
    p.add_argument("--output-dir", default=str(BENCH_DIR / "out"), help="JSON and table [benchmarks/out]")
    p.add_argument("--peer", choices=["anomalib"], help="also run the same categories through anomalib")
    p.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON, help=f"python of the peer venv [{DEFAULT_PEER_PYTHON}]")
    p.add_argument("--peer-channels", choices=["same", "own"], default="same",
                   help="PaDiM channel subset of anomalib: same as Hamacho's (default) or its own seeded choice")
    p.add_argument("--forward-repeats", type=int, default=1, help="timed passes of the forward floor (best) [1]")
    p.add_argument("--keep-work", action="store_true", help="keep model files and anomalib's work folder")
    p.add_argument("--startup-only", action="store_true", help="only measure and print the CLI start-up")
    p.add_argument("--startup-repeats", type=int, default=5, help="runs per start-up command (median) [5]")
    p.add_argument("--make-weights", metavar="PATH",
                   help="only write random-init weights of --backbone (seeded by --seed) to PATH and exit")
    return p


def datasets_of(args: argparse.Namespace) -> list[Path]:
    paths = [Path(d) for d in args.dataset]
    paths += [Path(args.mvtec_root) / name for name in args.categories] if args.mvtec_root else []
    if args.categories and not args.mvtec_root:
        raise SystemExit("--categories needs --mvtec-root")
    if not paths:
        raise SystemExit("no dataset: pass --dataset DIR (repeatable) or --mvtec-root DIR --categories ...")
    missing = [str(p) for p in paths if not (p / "train" / "good").is_dir()]
    if missing:
        raise SystemExit(f"not MVTec-layout category folders (no train/good): {', '.join(missing)}")
    return [p.resolve() for p in paths]


def run_process(command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run a worker, its output going to ``log``; on failure show the log's tail and stop.

    Progress bars are off on both sides (``TQDM_DISABLE``; Lightning's bars are disabled by the workers).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**(env or os.environ), "TQDM_DISABLE": "1"}
    with log.open("w", encoding="utf-8") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise SystemExit(f"{shlex.join(command)} failed with code {code}; log {log}:\n" + "\n".join(tail))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


def base_spec(args: argparse.Namespace, dataset: Path, model: str) -> dict[str, Any]:
    """What both sides share for one (category, model): taken from Hamacho's effective defaults."""
    from hamacho.config import build_config

    options = {"model.backbone": args.backbone, "dataset.batch_size": args.batch_size,
               "dataset.image_size": args.image_size}
    cfg = build_config(model, options=options)
    backbone = str(cfg.model.backbone)
    return {
        "model": model,
        "dataset": str(dataset),
        "image_size": args.image_size,
        "backbone": backbone,
        "layers": list(cfg.model.layers),
        "weights": weights_for(parse_weights(args.backbone_weights), backbone),
        "seed": args.seed,
        "batch_size": int(cfg.dataset.batch_size),
        "num_workers": args.num_workers,
        "coreset_ratio": args.coreset_ratio,
        "num_neighbors": int(cfg.model.num_neighbors) if model == "patchcore" else None,
        "n_features": cfg.model.num_features if model == "padim" else None,
        "visualization": not args.no_visualization,
        "keep_work": args.keep_work,
    }


def run_hamacho(spec: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    spec = {**spec, "out_dir": str(run_dir)}
    write_json(run_dir / "spec.json", spec)
    run_process([sys.executable, str(BENCH_DIR / "hamacho_side.py"), str(run_dir / "spec.json")], run_dir / "log.txt")
    return json.loads((run_dir / "result.json").read_text(encoding="utf-8"))


def run_forward(spec: dict[str, Any], folder: Path, repeats: int) -> dict[str, Any]:
    spec = {**spec, "out_dir": str(folder), "repeats": repeats}
    write_json(folder / "forward-spec.json", spec)
    run_process([sys.executable, str(BENCH_DIR / "hamacho_side.py"), "--forward", str(folder / "forward-spec.json")],
                folder / "forward-log.txt")
    return json.loads((folder / "forward.json").read_text(encoding="utf-8"))


def run_anomalib(args: argparse.Namespace, spec: dict[str, Any], run_dir: Path,
                 hamacho_result: dict[str, Any]) -> dict[str, Any]:
    spec = {**spec, "out_dir": str(run_dir)}
    if spec["model"] == "padim" and args.peer_channels == "same":
        spec["channel_indices"] = hamacho_result["channel_indices"]
        spec["n_features"] = len(spec["channel_indices"])
    write_json(run_dir / "spec.json", spec)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    run_process([args.peer_python, str(BENCH_DIR / "peer_anomalib.py"), str(run_dir / "spec.json")],
                run_dir / "log.txt", env=env)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    run_process([sys.executable, str(BENCH_DIR / "scoring.py"), str(run_dir), spec["dataset"],
                 str(spec["image_size"])], run_dir / "scoring-log.txt")
    result["metrics"] = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if not args.keep_work:
        shutil.rmtree(run_dir / "anomalib_workdir", ignore_errors=True)
        (run_dir / "maps.npy").unlink(missing_ok=True)  # large; scores and metrics stay
    write_json(run_dir / "result.json", result)
    return result


def run_pair(args: argparse.Namespace, dataset: Path, model: str, out: Path, log=print) -> dict[str, Any]:
    """Forward floor, Hamacho (compared ratio and extras), then the peer, for one (category, model)."""
    spec = base_spec(args, dataset, model)
    folder = out / dataset.name / model
    log(f"{dataset.name} {model}: backbone forward floor ({spec['backbone']})")
    floor = run_forward(spec, folder, args.forward_repeats)
    log(f"{dataset.name} {model}: hamacho")
    ours_raw = run_hamacho(spec, folder / "hamacho")
    ours = report.hamacho_figures(ours_raw, floor)
    extras: dict[str, dict[str, float | None]] = {}
    if model == "patchcore":
        for r in args.extra_coreset_ratio:
            log(f"{dataset.name} {model}: hamacho at coreset ratio {r:g}")
            extra = run_hamacho({**spec, "coreset_ratio": r}, folder / f"hamacho-coreset-{r:g}")
            extras[f"coreset {r:g}"] = report.hamacho_figures(extra, floor)
    theirs, peer_raw = None, None
    if args.peer:
        log(f"{dataset.name} {model}: anomalib (peer)")
        peer_raw = run_anomalib(args, spec, folder / "anomalib", ours_raw)
        theirs = report.anomalib_figures(peer_raw, peer_raw["metrics"], floor)
    coreset = f", coreset {args.coreset_ratio:g}" if model == "patchcore" else ""
    title = (f"{dataset.name} · {model} ({spec['backbone']}, {args.image_size} px, batch {spec['batch_size']}"
             f"{coreset})")
    comparison = {
        "title": title, "category": dataset.name, "model": model, "spec": spec,
        "hamacho": ours, "anomalib": theirs, "extras": extras, "forward": floor,
        "rows": report.compare(model, ours, theirs, extras),
        "backbone_check": peer_raw.get("backbone_check") if peer_raw else None,
        "anomalib_reported_metrics": peer_raw.get("anomalib_reported_metrics") if peer_raw else None,
    }
    write_json(folder / "comparison.json", comparison)
    return comparison


def environment() -> dict[str, Any]:
    """Machine and versions (torch's version and threads are in each run's JSON: torch is not loaded here)."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu,
            "cpu_count": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.make_weights:
        if not args.backbone:
            raise SystemExit("--make-weights needs --backbone resnet18|wide_resnet50_2")
        print(make_weights(args.make_weights, args.backbone, args.seed))
        return 0
    if args.startup_only:
        print(startup.table(startup.measure(args.startup_repeats)))
        return 0
    datasets = datasets_of(args)
    if args.peer:
        for backbone in sorted({base_spec(args, datasets[0], model)["backbone"] for model in args.models}):
            if not Path(weights_for(parse_weights(args.backbone_weights), backbone)).is_file():
                raise SystemExit(f"--peer needs a weights file for {backbone} (--backbone-weights {backbone}=PATH; "
                                 "create one with --make-weights)")
        if not Path(args.peer_python).exists():
            raise SystemExit(f"peer python not found: {args.peer_python}")
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    comparisons = []
    for dataset in datasets:
        for model in args.models:
            comparisons.append(run_pair(args, dataset, model, out, log=lambda m: print(f"[bench] {m}", file=sys.stderr)))
    tables = "\n\n".join(report.markdown_table(c["title"], c["rows"], bool(args.peer)) for c in comparisons)
    verdict = report.verdict_summary(comparisons)
    start_up = startup.measure(args.startup_repeats)
    text = f"{tables}\n\n{verdict}\n\n{startup.table(start_up)}\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    write_json(out / "summary.json", {
        "command": shlex.join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(), "wall_seconds": time.perf_counter() - started,
        "peer": args.peer, "comparisons": comparisons, "verdict": verdict, "startup": start_up,
    })
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
