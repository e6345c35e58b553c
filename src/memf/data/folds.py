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

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


# --- the fixed protocol: learning curves (docs/training.md, "Protocol", "Learning curves") ---------------------------

#: The ``fold`` column in the fixed protocol: a stream's role, the same in every run fold.
FIXED_ROLE: dict[str, int] = {"pool": 0, "val": 1, "test": 2}


def _order_key(seed: int, salt: str, stream_id: str) -> bytes:
    """A stream's place in a seeded order that does not depend on which other streams exist."""
    return hashlib.blake2b(f"{seed}:{salt}:{stream_id}".encode(), digest_size=8).digest()


def seeded_order(stream_ids: Sequence[str], seed: int, salt: str) -> np.ndarray:
    """Indices of ``stream_ids`` in the order of a seeded hash of each id (a random order that a stream keeps whatever
    else the dataset holds: a stream dropped downstream moves no other stream)."""
    keys = [_order_key(seed, salt, str(s)) for s in stream_ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


@dataclass(frozen=True)
class FoldPlan:
    """What the run folds of a dataset are (config ``split``; recorded in dataset.json and the padded store).

    ``kfold``: K folds, fold k tests the streams with fold id k (:func:`split_of`). ``fixed``: one validation set and
    one test set shared by every run fold, and per run fold a training subset of the remaining pool: run fold i is
    (``runs[i]`` = training size, replicate); a replicate's subsets are the first n streams of its own seeded order of
    the pool, so its sizes are nested, and replicates draw independent subsets.
    """

    k: int
    seed: int = 0
    mode: str = "kfold"
    validation: int = 0
    test: int = 0
    runs: tuple[tuple[int, int], ...] = ()  # fixed: (training streams, replicate) per run fold

    @classmethod
    def from_config(cls, split: Mapping[str, Any]) -> FoldPlan:
        """The plan of config ``split`` (``folds`` = 0: a dataset to predict, no folds)."""
        if split.get("mode", "kfold") == "kfold":
            return cls(int(split["folds"]), int(split["seed"]))
        sizes, reps = list(split["train_sizes"]), list(split["replicates"])
        runs = tuple((int(n), r) for n, k in zip(sizes, reps) for r in range(int(k)))
        return cls(len(runs), int(split["seed"]), "fixed", int(split["validation"]), int(split["test"]), runs)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FoldPlan:
        """The plan recorded by :meth:`record` (a record without ``mode`` is a K-fold one)."""
        if record.get("mode", "kfold") == "kfold":
            return cls(int(record["k"]), int(record.get("seed", 0)))
        return cls(int(record["k"]), int(record["seed"]), "fixed", int(record["validation"]), int(record["test"]),
                   tuple((int(n), int(r)) for n, r in record["runs"]))

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"k": self.k, "seed": self.seed, "mode": self.mode}
        if self.mode == "fixed":
            out.update(validation=self.validation, test=self.test, runs=[list(run) for run in self.runs])
        return out

    @property
    def fixed(self) -> bool:
        return self.mode == "fixed"

    def assign(self, stream_ids: Sequence[str]) -> np.ndarray:
        """[n] fold column of the fixed protocol (:data:`FIXED_ROLE`): the first ``test`` streams of the seeded order
        test, the next ``validation`` validate, the rest are the training pool.

        Raises:
            ValueError: the pool is smaller than the largest training size.
        """
        n, largest = len(stream_ids), max(size for size, _ in self.runs)
        if n - self.test - self.validation < largest:
            raise ValueError(f"split.train_sizes: the largest, {largest}, needs {largest + self.test + self.validation} "
                             f"streams with split.test = {self.test} and split.validation = {self.validation}; the "
                             f"dataset has {n}")
        order = seeded_order(stream_ids, self.seed, "roles")
        role = np.full(n, FIXED_ROLE["pool"], dtype=np.int64)
        role[order[: self.test]] = FIXED_ROLE["test"]
        role[order[self.test : self.test + self.validation]] = FIXED_ROLE["val"]
        return role

    def split(self, fold_id: np.ndarray, fold: int, stream_ids: Sequence[str] | None = None) -> np.ndarray:
        """[n] int8 split code (:data:`SPLIT_CODE`) of each stream in run fold ``fold``; streams of the pool outside
        the fold's training subset get -1 (in no split). ``stream_ids`` are needed by the fixed protocol only."""
        if not self.fixed:
            return split_of(fold_id, fold, self.k)
        if not 0 <= fold < self.k:
            raise ValueError(f"fold {fold} is outside 0..{self.k - 1}")
        if stream_ids is None:
            raise ValueError("the fixed protocol's split needs the stream ids")
        fold_id = np.asarray(fold_id)
        out = np.full(fold_id.shape, -1, dtype=np.int8)
        out[fold_id == FIXED_ROLE["val"]] = SPLIT_CODE["val"]
        out[fold_id == FIXED_ROLE["test"]] = SPLIT_CODE["test"]
        size, replicate = self.runs[fold]
        pool = np.flatnonzero(fold_id == FIXED_ROLE["pool"])
        chosen = pool[seeded_order([stream_ids[i] for i in pool], self.seed, f"replicate{replicate}")[:size]]
        out[chosen] = SPLIT_CODE["train"]
        return out
