"""Face data layer: loading with unreadable-image reports, LFW pairs/splits, exact and random degradation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rankface.data.faces import (
    VeryLowResolution,
    degrade_exact,
    lfw_filename,
    lfw_fold_identities,
    load_face_dataset,
    pair_rows,
    read_lfw_pairs,
    read_lfw_splits,
    select_identities,
)


def _face(seed: int, size: int = 112) -> np.ndarray:
    """A smooth synthetic 'face' (gradients + a blob) so that resizing has structure to act on."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.3, 0.7, 2)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
    chans = [(255 * (a * yy + b * xx + c * blob) / (a + b + c)) for a, b, c in rng.uniform(0.2, 1.0, (3, 3))]
    return np.clip(np.stack(chans, axis=-1), 0, 255).astype(np.uint8)


@pytest.fixture
def imagefolder(tmp_path):
    root = tmp_path / "faces"
    for i, who in enumerate(("alice", "bob")):
        (root / who).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(_face(10 * i + k)).save(root / who / f"{who}_{k}.png")
    (root / "bob" / "bob_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return root


def test_imagefolder_counts_and_reports_unreadable(imagefolder, tmp_path):
    ds, report = load_face_dataset(imagefolder, cache_dir=str(tmp_path / "cache"))
    assert report.num_rows == 7
    assert report.num_corrupt == 1 and report.num_readable == 6 == len(ds)
    assert report.corrupt[0][1].endswith("bob_broken.jpg")
    assert report.num_identities == 2
    assert "1 unreadable" in report.summary()
    assert ds[0]["image"].size == (112, 112)
    with pytest.raises(ValueError, match="1 of 7 images are unreadable"):
        load_face_dataset(imagefolder, on_corrupt="raise", cache_dir=str(tmp_path / "cache"))


def test_parquet_folder_and_bad_columns(tmp_path):
    import datasets

    names = ["a/a_0001.jpg", "a/a_0002.jpg", "b/b_0001.jpg"]
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_face(i)) for i in range(3)], "label": [0, 0, 1],
         "identity": ["a", "a", "b"], "filename": names},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"]),
                                    "identity": datasets.Value("string"), "filename": datasets.Value("string")}),
    )
    folder = tmp_path / "pq"
    folder.mkdir()
    ds.to_parquet(str(folder / "data-00000-of-00001.parquet"))
    loaded, report = load_face_dataset(folder, cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 3 and report.num_corrupt == 0 and report.num_identities == 2
    assert loaded.features["label"].names == ["a", "b"]
    assert select_identities(loaded, ["b"])["filename"] == ["b/b_0001.jpg"]
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['person'\\]"):
        load_face_dataset(folder, label_column="person", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError):
        load_face_dataset(tmp_path / "nope" / "x", cache_dir=str(tmp_path / "cache"))


def test_read_lfw_pairs_and_rows(tmp_path):
    text = "2\t1\nann\t1\t2\nann\t1\tbob\t1\nbob\t1\t2\nann\t2\tbob\t2\n"
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    pairs = read_lfw_pairs(path)
    assert [(p.fold, p.same) for p in pairs] == [(0, True), (0, False), (1, True), (1, False)]
    assert pairs[1].first == "ann/ann_0001.jpg" and pairs[1].second == "bob/bob_0001.jpg"
    assert lfw_filename("x", 12) == "x/x_0012.jpg"

    class Rows:  # the one column pair_rows reads, in the form datasets returns it
        column_names = ("filename",)

        def __getitem__(self, key):
            return ["bob/bob_0002.jpg", "ann/ann_0001.jpg", "ann/ann_0002.jpg", "bob/bob_0001.jpg"]

    np.testing.assert_array_equal(pair_rows(Rows(), pairs), [[1, 2], [1, 3], [3, 0], [2, 0]])
    path.write_text(text.replace("bob\t1\t2\n", "bob\t1\n"))
    with pytest.raises(ValueError, match="pairs.txt:4: 'bob 1': expected 'name i j'"):
        read_lfw_pairs(path)
    path.write_text("2\t1\nann\t1\t2\n")
    with pytest.raises(ValueError, match="1 pair rows, expected 2 x 2 x 1 = 4"):
        read_lfw_pairs(path)


def test_real_lfw_pairs_and_splits(shared):
    lfw = shared / "data" / "face" / "lfw112"
    pairs = read_lfw_pairs(lfw / "pairs.txt")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    assert np.bincount([p.fold for p in pairs]).tolist() == [600] * 10
    splits = read_lfw_splits(lfw / "splits.json")
    train, test = lfw_fold_identities(splits, 3)
    assert len(test) == 423 and len(train) == 5326 and not train & test
    fold3 = {name.split("/")[0] for p in pairs if p.fold == 3 for name in (p.first, p.second)}
    assert fold3 == test


def test_degrade_exact_is_the_two_opencv_calls():
    import cv2

    img = _face(1)
    for r in (8, 16, 24):
        want = cv2.resize(cv2.resize(img, (r, r), interpolation=cv2.INTER_AREA), (112, 112),
                          interpolation=cv2.INTER_CUBIC)
        np.testing.assert_array_equal(degrade_exact(img, r), want)
    np.testing.assert_array_equal(degrade_exact(img, 112), img)
    with pytest.raises(ValueError, match="r = 0"):
        degrade_exact(img, 0)
    with pytest.raises(ValueError, match="square uint8"):
        degrade_exact(img.astype(np.float32), 8)


def test_very_low_resolution_is_seeded_and_deterministic():
    img = _face(2)
    plain = VeryLowResolution(min_resolution=8, max_resolution=20, seed=7)
    # Without blur/noise/JPEG it is exactly degrade_exact at the sampled resolution.
    for index in range(5):
        r = plain.sample_resolution(index)
        assert 8 <= r <= 20
        np.testing.assert_array_equal(plain(img, index), degrade_exact(img, r))
    full = VeryLowResolution(min_resolution=6, max_resolution=16, blur_prob=1.0, jpeg_prob=1.0, noise_prob=1.0,
                             seed=3)
    a, b = full(img, 11), VeryLowResolution(**full.__dict__)(Image.fromarray(img), 11)
    assert a.shape == img.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)  # same seed + index -> same output, whatever the input type
    assert any(not np.array_equal(full(img, 11), full(img, k)) for k in range(12, 16))
    full.set_epoch(1)
    assert not np.array_equal(full(img, 11), a)
    never = VeryLowResolution(p=0.0)
    assert never.sample_resolution(0) is None
    np.testing.assert_array_equal(never(img, 0), img)
    with pytest.raises(ValueError, match="resolution range"):
        VeryLowResolution(min_resolution=20, max_resolution=10)


