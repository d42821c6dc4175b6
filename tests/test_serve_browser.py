"""The web UI in a real browser: headless Chromium (Debian's) driven by Playwright against `hamacho serve`.

One pass through what a quality engineer does: upload good and defective images and masks into a tag,
train a small PaDiM, watch the progress, see the model's metrics, predict a defective and a good image,
see OK/NG, scores and heatmaps, move the threshold slider until a decision flips, and see the server's
error text when a model tag is taken. Every wait is for a condition (with generous timeouts), never a sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _defect, _texture, require_component, write_png
from tests.serve_support import free_port, start_service, stop_service

try:
    from playwright import sync_api
except ImportError:  # reported by the fixture below: skipped, or failed under CI=true
    sync_api = None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def browser_installed() -> None:
    """The browser test needs playwright and Debian's chromium (.ci/run installs both)."""
    require_component(sync_api is not None, "playwright is not installed (pip install playwright)")
    require_component(CHROMIUM is not None, "no chromium on PATH (apt-get install chromium)")

SIZE = 64
TRAIN_TIMEOUT = 180  # seconds for the tiny training job
UI_TIMEOUT = 30_000  # milliseconds for anything the page does after a click
PREDICT_TIMEOUT = 90_000  # milliseconds for the first prediction (loads the model)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def post_error(url: str, body: dict) -> tuple[int, str]:
    """POST JSON that must fail: the status and the server's {"error": ...} text."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]
    raise AssertionError(f"POST {url} {body} succeeded; it should have failed")


@dataclass
class Server:
    url: str
    log: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`hamacho serve` on a free port with its own data folder."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    # offline (HAMACHO_OFFLINE, tests/conftest.py) with an empty torch hub cache: ImageNet weights are refused
    env = {k: v for k, v in os.environ.items() if k != "HAMACHO_TOKEN"} | {"TORCH_HOME": str(tmp_path / "torch")}
    process = start_service([sys.executable, "-m", "hamacho", "serve", "--port", str(port), "--data-dir",
                             str(tmp_path / "data")], port, log_path, env)
    try:
        yield Server(f"http://127.0.0.1:{port}/", log_path)
    finally:
        stop_service(process)


@pytest.fixture
def images(tmp_path: Path) -> dict[str, list[Path]]:
    """8 good, 3 defective with masks (named like their images), and one defective and one good to check."""
    rng = np.random.default_rng(7)
    root = tmp_path / "images"
    out: dict[str, list[Path]] = {"good": [], "bad": [], "mask": [], "check": []}
    for i in range(8):
        path = root / "good" / f"good_{i:03d}.png"
        write_png(path, _texture(rng, SIZE))
        out["good"].append(path)
    for i in range(3):
        image, mask = _defect(rng, _texture(rng, SIZE))
        write_png(root / "bad" / f"bad_{i:03d}.png", image)
        write_png(root / "mask" / f"bad_{i:03d}_mask.png", mask)
        out["bad"].append(root / "bad" / f"bad_{i:03d}.png")
        out["mask"].append(root / "mask" / f"bad_{i:03d}_mask.png")
    image, _ = _defect(rng, _texture(rng, SIZE))
    write_png(root / "check" / "check_defective.png", image)
    write_png(root / "check" / "check_good.png", _texture(rng, SIZE))
    out["check"] = [root / "check" / "check_defective.png", root / "check" / "check_good.png"]
    # a careless drop: a text file, a renamed copy of a good image, and one new good image
    (root / "drop").mkdir()
    (root / "drop" / "notes.txt").write_text("not an image")
    (root / "drop" / "copy_of_good.png").write_bytes(out["good"][0].read_bytes())
    write_png(root / "drop" / "good_new.png", _texture(rng, SIZE))
    out["drop"] = [root / "drop" / "notes.txt", root / "drop" / "copy_of_good.png", root / "drop" / "good_new.png"]
    return out


def all_loaded(page, selector: str, count: int) -> None:
    """Wait until `count` pictures match `selector` and every one has decoded (naturalWidth > 0)."""
    page.wait_for_function(
        "([sel, n]) => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length === n && imgs.every((i) => i.complete && i.naturalWidth > 0); }",
        arg=[selector, count], timeout=UI_TIMEOUT)


def set_slider(page, selector: str, value: float) -> None:
    """Set a range input as a drag would: the value, then an input event."""
    page.locator(selector).evaluate(
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def decision(page, name: str) -> str:
    return page.locator(f'#pr-results .pred[aria-label="{name}"]').get_attribute("data-decision")


def test_dataset_train_predict_in_the_browser(server: Server, images: dict[str, list[Path]]) -> None:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.set_default_timeout(UI_TIMEOUT)
        failed_scripts: list[str] = []
        page.on("pageerror", lambda exc: failed_scripts.append(str(exc)))
        try:
            walk_through(page, server.url, images)
        except Exception as exc:
            shown = page.locator("#errors").text_content() if not page.is_closed() else ""
            raise AssertionError(f"{exc}\nerrors shown on the page: {shown!r}\nscript errors: {failed_scripts}\n"
                                 f"server log:\n{server.log.read_text()[-3000:]}") from exc
        finally:
            browser.close()
    assert not failed_scripts, failed_scripts


def walk_through(page, server: str, images: dict[str, list[Path]]) -> None:
    """The user's path through every screen (the assertions are along the way)."""
    expect = sync_api.expect
    # expect() has its own 5 s default, apart from the page's: on a busy machine a click's answer (queueing a
    # job checks its settings) took longer than that, so every expectation gets the page's timeout
    expect.set_options(timeout=UI_TIMEOUT)
    page.goto(server)
    page.wait_for_selector("body[data-ready=true]")

    # Dataset: a new tag, then each group through its drop zone's file picker.
    page.fill("#ds-tag", "parts")
    page.press("#ds-tag", "Enter")
    for group in ("good", "bad", "mask"):
        zone = page.locator(f'.group[data-group="{group}"] .dropzone')
        with page.expect_file_chooser() as chooser:
            if group == "mask":  # keyboard: focus the zone and press Enter
                zone.focus()
                page.keyboard.press("Enter")
            else:
                zone.click()
        chooser.value.set_files([str(f) for f in images[group]])
        expect(page.locator(f'.group[data-group="{group}"] [data-count]')).to_have_text(
            str(len(images[group])))
    all_loaded(page, ".group .thumbs img", 14)
    expect(page.locator('.group[data-group="bad"] .flag')).to_have_count(3)  # masks linked by name
    expect(page.locator(".chip", has_text="parts")).to_contain_text("8 good · 3 defective · 3 masks")

    # Remove one good image and put it back: the count follows.
    page.get_by_role("button", name="Remove good_007.png").click()
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("7")
    with page.expect_file_chooser() as chooser:
        page.locator('.group[data-group="good"] .dropzone').click()
    chooser.value.set_files(str(images["good"][7]))
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("8")

    # A mixed drop: the good file is kept, the others are listed with their reasons until closed.
    with page.expect_file_chooser() as chooser:
        page.locator('.group[data-group="good"] .dropzone').click()
    chooser.value.set_files([str(f) for f in images["drop"]])
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("9")
    skipped = page.locator("#errors .skipped-files")
    expect(skipped).to_have_count(1)
    expect(skipped.locator("p")).to_have_text("parts: 1 added, 2 skipped")
    expect(skipped.locator("li")).to_have_text([
        "notes.txt: not a readable image (PNG, JPEG, BMP or TIFF)",
        "copy_of_good.png: the same content as good_000.png, already in tag 'parts'"])
    skipped.get_by_role("button", name="Close this message").click()
    expect(skipped).to_have_count(0)
    page.get_by_role("button", name="Remove good_new.png").click()
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("8")

    # Train: small settings through the form; the progress card shows at once.
    page.get_by_role("tab", name="Train").click()
    page.select_option("#tr-tag", "parts")
    page.select_option("#tr-model", "padim")
    # the form's fields come from the settings classes through /api/v1/options, labels and defaults included
    expect(page.locator('label[for="tr-dataset-image-size"]')).to_have_text("Image size")
    expect(page.locator("#tr-dataset-image-size")).to_have_value("256")
    page.select_option("#tr-model-backbone", "resnet18")
    page.fill("#tr-dataset-image-size", str(SIZE))
    # the default weights (torchvision's ImageNet download) on this offline server: refused before queueing
    expect(page.locator("#tr-model-backbone-weights")).to_have_value("imagenet")
    page.fill("#tr-model-tag", "parts-padim")
    page.click("#tr-start")
    expect(page.locator("#errors .error").first).to_contain_text(
        "ImageNet weights for resnet18 are not on this server and cannot be downloaded (this server is offline): "
        "choose a weights file from the list")
    assert get_json(server + "api/v1/jobs")["items"] == []  # nothing was queued
    page.fill("#tr-model-backbone-weights", "none")
    page.fill("#tr-model-tag", "parts-padim")
    page.click("#tr-start")
    expect(page.locator("#job-card")).to_be_visible()
    expect(page.locator("#job-progress")).to_be_visible()
    expect(page.locator("#job-name")).to_contain_text("parts-padim")
    assert page.locator("#job-status").get_attribute("data-status") in ("queued", "running", "succeeded")
    page.wait_for_function(
        "['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#job-status').dataset.status)",
        timeout=TRAIN_TIMEOUT * 1000)
    status = page.locator("#job-status").get_attribute("data-status")
    assert status == "succeeded", f"training {status}: {page.locator('#job-error').text_content()}"
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")

    # The finished model: metrics, thresholds, report link, example pictures.
    card = page.locator("#train-result .model-card")
    expect(card).to_be_visible()
    expect(card.locator("table.metrics").last).to_contain_text("image AUROC")
    # the images that did not set the threshold come first, and say how many they are
    held = get_json(server + "api/v1/models/parts-padim")["held_out"]
    expect(card.get_by_role("table", name="Metrics on the held-out images")).to_contain_text("false alarms")
    held_text = f"{held['images']} held-out image{'' if held['images'] == 1 else 's'}"
    expect(card.locator(".metrics-caption").first).to_have_text(
        f"On {held_text} ({held['good']} good, {held['defective']} defective) that did not set the threshold:")
    expect(card).to_contain_text("Image (OK/NG)")
    report = card.get_by_role("link", name="Open report")
    if report.count():
        assert "api/v1/models/" in report.get_attribute("href")
    if card.locator(".pictures img").count():
        all_loaded(page, "#train-result .pictures img", card.locator(".pictures img").count())

    # An API error reaches the user: the same model tag again is refused with the server's text.
    status, message = post_error(server + "api/v1/jobs", {"model_tag": "parts-padim", "model": "padim",
                                                          "tag": "parts", "parameters": {}})
    assert 400 <= status < 500
    page.fill("#tr-model-tag", "parts-padim")
    page.click("#tr-start")
    expect(page.locator("#errors .error").first).to_contain_text(message)
    expect(page.locator("#errors")).to_have_attribute("role", "alert")


    # Predict: a defective and a good image; OK/NG, score and pictures for each.
    card.get_by_role("button", name="Predict with this model").click()
    expect(page.locator("#panel-predict")).to_be_visible()
    expect(page.locator("#pr-model")).to_have_value("parts-padim")
    with page.expect_file_chooser() as chooser:
        page.locator("#pr-drop").click()
    chooser.value.set_files([str(f) for f in images["check"]] + [str(images["drop"][0])])  # and the text file
    results = page.locator("#pr-results .pred:not(.pending)")
    expect(results).to_have_count(2, timeout=PREDICT_TIMEOUT)
    expect(page.locator("#errors .skipped-files p")).to_have_text("2 scored, 1 skipped")
    expect(page.locator("#errors .skipped-files li")).to_have_text(["notes.txt: not a readable image (PNG, JPEG, BMP or TIFF)"])
    all_loaded(page, '#pr-results img[data-kind="heatmap"]', 2)
    all_loaded(page, '#pr-results img[data-kind="segmentation"]', 2)
    scores = {}
    for name in ("check_defective.png", "check_good.png"):
        item = page.locator(f'#pr-results .pred[aria-label="{name}"]')
        expect(item.locator(".badge")).to_have_text(decision(page, name))
        scores[name] = float(item.locator(".score").inner_text())
        assert 0.0 <= scores[name] <= 1.0
        # the badge is the decision at the default cut 0.5 (scores shown with 3 digits)
        if abs(scores[name] - 0.5) > 0.001:
            assert decision(page, name) == ("NG" if scores[name] >= 0.5 else "OK")
    assert scores["check_defective.png"] > scores["check_good.png"]  # the magenta defect scores higher

    # The slider re-decides without the model: between the two scores the lower is OK, the higher NG;
    # at 0 both are NG. The lower one's decision changes.
    low, high = sorted(scores, key=scores.get)
    if scores[high] - scores[low] >= 0.02:
        cut = round((scores[low] + scores[high]) / 2, 2)
    else:  # too close to tell apart at this step; 1.0 still separates "below" from "at or above"
        cut = 1.0
    set_slider(page, "#pr-threshold", cut)
    expect(page.locator("#pr-threshold-out")).to_have_text(f"{cut:.2f}")
    expect(page.locator(f'#pr-results .pred[aria-label="{low}"] .badge')).to_have_text("OK")
    if cut < 1.0 or scores[high] >= 1.0:
        expect(page.locator(f'#pr-results .pred[aria-label="{high}"] .badge')).to_have_text("NG")
    page.locator("#pr-threshold").focus()
    page.keyboard.press("Home")  # keyboard: slider to 0
    expect(page.locator("#pr-threshold-out")).to_have_text("0.00")
    expect(page.locator(f'#pr-results .pred[aria-label="{low}"] .badge')).to_have_text("NG")
    expect(page.locator("#pr-summary")).to_contain_text("2 NG")

    # The pixel slider redraws the defect area from the map on a canvas.
    set_slider(page, "#pr-pixel", 0.3)
    expect(page.locator("#pr-results .seg canvas:not([hidden])")).to_have_count(2)


    # Train again: a size [H, W] under More settings reaches the job; a different one in the form is refused.
    page.get_by_role("tab", name="Train").click()
    page.fill("#tr-model-tag", "parts-wide")
    page.locator("details.advanced summary").click()
    page.fill("#tr-extra", f"dataset.image_size=[{SIZE}, {SIZE + 32}]")
    page.fill("#tr-dataset-image-size", str(SIZE + 64))
    page.click("#tr-start")
    expect(page.locator("#errors")).to_contain_text("dataset.image_size is set twice")
    page.fill("#tr-dataset-image-size", "")  # empty: the model's default, which More settings overrides
    page.click("#tr-start")
    expect(page.locator("#job-name")).to_contain_text("parts-wide")
    wide = [j for j in get_json(server + "api/v1/jobs")["items"] if j["model_tag"] == "parts-wide"]
    assert len(wide) == 1 and wide[0]["parameters"]["dataset.image_size"] == [SIZE, SIZE + 32]
    assert wide[0]["parameters"]["model.backbone_weights"] == "none"  # the form's other fields still count
    request = urllib.request.Request(f"{server}api/v1/jobs/{wide[0]['id']}/cancel", method="POST")
    urllib.request.urlopen(request, timeout=10).close()  # no need to train it

    # The sliders saved as the model's thresholds (version 1) are where a reload starts; then back to training's.
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#pr-model")).to_have_value("parts-padim")
    # the model's versions are loaded (they set the sliders) before the sliders are moved
    expect(page.locator("#pr-version")).to_contain_text("parts-padim uses the thresholds set in training")
    set_slider(page, "#pr-pixel", 0.3)
    set_slider(page, "#pr-threshold", 0.7)
    page.fill("#pr-by", "ana")
    page.click("#pr-save-cuts")
    expect(page.locator("#pr-version")).to_contain_text(
        "parts-padim uses threshold version 1: image 0.70, pixel 0.30, saved by ana")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.get_by_role("tab", name="Predict").click()
    expect(page.locator("#pr-threshold-out")).to_have_text("0.70")
    expect(page.locator("#pr-pixel-out")).to_have_text("0.30")
    expect(page.locator("#pr-by")).to_have_value("ana")
    page.locator("#pr-versions summary").click()
    expect(page.locator("#pr-versions-list tr")).to_have_count(2)
    page.get_by_role("button", name="Use threshold version 0").click()
    expect(page.locator("#pr-threshold-out")).to_have_text("0.50")
    expect(page.locator("#pr-version")).to_contain_text("uses the thresholds set in training (version 0)")

    # The Train form after the reload: the settings of the last job started in this browser, and where the
    # server looks for weight files
    page.get_by_role("tab", name="Train").click()
    expect(page.locator("#tr-model-backbone-weights")).to_have_value("none")
    expect(page.locator("#tr-dataset-image-size")).to_have_value("")
    expect(page.locator("#tr-weights-files")).to_contain_text("No weight files in the server's allowed folders")
    inspection_log_review_and_retrain(page, server)
    next_step_trains_the_open_tag(page, images)


