"""Embedding replay buffer: ring writes, aligned sampling, exact save/load, memory per transition."""

import os

import numpy as np
import pytest
import torch

from zprl.rl.replay import EmbeddingReplayBuffer

S, A = 4, 2


def rows(start, n, base_shape=(16, 3)):
    """n transitions whose every field encodes its row id, so alignment can be checked."""
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return dict(
        state=ids[:, None].repeat(1, S),
        action=-ids[:, None].repeat(1, A),
        reward=ids * 10,
        next_state=ids[:, None].repeat(1, S) + 0.5,
        terminal=(ids % 2 == 0).float(),
        z=ids[:, None].repeat(1, 3) + 0.25,
        base_action=ids.view(-1, 1, 1).expand(n, *base_shape).clone(),
    )


def make_buffer(capacity=5, **kw):
    return EmbeddingReplayBuffer(capacity, S, A, extras={"z": 3, "base_action": (16, 3)}, **kw)


def test_add_wraps_around_and_overwrites_the_oldest_rows():
    buf = make_buffer(5)
    buf.add(**rows(0, 3))
    assert (len(buf), buf.ptr) == (3, 3)
    buf.add(**rows(3, 4))  # rows 3, 4 fill the tail; 5, 6 overwrite rows 0, 1
    assert (len(buf), buf.ptr) == (5, 2)
    expected = torch.tensor([5.0, 6.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(buf.data["state"][:, 0], expected)
    torch.testing.assert_close(buf.data["action"][:, 1], -expected)
    torch.testing.assert_close(buf.data["reward"], expected * 10)
    torch.testing.assert_close(buf.data["next_state"][:, 3], expected + 0.5)
    torch.testing.assert_close(buf.data["terminal"], (expected % 2 == 0).float())
    torch.testing.assert_close(buf.data["z"][:, 2], expected + 0.25)
    torch.testing.assert_close(buf.data["base_action"][:, 15, 2], expected)


def test_add_accepts_numpy_and_rejects_bad_rows():
    buf = make_buffer(4)
    r = {k: v.numpy() for k, v in rows(0, 2).items()}
    r["terminal"] = r["terminal"].astype(bool)
    buf.add(**r)
    assert len(buf) == 2 and buf.data["terminal"].dtype == torch.float32
    good = rows(0, 2)
    with pytest.raises(ValueError, match="extras"):
        buf.add(**{k: v for k, v in good.items() if k != "z"})
    with pytest.raises(ValueError, match="'state'"):
        buf.add(**{**good, "state": torch.zeros(S)})  # a single row without the batch axis
    with pytest.raises(ValueError, match="'reward'"):
        buf.add(**{**good, "reward": torch.zeros(3)})  # row count differs from the state's
    with pytest.raises(ValueError, match="capacity"):
        buf.add(**rows(0, 5))
    with pytest.raises(ValueError, match="core field"):
        EmbeddingReplayBuffer(4, S, A, extras={"reward": 1})
    assert len(buf) == 2  # failed adds wrote nothing


def test_sample_shapes_dtypes_alignment_and_reproducibility():
    buf = make_buffer(50, storage_dtype=torch.float16)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(4)
    buf.add(**rows(0, 20))
    batch = buf.sample(64, generator=torch.Generator().manual_seed(0))
    shapes = {"state": (64, S), "action": (64, A), "reward": (64,), "next_state": (64, S),
              "terminal": (64,), "z": (64, 3), "base_action": (64, 16, 3)}
    assert {k: tuple(v.shape) for k, v in batch.items()} == shapes
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in batch.values())
    ids = batch["state"][:, 0]
    assert ids.max() < 20 and len(ids.unique()) > 10  # only filled rows, not a single row
    torch.testing.assert_close(batch["action"][:, 0], -ids)
    torch.testing.assert_close(batch["reward"], ids * 10)
    torch.testing.assert_close(batch["next_state"][:, 0], ids + 0.5)
    torch.testing.assert_close(batch["z"][:, 0], ids + 0.25)
    torch.testing.assert_close(batch["base_action"][:, 7, 1], ids)
    again = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(batch[k], again[k]) for k in batch)


def test_nbytes_per_transition():
    # float32: (state 4 + action 2 + next_state 4 + z 3 + base_action 48) * 4 + reward 4 + terminal 4
    assert make_buffer(3).nbytes_per_transition() == 61 * 4 + 8
    assert make_buffer(3, storage_dtype=torch.float16).nbytes_per_transition() == 61 * 2 + 8
    buf = make_buffer(3)
    assert buf.nbytes_per_transition() == sum(t.nbytes for t in buf.data.values()) // 3


@pytest.mark.parametrize("n_added", [7, 23])  # partly filled, and wrapped around
def test_save_load_round_trip_is_exact_and_continues_identically(tmp_path, n_added):
    g = torch.Generator().manual_seed(0)

    def random_rows(n):
        return dict(state=torch.randn(n, S, generator=g), action=torch.rand(n, A, generator=g),
                    reward=torch.rand(n, generator=g), next_state=torch.randn(n, S, generator=g),
                    terminal=(torch.rand(n, generator=g) < 0.3).float(),
                    z=torch.randn(n, 3, generator=g), base_action=torch.randn(n, 16, 3, generator=g))

    buf = make_buffer(10)
    for _ in range(n_added):
        buf.add(**random_rows(1))
    path = str(tmp_path / "replay.pt")
    assert buf.save(path) == path
    assert os.listdir(tmp_path) == ["replay.pt"]  # the temp file was renamed, not left behind

    loaded = make_buffer(10)
    loaded.load(path)
    assert (loaded.ptr, len(loaded)) == (buf.ptr, len(buf)) == (n_added % 10, min(n_added, 10))
    assert all(torch.equal(buf.data[k], loaded.data[k]) for k in buf.data)

    more = random_rows(3)
    buf.add(**more)
    loaded.add(**more)
    assert all(torch.equal(buf.data[k], loaded.data[k]) for k in buf.data)
    s1 = buf.sample(16, torch.Generator().manual_seed(5))
    s2 = loaded.sample(16, torch.Generator().manual_seed(5))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_saved_file_holds_only_the_filled_rows(tmp_path):
    buf = EmbeddingReplayBuffer(20_000, 64, 8)
    buf.add(np.ones((1000, 64)), np.ones((1000, 8)), np.ones(1000), np.ones((1000, 64)), np.zeros(1000))
    buf.save(str(tmp_path / "r.pt"))
    size = os.path.getsize(tmp_path / "r.pt")
    filled = 1000 * buf.nbytes_per_transition()
    assert filled <= size < filled + 20_000  # not the 20k-row preallocation


def test_load_rejects_a_buffer_of_another_shape(tmp_path):
    buf = make_buffer(10)
    buf.add(**rows(0, 3))
    buf.save(str(tmp_path / "r.pt"))
    with pytest.raises(ValueError, match="capacity"):
        make_buffer(11).load(str(tmp_path / "r.pt"))
    with pytest.raises(ValueError, match="fields"):
        EmbeddingReplayBuffer(10, S, A).load(str(tmp_path / "r.pt"))
