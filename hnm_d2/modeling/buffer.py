"""The hard-negative buffer: background boxes the model scored high, kept per image file.

Entries live in ORIGINAL image coordinates, so a later visit of the same image with another
flip or scale still lines up once its transforms map them forward. Each visit of an image
replaces its entries with the hard boxes the model of that iteration found there (its earlier
entries re-scored among them), so a box that became easy leaves. The bookkeeping (dedup by
IoU, per-image and total caps, expiry of images not visited) is done by pure functions on
:class:`BufferEntries`;
:class:`HardNegativeBuffer` is the nn.Module that holds the entries of this process and puts
them in the checkpoint.

Checkpoint format: ``get_extra_state`` returns a FIXED-SHAPE float64 table (CAPACITY, 9), one
row per slot, columns :data:`TABLE_COLUMNS`. Fixed, because fvcore's checkpointer compares the
shape of every checkpoint entry with the model's and silently drops a mismatch. Extra state
rather than ``register_buffer``, because DistributedDataParallel broadcasts registered buffers
from rank 0 and every rank keeps its own entries. float64 holds every column exactly: boxes and
scores are float32, iterations are below 2**53, and the 63-bit image key is split in two
32-bit halves.

Distributed: every rank keeps the entries of the images it sees (per-rank). Before a checkpoint
is saved, :class:`hnm_d2.engine.buffer_checkpointing.HNMCheckpointer` gathers every rank's table
into rank 0's buffer (:meth:`HardNegativeBuffer.set_peer_tables`), which writes them beside its
own table as ``<prefix>peer_tables`` (world_size, CAPACITY, 9). That entry has no counterpart in
a freshly built model, so fvcore does not shape-check it; on load, rank r takes row r when the
world size is unchanged, else every rank takes the union (best scores up to CAPACITY).
"""

import hashlib
import os
from typing import NamedTuple, Optional

import torch
from detectron2.utils import comm
from torch import nn
from torchvision.ops import nms

from ..config import check_arguments
from ..data.identity import image_identity

__all__ = [
    "BufferEntries",
    "HardNegativeBuffer",
    "TABLE_COLUMNS",
    "image_key",
    "image_entries",
    "drop_expired",
    "evict_lowest",
    "entries_to_table",
    "table_to_entries",
]

TABLE_COLUMNS = ("valid", "key_high", "key_low", "x1", "y1", "x2", "y2", "score", "last_seen")
PEER_TABLES_KEY = "peer_tables"
_KEY_MASK = (1 << 63) - 1


def image_key(file_name: str) -> int:
    """The buffer key of an image: its identity (:func:`hnm_d2.data.identity.image_identity`,
    the file's real path) hashed to a non-negative 63-bit int.

    Python's ``hash`` of a str changes between processes; blake2b does not, so the key of an
    image is the same on every rank and after a restart.
    """
    if not isinstance(file_name, (str, os.PathLike)):
        raise TypeError(f"file_name {file_name!r} must be a path, not {type(file_name)}")
    identity = image_identity(file_name)
    digest = hashlib.blake2b(identity.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _KEY_MASK


class BufferEntries(NamedTuple):
    """Valid buffer entries, one row each (n entries).

    Attributes:
        keys (Tensor): int64, shape (n,), image keys.
        boxes (Tensor): float32, shape (n, 4), XYXY in original image coordinates.
        scores (Tensor): float32, shape (n,), the box's highest object-class probability
            (:func:`hnm_d2.modeling.hard_negatives.object_scores`) when last confirmed hard.
        last_seen (Tensor): int64, shape (n,), iteration the entry was last confirmed hard.
    """

    keys: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    last_seen: torch.Tensor

    @classmethod
    def empty(cls):
        return cls(
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.int64),
        )

    def select(self, index: torch.Tensor) -> "BufferEntries":
        """The entries at ``index`` (bool mask or int64 indices)."""
        return BufferEntries(*(column[index] for column in self))

    @staticmethod
    def cat(parts) -> "BufferEntries":
        return BufferEntries(*(torch.cat(columns) for columns in zip(*parts)))


