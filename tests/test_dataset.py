import os

import h5py
import numpy as np
import pytest
import torch
from robomimic_fixtures import arm_quat, image_shape_meta, lowdim_shape_meta, write_robomimic_file

from zprl.common.errors import UserInputError
from zprl.data import replay_cache
from zprl.data.paths import missing_dataset_message
from zprl.data.robomimic_dataset import RobomimicReplayDataset
from zprl.data.sampler import SequenceSampler, split_validation, subsample

LENGTHS = (10, 12, 8)


def make(path, shape_meta=None, **kw):
    kw.setdefault("horizon", 4)
    kw.setdefault("n_obs_steps", 2)
    kw.setdefault("n_action_steps", 2)
    return RobomimicReplayDataset(shape_meta or lowdim_shape_meta(), path, **kw)


def cache_entries(path):
    folder = str(path) + ".zprl_cache"
    return sorted(n for n in os.listdir(folder) if n.endswith(".zarr")) if os.path.isdir(folder) else []


@pytest.fixture
def lowdim_file(tmp_path):
    return write_robomimic_file(tmp_path / "low_dim.hdf5", lengths=LENGTHS)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "image.hdf5"
    return write_robomimic_file(path, lengths=(6, 5, 7), rgb_keys=("agentview_image", "robot0_eye_in_hand_image"))


def test_sampler_windows_and_padding():
    s = SequenceSampler([5, 8], [0, 1], horizon=4, pad_before=1, pad_after=2)
    # Episode of length L gives L - horizon + pad_before + pad_after + 1 windows.
    assert len(s) == (5 - 4 + 3 + 1) + (3 - 4 + 3 + 1)
    assert s.window(0).tolist() == [0, 0, 1, 2]  # starts one frame before the episode
    assert s.window(4).tolist() == [3, 4, 4, 4]  # runs two frames past its end
    assert s.window(5).tolist() == [5, 5, 6, 7]  # second episode starts at frame 5
    assert len(SequenceSampler([5, 8], [1], horizon=4)) == 0  # too short without padding


def test_split_and_subsample_are_seeded():
    a, b = split_validation(20, 0.25, 3), split_validation(20, 0.25, 3)
    assert a.sum() == 5 and np.array_equal(a, b)
    assert not np.array_equal(a, split_validation(20, 0.25, 4))
    assert split_validation(3, 0.01, 0).sum() == 1 and split_validation(1, 0.5, 0).sum() == 0
    assert subsample(np.arange(10), 3, 0).tolist() == subsample(np.arange(10), 3, 0).tolist()
    assert len(subsample(np.arange(10), 3, 0)) == 3 and subsample([4, 5], None, 0).tolist() == [4, 5]


def test_lowdim_windows_padding_and_obs_steps(lowdim_file):
    ds = make(lowdim_file, use_cache=False)
    # pad_before = n_obs_steps - 1 = 1, pad_after = n_action_steps - 1 = 1.
    assert len(ds) == sum(L - 4 + 1 + 1 + 1 for L in LENGTHS)
    assert ds.num_episodes == 3 and ds.episode_ends.tolist() == [10, 22, 30]
    first = ds[0]
    assert first["action"].shape == (4, 10) and first["action"].dtype == torch.float32
    assert first["obs"]["robot0_eef_pos"].shape == (2, 3) and first["obs"]["object"].shape == (2, 10)
    # Start edge repeats frame 0; actions carry (episode, t) in their position part.
    assert first["action"][:, 1].tolist() == [0, 0, 1, 2]
    assert first["obs"]["robot0_eef_pos"][:, 1].tolist() == [0, 0]
    last = ds[len(ds) - 1]  # last window of episode 2 (length 8) runs one frame past the end
    assert last["action"][:, 0].tolist() == [2] * 4 and last["action"][:, 1].tolist() == [5, 6, 7, 7]
    assert last["obs"]["robot0_eef_pos"][:, 2].tolist() == [2005, 2006]
    # Gripper stays with its frame through the padding.
    assert last["action"][:, 9].tolist() == [-1, 1, -1, -1]
    mid = ds[11]  # episode 1 (windows 0..8 are episode 0), start t = 11 - 9 - 1 = 1
    assert mid["action"][:, :2].tolist() == [[1, t] for t in (1, 2, 3, 4)]
    assert torch.allclose(mid["obs"]["object"][1], torch.tensor([2 + 0.5 + k / 10 for k in range(10)]))


def test_explicit_padding_overrides(lowdim_file):
    ds = make(lowdim_file, use_cache=False, n_obs_steps=1, pad_before=0, pad_after=0)
    assert len(ds) == sum(L - 4 + 1 for L in LENGTHS)
    assert ds[0]["action"][:, 1].tolist() == [0, 1, 2, 3] and ds[0]["obs"]["object"].shape == (1, 10)


