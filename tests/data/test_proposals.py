"""detkit.data.proposals: the .npz proposal format, Detectron's pickles
through the restricted unpickler, and compute_proposals' cache."""
import importlib
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from detkit.data import CocoDetection, VOCDetection, proposals as P, read_image, shapes

SS = importlib.import_module("detkit.ops.selective_search")


def random_proposals(ids, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n, image_id in enumerate(ids):
        count = (0, 1, 7, 300)[n % 4]
        xy = rng.uniform(0, 100, (count, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0, 50, (count, 2))], 1).astype(np.float32)
        out[image_id] = (torch.from_numpy(boxes), torch.from_numpy(rng.random(count).astype(np.float32)))
    return out


def assert_same(got, expected):
    assert list(got) == list(expected)
    for key, (boxes, scores) in expected.items():
        assert got[key][0].dtype == torch.float32 and got[key][1].dtype == torch.float32
        assert torch.equal(got[key][0], torch.as_tensor(boxes)) and torch.equal(got[key][1], torch.as_tensor(scores))


# --- the .npz format -----------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [[3, 1, 2, 900000000000], ["000001", "b", "é"], []])
def test_round_trip(tmp_path, ids):
    proposals = random_proposals(ids)
    P.save_proposals(tmp_path / "p.npz", proposals, meta={"mode": "fast"})
    assert_same(P.load_proposals(tmp_path / "p.npz"), proposals)
    assert P._read(tmp_path / "p.npz")[1] == {"mode": "fast"}
    assert os.listdir(tmp_path) == ["p.npz"]  # no temporary file left


def test_arrays_lists_and_float64_are_accepted(tmp_path):
    proposals = {7: (np.array([[0, 0, 10, 10.0]]), [0.5]), 8: ([[1, 2, 3, 4]], np.array([1]))}
    P.save_proposals(tmp_path / "p.npz", proposals)
    loaded = P.load_proposals(tmp_path / "p.npz")
    assert loaded[7][0].tolist() == [[0, 0, 10, 10]] and loaded[8][1].tolist() == [1.0]
    assert loaded[8][0].dtype == torch.float32