def image_entries(
    key: int,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iteration: int,
    per_image: int,
    dedup_iou: float,
) -> BufferEntries:
    """The entries of one image after a visit: its hard boxes, near-duplicates merged.

    Args:
        key (int): the image key.
        boxes (Tensor): float32, shape (M, 4), the visit's hard boxes in original coordinates.
        scores (Tensor): float32, shape (M,), their scores.
        iteration (int): the current iteration (the entries' ``last_seen``).
        per_image (int): most entries kept for the image (lowest scores dropped).
        dedup_iou (float): IoU above which a box merges into a higher-scored one (NMS).

    Returns:
        BufferEntries: at most ``per_image`` entries, in decreasing score order.
    """
    survivors = nms(boxes.float(), scores.float(), dedup_iou)[:per_image]
    return BufferEntries(
        torch.full((len(survivors),), key, dtype=torch.int64),
        boxes[survivors].float(),
        scores[survivors].float(),
        torch.full((len(survivors),), iteration, dtype=torch.int64),
    )


def drop_expired(entries: BufferEntries, iteration: int, max_age: int) -> BufferEntries:
    """Drop entries not confirmed hard within the last ``max_age`` iterations."""
    return entries.select(iteration - entries.last_seen <= max_age)


def evict_lowest(entries: BufferEntries, capacity: int) -> BufferEntries:
    """Keep the ``capacity`` best-scored entries: the lowest scores are evicted first."""
    if entries.keys.numel() <= capacity:
        return entries
    return entries.select(torch.topk(entries.scores, capacity).indices)


def entries_to_table(entries: BufferEntries, capacity: int) -> torch.Tensor:
    """The fixed-shape checkpoint table of ``entries``.

    Returns:
        Tensor: float64, shape (capacity, 9), columns :data:`TABLE_COLUMNS`; unused rows are 0
        (valid = 0).
    """
    n = entries.keys.numel()
    table = torch.zeros(capacity, len(TABLE_COLUMNS), dtype=torch.float64)
    table[:n, 0] = 1.0
    table[:n, 1] = (entries.keys >> 32).double()
    table[:n, 2] = (entries.keys & 0xFFFFFFFF).double()
    table[:n, 3:7] = entries.boxes.double()
    table[:n, 7] = entries.scores.double()
    table[:n, 8] = entries.last_seen.double()
    return table


def table_to_entries(table: torch.Tensor) -> BufferEntries:
    """Inverse of :func:`entries_to_table` (any number of rows; invalid rows skipped).

    Args:
        table (Tensor): shape (rows, 9).
    """
    table = table[table[:, 0] > 0].double()
    keys = (table[:, 1].long() << 32) | table[:, 2].long()
    return BufferEntries(keys, table[:, 3:7].float(), table[:, 7].float(), table[:, 8].long())


