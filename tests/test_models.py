"""Model building blocks: blur, Gaussians, coreset, nearest neighbours, batch independence."""

import itertools
import math

import pytest
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from hamacho.models.anomaly_map import blur_matrix, gaussian_kernel_size
from hamacho.models.backbone import build_feature_extractor
from hamacho.models.bank_index import MemoryBankIndex
from hamacho.models.coreset import chunked_coreset, greedy_coreset
from hamacho.models.gaussian import PositionGaussians
from hamacho.models.knn import nearest_neighbors
from hamacho.models.padim import PadimModel
from hamacho.models.patch_store import PatchStore
from hamacho.models.patchcore import PatchcoreModel
from tests.float_bounds import LAMBDA, UNIT_ROUNDOFF, reorder_tolerance


@pytest.mark.parametrize(("size", "sigma"), [(64, 4.0), (32, 4.0), (96, 1.5)])
def test_blur_matrix_equals_torchvision_gaussian_blur(size, sigma):
    x = torch.rand(3, 1, size, size, generator=torch.Generator().manual_seed(1))
    k = gaussian_kernel_size(sigma)
    reference = gaussian_blur(x, [k, k], [sigma, sigma])
    matrix = blur_matrix(size, sigma)
    assert torch.allclose(matrix @ x @ matrix.T, reference, atol=1e-5)


def test_running_gaussians_equal_batch_statistics_whatever_the_batches():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(23, 5, 2, 3, generator=g) * 3 + 7  # (N, C, h, w)
    fitted = []
    for sizes in ([23], [1] * 23, [10, 7, 6]):
        gauss = PositionGaussians(6, 5, epsilon=0.01)
        start = 0
        for n in sizes:
            gauss.update(data[start : start + n])
            start += n
        gauss.finalize()
        fitted.append(gauss)
    flat = data.flatten(2).permute(2, 0, 1)  # (P, N, C)
    for p in range(6):
        cov = torch.cov(flat[p].T.double()) + 0.01 * torch.eye(5, dtype=torch.float64)
        for gauss in fitted:
            assert torch.allclose(gauss.mean[p].double(), flat[p].double().mean(0), atol=1e-4)
            assert torch.allclose(gauss.inv_covariance[p].double(), torch.linalg.inv(cov), rtol=1e-3, atol=1e-4)
    # Mahalanobis distance against a direct computation.
    x = torch.randn(2, 5, 2, 3, generator=g)
    d = fitted[0].mahalanobis(x)
    delta = x.flatten(2)[0, :, 0].double() - flat[0].double().mean(0)
    cov = torch.cov(flat[0].T.double()) + 0.01 * torch.eye(5, dtype=torch.float64)
    assert d[0, 0].item() == pytest.approx(math.sqrt(delta @ torch.linalg.inv(cov) @ delta), rel=1e-3)


def _naive_greedy(points, count, first):
    """Plain greedy k-center in float64: every distance recomputed at every step."""
    points = points.double()
    chosen = [first]
    dist = (points - points[first]).norm(dim=1)
    for _ in range(count - 1):
        new = int(torch.argmax(dist))
        chosen.append(new)
        dist = torch.minimum(dist, (points - points[new]).norm(dim=1))
    return chosen


def test_coreset_count_distinct_and_first_centre_included():
    points = torch.randn(500, 8, generator=torch.Generator().manual_seed(3))
    chosen = greedy_coreset(points, 50, seed=7)
    assert chosen.shape == (50,)
    assert len(set(chosen.tolist())) == 50
    first = int(torch.randint(500, (1,), generator=torch.Generator().manual_seed(7)))
    assert chosen[0].item() == first


def test_coreset_matches_plain_greedy_selection():
    points = torch.randn(400, 16, generator=torch.Generator().manual_seed(5))
    chosen = greedy_coreset(points, 40, seed=2)
    assert chosen.tolist() == _naive_greedy(points, 40, chosen[0].item())


def test_coreset_of_duplicates_stays_distinct():
    # 5 distinct points, each repeated 4 times: once all are covered, the rest are distinct unchosen indices.
    points = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).repeat(4, 1)
    chosen = greedy_coreset(points, 12, seed=0)
    assert len(set(chosen.tolist())) == 12
    assert len({tuple(points[i].tolist()) for i in chosen[:5].tolist()}) == 5  # the first 5 cover every point