def test_validation_pairs_are_balanced_seeded_and_within_their_identities():
    from rankface.data.faces import validation_pairs

    rows_of = {"solo_a": [0], "solo_b": [1], "pair": [2, 3], "many": [4, 5, 6, 7, 8], "solo_c": [9]}
    owner = {r: name for name, rows in rows_of.items() for r in rows}
    index, same, used = validation_pairs(rows_of, seed=1, max_genuine_per_identity=3)
    # genuine: the one pair of "pair", 3 of the 10 pairs of "many" (capped); as many impostors
    assert same.sum() == 4 and (~same).sum() == 4
    for (a, b), genuine in zip(index.tolist(), same.tolist(), strict=True):
        assert a != b and (owner[a] == owner[b]) == genuine
    assert sum(owner[a] == "many" for a, _ in index[same].tolist()) == 3
    assert len({tuple(sorted(p)) for p in index.tolist()}) == len(index)  # no pair twice
    assert used == {owner[r] for r in index.reshape(-1).tolist()} and {"pair", "many"} <= used
    again = validation_pairs(rows_of, seed=1, max_genuine_per_identity=3)
    assert np.array_equal(again[0], index) and np.array_equal(again[1], same)
    assert not np.array_equal(validation_pairs(rows_of, seed=2, max_genuine_per_identity=3)[0], index)
    with pytest.raises(ValueError, match="need >= 2 identities and one with >= 2 images"):
        validation_pairs({"solo_a": [0], "solo_b": [1]})