class HardNegativeBuffer(nn.Module):
    """Per-process store of hard negative boxes, keyed by image, saved in the checkpoint.

    The entries stay on the CPU whatever the model's device: the bookkeeping is small, the
    transforms that map boxes to original coordinates work on numpy arrays, and gathering
    across ranks goes through a CPU (gloo) group.
    """

    def __init__(
        self,
        *,
        capacity: int,
        per_image: int,
        max_age: int,
        dedup_iou: float,
        score_thresh: float,
        warmup_iters: int = 0,
    ):
        """
        Args:
            capacity (int): entries kept in total (MODEL.HNM.BUFFER.CAPACITY).
            per_image (int): entries kept per image (MODEL.HNM.BUFFER.PER_IMAGE).
            max_age (int): iterations an entry survives without being confirmed hard again.
            dedup_iou (float): IoU above which a box merges into a better-scored one.
            score_thresh (float): lowest score of a box worth storing (its highest
                object-class probability, the scale of MODEL.ROI_HEADS.SCORE_THRESH_TEST).
            warmup_iters (int): iterations before the first box is recorded: an untrained
                model scores every box alike (MODEL.HNM.BUFFER.WARMUP_ITERS).
        """
        check_arguments(
            type(self).__name__,
            {
                "MODEL.HNM.BUFFER.CAPACITY": ("capacity", capacity),
                "MODEL.HNM.BUFFER.PER_IMAGE": ("per_image", per_image),
                "MODEL.HNM.BUFFER.MAX_AGE": ("max_age", max_age),
                "MODEL.HNM.BUFFER.DEDUP_IOU": ("dedup_iou", dedup_iou),
                "MODEL.HNM.BUFFER.SCORE_THRESH": ("score_thresh", score_thresh),
                "MODEL.HNM.BUFFER.WARMUP_ITERS": ("warmup_iters", warmup_iters),
            },
        )
        super().__init__()
        self.capacity = capacity
        self.per_image = per_image
        self.max_age = max_age
        self.dedup_iou = dedup_iou
        self.score_thresh = score_thresh
        self.warmup_iters = warmup_iters
        self.entries = BufferEntries.empty()
        self.peer_tables: Optional[torch.Tensor] = None

    @property
    def num_entries(self) -> int:
        """Boxes stored (not ``__len__``: an empty buffer would make the module falsy)."""
        return self.entries.keys.numel()

    def mean_score(self) -> float:
        """Mean score of the entries (0 when empty)."""
        return self.entries.scores.mean().item() if self.num_entries else 0.0

    def boxes_of(self, key: int):
        """The entries of one image, best first.

        Returns:
            (Tensor, Tensor): boxes float32 (k, 4) in original coordinates; scores (k,).
        """
        mine = self.entries.select(self.entries.keys == key)
        order = torch.argsort(mine.scores, descending=True)
        return mine.boxes[order], mine.scores[order]

    def record_visit(self, key: int, boxes: torch.Tensor, scores: torch.Tensor, iteration: int):
        """Replace the entries of one image by the hard boxes of its visit.

        The visit's boxes are scored by the model of this iteration, the image's earlier
        entries among them: a box that became easy leaves, a box still hard stays with its new
        score (and ``last_seen``).

        Args:
            key (int): image key (:func:`image_key`).
            boxes (Tensor): shape (M, 4), background boxes in original image coordinates.
            scores (Tensor): shape (M,), their scores (the highest object-class probability).
            iteration (int): the current training iteration.
        """
        boxes, scores = boxes.detach().cpu(), scores.detach().cpu()
        hard = scores >= self.score_thresh
        mine = image_entries(
            key, boxes[hard], scores[hard], iteration, self.per_image, self.dedup_iou
        )
        others = self.entries.select(self.entries.keys != key)
        self.entries = evict_lowest(BufferEntries.cat([others, mine]), self.capacity)

    def clear(self):
        """Forget every entry (and any gathered peer tables)."""
        self.entries = BufferEntries.empty()
        self.peer_tables = None

    def expire(self, iteration: int):
        """Drop the entries older than ``max_age`` iterations."""
        self.entries = drop_expired(self.entries, iteration, self.max_age)

    def table(self) -> torch.Tensor:
        """This process' entries as the fixed-shape table, shape (capacity, 9)."""
        return entries_to_table(self.entries, self.capacity)

    def set_peer_tables(self, tables: Optional[torch.Tensor]):
        """Hold every rank's table for the next save (rank 0), or drop them (None).

        Args:
            tables (Tensor or None): shape (world_size, capacity, 9), row r from rank r.
        """
        self.peer_tables = tables

    def get_extra_state(self):
        return self.table()

    def set_extra_state(self, state):
        self.entries = evict_lowest(table_to_entries(state), self.capacity)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.peer_tables is not None:
            destination[prefix + PEER_TABLES_KEY] = self.peer_tables

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Taken out before the stock loader, which would report it as an unexpected key.
        peer_tables = state_dict.pop(prefix + PEER_TABLES_KEY, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if peer_tables is not None:
            self.entries = self._entries_from_peers(peer_tables)

    def _entries_from_peers(self, peer_tables: torch.Tensor) -> BufferEntries:
        """Rank r's own row of a gathered checkpoint, or the union if the world size changed."""
        if peer_tables.shape[0] == comm.get_world_size():
            return table_to_entries(peer_tables[comm.get_rank()])
        union = table_to_entries(peer_tables.reshape(-1, peer_tables.shape[-1]))
        return evict_lowest(union, self.capacity)