def test_coreset_matches_plain_greedy_on_clustered_points():
    g = torch.Generator().manual_seed(8)
    centres = torch.randn(20, 32, generator=g) * 5
    points = torch.cat([c + torch.randn(60, 32, generator=g) * 0.3 for c in centres])
    chosen = greedy_coreset(points, 150, seed=4)
    assert chosen.tolist() == _naive_greedy(points, 150, chosen[0].item())


@pytest.mark.parametrize(("n", "count", "chunk"), [(1000, 100, 300), (1000, 7, 100), (1001, 1001, 250), (90, 9, 0)])
def test_chunked_coreset_is_each_chunks_greedy_selection(n, count, chunk):
    """Consecutive chunks of about ``chunk`` rows each keep their share (largest remainders, at least one
    while centres last) by their own exact greedy selection, seeded seed + chunk number."""
    points = torch.randn(n, 6, generator=torch.Generator().manual_seed(n + count))
    chosen = chunked_coreset(points, count, seed=3, chunk=chunk).tolist()
    assert len(chosen) == count and len(set(chosen)) == count
    chunks = max(1, round(n / chunk)) if chunk else 1
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    position = 0
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        mine = [i for i in chosen if start <= i < end]
        assert abs(len(mine) - (end - start) * count / n) < 1 + 1e-9  # its share, rounded either way
        assert chosen[position : position + len(mine)] == mine  # chunk after chunk
        position += len(mine)
        if mine:
            assert [i - start for i in mine] == greedy_coreset(points[start:end], len(mine), seed=3 + number).tolist()


def test_coreset_covers_better_than_random():
    g = torch.Generator().manual_seed(11)
    # Clustered toy cloud: random picks miss the small clusters, k-center does not.
    centres = torch.randn(12, 2, generator=g) * 10
    sizes = [300] + [10] * 11
    cloud = torch.cat([centres[i] + torch.randn(n, 2, generator=g) * 0.5 for i, n in enumerate(sizes)])
    k = 24
    coreset = greedy_coreset(cloud, k, seed=0)
    random_pick = torch.randperm(cloud.shape[0], generator=g)[:k]

    def coverage(idx):  # largest distance from any point to its nearest chosen point
        return torch.cdist(cloud, cloud[idx]).min(dim=1).values.max().item()

    assert coverage(coreset) < coverage(random_pick)


@pytest.mark.parametrize("k", [1, 3])
def test_knn_equals_cdist_reference_in_any_chunking(k):
    g = torch.Generator().manual_seed(4)
    bank, queries = torch.randn(300, 24, generator=g), torch.randn(70, 24, generator=g)
    ref = torch.cdist(queries.double(), bank.double())
    ref_d, ref_i = ref.topk(k, dim=1, largest=False)
    for max_elements in (1 << 24, 300 * 7, 1):
        d, i = nearest_neighbors(queries, bank, k, max_elements=max_elements)
        # distances are norms of differences: 24 positive terms, within LAMBDA sqrt(24) u relative (float_bounds)
        assert torch.allclose(d.double(), ref_d, rtol=LAMBDA * 24**0.5 * UNIT_ROUNDOFF, atol=0)
        assert torch.equal(i, ref_i)


def test_patch_store_spills_to_disk_with_identical_gather(tmp_path):
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(50, 16, generator=g) for _ in range(4)]
    projection = torch.randn(16, 4, generator=g)
    in_memory, spilled = PatchStore(16, projection, 1 << 30), PatchStore(16, projection, 60 * 16 * 4)
    for block in blocks:
        in_memory.add(block)
        spilled.add(block)
    assert spilled.spilled and not in_memory.spilled
    idx = torch.tensor([199, 0, 77, 120, 51])
    assert torch.equal(spilled.gather(idx), torch.cat(blocks)[idx])
    assert torch.equal(in_memory.gather(idx), torch.cat(blocks)[idx])
    assert torch.allclose(spilled.projected(), torch.cat(blocks) @ projection)
    path = spilled._path
    spilled.close()
    assert not path.exists()


