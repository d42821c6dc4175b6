"""The `hamacho` command: thin click commands over :mod:`hamacho.train` and :mod:`hamacho.inference`.

Every error a user can cause ends as one ``Error: ...`` line and a non-zero exit code; ``--debug`` (or
``HAMACHO_DEBUG=1``) shows the traceback instead. Ctrl-C stops a run at its next step with one line and
exit code 130 (SIGTERM: 143).

Nothing heavy is imported at module level: ``hamacho --help``, ``--version`` and usage errors never load
torch, torchvision or Lightning (model names come from the registry's packaged YAML files).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from hamacho import __version__
from hamacho.errors import HamachoError, Interrupted, first_line
from hamacho.models.registry import model_names
from hamacho.settings import BACKBONES

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
TRAINING_PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics")
_ON_LINUX = sys.platform.startswith("linux")


class ModelChoice(click.Choice):
    """``--model``: the registry's model names, looked up when the option is used (not at import)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(model_names())

    @choices.setter
    def choices(self, value: Any) -> None:  # click's __init__ assigns it; the registry is the source
        pass


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def _control(quiet: bool, stop_note: str) -> Any:
    from hamacho.progress import RunControl

    return RunControl(bars=not quiet, stop_note=stop_note)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hamacho")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (also HAMACHO_DEBUG=1).")
def cli(debug: bool) -> None:
    """Hamacho: visual anomaly detection for industrial inspection.

    Train on good images with `hamacho train`, then score new images with `hamacho inference`.
    """


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--model", "model_name", type=ModelChoice(), default=None,
              help="Model to train (default: model.name of --config, else padim).")
@click.option("--dataset-root", help="Dataset folder: MVTec AD layout (train/good, test/<type>, ground_truth/), "
              "a folder with good/ (bad/, mask/), or one with a CSV file list (docs/dataset.md).")
@click.option("--data-format", type=click.Choice(("auto", "mvtec", "folder", "filelist")),
              help="Layout of the data [auto: detected].")
@click.option("--good-dir", help="Folder layout: good images (recursive).")
@click.option("--bad-dir", help="Folder layout: defective images, flat or one subfolder per defect type.")
@click.option("--mask-dir", help="Folder layout: masks of the defective images, named <stem>_mask.*.")
@click.option("--file-list", help="CSV with path, label (good|bad), optional mask and split (train|test).")
@click.option("--good-list", help="Text file: one good image path a line.")
@click.option("--bad-list", help="Text file: one defective image path a line.")
@click.option("--mask-list", help="Text file: one mask path a line (matched to defective images by name).")
@click.option("--split", type=float, help="Folder and file-list layouts: share of good images held out for "
              "calibration and test [0.2].")
@click.option("--config", "config_file", help="YAML file with settings to change (see configs/).")
@click.option("--image-size", type=int, help="Side of the square model input, a multiple of 32 [256].")
@click.option("--backbone", type=click.Choice(BACKBONES), metavar="NAME",
              help="torchvision network: resnet18, wide_resnet50_2, mobilenet_v2, efficientnet_b0..b7, "
              "convnext_tiny, ... (docs/models.md) [padim: resnet18, patchcore: wide_resnet50_2].")
@click.option("--backbone-weights", help="imagenet (download), none (seeded random init) or a local "
              "torchvision state-dict file [imagenet].")
@click.option("--batch-size", type=int, help="Images per forward pass [8].")
@click.option("--num-workers", type=int, hidden=not _ON_LINUX,
              help="Data-loading processes, at most cpu_count - 2 [0].")
