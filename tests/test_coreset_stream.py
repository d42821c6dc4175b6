"""PatchCore's coreset selected chunk by chunk during feature extraction (hamacho/models/coreset_stream.py):
the same bank, row for row, as the chunked selection over every patch at the end, with less held in memory."""

from __future__ import annotations

import math

import pytest
import torch

from hamacho.data.framing import Framing
from hamacho.data.geometry import iter_tiles
from hamacho.errors import Interrupted
from hamacho.models.backbone import build_feature_extractor
from hamacho.models.coreset import chunked_coreset
from hamacho.models.coreset_stream import CoresetStream
from hamacho.models.lightning_module import AnomalyModule
from hamacho.models.patch_store import PatchStore
from hamacho.models.patchcore import PatchcoreModel
from hamacho.progress import RunControl


def _reference(points: torch.Tensor, projection: torch.Tensor | None, ratio: float, chunk: int,
               seed: int) -> torch.Tensor:
    """The bank before streaming: every row stored, one chunked selection at the end."""
    store = PatchStore(points.shape[1], projection, 1 << 30)
    store.add(points)
    count = max(1, math.ceil(ratio * points.shape[0]))
    return store.gather(chunked_coreset(store.projected(), count, seed, chunk))


@pytest.mark.parametrize(("adds", "ratio", "chunk", "budget"), [
    ([64] * 20, 0.1, 200, 1 << 30),  # several chunks, boundaries inside adds
    ([256, 256, 128], 0.25, 100, 1 << 30),  # adds larger than a chunk: several chunks completed by one add
    ([37, 91, 5, 64, 200, 3], 0.01, 150, 1 << 30),  # uneven adds, fewer centres than some chunks' share
    ([64] * 20, 0.1, 200, 40 * 24 * 4),  # every chunk beyond the budget: spilled to a temporary file
    ([64] * 20, 0.1, 0, 1 << 30),  # coreset_chunk 0: one selection at the end
    ([50] * 3, 0.5, 1000, 1 << 30),  # one chunk: nothing to stream
])
@pytest.mark.parametrize("projected", [True, False])
def test_streamed_bank_equals_the_selection_over_every_row(adds, ratio, chunk, budget, projected):
    g = torch.Generator().manual_seed(len(adds))
    points = torch.randn(sum(adds), 24, generator=g) * torch.rand(24, generator=g)  # anisotropic, like features
    projection = torch.randn(24, 8, generator=g) if projected else None
    stream = CoresetStream(24, projection, budget, ratio, chunk, seed=5)
    stream.expect(adds)
    start, most = 0, 0
    for size in adds:
        stream.add(points[start : start + size])
        start += size
        most = max(most, stream.count - stream._start)
    spilled = stream.spilled
    chunks = max(1, round(len(points) / chunk)) if chunk else 1
    assert stream.streaming == (chunks > 1)
    assert stream.selected_chunks == chunks - 1  # all but the last, left to finish
    if chunks > 1:  # the rows held: one chunk at most (a chunk is at most 1.5 x chunk rows)
        assert most <= math.ceil(len(points) / chunks) + 1
    assert spilled == (budget < 1 << 30 and projected)  # without a projection the rows are the points: kept
    bank = stream.finish()
    assert torch.equal(bank, _reference(points, projection, ratio, chunk, seed=5))


def test_rows_departing_from_the_announcement_still_give_a_bank():
    points = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))
    stream = CoresetStream(16, None, 1 << 30, 0.1, 200, seed=0)
    stream.expect([100] * 10)
    for start in range(0, 450, 100):  # 100, 100, 100, 100, then 50 instead of 100
        stream.add(points[start : min(start + 100, 450)])
    assert not stream.streaming and stream.selected_chunks == 2  # rows 0-400 were chunks 0 and 1
    stream.add(points[450:1000])
    bank = stream.finish()
    # chunks 0 and 1 (20 centres each) then a chunked selection of rows 400-1000 (60 centres)
    assert bank.shape == (100, 16)
    assert torch.equal(bank[:40], _reference(points[:400], None, 0.1, 200, seed=0))
    assert torch.equal(bank[40:], _reference(points[400:], None, 0.1, 200, seed=2))


def _model(**kwargs) -> PatchcoreModel:
    extractor = build_feature_extractor("resnet18", ["layer2", "layer3"], "none", seed=0)
    return PatchcoreModel(extractor, 64, seed=3, **{"coreset_ratio": 0.1, **kwargs})