def _images(n, size=64, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _fitted(model, train):
    with torch.no_grad():
        for start in range(0, len(train), 4):
            model.update(train[start : start + 4])
        model.fit()
    return model.eval()


@pytest.mark.parametrize("name", ["padim", "patchcore"])
def test_scores_do_not_depend_on_batch_size(name):
    layers = ["layer1", "layer2", "layer3"] if name == "padim" else ["layer2", "layer3"]
    extractor = build_feature_extractor("resnet18", layers, "none", seed=0)
    if name == "padim":
        model = PadimModel(extractor, 64, None, seed=0)
    else:
        model = PatchcoreModel(extractor, 64, seed=0, coreset_ratio=0.25)
    model = _fitted(model, _images(8))
    test = _images(8, seed=1)
    with torch.no_grad():
        maps8, scores8 = model.raw_scores(test)
        singles = [model.raw_scores(test[i : i + 1]) for i in range(8)]
    maps1 = torch.cat([m for m, _ in singles])
    scores1 = torch.cat([s for _, s in singles])
    rtol = reorder_tolerance(model, float(scores8.max()), float(maps8.max())).raw_rtol  # tests/float_bounds.py
    assert torch.allclose(scores1, scores8, rtol=rtol, atol=0)
    assert torch.allclose(maps1, maps8, rtol=0, atol=rtol * float(maps8.abs().max()))


def test_patchcore_memory_bank_size_and_budget_spill_give_same_bank():
    extractor = build_feature_extractor("resnet18", ["layer2", "layer3"], "none", seed=0)
    train = _images(6)
    a = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=0.1), train)
    b = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=0.1, memory_budget_mb=1), train)
    patches = 6 * 8 * 8  # layer2 of a 64 px image is 8x8
    assert a.memory_bank.shape == (math.ceil(0.1 * patches), 384)
    assert torch.equal(a.memory_bank, b.memory_bank)


def test_patchcore_patch_sample_keeps_a_seeded_share_of_each_batch():
    extractor = build_feature_extractor("resnet18", ["layer2", "layer3"], "none", seed=0)
    train = _images(6)
    full = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=1.0), train)
    half = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=1.0, patch_sample=0.5), train)
    again = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=1.0, patch_sample=0.5), train)
    other = _fitted(PatchcoreModel(extractor, 64, seed=1, coreset_ratio=1.0, patch_sample=0.5), train)
    # batches of 4 and 2 images, 64 patches each: half of 256 and of 128
    assert full.memory_bank.shape[0] == 6 * 64 and half.memory_bank.shape[0] == 128 + 64
    assert torch.equal(half.memory_bank, again.memory_bank)  # the seed decides which patches
    assert not torch.equal(half.memory_bank, other.memory_bank)
    kept = {tuple(row.tolist()) for row in half.memory_bank}
    assert kept <= {tuple(row.tolist()) for row in full.memory_bank}  # a subset of the real patches


def test_tiled_patchcore_keeps_six_tiles_worth_of_patches_unless_told():
    from hamacho.config import build_config
    from hamacho.models.padim import PadimParams
    from hamacho.models.patchcore import PatchcoreParams

    assert PatchcoreParams().for_tiles(25).patch_sample == pytest.approx(0.24)
    assert PatchcoreParams().for_tiles(4).patch_sample == 1.0
    assert PatchcoreParams(patch_sample=0.5).for_tiles(25).patch_sample == 0.5
    assert PadimParams().for_tiles(25) == PadimParams()
    from hamacho.models.factory import build_model

    settings = build_config("patchcore", overrides=[
        "model.backbone=resnet18", "model.backbone_weights=none", "dataset.tiling.tile_size=64",
        "dataset.tiling.stride=32", "dataset.tiling.resize=[128,160]"])
    assert build_model(settings).patch_sample == pytest.approx(6 / (3 * 4))  # 3 x 4 tiles per image
    assert settings.model.patch_sample is None  # the setting itself stays as given


def test_patchcore_image_score_reweighting_matches_the_paper():
    extractor = build_feature_extractor("resnet18", ["layer2", "layer3"], "none", seed=0)
    model = _fitted(PatchcoreModel(extractor, 64, seed=0, coreset_ratio=0.2, num_neighbors=3), _images(4))
    with torch.no_grad():
        x = _images(1, seed=9)
        _, score = model.raw_scores(x)
        patches = model._patches(model.embed(x))
        dist = torch.cdist(patches, model.memory_bank)
        nn_dist, nn_idx = dist.min(dim=1)
        worst = int(nn_dist.argmax())
        star = model.memory_bank[nn_idx[worst]]
        support = torch.cdist(star[None], model.memory_bank)[0].topk(3, largest=False).indices
        d = torch.linalg.vector_norm(patches[worst] - model.memory_bank[support], dim=1)
        expected = (1 - torch.exp(d[0]) / torch.exp(d).sum()) * nn_dist[worst]
    assert score.item() == pytest.approx(expected.item(), rel=1e-4)