def test_rot6d_actions_match_robosuite_orientation(tmp_path):
    from robosuite.utils import transform_utils as T

    path = write_robomimic_file(tmp_path / "two_arm.hdf5", lengths=(6, 7), n_arms=2)
    ds = make(path, lowdim_shape_meta(n_arms=2), use_cache=False, pad_before=0, pad_after=0)
    actions = ds.get_all_actions()
    assert actions.shape == (13, 20)
    for frame, (e, t) in enumerate([(0, t) for t in range(6)] + [(1, t) for t in range(7)]):
        for arm in range(2):
            m = T.quat2mat(arm_quat(e, t, arm))
            r6 = actions[frame, 10 * arm + 3: 10 * arm + 9].numpy()
            assert np.allclose(r6, np.concatenate([m[:, 0], m[:, 1]]), atol=1e-5)
            assert actions[frame, 10 * arm + 2] == 100 * arm + t

    raw = make(path, lowdim_shape_meta(action_dim=14), use_cache=False, abs_action=False)
    assert raw.get_all_actions().shape == (13, 14)
    with h5py.File(path) as f:
        assert np.allclose(raw.get_all_actions()[:6].numpy(), f["data/demo_0/actions"][()], atol=1e-6)
    aa = make(path, lowdim_shape_meta(action_dim=14), use_cache=False, rotation_rep="axis_angle")
    assert torch.equal(aa.get_all_actions(), raw.get_all_actions())


def test_image_samples(image_file):
    ds = make(image_file, image_shape_meta(("agentview_image", "robot0_eye_in_hand_image")), use_cache=False)
    s = ds[3]  # episode 0, window start t = 2
    img = s["obs"]["agentview_image"]
    assert img.shape == (2, 3, 84, 84) and img.dtype == torch.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert torch.allclose(img[:, 0, 5, 7] * 255, torch.tensor([2.0, 3.0]))
    assert torch.allclose(img[:, 2], torch.full((2, 84, 84), 200 / 255))
    assert s["obs"]["robot0_eef_pos"][:, 1].tolist() == [2, 3]


def test_normalizer_ranges(tmp_path):
    path = write_robomimic_file(tmp_path / "n.hdf5", lengths=LENGTHS, rgb_keys=("agentview_image",), image_size=16)
    ds = make(path, image_shape_meta(image_size=16), use_cache=False)
    norm = ds.get_normalizer()
    assert sorted(norm.keys()) == ["action", "agentview_image", "object", "robot0_eef_pos"]
    acts = ds.get_all_actions()
    y = norm["action"].normalize(acts)
    limited = [0, 1, 2, 9]
    assert torch.allclose(y[:, limited].amin(0), -torch.ones(4), atol=1e-5)
    assert torch.allclose(y[:, limited].amax(0), torch.ones(4), atol=1e-5)
    assert torch.equal(y[:, 3:9], acts[:, 3:9])  # rot6d passes through
    pos = torch.from_numpy(ds.replay.arrays["obs/robot0_eef_pos"])
    yp = norm["robot0_eef_pos"].normalize(pos)
    assert torch.allclose(yp.amin(0), -torch.ones(3), atol=1e-5) and torch.allclose(yp.amax(0), torch.ones(3), atol=1e-5)
    img = ds[0]["obs"]["agentview_image"]
    assert torch.equal(norm["agentview_image"].normalize(img), img)
    assert torch.allclose(norm["action"].unnormalize(y), acts, atol=1e-5)


def test_validation_split_by_episode_and_seeded(tmp_path):
    path = write_robomimic_file(tmp_path / "v.hdf5", lengths=(5,) * 10)
    ds = make(path, val_ratio=0.3, seed=0, use_cache=False)
    val = ds.get_validation_dataset()
    assert ds.num_episodes == 7 and val.num_episodes == 3
    assert set(ds.episode_ids).isdisjoint(val.episode_ids)
    train_eps = {int(ds[i]["action"][0, 0]) for i in range(len(ds))}
    val_eps = {int(val[i]["action"][0, 0]) for i in range(len(val))}
    assert train_eps == set(ds.episode_ids.tolist()) and val_eps == set(val.episode_ids.tolist())
    assert np.array_equal(make(path, val_ratio=0.3, seed=0, use_cache=False).val_ids, ds.val_ids)
    assert not np.array_equal(make(path, val_ratio=0.3, seed=2, use_cache=False).val_ids, ds.val_ids)
    assert len(make(path, use_cache=False).get_validation_dataset()) == 0
    # The normalizer sees training episodes only (action dim 0 holds the episode index).
    field = ds.get_normalizer()["action"]
    assert (field.input_min[0].item(), field.input_max[0].item()) == (min(ds.episode_ids), max(ds.episode_ids))
    assert {0, 9} & set(val.episode_ids.tolist())  # so the check above would notice a leak


