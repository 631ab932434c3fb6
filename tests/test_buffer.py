"""The hard-negative buffer: bookkeeping (threshold, caps, eviction, dedup, expiry), the
fixed-shape checkpoint table, and the per-rank state that HNMCheckpointer gathers when it saves
(one process and two gloo processes)."""

import hashlib
from types import SimpleNamespace

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import launch
from detectron2.utils import comm
from helpers import needs_cpu_launch
from torch import nn

from hnm_d2.engine.buffer_checkpointing import HNMCheckpointer, periodic_checkpointer
from hnm_d2.engine.launcher import leave_process_group
from hnm_d2.modeling import HardNegativeBuffer, image_key
from hnm_d2.modeling.buffer import TABLE_COLUMNS, entries_to_table, table_to_entries


def new_buffer(capacity=8, per_image=3, max_age=10, dedup_iou=0.7, score_thresh=0.5):
    return HardNegativeBuffer(
        capacity=capacity,
        per_image=per_image,
        max_age=max_age,
        dedup_iou=dedup_iou,
        score_thresh=score_thresh,
    )


def boxes_at(*x0s):
    """Disjoint 8x8 boxes starting at the given x, shape (n, 4)."""
    return torch.tensor([[x, 0.0, x + 8, 8.0] for x in x0s])


def stored(buffer, key):
    boxes, scores = buffer.boxes_of(key)
    return boxes[:, 0].tolist(), [round(s, 3) for s in scores.tolist()]


def test_image_keys_are_stable_63_bit_ints_of_the_real_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "images")
    real = str(tmp_path / "images" / "b.jpg")
    digest = hashlib.blake2b(real.encode(), digest_size=8).digest()
    assert image_key("images/b.jpg") == int.from_bytes(digest, "big") & ((1 << 63) - 1)
    # One image, whichever way its file is spelled; another file, another key.
    assert image_key("images/b.jpg") == image_key(real) == image_key("link/./b.jpg")
    assert 0 <= image_key("a/b.jpg") < 2**63 and image_key("a/b.jpg") != image_key("a/c.jpg")
    with pytest.raises(TypeError, match="file_name 7"):
        image_key(7)


def test_only_boxes_at_or_above_the_score_threshold_are_stored():
    buffer = new_buffer()
    buffer.record_visit(1, boxes_at(0, 20, 40), torch.tensor([0.4, 0.5, 0.9]), iteration=0)
    assert stored(buffer, 1) == ([40.0, 20.0], [0.9, 0.5])


def test_per_image_cap_keeps_the_best_scores():
    buffer = new_buffer(per_image=2)
    buffer.record_visit(1, boxes_at(0, 20, 40), torch.tensor([0.6, 0.7, 0.65]), iteration=0)
    assert stored(buffer, 1) == ([20.0, 40.0], [0.7, 0.65])


def test_a_visit_replaces_the_image_entries_and_leaves_other_images_alone():
    buffer = new_buffer()
    buffer.record_visit(1, boxes_at(0, 20), torch.tensor([0.9, 0.8]), iteration=0)
    buffer.record_visit(2, boxes_at(0), torch.tensor([0.7]), iteration=0)
    # Image 1 again: the box at 0 re-scored easy (0.3) leaves, the box at 20 stays with its
    # new score, a new hard box joins.
    buffer.record_visit(1, boxes_at(0, 20, 40), torch.tensor([0.3, 0.6, 0.95]), iteration=4)
    assert stored(buffer, 1) == ([40.0, 20.0], [0.95, 0.6])
    assert buffer.boxes_of(1)[0].shape == (2, 4) and stored(buffer, 2) == ([0.0], [0.7])
    assert sorted(buffer.entries.last_seen.tolist()) == [0, 4, 4]
    buffer.record_visit(1, boxes_at(0), torch.tensor([0.1]), iteration=5)  # all easy now
    assert stored(buffer, 1) == ([], [])


def test_total_capacity_evicts_the_lowest_scores_first():
    buffer = new_buffer(capacity=3)
    buffer.record_visit(1, boxes_at(0, 20), torch.tensor([0.9, 0.55]), iteration=0)
    buffer.record_visit(2, boxes_at(0), torch.tensor([0.8]), iteration=0)
    buffer.record_visit(3, boxes_at(0), torch.tensor([0.6]), iteration=0)  # evicts 1's 0.55
    assert buffer.num_entries == 3
    assert stored(buffer, 1) == ([0.0], [0.9])
    buffer.record_visit(4, boxes_at(0), torch.tensor([0.5]), iteration=0)  # the lowest: out
    assert stored(buffer, 4) == ([], [])


def test_near_duplicates_merge_into_the_better_scored_box():
    buffer = new_buffer(dedup_iou=0.7)
    shifted = boxes_at(0.5)  # IoU 7.5 * 8 / (8.5 * 8) = 0.88 with the box at 0
    buffer.record_visit(1, torch.cat([boxes_at(0, 30), shifted]), torch.tensor([0.9, 0.6, 0.7]), 0)
    assert stored(buffer, 1) == ([0.0, 30.0], [0.9, 0.6])


def test_images_not_visited_expire_after_max_age_iterations():
    buffer = new_buffer(max_age=10)
    buffer.record_visit(1, boxes_at(0), torch.tensor([0.9]), iteration=0)
    buffer.record_visit(2, boxes_at(0), torch.tensor([0.9]), iteration=5)
    buffer.expire(10)
    assert buffer.num_entries == 2
    buffer.expire(11)
    assert stored(buffer, 1) == ([], []) and buffer.num_entries == 1
    buffer.record_visit(2, boxes_at(0), torch.tensor([0.8]), iteration=12)  # visited again
    buffer.expire(22)
    assert buffer.num_entries == 1