def next_step_trains_the_open_tag(page, images: dict[str, list[Path]]) -> None:
    """A new tag opened on the Dataset screen is the one the Train form takes once its first images are in."""
    expect = sync_api.expect
    page.get_by_role("tab", name="Dataset").click()
    page.fill("#ds-tag", "line2")
    page.press("#ds-tag", "Enter")
    with page.expect_file_chooser() as chooser:
        page.locator('.group[data-group="good"] .dropzone').click()
    chooser.value.set_files([str(images["good"][1]), str(images["good"][2])])
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("2")
    page.click("#ds-to-train")
    expect(page.locator("#panel-train")).to_be_visible()
    expect(page.locator("#tr-tag")).to_have_value("line2")
    expect(page.locator("#tr-tag-counts")).to_have_text("2 good · 0 defective · 0 masks")


def inspection_log_review_and_retrain(page, server: str) -> None:
    """History as the inspection log: filters, search, the large view, reviews, the reviewed images added to the
    dataset, a retrain compared with the model on the same held-out images; Back and reload keep the place."""
    expect = sync_api.expect
    saved = {r["name"]: r for r in get_json(server + "api/v1/results")["items"]}
    assert sorted(saved) == ["check_defective.png", "check_good.png"]
    page.get_by_role("tab", name="History").click()
    rows = page.locator("#hi-table tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#hi-count")).to_have_text("2 results")
    for decision in ("NG", "OK"):
        page.select_option("#hi-decision", decision)
        expect(rows).to_have_count(sum(r["decision"] == decision for r in saved.values()))
    page.select_option("#hi-decision", "")
    page.fill("#hi-q", "GOOD")  # part of the name, any case
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".name")).to_contain_text("check_good.png")
    page.fill("#hi-q", "")
    expect(rows).to_have_count(2)
    page.select_option("#hi-sort", "score")  # highest first; the raw score ranks what the normalized one cannot
    first = max(saved.values(), key=lambda r: r["raw_score"])["name"]
    expect(rows.first.locator(".name")).to_contain_text(first)
    expect(rows.first.locator(".raw")).to_contain_text("raw ")  # shown beside the normalized score

    # the large view: image, heatmap and defect area
    page.get_by_role("button", name="View check_defective.png large").click()
    expect(page.locator("#hi-view")).to_be_visible()
    all_loaded(page, "#hi-view img", 3)
    page.click("#hi-view-close")
    expect(page.locator("#hi-view")).to_be_hidden()

    # reviews: the defective part confirmed (or a missed defect), the good one a false alarm (or confirmed)
    page.fill("#hi-by", "ben")
    page.locator("#hi-by").dispatch_event("change")
    verdicts = {"check_defective.png": "Correct" if saved["check_defective.png"]["decision"] == "NG" else "Missed defect",
                "check_good.png": "False alarm" if saved["check_good.png"]["decision"] == "NG" else "Correct"}
    for name, verdict in verdicts.items():
        page.get_by_role("button", name=f"Mark {name} {verdict.lower()}", exact=True).click()
        row = page.locator("#hi-table tbody tr", has_text=name)
        expect(row.locator(".verdict")).to_have_text(verdict)
    reviewed = {r["name"]: r for r in get_json(server + "api/v1/results?verdict=any")["items"]}
    assert {n: r["reviewed_by"] for n, r in reviewed.items()} == {n: "ben" for n in verdicts}
    page.select_option("#hi-verdict", "none")
    expect(page.locator("#hi-empty")).to_have_text("No saved result matches these filters.")
    page.select_option("#hi-verdict", "")

    # the reviewed images into the dataset (confirmed ones too), then a retrain compared with parts-padim
    page.click("#hi-to-dataset")
    expect(page.locator("#hi-ds-tag")).to_have_value("parts")
    page.check("#hi-ds-correct")
    page.click("#hi-ds-add")
    expect(page.locator("#hi-ds-outcome")).to_have_text("Added to “parts”: 1 good image, 1 defective image.")
    page.click("#hi-ds-retrain")
    expect(page.locator("#panel-train")).to_be_visible()
    expect(page.locator("#tr-compare")).to_have_value("parts-padim")
    expect(page.locator("#tr-model-tag")).to_have_value("parts-padim-r2")
    expect(page.locator("#tr-tag-counts")).to_contain_text("9 good · 4 defective")
    page.fill("#tr-dataset-image-size", str(SIZE))
    page.click("#tr-start")
    expect(page.locator("#job-name")).to_contain_text("parts-padim-r2")
    page.wait_for_function(
        "['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#job-status').dataset.status)",
        timeout=TRAIN_TIMEOUT * 1000)
    assert page.locator("#job-status").get_attribute("data-status") == "succeeded", page.locator(
        "#job-error").text_content()
    card = page.locator("#train-result .model-card")
    expect(card.locator(".comparison h3")).to_contain_text("Before and after, on the same")
    expect(card.locator(".comparison thead")).to_contain_text("Before: parts-padim")
    comparison = get_json(server + "api/v1/models/parts-padim-r2")["comparison"]
    assert comparison["earlier"] == "parts-padim" and comparison["images"] >= 1
    expect(card.locator(".comparison tbody tr")).to_have_count(4)

    # Back returns to the log, reload keeps the tab; the dataset's tag is in its URL
    page.go_back()
    expect(page.locator("#panel-history")).to_be_visible()
    page.go_forward()
    expect(page.locator("#panel-train")).to_be_visible()
    page.get_by_role("tab", name="Dataset").click()
    assert page.url.endswith("#dataset/parts")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#panel-dataset")).to_be_visible()
    expect(page.locator('.group[data-group="good"] [data-count]')).to_have_text("9")
    page.go_back()
    expect(page.locator("#panel-train")).to_be_visible()

    # delete a result from the log
    page.get_by_role("tab", name="History").click()
    expect(rows).to_have_count(2)
    page.get_by_role("button", name="Delete the result of check_good.png").click()
    expect(rows).to_have_count(1)