def test_filter_key_and_max_train_episodes(tmp_path):
    path = write_robomimic_file(tmp_path / "f.hdf5", lengths=(5,) * 6)
    ds = make(path, filter_key="valid", use_cache=False)
    assert {int(ds[i]["action"][0, 0]) for i in range(len(ds))} == {2, 5}
    sub = make(path, max_train_episodes=2, seed=0, use_cache=False)
    assert sub.num_episodes == 2
    assert np.array_equal(sub.train_ids, make(path, max_train_episodes=2, seed=0, use_cache=False).train_ids)


def test_cache_hit_invalidation_and_identical_samples(lowdim_file):
    ds = make(lowdim_file)
    entries = cache_entries(lowdim_file)
    assert len(entries) == 1
    build = ds.replay.attrs["build_id"]
    plain = make(lowdim_file, use_cache=False)
    assert len(ds) == len(plain)
    for i in range(len(ds)):
        a, b = ds[i], plain[i]
        assert torch.equal(a["action"], b["action"])
        assert all(torch.equal(a["obs"][k], b["obs"][k]) for k in a["obs"])

    os.utime(lowdim_file, (1, 1))  # a new mtime alone is not a content change
    again = make(lowdim_file)
    assert again.replay.attrs["build_id"] == build and cache_entries(lowdim_file) == entries

    # Other settings get their own cache beside the first.
    narrow = lowdim_shape_meta()
    del narrow["obs"]["object"]
    assert make(lowdim_file, narrow).replay.attrs["build_id"] != build
    make(lowdim_file, lowdim_shape_meta(action_dim=7), abs_action=False)
    assert len(cache_entries(lowdim_file)) == 3

    # Changing an action changes the content key: rebuilt, and caches of the old content removed.
    with h5py.File(lowdim_file, "r+") as f:
        f["data/demo_1/actions"][0, 0] = 42.0
    changed = make(lowdim_file)
    assert changed.replay.attrs["build_id"] != build
    assert len(cache_entries(lowdim_file)) == 1
    assert changed[9]["action"][1, 0] == 42.0  # first window of episode 1: frames 0, 0, 1, 2


def test_cache_sees_observations(lowdim_file, tmp_path):
    """A copy of a file with the same demos but other observations must not read the old ones."""
    import shutil

    cache = tmp_path / "cache"
    copy = tmp_path / "copy" / "low_dim.hdf5"  # same name: both map to one cache folder
    copy.parent.mkdir()
    shutil.copy(lowdim_file, copy)
    first = make(lowdim_file, cache_dir=cache)
    assert make(str(copy), cache_dir=cache).replay.attrs["build_id"] == first.replay.attrs["build_id"]
    with h5py.File(copy, "r+") as f:
        for name in f["data"]:
            f[f"data/{name}/obs/object"][...] += 0.5
    shifted = make(str(copy), cache_dir=cache)
    assert shifted.replay.attrs["build_id"] != first.replay.attrs["build_id"]
    assert replay_cache.content_signature(str(copy)) == replay_cache.content_signature(lowdim_file)
    plain = make(str(copy), use_cache=False)
    for i in (0, len(plain) - 1):
        assert torch.equal(shifted[i]["obs"]["object"], plain[i]["obs"]["object"])
        assert torch.allclose(shifted[i]["obs"]["object"], first[i]["obs"]["object"] + 0.5)
    # the stale cache of these settings is gone; a cache of other settings is kept until used
    assert len(cache_entries(cache / "low_dim.hdf5")) == 1


def test_image_cache_sees_sampled_frames(image_file, tmp_path):
    import shutil

    meta = image_shape_meta(("agentview_image",))
    copy = tmp_path / "image.hdf5"
    shutil.copy(image_file, copy)
    before = replay_cache.obs_signature(str(copy), meta["obs"])
    with h5py.File(copy, "r+") as f:
        f["data/demo_0/obs/agentview_image"][-1] = 255 - f["data/demo_0/obs/agentview_image"][-1]
    assert replay_cache.obs_signature(str(copy), meta["obs"]) != before
    # the eye-in-hand camera is not stored with these settings, so editing it changes nothing
    after = replay_cache.obs_signature(str(copy), meta["obs"])
    with h5py.File(copy, "r+") as f:
        f["data/demo_0/obs/robot0_eye_in_hand_image"][0] = 0
    assert replay_cache.obs_signature(str(copy), meta["obs"]) == after