@pytest.mark.parametrize("proposals,match", [
    ({1: (np.zeros((2, 3)), np.zeros(2))}, r"proposals\[1\] boxes must have shape \[N, 4\]"),
    ({1: (np.zeros((2, 4)), np.zeros(3))}, r"proposals\[1\] scores must have shape \[2\]"),
    ({"a": (np.array([[0, 0, np.nan, 1]]), np.zeros(1))}, r"proposals\['a'\] boxes\[0\] is not finite"),
    ({1: (np.array([[0, 0, 1, 1], [5, 0, 1, 1]]), np.zeros(2))}, r"boxes\[1\] has x2 < x1"),
    ({1: (np.zeros((1, 4)), np.array([np.inf]))}, r"scores\[0\] is not finite"),
    ({1: (np.zeros((1, 4)), np.zeros(1)), "a": (np.zeros((0, 4)), np.zeros(0))}, "all ints or all strs"),
    ({True: (np.zeros((0, 4)), np.zeros(0))}, "all ints or all strs"),
    ({1: np.zeros((1, 4))}, r"must be a \(boxes, scores\) pair"),
    ({1: (np.array([["a", "b", "c", "d"]]), np.zeros(1))}, "boxes must be a real tensor"),
])
def test_bad_proposals_are_named_and_nothing_is_written(tmp_path, proposals, match):
    path = tmp_path / "p.npz"
    P.save_proposals(path, {5: (np.zeros((1, 4)), np.ones(1))})
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match) as info:
        P.save_proposals(path, proposals)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    P.save_proposals(path, random_proposals([1, 2]))
    before = path.read_bytes()

    def half_write(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(P.np, "savez", half_write)
    with pytest.raises(OSError, match="disk full"):
        P.save_proposals(path, random_proposals([1, 2, 3]))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["p.npz"]


def write_fields(path, **changes):
    """A valid file's fields, some replaced (None drops one), written with plain np.savez."""
    fields = {"ids": np.array([4, 9]), "offsets": np.array([0, 2, 3]), "boxes": np.zeros((3, 4), np.float32),
              "scores": np.zeros(3, np.float32), "meta": np.array("{}")}
    fields.update(changes)
    np.savez(path, **{k: v for k, v in fields.items() if v is not None})
    return path


@pytest.mark.parametrize("changes,match", [
    ({"scores": None}, "missing array.*scores"),
    ({"boxes": np.zeros((3, 5), np.float32)}, "'boxes' must be a float array"),
    ({"boxes": np.zeros((3, 4), np.int64)}, "'boxes' must be a float array"),
    ({"scores": np.zeros(2, np.float32)}, "'scores' must be a float array"),
    ({"offsets": np.array([0, 2])}, "'offsets' must be 3 ints"),
    ({"offsets": np.array([0, 3, 2])}, "'offsets' must rise"),
    ({"offsets": np.array([1, 2, 3])}, "'offsets' must rise"),
    ({"ids": np.array([4, 4])}, "'ids' repeats"),
    ({"ids": np.array([[4, 9]])}, "'ids' must be a 1-d array"),
    ({"ids": np.array([4.0, 9.0])}, "'ids' must be a 1-d array"),
    ({"boxes": np.array([[0, 0, 1, 1]] * 2 + [[0, 0, np.inf, 1]], np.float32)},
     r"boxes\[2\] \(image 9\) is not finite"),
    ({"boxes": np.array([[0, 0, 1, 1], [3, 0, 1, 1], [0, 0, 1, 1]], np.float32)},
     r"boxes\[1\] \(image 4\) has x2 < x1"),
    ({"scores": np.array([0, np.nan, 0], np.float32)}, r"scores\[1\] \(image 4\) is not finite"),
    ({"meta": np.array("[1]")}, "'meta' must be a JSON object"),
    ({"meta": np.array("{")}, "'meta' must be a JSON object"),
    ({"ids": np.array([{"a": 1}, 2], dtype=object)}, "field 'ids' cannot be read"),
])
def test_bad_files_name_file_and_field(tmp_path, changes, match):
    path = write_fields(tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match=match) as info:
        P.load_proposals(path)
    assert str(path) in str(info.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        P.load_proposals(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    np.save(tmp_path / "one.npy", np.zeros(3))
    pickle_path = tmp_path / "evil.npz"
    pickle_path.write_bytes(pickle.dumps({"boxes": []}))
    for name, match in (("junk.npz", "not a readable .npz"), ("one.npy", "single .npy"),
                        ("evil.npz", "not a readable .npz"), ("", "not a readable .npz")):
        with pytest.raises(ValueError, match=match) as info:
            P.load_proposals(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


def test_valid_hand_written_file_loads(tmp_path):
    """The format is the documented arrays, not whatever save_proposals happens to do."""
    path = write_fields(tmp_path / "ok.npz", ids=np.array(["x", "y"]),
                        boxes=np.array([[0, 0, 1, 2], [1, 1, 2, 2], [5, 5, 6, 6]], np.float64))
    loaded = P.load_proposals(path)
    assert list(loaded) == ["x", "y"]
    assert loaded["x"][0].tolist() == [[0, 0, 1, 2], [1, 1, 2, 2]] and loaded["y"][0].shape == (1, 4)


# --- Detectron's pickles -------------------------------------------------------------------------


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class EvalCall:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


def detectron_dict(ids=(10, 11)):
    """Detectron's layout: lists of per-image arrays, and the config as YAML text."""
    xy = np.random.default_rng(0).uniform(0, 50, (3, 2))
    boxes = np.concatenate([xy, xy + 10], 1).astype(np.float32)
    return {"ids": list(ids), "boxes": [boxes, np.zeros((0, 4), np.float32)],
            "scores": [np.linspace(1, 0, 3, dtype=np.float32), np.zeros(0, np.float32)],
            "cfg": "MODEL:\n  TYPE: generalized_rcnn\n"}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_detectron_pickle_loads(tmp_path, protocol):
    data = detectron_dict()
    data["ids"] = [np.int64(10), 11]  # Detectron's ids may be numpy scalars
    path = tmp_path / "rpn_proposals.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = P.load_detectron_proposals(path)
    assert list(loaded) == [10, 11]
    assert torch.equal(loaded[10][0], torch.from_numpy(data["boxes"][0]))
    assert loaded[11][0].shape == (0, 4) and loaded[10][1].dtype == torch.float32


def test_detectron2_pickle_with_box_mode(tmp_path, monkeypatch):
    """detectron2 files: objectness_logits and a BoxMode enum (pickled by name)."""
    for parent in ("detectron2", "detectron2.structures"):  # pickle imports the whole path
        monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType("detectron2.structures.boxes")

    class BoxMode(int):
        def __reduce__(self):
            return BoxMode, (int(self),)

    BoxMode.__module__, BoxMode.__qualname__ = module.__name__, "BoxMode"
    module.BoxMode = BoxMode
    monkeypatch.setitem(sys.modules, module.__name__, module)
    data = {"ids": ["a"], "boxes": [np.array([[1, 2, 3, 4]], np.float32)], "objectness_logits": [np.array([2.5])],
            "bbox_mode": BoxMode(1)}  # XYWH_ABS
    path = tmp_path / "d2.pkl"
    path.write_bytes(pickle.dumps(data))
    for name in ("detectron2", "detectron2.structures", module.__name__):  # as where detectron2 is not installed
        monkeypatch.delitem(sys.modules, name)
    loaded = P.load_detectron_proposals(path)
    assert loaded["a"][0].tolist() == [[1, 2, 4, 6]] and loaded["a"][1].tolist() == [2.5]
    data["bbox_mode"] = 4  # XYXY_REL
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match="'bbox_mode' must be XYXY_ABS"):
        P.load_detectron_proposals(path)


class HugeBytes:
    def __reduce__(self):
        return bytes, (10**12,)


@pytest.mark.parametrize("payload,match", [
    ("top", "posix.system"), ("nested", "posix.system"), ("object_array", "posix.system"),
    ("eval", "builtins.eval"), ("huge_bytes", r"bytes\(\) with arguments"),
])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, match):
    marker = tmp_path / "pwned"
    data = detectron_dict()
    if payload == "top":
        data = Evil(marker)
    elif payload == "nested":
        data["boxes"][1] = Evil(marker)
    elif payload == "object_array":
        data["boxes"][1] = np.array([Evil(marker)], dtype=object)
    elif payload == "eval":
        data["cfg"] = EvalCall()
    else:
        data["cfg"] = HugeBytes()
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ValueError, match=f"refusing.*{match}") as info:
        P.load_detectron_proposals(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    os.system(f"touch {marker}")  # the marker works: had the payload run, the file would exist
    assert marker.exists()


@pytest.mark.parametrize("change,match", [
    (lambda d: d.pop("scores"), "missing field.*scores .*or objectness_logits"),
    (lambda d: d.pop("ids"), "missing field.*ids"),
    (lambda d: d["ids"].append(12), "lists of one length"),
    (lambda d: d.__setitem__("ids", [10, 10]), "repeats"),
    (lambda d: d["boxes"][0].__setitem__((1, 2), np.nan), r"image 10 boxes\[1\] is not finite"),
    (lambda d: d["boxes"].__setitem__(0, np.zeros((3, 5))), "image 10 boxes must have shape"),
    (lambda d: d["boxes"].__setitem__(0, np.array(["a"] * 3, dtype=object)), "boxes must be a real"),
    (lambda d: d.__setitem__("ids", "xy"), "lists of one length"),
])
def test_bad_detectron_pickles_are_named(tmp_path, change, match):
    data = detectron_dict()
    change(data)
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError, match=match) as info:
        P.load_detectron_proposals(path)
    assert str(path) in str(info.value)


def test_not_a_pickle(tmp_path):
    for content in (b"", b"garbage\x00\x01", pickle.dumps([1, 2])[:-3], pickle.dumps([1, 2])):
        (tmp_path / "x.pkl").write_bytes(content)
        with pytest.raises(ValueError, match="x.pkl"):
            P.load_detectron_proposals(tmp_path / "x.pkl")
    with pytest.raises(FileNotFoundError, match="nope.pkl"):
        P.load_detectron_proposals(tmp_path / "nope.pkl")


# --- compute_proposals ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return shapes.generate(tmp_path_factory.mktemp("ss"), num_train=4, num_val=0, image_size=64, seed=4)


@pytest.fixture
def counted(monkeypatch):
    """Counts selective_search calls (by image height x width x sum, to tell images apart)."""
    calls = []
    real = SS.selective_search

    def spy(image, mode="fast", seed=0):
        calls.append(int(image.sum()))
        return real(image, mode=mode, seed=seed)

    monkeypatch.setattr(SS, "selective_search", spy)
    return calls


def test_compute_proposals_for_a_coco_dataset(tmp_path, small_set, counted):
    dataset = CocoDetection(small_set.image_root, small_set.coco_train)
    path = tmp_path / "props.npz"
    got = P.compute_proposals(dataset, path, max_proposals=30, progress=False)
    assert list(got) == dataset.ids and len(counted) == 4
    for image_id, (boxes, scores) in got.items():
        image = read_image(os.path.join(small_set.image_root, dataset.images[image_id]["file_name"]))
        assert torch.equal(boxes, SS.selective_search(image)[:30])
        assert len(boxes) <= 30 and scores[0] == 1 and (scores[1:] < scores[:-1]).all() and scores[-1] > 0
    assert_same(P.load_proposals(path), got)
    counted.clear()
    assert_same(P.compute_proposals(dataset, path, max_proposals=30, progress=False), got)
    assert counted == []  # computed once


def test_compute_proposals_resumes_and_extends(tmp_path, small_set, counted, monkeypatch):
    files = sorted(os.listdir(small_set.image_root))
    paths = [os.path.join(small_set.image_root, name) for name in files]
    path = tmp_path / "props.npz"
    real = SS.selective_search

    def dies_on_third(image, mode="fast", seed=0):
        if len(counted) == 2:
            raise KeyboardInterrupt
        return real(image, mode=mode, seed=seed)

    monkeypatch.setattr(SS, "selective_search", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        P.compute_proposals(paths[:3], path, progress=False, save_every=1)
    assert list(P.load_proposals(path)) == ["000001", "000002"]
    monkeypatch.setattr(SS, "selective_search", real)
    got = P.compute_proposals(paths, path, progress=False)  # two more, the third one new
    assert list(got) == [os.path.splitext(f)[0] for f in files]
    assert list(P.load_proposals(path)) == list(got)
    with pytest.raises(ValueError, match="made with .*'max_proposals': 2000.* not .*'max_proposals': 5"):
        P.compute_proposals(paths, path, max_proposals=5, progress=False)


def test_compute_proposals_for_voc_and_mappings(tmp_path, small_set):
    voc = VOCDetection(small_set.voc_root, image_set="train", classes=small_set.classes)
    from_voc = P.compute_proposals(voc, tmp_path / "voc.npz", mode="single", progress=False)
    assert list(from_voc) == voc.ids
    mapping = {7: os.path.join(small_set.image_root, "000002.jpg")}
    from_map = P.compute_proposals(mapping, tmp_path / "map.npz", mode="single", progress=False)
    assert torch.equal(from_map[7][0], from_voc["000002"][0])


def test_compute_proposals_argument_errors(tmp_path, small_set):
    same_name = [os.path.join(small_set.image_root, "000001.jpg"), os.path.join(tmp_path, "000001.jpg")]
    with pytest.raises(ValueError, match="two images are named '000001'"):
        P.compute_proposals(same_name, tmp_path / "p.npz", progress=False)
    with pytest.raises(ValueError, match="images must be"):
        P.compute_proposals(42, tmp_path / "p.npz", progress=False)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="max_proposals"):
            P.compute_proposals([], tmp_path / "p.npz", max_proposals=bad)
    with pytest.raises(ValueError, match="mode"):
        P.compute_proposals([os.path.join(small_set.image_root, "000001.jpg")], tmp_path / "p.npz", mode="slow",
                            progress=False)
    assert not (tmp_path / "p.npz").exists()


# --- datasets that supply proposals (Fast R-CNN's training input) --------------------------------


def test_datasets_hand_out_their_proposals_beside_the_targets(tmp_path, small_set):
    coco = CocoDetection(small_set.image_root, small_set.coco_train)
    found = P.compute_proposals(coco, tmp_path / "coco.npz", max_proposals=20, progress=False)
    with_props = CocoDetection(small_set.image_root, small_set.coco_train, proposals=found)
    for index, image_id in enumerate(with_props.ids):
        _, target = with_props[index]
        assert target["proposals"].dtype == np.float32
        assert np.array_equal(target["proposals"], found[image_id][0].numpy())
        assert "proposals" not in coco[index][1]
    voc = VOCDetection(small_set.voc_root, image_set="train", classes=small_set.classes)
    voc_found = P.compute_proposals(voc, tmp_path / "voc.npz", max_proposals=20, progress=False)
    voc = VOCDetection(small_set.voc_root, image_set="train", classes=small_set.classes, proposals=voc_found)
    assert np.array_equal(voc[0][1]["proposals"], voc_found[voc.ids[0]][0].numpy())


def test_a_dataset_refuses_proposals_that_miss_images_or_are_malformed(small_set):
    ids = CocoDetection(small_set.image_root, small_set.coco_train).ids
    partial = {i: (torch.zeros(1, 4), torch.ones(1)) for i in ids[1:]}
    with pytest.raises(ValueError, match=rf"instances_train.json: the proposals lack 1 of its 4 images, "
                                         rf"e.g. image ids {ids[0]}"):
        CocoDetection(small_set.image_root, small_set.coco_train, proposals=partial)
    bad = {i: (torch.zeros(2, 3), torch.ones(2)) for i in ids}
    with pytest.raises(ValueError, match=rf"proposals of image {ids[0]} must be boxes \[P, 4\], got shape \(2, 3\)"):
        CocoDetection(small_set.image_root, small_set.coco_train, proposals=bad)
    with pytest.raises(ValueError, match=r"train.txt: proposals must be a mapping"):
        VOCDetection(small_set.voc_root, image_set="train", classes=small_set.classes, proposals=[1, 2])