@click.option("--seed", type=int, help="Seed for every random choice [0].")
@click.option("--result-path", help="Results go to RESULT_PATH/<model>/<category>/ [results].")
@click.option("--no-report", is_flag=True, default=False, help="Skip report.html and its figures.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1)
def train(model_name, dataset_root, data_format, good_dir, bad_dir, mask_dir, file_list, good_list, bad_list,
          mask_list, split, config_file, image_size, backbone, backbone_weights, batch_size, num_workers, seed,
          result_path, no_report, quiet, overrides) -> None:
    """Fit a model on good images, calibrate its threshold, test it and save a model file.

    Any configuration key can be set after the options as key=value, e.g. dataset.batch_size=8.
    """
    from hamacho.config import build_config
    from hamacho.progress import stop_on_signals
    from hamacho.train import STOP_NOTE, run_training

    options = {
        "dataset.root": dataset_root,
        "dataset.format": data_format,
        "dataset.good_dir": good_dir,
        "dataset.bad_dir": bad_dir,
        "dataset.mask_dir": mask_dir,
        "dataset.file_list": file_list,
        "dataset.good_list": good_list,
        "dataset.bad_list": bad_list,
        "dataset.mask_list": mask_list,
        "dataset.split": split,
        "dataset.image_size": image_size,
        "model.backbone": backbone,
        "model.backbone_weights": backbone_weights,
        "dataset.batch_size": batch_size,
        "dataset.num_workers": num_workers,
        "project.seed": seed,
        "project.result_path": result_path,
        "report.enabled": False if no_report else None,
    }
    settings = build_config(model_name, config_file, options, overrides)
    control = _control(quiet, STOP_NOTE)
    with stop_on_signals(control):
        result = run_training(settings, control, log=_echo_err)
    t = result.timings
    click.echo(
        f"\nTrained {settings.model.name} ({settings.model.backbone}) on {result.summary['category']}: "
        f"fit {t['fit_seconds']:.1f} s, calibration {t['calibration_seconds']:.1f} s, "
        f"test {t['test_seconds']:.1f} s ({t['test_images_per_second']:.1f} images/s), "
        f"peak memory {t['peak_rss_mb']:.0f} MiB"
    )
    cal = result.calibration
    how = result.summary["thresholds"]
    click.echo(f"Thresholds (raw score = normalized 0.5): image {cal['image_threshold']:.4g} ({how['image']}), "
               f"pixel {cal['pixel_threshold']:.4g} ({how['pixel']})")
    _echo_outcome(result, f"  (model file: {result.model_path.name})")


@cli.command()
@click.option("--model-path", required=True,
              help="Model file written by `hamacho train` (model.pt), or an export folder (`hamacho export`).")
@click.option("--image-path", required=True, help="An image, a folder of images, or a dataset root.")
@click.option("--save-path", help="Output folder [inference/ beside the model file].")
@click.option("--image-threshold", type=float, default=0.5, show_default=True,
              help="Normalized score at or above which an image is NG (0..1; 0.5 = trained threshold).")
@click.option("--pixel-threshold", type=float, default=0.5, show_default=True,
              help="Normalized value at or above which a pixel is defective (0..1).")
@click.option("--batch-size", type=int, help="Images per forward pass [as trained].")
@click.option("--save-heatmap", is_flag=True, help="Also write heatmaps at the original resolution.")
@click.option("--save-segmentation", is_flag=True, help="Also write outlined defects at the original resolution.")
@click.option("--only-wrong", is_flag=True, help="Write pictures only for wrongly decided labelled images.")
@click.option("--no-images", is_flag=True, help="Write no report pictures (results.csv only).")
@click.option("--no-report", is_flag=True, help="Skip report.html and its figures.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def inference(model_path, image_path, save_path, image_threshold, pixel_threshold, batch_size, save_heatmap,
              save_segmentation, only_wrong, no_images, no_report, quiet) -> None:
    """Score images with a trained model: OK/NG per image, heatmaps and results.csv.

    A folder is searched recursively. A dataset root contributes its test/ images with their labels,
    and then metrics are printed too. Unreadable images are listed in results.csv; the command fails
    only when no image could be processed.
    """
    from hamacho.inference import STOP_NOTE, run_inference
    from hamacho.progress import stop_on_signals

    vis = {"report_images": not no_images}
    vis.update({k: True for k, on in (("save_heatmap", save_heatmap), ("save_segmentation", save_segmentation),
                                       ("only_wrong", only_wrong)) if on})
    control = _control(quiet, STOP_NOTE)
    with stop_on_signals(control):
        result = run_inference(model_path, image_path, save_path, image_threshold, pixel_threshold, batch_size,
                               visualization=vis, control=control, log=_echo_err, report=not no_report)
    _echo_outcome(result)


@cli.command()
@click.option("--model-path", required=True, help="Model file written by `hamacho train` (model.pt).")
@click.option("--format", "runtime", type=click.Choice(("onnx", "openvino", "torchscript")), required=True,
              help="Runtime to export for.")
@click.option("--output", help="Folder to write [export-<format>/ beside the model file].")
@click.option("--precision", type=click.Choice(("fp32", "fp16", "bf16")), default="fp32", show_default=True,
              help="fp16: half-precision weights (onnx, openvino); bf16: OpenVINO computes in bfloat16 where "
              "the CPU has it (fastest; scores move, check the decisions: docs/export.md).")
def export(model_path, runtime, output, precision) -> None:
    """Export a model for deployment: ONNX Runtime, OpenVINO or TorchScript.

    The folder holds the graph and metadata.json; `hamacho inference --model-path FOLDER` and
    Predictor.load(FOLDER) use it like model.pt, without PyTorch for onnx and openvino (docs/export.md).
    """
    from hamacho.export import export_model

    result = export_model(model_path, runtime, output, precision, log=_echo_err)
    click.echo(f"Exported for {result.runtime} ({result.precision}): {result.folder}")
    click.echo(f"Files: {', '.join(result.files)}, metadata.json")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any address other than this machine's own needs --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True, help="TCP port.")
@click.option("--data-dir", default="hamacho-data", show_default=True,
              help="Database (SQLite by default), images, models and results.")
@click.option("--database-url", envvar="HAMACHO_DATABASE_URL",
              help="SQLAlchemy URL of another database, e.g. postgresql://user:pw@host/hamacho "
                   "[sqlite in --data-dir] (also HAMACHO_DATABASE_URL).")
@click.option("--token", envvar="HAMACHO_TOKEN",
              help="API calls need 'Authorization: Bearer TOKEN' (also HAMACHO_TOKEN).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Training jobs that run at once, each in its own process.")
@click.option("--max-loaded", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Models kept in memory; the least recently used is unloaded first.")
@click.option("--allow-path", "allow_paths", multiple=True,
              help="Folder whose files may be registered by server-side path (repeat) [DATA_DIR/import].")
@click.option("--max-upload-mb", type=click.FloatRange(0.001), default=50.0, show_default=True,
              help="Largest uploaded file.")
@click.option("--max-request-mb", type=click.FloatRange(0.001), default=500.0, show_default=True,
              help="Largest request.")
@click.option("--max-pixels", type=click.IntRange(1), default=50_000_000, show_default=True,
              help="Largest image (width x height); larger ones are refused before decoding.")
@click.option("--device", default="auto", show_default=True, help="Where models run: auto, cpu, cuda, ...")
def serve(host, port, data_dir, database_url, token, workers, max_loaded, allow_paths, max_upload_mb,
          max_request_mb, max_pixels, device) -> None:
    """Run the REST API and the web UI (http://HOST:PORT/, API docs at /docs).

    Needs the serve extra: pip install "hamacho[serve]" (docs/service.md).
    """
    from hamacho.serve.server import run_server

    run_server(host=host, port=port, data_dir=data_dir, database_url=database_url, token=token or None,
               workers=workers, max_loaded=max_loaded, allowed_roots=list(allow_paths),
               max_file_bytes=int(max_upload_mb * 2**20), max_request_bytes=int(max_request_mb * 2**20),
               max_pixels=max_pixels, device=device)


def _echo_outcome(result: Any, results_note: str = "") -> None:
    """Metrics table (when there are labels), decision counts, and where the files are."""
    from hamacho.report.results import decision_summary, format_metrics_table

    if result.metrics:
        click.echo(format_metrics_table(result.metrics))
    if result.rows:
        click.echo(decision_summary(result.rows))
    click.echo(f"Results: {result.output_dir}{results_note}")
    if result.report_path:
        click.echo(f"Report: {result.report_path}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and turn every error into one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HAMACHO_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=args, prog_name="hamacho", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _echo_err("Interrupted.")
        sys.exit(EXIT_INTERRUPTED)
    except click.UsageError as exc:
        hint = f" (see 'hamacho {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        _echo_err(f"Error: {exc.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _echo_err(f"Error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        if debug:
            raise
        _echo_err(str(exc))
        sys.exit(128 + (exc.signum or signal.SIGINT))
    except KeyboardInterrupt:
        if debug:
            raise
        _echo_err("Interrupted.")
        sys.exit(EXIT_INTERRUPTED)
    except HamachoError as exc:
        if debug:
            raise
        _echo_err(f"Error: {exc}")
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # anything unforeseen still ends as one line
        if debug:
            raise
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in TRAINING_PACKAGES:
            _echo_err(f"Error: this needs PyTorch ({exc.name} is not installed): pip install 'hamacho[train]'; "
                      "exported models (hamacho export) run without it")
        else:
            _echo_err(f"Error: unexpected {type(exc).__name__}: {first_line(exc)} "
                      "(run with --debug for the traceback, and please report it)")
        sys.exit(EXIT_ERROR)


if __name__ == "__main__":
    main()