def test_image_cache_matches_memory_and_dataloader_workers(image_file, tmp_path):
    meta = image_shape_meta(("agentview_image", "robot0_eye_in_hand_image"))
    cached = make(image_file, meta, cache_dir=tmp_path / "cache")
    assert cache_entries(tmp_path / "cache" / "image.hdf5") and "obs/agentview_image" not in cached.replay.arrays
    plain = make(image_file, meta, use_cache=False)
    for i in (0, 5, len(plain) - 1):
        for k in meta["obs"]:
            assert torch.equal(cached[i]["obs"][k], plain[i]["obs"][k])
    loader = torch.utils.data.DataLoader(cached, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    img = torch.cat([b["obs"]["robot0_eye_in_hand_image"] for b in batches])
    assert img.shape == (len(cached), 2, 3, 84, 84)
    expected = torch.stack([plain[i]["obs"]["robot0_eye_in_hand_image"] for i in range(len(plain))])
    assert torch.equal(img, expected)


def test_crash_during_build_leaves_no_cache(lowdim_file, monkeypatch):
    def broken(*args, **kwargs):
        yield from []
        raise RuntimeError("disk full")

    monkeypatch.setattr(replay_cache, "iter_episodes", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make(lowdim_file)
    folder = lowdim_file + ".zprl_cache"
    assert [n for n in os.listdir(folder) if n != ".lock"] == []
    monkeypatch.undo()
    assert len(make(lowdim_file)) > 0 and len(cache_entries(lowdim_file)) == 1


@pytest.mark.parametrize("case", ["missing", "not_hdf5", "not_robomimic", "obs_key", "action_dim",
                                  "no_filter_key", "empty_filter_key", "image_shape", "rgb_dtype", "rot_rep", "odd_rot6d"])
def test_bad_inputs_fail_before_writing(tmp_path, case):
    path = str(tmp_path / "d.hdf5")
    meta, kw = lowdim_shape_meta(), {}
    if case == "missing":
        path = str(tmp_path / "nope.hdf5")
        expect = missing_dataset_message(path)
    else:
        write_robomimic_file(path, lengths=(5, 5), masks={"train": ["demo_0"], "empty": []})
    if case == "not_hdf5":
        with open(path, "w") as f:
            f.write("hello")
        expect = "not an HDF5 file"
    elif case == "not_robomimic":
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=[1])
        expect = "not a robomimic dataset"
    elif case == "obs_key":
        meta["obs"]["robot0_eef_quat"] = {"shape": [4], "type": "low_dim"}
        expect = "obs key 'robot0_eef_quat'"
    elif case == "action_dim":
        meta = lowdim_shape_meta(n_arms=2)
        expect = "action dimension mismatch"
    elif case == "no_filter_key":
        kw["filter_key"] = "20_percent"
        expect = "filter key '20_percent' not found"
    elif case == "empty_filter_key":
        kw["filter_key"] = "empty"
        expect = "lists no demos"
    elif case == "image_shape":
        meta["obs"]["robot0_eef_pos"] = {"shape": [3, 84, 84], "type": "rgb"}
        expect = "shape_meta.obs.robot0_eef_pos.shape"
    elif case == "rgb_dtype":
        with h5py.File(path, "r+") as f:
            for demo in ("demo_0", "demo_1"):
                f[f"data/{demo}/obs"].create_dataset("agentview_image", data=np.zeros((5, 8, 8, 3), np.float32))
        meta = image_shape_meta(image_size=8)
        expect = "has dtype float32, expected uint8"
    elif case == "rot_rep":
        kw["rotation_rep"] = "quaternion"
        expect = "rotation_rep='quaternion'"
    elif case == "odd_rot6d":
        meta = lowdim_shape_meta(action_dim=9)
        expect = "shape_meta.action.shape is [9]"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserInputError) as err:
        make(path, meta, **kw)
    msg = str(err.value)
    assert expect in msg and "\n" not in msg
    assert sorted(os.listdir(tmp_path)) == before  # no cache folder, nothing else


def _build_in_child(path, queue):
    queue.put(make(path).replay.attrs["build_id"])


def test_concurrent_builds_share_one_cache(lowdim_file):
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(lowdim_file, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    ids = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    # The lock lets one process build; the other finds the finished store.
    assert ids[0] == ids[1] and len(cache_entries(lowdim_file)) == 1
    assert [n for n in os.listdir(lowdim_file + ".zprl_cache") if n.startswith(".building")] == []