@pytest.mark.parametrize("structure", ["low_rank", "isotropic", "tiny_bank"])
@pytest.mark.parametrize("pruning_dim", [0, 4, 16])
def test_pruned_bank_search_is_exact(structure, pruning_dim):
    g = torch.Generator().manual_seed(8)
    if structure == "low_rank":  # like CNN features: most variance in few directions, large norms
        basis = torch.randn(6, 48, generator=g)
        bank = torch.randn(500, 6, generator=g) @ basis * 5 + torch.randn(500, 48, generator=g) * 0.1 + 40
        queries = torch.randn(90, 6, generator=g) @ basis * 5 + torch.randn(90, 48, generator=g) * 0.1 + 40
    elif structure == "isotropic":  # bounds are loose: most queries need the fallback
        bank, queries = torch.randn(500, 48, generator=g), torch.randn(90, 48, generator=g)
    else:
        bank, queries = torch.randn(5, 48, generator=g), torch.randn(9, 48, generator=g)
    index = MemoryBankIndex(48, pruning_dim)
    index.build(bank)
    reference = torch.cdist(queries.double(), bank.double()).min(dim=1)
    for block in (1 << 22, 500 * 3):
        distances, indices = index.search(queries, max_elements=block)
        assert torch.equal(indices, reference.indices)
        assert torch.allclose(distances.double(), reference.values, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["PASSIVE", "ACTIVE", None])
def test_the_pruned_search_runs_on_one_thread_only_when_threads_wait_passively(monkeypatch, policy):
    from hamacho.models import bank_index

    g = torch.Generator().manual_seed(3)
    index = MemoryBankIndex(24, 4)
    index.build(torch.randn(300, 24, generator=g))
    queries = torch.randn(40, 24, generator=g)
    seen = []
    chunk = bank_index.MemoryBankIndex._search_chunk
    monkeypatch.setattr(bank_index.MemoryBankIndex, "_search_chunk",
                        lambda self, *a: seen.append(torch.get_num_threads()) or chunk(self, *a))
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, indices = index.search(queries)
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1 if policy == "PASSIVE" else 2}
    assert torch.equal(indices, torch.cdist(queries.double(), index.bank.double()).min(dim=1).indices)


def test_bank_index_state_round_trip():
    bank = torch.randn(200, 12, generator=torch.Generator().manual_seed(2))
    index = MemoryBankIndex(12, 4)
    index.build(bank)
    restored = MemoryBankIndex(12, 4)
    restored.load_state_dict(index.state_dict())
    queries = torch.randn(10, 12)
    assert torch.equal(restored.search(queries)[1], index.search(queries)[1])
    assert restored.projected.shape == (200, 4)


def test_a_fold_taken_out_of_the_gaussians_equals_fitting_without_it():
    from hamacho.results.out_of_fold import deal_folds

    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(4, 6, 3, 3, generator=g) * 2 + 1 for _ in range(5)]  # 20 embeddings, 9 positions
    everything = PositionGaussians(9, 6)
    for batch in batches:
        everything.update(batch)
    fold = PositionGaussians(9, 6)  # what a fit on every batch but the second gives
    for batch in batches[:1] + batches[2:]:
        fold.update(batch)
    fold.finalize()
    taken = everything.without([batches[1]])
    assert not everything.fitted and taken.fitted and int(taken.count) == 16
    assert torch.allclose(taken.mean, fold.mean, atol=1e-5)
    assert torch.allclose(taken.inv_covariance, fold.inv_covariance, rtol=1e-3, atol=1e-4)
    probe = torch.randn(2, 6, 3, 3, generator=g)
    assert torch.allclose(taken.mahalanobis(probe), fold.mahalanobis(probe), rtol=1e-4)
    with pytest.raises(RuntimeError, match="leaves no embeddings"):
        everything.without(batches)
    # folds: a seeded partition of every index, near-equal sizes
    folds = deal_folds(23, 5, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(23)) and {len(f) for f in folds} == {4, 5}
    assert folds == deal_folds(23, 5, seed=0) != deal_folds(23, 5, seed=1)
