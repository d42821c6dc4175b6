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
from hamacho.cli_cluster import db, worker
from hamacho.cli_options import (
    ModelChoice,
    TrainCommand,
    engine_options,
    option_values,
    ray_options,
    setting_options,
)
from hamacho.errors import HamachoError, Interrupted, first_line
from hamacho.extras import TRAINING_PACKAGES
from hamacho.models.registry import DEFAULT_MODEL

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT


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


@cli.command(cls=TrainCommand, context_settings={"ignore_unknown_options": False})
@click.option("--model", "model_name", type=ModelChoice(), default=None,
              help=f"Model to train (default: model.name of --config, else {DEFAULT_MODEL}).")
@click.option("--config", "config_file", help="YAML file with settings to change (see configs/).")
@setting_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.argument("overrides", nargs=-1)
def train(model_name: str | None, config_file: str | None, quiet: bool, overrides: tuple[str, ...],
          **values: Any) -> None:
    """Fit a model on good images, calibrate its threshold, test it and save a model file.

    Any configuration key can be set after the options as key=value, e.g. dataset.batch_size=8.
    """
    from hamacho.config import build_config
    from hamacho.progress import stop_on_signals
    from hamacho.train import STOP_NOTE, run_training

    options = option_values(values)
    settings = build_config(model_name, config_file, options, overrides)
    control = _control(quiet, STOP_NOTE)
    with stop_on_signals(control):
        result = run_training(settings, control, log=_echo_err)
    t = result.timings
    click.echo(
        f"\nTrained {settings.model.name} ({settings.model.backbone}) on {result.summary.category}: "
        f"fit {t['fit_seconds']:.1f} s, calibration {t['calibration_seconds']:.1f} s, "
        f"test {t['test_seconds']:.1f} s ({t['test_images_per_second']:.1f} images/s), "
        f"peak memory {t['peak_rss_mb']:.0f} MiB"
    )
    cal = result.calibration
    how = result.summary.thresholds
    chose = f"{how['method']} chose {how['rule']}: " if how.get("rule") and how["rule"] != how["method"] else ""
    image = how["image"].removeprefix(f"{how.get('rule')}: ") if chose else how["image"]  # the rule named once
    click.echo(f"Thresholds (raw score = normalized 0.5): image {cal['image_threshold']:.4g} ({chose}{image}), "
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
@click.option("--no-pictures", is_flag=True,
              help="Results files only: no pictures and no report (archive runs; same as --no-images --no-report).")
@engine_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def inference(model_path, image_path, save_path, image_threshold, pixel_threshold, batch_size, save_heatmap,
              save_segmentation, only_wrong, no_images, no_report, no_pictures, engine, quiet, **engine_values) -> None:
    """Score images with a trained model: OK/NG per image, heatmaps and results.csv.

    A folder is searched recursively. A dataset root contributes its test/ images with their labels,
    and then metrics are printed too; a file list (.csv with path and label, .txt with one path a line)
    its images. Unreadable images are listed in results.csv; the command fails only when no image could
    be processed. With --engine ray, Ray actors score on this machine or a cluster, and results.parquet is
    written too.
    """
    from hamacho.inference import STOP_NOTE, InferenceRequest, score_locally
    from hamacho.progress import stop_on_signals

    ray, resume = ray_options(engine, engine_values)
    if no_pictures:
        drawn = [name for name, on in (("--save-heatmap", save_heatmap), ("--save-segmentation", save_segmentation))
                 if on]
        if drawn:
            raise click.UsageError(f"--no-pictures writes no pictures; drop {' and '.join(drawn)}")
        no_images = no_report = True
    vis = {"report_images": not no_images}
    vis.update({k: True for k, on in (("save_heatmap", save_heatmap), ("save_segmentation", save_segmentation),
                                       ("only_wrong", only_wrong)) if on})
    request = InferenceRequest(model_path, image_path, save_path, image_threshold, pixel_threshold, batch_size,
                               visualization=vis, report=not no_report)
    control = _control(quiet, STOP_NOTE)
    with stop_on_signals(control):
        if ray is None:
            result = score_locally(request, control, _echo_err)
        else:
            from hamacho.ray_engine.run import run_ray_inference

            result = run_ray_inference(request, ray, resume, control, _echo_err)
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
@click.option("--workers", type=click.IntRange(0, 64), default=1, show_default=True,
              help="Training jobs this process runs at once, each in its own process; 0: an API-only "
                   "replica (hamacho worker trains).")
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
@click.option("--offline", is_flag=True, envvar="HAMACHO_OFFLINE",
              help="Never try the network: a job asking for ImageNet weights that are not in the torch hub cache "
                   "is refused when queued, naming the weight files it can use (also HAMACHO_OFFLINE=1).")
def serve(host, port, data_dir, database_url, token, workers, max_loaded, allow_paths, max_upload_mb,
          max_request_mb, max_pixels, device, offline) -> None:
    """Run the REST API and the web UI (http://HOST:PORT/, API docs at /docs).

    Needs the serve extra: pip install "hamacho[serve]" (docs/service.md).
    """
    from hamacho.serve.server import run_server

    run_server(host=host, port=port, data_dir=data_dir, database_url=database_url, token=token or None,
               workers=workers, max_loaded=max_loaded, allowed_roots=list(allow_paths),
               max_file_bytes=int(max_upload_mb * 2**20), max_request_bytes=int(max_request_mb * 2**20),
               max_pixels=max_pixels, device=device, offline=offline)


cli.add_command(worker)
cli.add_command(db)


def _echo_outcome(result: Any, results_note: str = "") -> None:
    """Metrics table (when there are labels), decision counts, and where the files are."""
    from hamacho.report.results import decision_summary, format_metrics_table, held_out_text

    if result.metrics:
        click.echo(format_metrics_table(result.metrics))
    held = getattr(getattr(result, "summary", None), "held_out", None)  # a training run's summary
    if held:
        click.echo(held_out_text(held))
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