def test_table_round_trip_is_exact():
    buffer = new_buffer(capacity=5)
    keys = [image_key("x.jpg"), -3, 2**40 + 1]
    for i, key in enumerate(keys):
        buffer.record_visit(
            key, boxes_at(0.1 * i), torch.tensor([0.51 + i / 7]), iteration=2**40 + i
        )
    table = entries_to_table(buffer.entries, buffer.capacity)
    assert table.shape == (5, len(TABLE_COLUMNS)) and table.dtype == torch.float64
    for a, b in zip(buffer.entries, table_to_entries(table)):
        assert torch.equal(a, b)


class BufferHolder(nn.Module):
    """A model with one parameter and a hard-negative buffer somewhere inside."""

    def __init__(self, capacity=8):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.heads = nn.Module()
        self.heads.buffer = new_buffer(capacity=capacity)


def assert_same_entries(a, b):
    for column, x, y in zip(a._fields, a, b):
        assert torch.equal(x, y), column


def test_checkpoint_table_has_a_fixed_shape():
    holder = BufferHolder()
    empty = holder.state_dict()["heads.buffer._extra_state"]
    holder.heads.buffer.record_visit(1, boxes_at(0, 20), torch.tensor([0.9, 0.8]), iteration=0)
    assert holder.state_dict()["heads.buffer._extra_state"].shape == empty.shape == (8, 9)


def test_detectron2_checkpointer_round_trip(tmp_path):
    holder = BufferHolder()
    holder.heads.buffer.record_visit(
        image_key("a.jpg"), boxes_at(0, 20), torch.tensor([0.9, 0.8]), 3
    )
    holder.heads.buffer.record_visit(42, boxes_at(5), torch.tensor([0.7]), 4)
    DetectionCheckpointer(holder, str(tmp_path)).save("model")
    fresh = BufferHolder()
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    assert_same_entries(fresh.heads.buffer.entries, holder.heads.buffer.entries)


def test_gathered_tables_of_another_world_size_restore_the_union(tmp_path):
    rank0, rank1 = new_buffer(capacity=3), new_buffer(capacity=3)
    rank0.record_visit(1, boxes_at(0, 20), torch.tensor([0.9, 0.6]), 0)
    rank1.record_visit(2, boxes_at(0, 20), torch.tensor([0.8, 0.7]), 0)
    holder = BufferHolder(capacity=3)
    holder.heads.buffer.entries = rank0.entries
    holder.heads.buffer.set_peer_tables(torch.stack([rank0.table(), rank1.table()]))
    DetectionCheckpointer(holder, str(tmp_path)).save("model")

    fresh = BufferHolder(capacity=3)  # this process is a world of 1, the checkpoint of 2
    DetectionCheckpointer(fresh).load(str(tmp_path / "model.pth"))
    assert sorted(fresh.heads.buffer.entries.scores.tolist()) == pytest.approx([0.7, 0.8, 0.9])


def test_the_main_process_runs_the_checkpointer_hook_and_writes(tmp_path):
    hook = periodic_checkpointer(HNMCheckpointer(BufferHolder(), str(tmp_path)), 50)
    assert hook.period == 50 and hook.checkpointer.save_to_disk


def test_a_new_run_empties_the_buffer_of_the_loaded_weights(tmp_path):
    holder = BufferHolder()
    holder.heads.buffer.record_visit(1, boxes_at(0, 20), torch.tensor([0.9, 0.8]), 0)
    HNMCheckpointer(holder, str(tmp_path)).save("model")
    fresh = BufferHolder()
    HNMCheckpointer(fresh, str(tmp_path / "new")).resume_or_load(str(tmp_path / "model.pth"))
    assert fresh.heads.buffer.num_entries == 0
    resumed = BufferHolder()
    HNMCheckpointer(resumed, str(tmp_path)).resume_or_load("", resume=True)
    assert resumed.heads.buffer.num_entries == 2


def distributed_worker(out_dir, checkpoint_period):
    """One rank: fill its buffer with its own images, run the checkpointer hook on a checkpoint
    iteration on every rank (rank 0 saves), then load the checkpoint into a fresh model."""
    rank = comm.get_rank()
    model = BufferHolder()
    buffer = model.heads.buffer
    buffer.record_visit(
        100 + rank, boxes_at(rank, 20 + rank), torch.tensor([0.9, 0.6 + rank / 10]), rank
    )
    hook = periodic_checkpointer(HNMCheckpointer(model, out_dir), checkpoint_period)
    hook.trainer = SimpleNamespace(iter=checkpoint_period - 1, max_iter=100)
    hook.after_step()  # fvcore's schedule: a save on this iteration, written by rank 0 only
    comm.synchronize()

    fresh = BufferHolder()
    DetectionCheckpointer(fresh).load(f"{out_dir}/model_{checkpoint_period - 1:07d}.pth")
    result = {
        "peers_dropped_after_save": buffer.peer_tables is None,
        "own": buffer.table(),
        "restored": fresh.heads.buffer.table(),
    }
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    leave_process_group()


@needs_cpu_launch
def test_two_processes_each_restore_their_own_buffer(tmp_path):
    launch(distributed_worker, 2, dist_url="auto", args=(str(tmp_path), 10))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    saved = torch.load(tmp_path / "model_0000009.pth")["model"]
    assert saved["heads.buffer.peer_tables"].shape[0] == 2  # gathered into rank 0's file
    assert all(r["peers_dropped_after_save"] for r in results)
    assert not torch.equal(results[0]["own"], results[1]["own"])
    for rank, r in enumerate(results):
        assert torch.equal(r["restored"], r["own"]), rank
        assert table_to_entries(r["restored"]).keys.tolist() == [100 + rank] * 2
