"""Cross-validation folds over streams (docs/training.md, "Protocol").

Every kept stream gets one fold id in ``0 .. K-1``: the fold whose **test** part it belongs to. Fold ``k`` of a run
then reads:

- test: the streams with fold id ``k`` (1/K of the streams, each stream a test stream exactly once);
- validation: the streams with fold id ``(k + 1) mod K``, carved from fold ``k``'s training part;
- train: every other stream.

Random folds cut one seeded permutation of the streams (sorted by id first, so the input row order does not matter)
into K consecutive parts at ``round(i * n / K)``. With K = 5, fold 0's test part is the first ``round(0.2 n)`` streams
of that permutation: exactly the paper's 80/20 train/test split, so the paper's protocol stays reproducible as fold 0.

Grouped folds (``group_by: anchor``) keep every anchor's streams in one fold (scikit-learn's shuffled
``GroupKFold``), so no anchor is shared by the training, validation and test parts of any fold. A random split
answers "a known anchor's next stream"; a grouped one answers "a new anchor". Anchors recur across streams, so the
random split lets a model learn an anchor's level from its training streams and meet the same anchor at test time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_CODE: dict[str, int] = {name: code for code, name in enumerate(SPLITS)}
GROUP_BY: tuple[str, ...] = ("anchor",)


def assign_folds(
    stream_ids: Sequence[str], anchor_ids: Sequence[str], *, folds: int, seed: int, group_by: str | None = None
) -> np.ndarray:
    """[n] int fold id of each stream (the fold whose test part it is in), in the order given.

    Raises:
        ValueError: fewer than 2 folds, fewer streams (or anchors, when grouped) than folds, or an unknown group_by.
    """
    n = len(stream_ids)
    if folds < 2:
        raise ValueError(f"split.folds is {folds}, expected at least 2 (each fold needs a test and a validation part)")
    if len(anchor_ids) != n:
        raise ValueError(f"assign_folds: {n} stream ids but {len(anchor_ids)} anchor ids")
    order = np.argsort(np.asarray(stream_ids, dtype=object).astype(str), kind="stable")  # id order, not input order
    fold = np.empty(n, dtype=np.int64)
    if group_by is None:
        if n < folds:
            raise ValueError(f"split.folds is {folds} but there are only {n} streams")
        perm = np.random.default_rng(seed).permutation(n)
        bounds = [round(i * n / folds) for i in range(folds + 1)]
        for k in range(folds):
            fold[order[perm[bounds[k] : bounds[k + 1]]]] = k
        return fold
    if group_by not in GROUP_BY:
        raise ValueError(f"split.group_by is '{group_by}', expected null or one of {', '.join(GROUP_BY)}")
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(anchor_ids, dtype=object).astype(str)[order]
    if len(set(groups)) < folds:
        raise ValueError(f"split.group_by: anchor: {len(set(groups))} anchors, fewer than split.folds = {folds}")
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(n), groups=groups)):
        fold[order[test]] = k
    return fold


def split_of(fold_id: np.ndarray, fold: int, folds: int) -> np.ndarray:
    """[n] int8 split code (:data:`SPLIT_CODE`) of each stream in run fold ``fold`` of ``folds``."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is outside 0..{folds - 1}")
    fold_id = np.asarray(fold_id)
    out = np.full(fold_id.shape, SPLIT_CODE["train"], dtype=np.int8)
    out[fold_id == (fold + 1) % folds] = SPLIT_CODE["val"]
    out[fold_id == fold] = SPLIT_CODE["test"]
    return out
