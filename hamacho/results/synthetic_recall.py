"""How many synthetic defects a threshold set on good images alone flags: an estimate of recall without real
defects (:mod:`hamacho.data.synthetic`), reported as such wherever it is shown."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from hamacho.data.decoding import ImageReadError, read_image
from hamacho.data.discovery import Sample
from hamacho.data.synthetic import KIND_NAMES, KINDS, synthetic_defect
from hamacho.predictor import Predictor


def synthetic_defect_sets(samples: Sequence[Sample], limit: int, seed: int) -> Iterator[list[np.ndarray]]:
    """One synthetic defect of each kind (in ``KINDS`` order) per good image, on up to ``limit`` of them.

    Args:
        samples: Candidate images; the good ones (label 0) are used, a seeded choice of ``limit`` of them.
        limit: Most good images to use.
        seed: Seed of the choice and of the defects.

    Yields:
        The defects of one readable good image (unreadable or tiny images are skipped).
    """
    goods = [s for s in samples if s.label == 0]
    if limit <= 0 or not goods:
        return
    rng = np.random.default_rng(seed)
    chosen = [goods[i] for i in sorted(rng.choice(len(goods), size=min(limit, len(goods)), replace=False))]
    for number, sample in enumerate(chosen):
        try:
            image = read_image(sample.path)
        except ImageReadError:
            continue
        if min(image.shape[:2]) < 16:
            continue
        yield [synthetic_defect(image, kind, seed * 1_000_003 + number * len(KINDS) + k)
               for k, kind in enumerate(KINDS)]


def synthetic_scores(predictor: Predictor, samples: Sequence[Sample], limit: int, seed: int,
                     step: Callable[[int], None] = lambda _n: None) -> np.ndarray:
    """Raw scores of synthetic defects (:func:`synthetic_defect_sets`), before any threshold: what method
    balanced places the threshold against. Unreadable results are left out.

    Returns:
        The raw scores, every kind together (empty without good images).
    """
    found: list[float] = []
    for defects in synthetic_defect_sets(samples, limit, seed):
        found += [p.raw_score for p in predictor.predict(defects) if not p.error]
        step(1)
    scores = np.asarray(found, dtype=np.float64)
    return scores[np.isfinite(scores)]


def synthetic_recall(predictor: Predictor, samples: Sequence[Sample], limit: int, seed: int,
                     step: Callable[[int], None] = lambda _n: None) -> dict[str, Any] | None:
    """Paste one defect of each kind on up to ``limit`` good images and count those scored NG at the cut 0.5.

    Args:
        predictor: The trained model, its threshold set.
        samples: Candidate images; the good ones (label 0) are used, a seeded choice of ``limit`` of them.
        limit: Most good images to use.
        seed: Seed of the choice and of the defects.
        step: Called with the number of images done after each (progress).

    Returns:
        ``{"images", "defects", "flagged", "by_kind": {kind: share}, "kinds"}`` (shares 0..1), or None without
        good images (or with ``limit`` 0).
    """
    flagged: dict[str, list[bool]] = {kind: [] for kind in KINDS}
    for defects in synthetic_defect_sets(samples, limit, seed):
        for kind, prediction in zip(KINDS, predictor.predict(defects)):
            flagged[kind].append(prediction.decision == "NG")
        step(1)
    used = len(flagged[KINDS[0]])
    if not used:
        return None
    every = [hit for hits in flagged.values() for hit in hits]
    return {"images": used, "defects": len(every), "flagged": float(np.mean(every)),
            "by_kind": {kind: float(np.mean(hits)) for kind, hits in flagged.items()},
            "kinds": dict(KIND_NAMES)}


def synthetic_recall_text(found: dict[str, Any]) -> str:
    """One line: ``flags about 83 % of 90 synthetic defects (...) on 30 good images: an estimate, not real ones``."""
    kinds = ", ".join(f"{found['kinds'].get(kind, kind)} {round(100 * share)} %"
                      for kind, share in found["by_kind"].items())
    return (f"flags about {round(100 * found['flagged'])} % of {found['defects']} synthetic defects ({kinds}) pasted on "
            f"{found['images']} held-out good image(s): an estimate of recall from synthetic defects, not real ones")
