"""Mini-batches read from a padded store (docs/training.md, "Batches"): a selection of stream rows is cut into blocks of
consecutive rows; a batch gathers its streams from the blocks that hold them and is padded to its own longest item
and clip lists. Blocks are read from the file when first needed, the next batch's block is read ahead in a thread,
and a bounded cache keeps blocks for later epochs, trials and seeds.

How many rows make a block decides nothing but memory and speed, except for the training order, where the blocked
shuffle (:func:`memf.training.loop.epoch_order`) permutes whole blocks: that block size, :data:`BLOCK_ROWS`, and the
threshold under which a training part is shuffled whole, :data:`WHOLE_SHUFFLE_BYTES`, are fixed constants.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from memf.padding.padded import RaggedBlock
from memf.padding.store import PaddedStore

#: Rows of a selection per block: the unit the blocked shuffle permutes (a meaning constant), and what a read-ahead
#: reads at once.
BLOCK_ROWS = 256
#: A training part whose stored rows take at most this many bytes is read as one block and shuffled whole, exactly
#: as ``torch.randperm`` orders it; a larger one is shuffled by blocks, then within each block.
WHOLE_SHUFFLE_BYTES = 256 << 20
#: The default of ``train.cache_mb``: megabytes of blocks kept in memory between uses (speed only).
DEFAULT_CACHE_MB = 256

#: A change applied to each padded batch (the fold's numeric standardisation).
Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class BlockCache:
    """Blocks kept in memory up to ``budget_mb``. The first blocks offered stay and nothing is evicted: a pass over
    more blocks than fit then reads the same blocks from the file each time, instead of evicting every block just
    before it is needed again (what least-recently-used eviction does to a cyclic pass). Thread-safe."""

    def __init__(self, budget_mb: float) -> None:
        if budget_mb < 0:
            raise ValueError(f"config key 'train.cache_mb': {budget_mb}; expected a number >= 0")
        self.budget = int(budget_mb * (1 << 20))
        self.used = 0
        self._blocks: dict[tuple[str, int], RaggedBlock] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> RaggedBlock | None:
        with self._lock:
            return self._blocks.get(key)

    def offer(self, key: tuple[str, int], block: RaggedBlock) -> None:
        """Keep ``block`` under ``key`` if it fits in what is left of the budget."""
        with self._lock:
            if key not in self._blocks and self.used + block.nbytes <= self.budget:
                self._blocks[key] = block
                self.used += block.nbytes


def shuffle_block_rows(store: PaddedStore, rows: np.ndarray) -> int:
    """The block size of a training part ``rows``: all of it when it is at most :data:`WHOLE_SHUFFLE_BYTES` stored,
    else :data:`BLOCK_ROWS`."""
    return max(1, len(rows)) if store.row_bytes(rows) <= WHOLE_SHUFFLE_BYTES else BLOCK_ROWS


class BatchReader:
    """The streams ``rows`` (ascending store indices) of ``store`` in blocks of ``block_rows`` of them.

    Args:
        store: the open store.
        rows: the selection (a fold's split, or every stream).
        block_rows: rows of the selection per block.
        cache: where blocks are kept between uses (None: nowhere).
        transform: applied to every padded batch (the fold's numeric standardisation).
    """

    def __init__(self, store: PaddedStore, rows: np.ndarray, *, block_rows: int = BLOCK_ROWS,
                 cache: BlockCache | None = None, transform: Transform | None = None) -> None:
        self.store, self.rows = store, np.asarray(rows, np.int64)
        self.block_rows = max(1, block_rows)
        self.cache = cache if cache is not None else BlockCache(0)
        self.transform = transform
        ident = f"{store.path.resolve()}:{self.block_rows}:".encode() + self.rows.tobytes()
        self._key = hashlib.blake2b(ident, digest_size=16).hexdigest()
        self._held: dict[int, RaggedBlock] = {}  # the blocks of the last batch, kept for the next one

    def __len__(self) -> int:
        return len(self.rows)

    def block(self, j: int) -> RaggedBlock:
        """Block ``j``: from the cache, or read from the file (and offered to the cache)."""
        block = self.cache.get((self._key, j))
        if block is None:
            block = self.store.read(self.rows[j * self.block_rows : (j + 1) * self.block_rows])
            self.cache.offer((self._key, j), block)
        return block

    def _gather(self, held: dict[int, RaggedBlock], positions: np.ndarray) -> dict[str, np.ndarray]:
        which, local = np.divmod(positions, self.block_rows)
        if len(held) == 1:
            block = held[int(which[0])].take(local)
        else:
            picks = [np.flatnonzero(which == j) for j in held]
            block = RaggedBlock.concat([held[j].take(local[p]) for j, p in zip(held, picks, strict=True)])
            block = block.take(np.argsort(np.concatenate(picks), kind="stable"))
        arrays = block.padded()
        return self.transform(arrays) if self.transform is not None else arrays

    def batches(self, batch_size: int, order: np.ndarray | None = None
                ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Consecutive batches of ``order`` (positions into ``rows``; by default the rows in their order): each as
        (its positions [B], the padded batch dict). While a batch is used, a thread reads the first block of the
        next one that is neither held nor cached. Holds the blocks of the current batch (kept for the next call, so
        a training part read as one block is read once per reader), at most one block read ahead, and what the
        cache keeps."""
        order = np.arange(len(self.rows)) if order is None else np.asarray(order, np.int64)
        held = self._held
        ahead: dict[int, Future[RaggedBlock]] = {}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="memf-read-ahead") as pool:
            for start in range(0, len(order), batch_size):
                positions = order[start : start + batch_size]
                needed = dict.fromkeys((positions // self.block_rows).tolist())
                held = self._held = {j: held[j] if j in held else ahead.pop(j).result() if j in ahead
                                     else self.block(j) for j in needed}
                following = order[start + batch_size : start + 2 * batch_size] // self.block_rows
                for j in dict.fromkeys(following.tolist()):
                    if j not in held and j not in ahead and self.cache.get((self._key, j)) is None:
                        ahead[j] = pool.submit(self.block, j)
                        break
                yield positions, self._gather(held, positions)
