"""The padded store (memf.padding.store) and its batches (memf.padding.batches): the ragged layout round trip, batches
padded to their own longest lists, float16 storage, refused files, the block cache and read-ahead, the epoch order,
and that a trained model predicts the same from the store as from the dense padded arrays of the old layout."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch

from memf.core.io import DataError
from memf.data.folds import FoldPlan
from memf.models import build_model
from memf.padding import batches as batches_module
from memf.padding.batches import BatchReader, BlockCache
from memf.padding.padded import SETS, RaggedBlock
from memf.padding.store import FORMAT, PaddedStore, read_padded, write_padded
from memf.training.loop import epoch_order, predict, train_model
from memf.training.settings import TrainConfig
from train_support import tiny_builder, tiny_fold, tiny_padded

torch.set_num_threads(1)


def _cut(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Dense arrays of ``rows`` cut to the rows' own longest item and clip lists (the old layout, cut)."""
    out = {}
    for key, value in arrays.items():
        entity = key.partition("/")[0]
        if entity in SETS:
            width = max(1, int(arrays[SETS[entity][0]][rows].sum(axis=1).max()))
            out[key] = value[rows][:, :width]
        else:
            out[key] = value[rows]
    return out


def test_a_store_round_trips_and_keeps_only_real_items_and_clips(tmp_path):
    padded = tiny_padded(50)
    padded.attrs = {"feature_set": "demo", "fields": {"anchor": {"text": ["a", "b"]}}}
    write_padded(tmp_path / "s.h5", padded)
    again = read_padded(tmp_path / "s.h5")
    assert again.stream_id.tolist() == padded.stream_id.tolist() and again.folds == 5
    np.testing.assert_array_equal(again.fold, padded.fold)
    np.testing.assert_array_equal(again.target, padded.target)
    for key, value in padded.arrays.items():
        np.testing.assert_array_equal(again.arrays[key], value, err_msg=key)
    assert again.attrs["feature_set"] == "demo" and again.attrs["fields"] == padded.attrs["fields"]
    with PaddedStore(tmp_path / "s.h5") as store:
        for entity, (mask_key, keys) in SETS.items():
            counts = padded.arrays[mask_key].sum(axis=1)
            np.testing.assert_array_equal(np.diff(store.offsets[entity]), counts)
            for key in keys:  # one stored row per real object
                assert h5py.File(tmp_path / "s.h5")[key].shape[0] == counts.sum()
        assert store.dims() == padded.dims() and store.axes == {"commodity": 3, "video": 2, "audio": 2}


def test_batches_are_padded_to_their_own_longest_lists_and_equal_the_dense_arrays_cut(tmp_path):
    padded = tiny_padded(60)
    write_padded(tmp_path / "s.h5", padded)
    rng = np.random.default_rng(0)
    with PaddedStore(tmp_path / "s.h5") as store:
        shorter = 0
        for size in (1, 1, 2, 2, 3, 5, 17, 60):
            rows = np.sort(rng.choice(60, size=size, replace=False))
            batch = store.read(rows).padded()
            expected = _cut(padded.arrays, rows)
            assert batch.keys() == expected.keys()
            for key, value in expected.items():
                assert batch[key].dtype == value.dtype
                np.testing.assert_array_equal(batch[key], value, err_msg=f"{key} of {size} rows")
            shorter += any(batch[m].shape[1] < store.dims()[m][0] for m in ("commodity/mask", "video/mask"))
        assert shorter  # some batches are shorter than the store's longest lists
        # read() cuts a sparse selection into spans; the result is the same as from one contiguous read
        rows = np.array([0, 3, 4, 40, 59])
        block = store.read(rows)
        whole = store.read_range(0, 60).take(rows)
        for key in (*block.fixed, *block.objects):
            got = block.fixed.get(key, block.objects.get(key))
            np.testing.assert_array_equal(got, whole.fixed.get(key, whole.objects.get(key)))