def _images(n: int, side: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def _fit(model: PatchcoreModel, updates: list[torch.Tensor], announce: bool) -> PatchcoreModel:
    spilled = False
    with torch.no_grad():
        if announce:
            model.expect_updates([len(images) for images in updates])
        for images in updates:
            model.update(images)
            spilled |= model._stream.spilled
        streamed = model._stream.selected_chunks
        model.fit()
    model.streamed_chunks, model.spilled = streamed, spilled
    return model.eval()


def _updates(frames: torch.Tensor, framing: Framing) -> list[torch.Tensor]:
    """What AnomalyModule.training_step hands to model.update: batches of 4 frames, or their tiles 8 at a time."""
    updates = []
    for start in range(0, len(frames), 4):
        batch = frames[start : start + 4].numpy()
        if framing.tiled:
            updates += [torch.from_numpy(t) for t, _ in iter_tiles(batch, framing.origins(), framing.input_size, 8)]
        else:
            updates.append(torch.from_numpy(batch))
    return updates


@pytest.mark.parametrize(("tiled", "patch_sample", "budget_mb", "chunk"), [
    (False, 1.0, 4096, 200), (False, 0.5, 4096, 100), (True, 1.0, 4096, 500), (True, 1.0, 1, 1000),
    (True, 0.4, 4096, 200)])
def test_patchcore_bank_and_scores_are_the_same_streamed(tiled, patch_sample, budget_mb, chunk):
    """Untiled (14 images, 896 patches) and tiled (10 frames of 96 px cut into 4 tiles of 64 px, 2,560
    patches), with patch_sample, with chunks spilled to a temporary file (1 MB: 682 rows of 384 channels)."""
    framing = Framing((96, 96), (64, 64), stride=(32, 32)) if tiled else Framing.plain(64)
    frames = _images(10 if tiled else 14, 96 if tiled else 64)
    updates = _updates(frames, framing)
    sizes = AnomalyModule(_model(), framing=framing, tile_batch=8).update_sizes(len(frames), 4)
    assert sizes == [len(images) for images in updates]
    kwargs = {"patch_sample": patch_sample, "memory_budget_mb": budget_mb, "coreset_chunk": chunk}
    streamed = _fit(_model(**kwargs), updates, announce=True)
    before = _fit(_model(**kwargs), updates, announce=False)
    assert streamed.streamed_chunks >= 1 and before.streamed_chunks == 0
    # the chunks selected during the updates are fitting time, reported as such (hamacho.train._timings)
    assert streamed.fit_seconds_in_updates > 0 and before.fit_seconds_in_updates == 0
    assert streamed.spilled == before.spilled == (budget_mb == 1)
    assert torch.equal(streamed.memory_bank, before.memory_bank)
    test = _images(3, 64)
    with torch.no_grad():
        for a, b in zip(streamed.raw_scores(test), before.raw_scores(test), strict=True):
            assert torch.equal(a, b)


def test_a_stop_during_a_chunk_selection_in_feature_extraction_stops_it_and_deletes_the_spill():
    control = RunControl()
    model = _model(coreset_chunk=1000, memory_budget_mb=1, coreset_ratio=1.0)
    images = _images(4)  # 256 patches an update, 2048 in all: two chunks of 1024 rows, beyond 1 MB
    with control.phase("feature extraction", total=32) as phase, torch.no_grad():
        model.expect_updates([4] * 8, phase)
        for _ in range(3):
            model.update(images)
        path = model._stream._store._path
        assert model._stream.spilled and path.exists()
        control.request_stop()
        with pytest.raises(Interrupted, match="during feature extraction"):
            model.update(images)  # completes the first chunk: its selection sees the stop request
    assert not path.exists() and model._stream._bank == []


def test_selection_time_during_extraction_counts_as_model_fit():
    from hamacho.train import _timings

    phases = {"feature extraction": 10.0, "fit": 1.0, "test": 2.0}
    moved = _timings(phases, 4, 6.5)
    assert (moved["feature_extraction_seconds"], moved["model_fit_seconds"], moved["fit_seconds"]) == (3.5, 7.5, 11.0)
    assert _timings(phases, 4, 20.0)["feature_extraction_seconds"] == 0.0  # never below zero
    assert _timings(phases, 4)["model_fit_seconds"] == 1.0