def test_float16_storage_round_trips_at_half_precision(tmp_path):
    padded = tiny_padded(30)
    write_padded(tmp_path / "half.h5", padded, "float16")
    write_padded(tmp_path / "full.h5", padded)
    with PaddedStore(tmp_path / "half.h5") as half, PaddedStore(tmp_path / "full.h5") as full:
        assert half.dtype == "float16" and full.dtype == "float32"
        assert half.row_bytes(np.arange(30)) < 0.6 * full.row_bytes(np.arange(30))
    again = read_padded(tmp_path / "half.h5")
    for key, value in padded.arrays.items():
        if key.endswith("/numeric") or key.endswith("/mask"):
            np.testing.assert_array_equal(again.arrays[key], value)
        else:
            np.testing.assert_array_equal(again.arrays[key], value.astype(np.float16).astype(np.float32))
            assert np.abs(again.arrays[key] - value).max() <= 2e-3 * np.abs(value).max()
    with pytest.raises(ValueError, match=r"config key 'padding.dtype': 'float64'; expected one of float32, float16"):
        write_padded(tmp_path / "bad.h5", padded, "float64")


def test_old_corrupt_and_damaged_stores_are_refused_in_one_line(tmp_path):
    padded = tiny_padded(10)
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as h5:  # the dense layout of format 1: no format attribute
        h5.create_dataset("stream_id", data=padded.stream_id.astype(object), dtype=h5py.string_dtype("utf-8"))
        for key, value in padded.arrays.items():
            h5.create_dataset(key, data=value)
        h5.attrs["folds"] = 5
    with pytest.raises(DataError, match=rf"old.h5: padded store format None, this memf reads format {FORMAT} "
                                        r"\(ragged items and clips\); run the pad rule again$"):
        PaddedStore(old)
    write_padded(tmp_path / "s.h5", padded)
    cut = tmp_path / "cut.h5"
    cut.write_bytes((tmp_path / "s.h5").read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cut.h5: not a readable padded store") as caught:
        PaddedStore(cut)
    assert "\n" not in str(caught.value)
    with h5py.File(tmp_path / "s.h5", "a") as h5:
        h5["video/offsets"][-1] = 999
    with pytest.raises(DataError, match=r"'video' offsets end at 999 .* the store is damaged, run the pad rule"):
        PaddedStore(tmp_path / "s.h5")


def test_the_cache_keeps_blocks_within_its_budget_and_never_changes_a_batch(tmp_path):
    padded = tiny_padded(100)
    write_padded(tmp_path / "s.h5", padded)
    rows = np.flatnonzero(padded.fold != 0)
    order = np.random.default_rng(1).permutation(len(rows))
    with PaddedStore(tmp_path / "s.h5") as store:
        block_bytes = store.read(rows[:16]).nbytes
        runs = {}
        for budget in (0.0, 2.5 * block_bytes / 2**20, 100.0):
            cache = BlockCache(budget)
            reader = BatchReader(store, rows, block_rows=16, cache=cache)
            runs[budget] = [(p, b) for p, b in reader.batches(7, order)]
            assert cache.used <= cache.budget
            if budget == 100.0:
                assert len(cache._blocks) == -(-len(rows) // 16)  # everything fits
            elif budget > 0:
                assert len(cache._blocks) == 2  # the first two blocks stay; nothing is evicted
        first = runs[0.0]
        for other in runs.values():
            assert len(other) == len(first)
            for (p, a), (q, b) in zip(first, other, strict=True):
                np.testing.assert_array_equal(p, q)
                for key in a:
                    np.testing.assert_array_equal(a[key], b[key])
        # each batch holds the streams of its positions, in that order
        for positions, batch in first[:3]:
            expected = _cut(padded.arrays, rows[positions])
            for key, value in expected.items():
                np.testing.assert_array_equal(batch[key], value)
    with pytest.raises(ValueError, match=r"config key 'train.cache_mb': -1; expected a number >= 0"):
        BlockCache(-1)


def test_the_epoch_order_is_randperm_when_whole_and_blocks_then_streams_when_blocked():
    gen = torch.Generator().manual_seed(3)
    np.testing.assert_array_equal(epoch_order(50, 50, gen), torch.randperm(50, generator=torch.Generator()
                                                                           .manual_seed(3)).numpy())
    order = epoch_order(50, 16, torch.Generator().manual_seed(3))
    assert sorted(order.tolist()) == list(range(50))
    blocks = order // 16
    # every block's streams are consecutive in the order (a batch draws from one block, or two at a boundary)
    assert (np.diff(blocks) != 0).sum() == len(set(blocks.tolist())) - 1
    again = epoch_order(50, 16, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(order, again)
    assert not np.array_equal(order, epoch_order(50, 16, torch.Generator().manual_seed(4)))


def test_a_large_training_part_is_shuffled_by_blocks_and_trains(tmp_path, monkeypatch):
    padded = tiny_padded(120)
    data = tiny_fold(padded, tmp_path / "s.h5")
    cfg = TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "device": "cpu", "patience": 3})
    seen = []
    original = BatchReader.batches

    def record(self, batch_size, order=None):
        seen.append(self.block_rows)
        return original(self, batch_size, order)

    monkeypatch.setattr(BatchReader, "batches", record)
    torch.manual_seed(0)
    whole = train_model(tiny_builder("tiny", data.dims()), data, cfg, 0, "cpu")
    assert seen[0] == len(data.rows["train"])  # the demo's sizes: read as one block, shuffled by torch.randperm
    monkeypatch.setattr(batches_module, "WHOLE_SHUFFLE_BYTES", 1000)
    monkeypatch.setattr(batches_module, "BLOCK_ROWS", 16)
    seen.clear()
    torch.manual_seed(0)
    blocked = train_model(tiny_builder("tiny", data.dims()), data, cfg, 0, "cpu")
    assert seen[0] == 16 and blocked.epochs_run == 3 and np.isfinite(blocked.history[-1]["val_mse"])
    assert blocked.history[0]["train_loss"] != whole.history[0]["train_loss"]  # another order, same data


@pytest.mark.parametrize("name", ["tiny", "memf"])
def test_a_trained_model_predicts_the_same_from_the_store_as_from_the_dense_arrays(tmp_path, name):
    """The old layout fed every batch padded to the dataset's longest lists; the store pads each to its own."""
    padded = tiny_padded(90)
    data = tiny_fold(padded, tmp_path / "s.h5")
    torch.manual_seed(0)
    model = tiny_builder("tiny", data.dims()) if name == "tiny" else \
        build_model("memf", data.dims(), width=16, heads=2, layers=1, dropout=0.1)
    result = train_model(model, data, TrainConfig.from_dict({"epochs": 3, "batch_size": 16, "device": "cpu"}), 0,
                         "cpu")
    rows = np.arange(90)
    new, _ = predict(model, data, rows, "cpu", 8, result.target_mean, result.target_sd)
    dense = data.scaler.apply(padded.arrays)  # every stream padded to the longest lists, as before
    model.eval()
    with torch.no_grad():
        old = np.concatenate([model({k: torch.from_numpy(v[i : i + 8]) for k, v in dense.items()}).pred.numpy()
                              for i in range(0, 90, 8)]) * result.target_sd + result.target_mean
    assert np.abs(new - old).max() <= 1e-5


def test_the_data_digest_follows_the_file_and_the_fold(tmp_path):
    padded = tiny_padded(40)
    a = tiny_fold(padded, tmp_path / "a.h5", 0)
    assert a.digest == tiny_fold(padded, tmp_path / "b.h5", 0).digest  # the same bytes, hashed as a stream
    assert a.digest != tiny_fold(padded, tmp_path / "c.h5", 1).digest
    padded.arrays["video/x"][0, 0, 0] += 1.0
    assert a.digest != tiny_fold(padded, tmp_path / "d.h5", 0).digest


def test_a_ragged_block_takes_and_concatenates_streams():
    padded = tiny_padded(12)
    block = RaggedBlock.from_padded(padded)
    picked = block.take([5, 0, 5])
    assert picked.stream_id.tolist() == [padded.stream_id[5], padded.stream_id[0], padded.stream_id[5]]
    joined = RaggedBlock.concat([block.take([5]), block.take([0]), block.take([5])])
    for key in picked.objects:
        np.testing.assert_array_equal(joined.objects[key], picked.objects[key])
    for entity in SETS:
        np.testing.assert_array_equal(joined.offsets[entity], picked.offsets[entity])


def test_a_fixed_protocol_store_with_one_run_fold_trains_and_a_one_fold_k_fold_store_is_refused(tmp_path):
    """One training size and one replicate (the learning curves' point on extracted features) is one run fold."""
    padded = tiny_padded(n=60, folds=1)
    plan = FoldPlan(1, 0, "fixed", validation=10, test=20, runs=((25, 0),))
    fixed = dataclasses.replace(padded, fold=plan.assign(padded.stream_id.tolist()).astype(np.int8),
                                attrs={"split": plan.record()})
    data = tiny_fold(fixed, tmp_path / "fixed.h5")
    assert {split: len(rows) for split, rows in data.rows.items()} == {"train": 25, "val": 10, "test": 20}
    with pytest.raises(DataError, match="1 folds; a dataset without folds cannot be trained on"):
        tiny_fold(dataclasses.replace(padded, fold=np.zeros(60, dtype=np.int8)), tmp_path / "kfold.h5")
