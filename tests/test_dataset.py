"""Manifests and the torch dataset: validation, item contract, sampling, padding, reproducibility."""

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from data.augment import AugmentSettings
from data.dataset import DatasetSettings, SmpDataset, load_photo
from data.manifest import COLUMNS, ManifestError, concat_manifests, read_manifest

KEYS = {
    "image",
    "mask",
    "points",
    "n_points",
    "visible",
    "n_points_total",
    "has_points",
    "px_per_mm",
    "index",
    "origin",
}


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory):
    """Four small synthetic close-ups and their manifest (generated once)."""
    from data.card import load_card
    from data.config import load_settings
    from data.flags import load_flag_settings
    from data.synth.generate import generate_images, write_manifest
    from data.synth.settings import SynthSettings

    cfg = load_settings(SynthSettings, None, ["image.width=320", "image.height=240"], default="synth/closeup.yaml")
    out = tmp_path_factory.mktemp("dataset_synth")
    rows = [m.row for m in generate_images(out, 4, cfg, load_card(), load_flag_settings(), seed=9)]
    return write_manifest(out, rows)


def _write_photo(folder, name, image, mask, points=None, px_per_mm=12.0, split="train", view="closeup"):
    """Write a hand-made labelled photo; return its manifest row (paths relative to ``folder``)."""
    (folder / name).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name / "photo.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / name / "mask.png"), mask)
    dots = ""
    if points is not None:
        pd.DataFrame(
            {"dot_id": np.arange(len(points)), "x": points[:, 0], "y": points[:, 1], "diameter_mm": 0.2}
        ).to_csv(folder / name / "dots.csv", index=False)
        dots = f"{name}/dots.csv"
    return {
        "image": f"{name}/photo.png",
        "mask": f"{name}/mask.png",
        "dots": dots,
        "truth": "",
        "px_per_mm": "" if px_per_mm is None else px_per_mm,
        "view": view,
        "split": split,
        "source": "test",
        "client": "",
        "visit": "",
    }


def _write_manifest(folder, rows, name="manifest.csv"):
    path = folder / name
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    return path


def _noise_photo(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- manifest ---------------------------------------------------------------------------------


def test_read_synthetic_manifest(synth_manifest):
    m = read_manifest(synth_manifest)
    assert len(m) == 4 and all(r.image.is_absolute() and r.image.is_file() for r in m)
    assert all(r.view == "closeup" and r.source == "synthetic" and r.px_per_mm > 0 for r in m)
    train = read_manifest(synth_manifest, split="train")
    assert len(train) == sum(r.split == "train" for r in m)
    assert len(m.filter(split=["train", "val", "test"])) == 4
    with pytest.raises(ManifestError, match="unknown split 'training'"):
        m.filter(split="training")
    frame = m.to_frame()
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4
    with pytest.raises(AttributeError):
        m.rows[0].split = "val"  # frozen


def test_manifest_errors_are_one_line_and_name_row_and_column(tmp_path):
    rng = np.random.default_rng(0)
    rows = [_write_photo(tmp_path, f"p{i}", _noise_photo(rng, 20, 20), np.ones((20, 20), np.uint8)) for i in range(3)]

    def error(rows, **frame_edits):
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        for col in frame_edits.get("drop", []):
            frame = frame.drop(columns=col)
        frame.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(ManifestError) as err:
            read_manifest(tmp_path / "bad.csv")
        assert isinstance(err.value, ValueError) and "\n" not in str(err.value)
        return str(err.value)

    msg = error(rows, drop=["mask"])
    assert "missing column(s) 'mask'" in msg
    broken = [dict(r) for r in rows]
    broken[2]["mask"] = "p2/nope.png"
    msg = error(broken)
    assert "row 2" in msg and "column 'mask'" in msg and "file not found" in msg and "nope.png" in msg
    broken = [dict(r) for r in rows]
    broken[1]["view"] = "macro"
    msg = error(broken)
    assert "row 1" in msg and "column 'view'" in msg and "'macro'" in msg
    broken = [dict(r) for r in rows]
    broken[0]["px_per_mm"] = "ten"
    assert "row 0" in error(broken) and "px_per_mm" in error(broken)
    broken = [dict(r) for r in rows]
    broken[0]["split"] = "Train"
    assert "column 'split'" in error(broken)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "missing.csv")


def test_optional_columns_and_concat(tmp_path, synth_manifest):
    rng = np.random.default_rng(1)
    row = _write_photo(
        tmp_path,
        "human",
        _noise_photo(rng, 30, 40),
        np.ones((30, 40), np.uint8),
        px_per_mm=None,
        split="val",
        view="global",
    )
    m = read_manifest(_write_manifest(tmp_path, [row]))
    (r,) = m
    assert r.px_per_mm is None and r.dots is None and r.truth is None and r.view == "global"
    both = concat_manifests([read_manifest(synth_manifest), m])
    assert len(both) == 5 and both[4] == r and len(both.sources) == 2
    with pytest.raises(ManifestError, match="already listed"):
        concat_manifests([m, m])


# --- item contract ----------------------------------------------------------------------------


def test_item_shapes_dtypes_and_collate(synth_manifest):
    ds = SmpDataset(read_manifest(synth_manifest), DatasetSettings(crop_size=96, max_points=256, crops_per_image=2))
    assert len(ds) == 8
    item = ds[3]
    assert set(item) == KEYS
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 96, 96)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (96, 96)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 2, 255}
    assert item["points"].dtype == torch.float32 and item["points"].shape == (256, 2)
    n = int(item["n_points"])
    assert item["n_points"].dtype == torch.int64 and item["n_points_total"] == n
    assert torch.isfinite(item["points"][:n]).all() and torch.isnan(item["points"][n:]).all()
    assert ((item["points"][:n] >= 0) & (item["points"][:n] < 96)).all()
    assert item["px_per_mm"].dtype == torch.float32 and item["px_per_mm"] > 0
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 1
    assert bool(item["has_points"])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 96, 96) and batch["points"].shape == (4, 256, 2)


def test_small_photo_is_padded_with_ignore(tmp_path):
    rng = np.random.default_rng(2)
    h, w = 40, 50
    mask = np.ones((h, w), np.uint8)
    mask[:, :10] = 0
    pts = np.array([[20.0, 20.0], [45.5, 5.25]])
    path = _write_manifest(
        tmp_path, [_write_photo(tmp_path, "small", _noise_photo(rng, h, w), mask, pts, px_per_mm=None)]
    )
    for settings, augment in [
        (DatasetSettings(crop_size=64), AugmentSettings.none()),
        (DatasetSettings(crop_size=64), AugmentSettings()),
        (DatasetSettings(mode="tiles", crop_size=64), AugmentSettings()),
    ]:
        ds = SmpDataset(read_manifest(path), settings, augment)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
            labelled = item["mask"] != 255
            assert 0 < labelled.sum() <= h * w  # the photo is inside, the rest is ignore
            assert (item["mask"] == 255).sum() >= 64 * 64 - h * w
            assert torch.isnan(item["px_per_mm"])
    # without augmentation the photo sits unchanged inside the padded crop, dots moved with it
    ds = SmpDataset(read_manifest(path), DatasetSettings(crop_size=64), AugmentSettings.none())
    item = ds[0]
    ox, oy = item["origin"].tolist()
    assert -14 <= ox <= 0 and -24 <= oy <= 0
    m = item["mask"].numpy()
    assert np.array_equal(m[-oy : -oy + h, -ox : -ox + w], mask)
    photo = load_photo(ds.manifest[0]).image
    img = (item["image"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
    assert np.array_equal(img[-oy : -oy + h, -ox : -ox + w], photo)
    np.testing.assert_allclose(item["points"][:2].numpy(), pts - (ox, oy), atol=1e-5)
    reflect = SmpDataset(
        read_manifest(path), DatasetSettings(crop_size=64, pad_image="constant"), AugmentSettings.none()
    )[0]
    assert (reflect["image"][:, reflect["mask"] == 255] == 0).all()


def test_tiles_cover_the_photo_and_full_mode(synth_manifest):
    manifest = read_manifest(synth_manifest)
    ds = SmpDataset(manifest, DatasetSettings(mode="tiles", crop_size=128, tile_overlap=16))
    photo = load_photo(manifest[0])
    h, w = photo.mask.shape
    rebuilt = np.full((h, w), -1, np.int64)
    points = []
    for i in range(len(ds)):
        item = ds[i]
        if int(item["index"]) != 0:
            continue
        x0, y0 = item["origin"].tolist()
        m = item["mask"].numpy()
        rebuilt[y0 : y0 + 128, x0 : x0 + 128] = m[: h - y0, : w - x0]
        n = int(item["n_points"])
        points += [(x + x0, y + y0) for x, y in item["points"][:n].tolist()]
    assert np.array_equal(rebuilt, photo.mask)
    # every tile dot is a photo dot and every photo dot is in some tile (float32 tolerance: the
    # coordinates are written with 4 decimals, so rounding both sides would split ties)
    d = np.hypot(*(np.asarray(points)[:, None, :] - photo.points[None, :, :]).transpose(2, 0, 1))
    assert d.min(axis=1).max() < 1e-3 and d.min(axis=0).max() < 1e-3
    full = SmpDataset(manifest, DatasetSettings(mode="full", max_points=4096))[0]
    assert full["image"].shape == (3, h, w) and np.array_equal(full["mask"].numpy(), photo.mask)
    assert int(full["n_points"]) == len(photo.points)


def test_input_normalisation_is_applied_to_the_whole_photo(synth_manifest):
    from data.photometry import white_point_normalise

    manifest = read_manifest(synth_manifest)
    raw = load_photo(manifest[0])
    plain = SmpDataset(manifest, DatasetSettings(mode="full"))
    norm = SmpDataset(manifest, DatasetSettings(mode="full", input_norm="white_point"))
    assert np.array_equal(plain.photo(0).image, raw.image)
    assert np.array_equal(norm.photo(0).image, white_point_normalise(raw.image))
    assert np.array_equal(norm.photo(0).mask, raw.mask)
    assert not torch.equal(plain[0]["image"], norm[0]["image"])


def test_max_points_keeps_dots_nearest_the_centre(tmp_path):
    rng = np.random.default_rng(3)
    pts = np.array([[x, y] for x in range(4, 60, 8) for y in range(4, 60, 8)], float)
    path = _write_manifest(
        tmp_path, [_write_photo(tmp_path, "many", _noise_photo(rng, 64, 64), np.ones((64, 64), np.uint8), pts)]
    )
    item = SmpDataset(read_manifest(path), DatasetSettings(mode="full", max_points=10))[0]
    assert int(item["n_points"]) == 10 and int(item["n_points_total"]) == len(pts)
    kept = item["points"].numpy()
    d_kept = np.hypot(kept[:, 0] - 31.5, kept[:, 1] - 31.5)
    d_all = np.sort(np.hypot(pts[:, 0] - 31.5, pts[:, 1] - 31.5))
    assert d_kept.max() <= d_all[9] + 1e-6


# --- randomness -------------------------------------------------------------------------------


def test_same_seed_same_items_other_epoch_differs(synth_manifest):
    manifest = read_manifest(synth_manifest)
    settings = DatasetSettings(crop_size=96, crops_per_image=2, seed=5, cache_images=2)
    a, b = SmpDataset(manifest, settings), SmpDataset(manifest, settings)
    for i in (0, 5, 3):  # order does not matter
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) or (x[k].isnan() == y[k].isnan()).all() for k in x)
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    first = a[0]
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(a[0]["image"], first["image"])
    a.set_epoch(0)
    assert torch.equal(a[0]["image"], first["image"])
    other = SmpDataset(manifest, settings.model_copy(update={"seed": 6}))
    assert not torch.equal(other[0]["image"], first["image"])


def test_items_do_not_depend_on_worker_count(synth_manifest):
    ds = SmpDataset(read_manifest(synth_manifest), DatasetSettings(crop_size=64, crops_per_image=2, seed=1))
    serial = torch.cat([b["image"] for b in DataLoader(ds, batch_size=3, num_workers=0)])
    parallel = torch.cat([b["image"] for b in DataLoader(ds, batch_size=3, num_workers=2)])
    assert torch.equal(serial, parallel)


# --- sampling ---------------------------------------------------------------------------------


def test_class_aware_sampling_raises_the_share_of_rare_hair(tmp_path):
    rng = np.random.default_rng(4)
    h, w = 400, 400
    mask = np.ones((h, w), np.uint8)
    mask[:, :60] = 0
    for x0 in (300, 320):  # two thin strands in one corner: 0.3 % of the pixels
        cv2.line(mask, (x0, 330), (x0 + 40, 395), 2, 2)
    hair_share = (mask == 2).mean()
    assert hair_share < 0.01
    path = _write_manifest(tmp_path, [_write_photo(tmp_path, "rare", _noise_photo(rng, h, w), mask)])

    def share(focus_p):
        ds = SmpDataset(
            read_manifest(path),
            DatasetSettings(crop_size=64, crops_per_image=150, focus_p=focus_p),
            AugmentSettings.none(),
        )
        masks = torch.stack([ds[i]["mask"] for i in range(len(ds))])
        return (masks == 2).float().mean().item()

    uniform, focused = share(0.0), share(1.0)
    assert uniform < 0.01
    assert focused > 4 * uniform and focused > 0.02


def test_dot_focused_crops_contain_dots(synth_manifest):
    manifest = read_manifest(synth_manifest)
    only_dots = {"background": 0.0, "scalp": 0.0, "hair": 0.0, "dots": 1.0}
    ds = SmpDataset(
        manifest,
        DatasetSettings(crop_size=48, crops_per_image=10, focus_p=1.0, focus=only_dots, dot_jitter=0.2),
        AugmentSettings.none(),
    )
    with_dots = [int(ds[i]["n_points"]) > 0 for i in range(len(ds)) if len(load_photo(manifest[i // 10]).points) > 0]
    assert len(with_dots) > 0 and all(with_dots)


def test_train_crop_geometry_matches_photo_without_augmentation(synth_manifest):
    manifest = read_manifest(synth_manifest)
    ds = SmpDataset(manifest, DatasetSettings(crop_size=80, crops_per_image=3), AugmentSettings.none())
    for i in range(len(ds)):
        item = ds[i]
        photo = load_photo(manifest[int(item["index"])])
        ox, oy = item["origin"].tolist()
        assert 0 <= ox <= 320 - 80 and 0 <= oy <= 240 - 80
        assert np.array_equal(item["mask"].numpy(), photo.mask[oy : oy + 80, ox : ox + 80])
        n = int(item["n_points"])
        local = photo.points - (ox, oy)
        inside = local[np.all((local >= -0.5) & (local < 79.5), axis=1)]
        np.testing.assert_allclose(np.sort(item["points"][:n].numpy(), axis=0), np.sort(inside, axis=0), atol=1e-3)
        assert math.isclose(float(item["px_per_mm"]), photo.px_per_mm, rel_tol=1e-6)


def test_augmented_crops_keep_dots_on_the_scalp_and_scale(synth_manifest):
    manifest = read_manifest(synth_manifest)
    full = AugmentSettings.model_validate({"affine": {"p": 1.0}, "perspective": {"p": 1.0}})
    ds = SmpDataset(manifest, DatasetSettings(crop_size=96, crops_per_image=6, focus_p=0.8), full)
    on_skin, total = 0, 0
    for i in range(len(ds)):
        item = ds[i]
        n = int(item["n_points"])
        xy = item["points"][:n].round().long().clamp(0, 95)
        cls = item["mask"][xy[:, 1], xy[:, 0]]
        on_skin += int(((cls == 1) | (cls == 2) | (cls == 255)).sum())
        total += n
        ppm = manifest[int(item["index"])].px_per_mm
        assert 0.8 * ppm < float(item["px_per_mm"]) < 1.4 * ppm  # affine 0.85-1.15, keystone zooms in
    assert total > 50 and on_skin / total > 0.97
    zoom = AugmentSettings.model_validate(
        {"affine": {"p": 1.0, "scale": (1.1, 1.1), "shear_deg": (0, 0)}, "perspective": {"p": 0.0}}
    )
    item = SmpDataset(manifest, DatasetSettings(crop_size=64), zoom)[0]
    assert float(item["px_per_mm"]) == pytest.approx(1.1 * manifest[0].px_per_mm, rel=1e-5)


# --- visibility -------------------------------------------------------------------------------


def _visible_photo(tmp_path, visible_column):
    """A 64x64 photo with dots at (10, 10), (40, 40), (50, 20); ``visible_column`` None: no column."""
    rng = np.random.default_rng(8)
    pts = np.array([[10.0, 10.0], [40.0, 40.0], [50.0, 20.0]])
    row = _write_photo(tmp_path, "vis", _noise_photo(rng, 64, 64), np.ones((64, 64), np.uint8), pts)
    if visible_column is not None:
        dots = pd.read_csv(tmp_path / "vis" / "dots.csv")
        dots["visible"] = visible_column
        dots.to_csv(tmp_path / "vis" / "dots.csv", index=False)
    return read_manifest(_write_manifest(tmp_path, [row]))


def test_visible_column_is_carried_to_items(tmp_path):
    manifest = _visible_photo(tmp_path, [True, False, True])
    assert load_photo(manifest[0]).visible.tolist() == [True, False, True]
    item = SmpDataset(manifest, DatasetSettings(mode="full", max_points=8))[0]
    assert item["visible"].dtype == torch.bool and item["visible"].tolist() == [True, False, True] + [False] * 5
    # crops: each kept dot keeps its own flag (no augmentation: positions are the photo's minus the origin)
    ds = SmpDataset(
        manifest, DatasetSettings(crop_size=40, crops_per_image=12, max_points=8, focus_p=0.0), AugmentSettings.none()
    )
    truth = {(10.0, 10.0): True, (40.0, 40.0): False, (50.0, 20.0): True}
    seen = set()
    for i in range(len(ds)):
        it = ds[i]
        ox, oy = it["origin"].tolist()
        for (x, y), vis in zip(it["points"][: int(it["n_points"])].tolist(), it["visible"].tolist()):
            key = (round(x + ox, 3), round(y + oy, 3))
            assert truth[key] == vis
            seen.add(key)
        assert not it["visible"][int(it["n_points"]) :].any()
    assert (40.0, 40.0) in seen
    # augmented crops: flags follow their dots through the geometry (3 dots, 1 invisible at most)
    aug = SmpDataset(
        manifest,
        DatasetSettings(crop_size=64, crops_per_image=6, max_points=8),
        AugmentSettings.model_validate({"affine": {"p": 1.0}}),
    )
    for i in range(len(aug)):
        it = aug[i]
        n = int(it["n_points"])
        assert int((~it["visible"][:n]).sum()) <= 1 and int(it["visible"][:n].sum()) <= 2


def test_visible_column_missing_or_in_other_spellings(tmp_path):
    assert load_photo(_visible_photo(tmp_path / "a", None)[0]).visible.tolist() == [True, True, True]
    assert load_photo(_visible_photo(tmp_path / "b", ["1", "0", ""])[0]).visible.tolist() == [True, False, True]
    assert load_photo(_visible_photo(tmp_path / "c", ["yes", "no", "False"])[0]).visible.tolist() == [
        True,
        False,
        False,
    ]
    with pytest.raises(ManifestError, match="column 'visible': 'maybe'"):
        load_photo(_visible_photo(tmp_path / "d", ["true", "maybe", "false"])[0])


def test_dot_focused_crops_aim_at_visible_dots(tmp_path):
    manifest = _visible_photo(tmp_path, [False, False, True])
    only_dots = {"background": 0.0, "scalp": 0.0, "hair": 0.0, "dots": 1.0}
    ds = SmpDataset(
        manifest,
        DatasetSettings(crop_size=16, crops_per_image=20, focus_p=1.0, focus=only_dots, dot_jitter=0.1, max_points=8),
        AugmentSettings.none(),
    )
    assert all(bool(ds[i]["visible"][: int(ds[i]["n_points"])].any()) for i in range(len(ds)))


def test_epoch_keys_reach_persistent_workers(synth_manifest):
    from data.dataset import EpochKeys, SeededSampler, WorkerInit

    ds = SmpDataset(read_manifest(synth_manifest), DatasetSettings(crop_size=48, seed=3))
    keys = EpochKeys(SeededSampler(len(ds), 4, seed=3))
    loader = DataLoader(
        ds, batch_size=2, sampler=keys, num_workers=1, persistent_workers=True, worker_init_fn=WorkerInit(3)
    )
    firsts = []
    for epoch in (0, 1):
        keys.set_epoch(epoch)
        firsts.append(next(iter(loader))["image"])
    keys.set_epoch(1)
    want = torch.stack([ds[k]["image"] for k in list(keys)[:2]])
    assert torch.equal(firsts[1], want) and not torch.equal(firsts[0], firsts[1])
    assert list(keys)[0][0] == 1 and len(keys) == 4


def test_whole_head_views_are_shrunk_before_cropping():
    from data.dataset import Photo, shrink_mask, shrink_photo

    mask = np.zeros((40, 60), np.uint8)
    mask[:, 30:] = 1
    mask[10:20, 40:44] = 2  # a 10 x 4 block of hair: hair in its 5 x 2 footprint
    mask[:4, :4] = 255
    small = shrink_mask(mask, (30, 20))
    assert small.shape == (20, 30)
    assert (small[:, :15] == 0)[2:].all() and (small[:, 15:] > 0).all()
    assert (small[5:10, 20:22] == 2).all() and (small == 2).sum() == 10
    assert (small[:2, :2] == 255).all()
    photo = Photo(
        image=np.zeros((40, 60, 3), np.uint8),
        mask=mask,
        points=np.array([[59.0, 39.0], [0.0, 0.0]]),
        visible=np.ones(2, bool),
        has_points=True,
        px_per_mm=4.0,
        class_counts=np.zeros(3, np.int64),
    )
    half = shrink_photo(photo, 0.5)
    assert half.image.shape == (20, 30, 3) and half.px_per_mm == pytest.approx(2.0)
    assert np.allclose(half.points, [[29.25, 19.25], [-0.25, -0.25]])
    assert half.class_counts.tolist() == [int((half.mask == k).sum()) for k in range(3)]


#: A network small enough to run in a test (its outputs are compared, not judged).
_TINY_NET = dict(
    width_mult=0.5, encoder_stride=8, se_kernel=3, decoder_channels=(8, 8, 16, 16), head_channels=8, refine_channels=8
)


def test_predict_view_shrinks_only_whole_head_views_for_a_model_that_asks():
    from models.inference import predict_view
    from models.network import ModelSettings, build_model

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    settings = _TINY_NET
    torch.manual_seed(0)
    plain = build_model(ModelSettings(**settings)).eval()
    torch.manual_seed(0)
    wide = build_model(ModelSettings(**settings, global_long_side=128)).eval()
    a, b = predict_view(plain, image, "global"), predict_view(wide, image, "global")
    assert a.labels.shape == b.labels.shape == (300, 400)
    # the shrunk prediction is blocky: constant over the ~3 x 3 px each network pixel stands for
    assert (np.diff(b.labels.astype(int), axis=1) != 0).mean() < 0.5 * (
        np.diff(a.labels.astype(int), axis=1) != 0
    ).mean()
    assert np.array_equal(predict_view(wide, image, "closeup").labels, predict_view(plain, image, "closeup").labels)


def test_a_dataset_sees_close_ups_at_one_scale(synth_manifest):
    manifest = read_manifest(synth_manifest)
    raw = load_photo(manifest[0])
    assert manifest[0].view == "closeup" and raw.px_per_mm > 0
    one = SmpDataset(manifest, DatasetSettings(mode="full", closeup_px_per_mm=raw.px_per_mm / 2)).photo(0)
    assert one.px_per_mm == pytest.approx(raw.px_per_mm / 2, rel=0.02)
    assert one.mask.shape == tuple(round(n / 2) for n in raw.mask.shape)


def test_close_ups_are_resampled_to_the_scale_a_model_asks_for():
    """rescale_photo both ways (a one-pixel strand survives a 2/3 shrink as a line), and predict_view
    resamples a close-up of known scale for a model with closeup_px_per_mm."""
    import torch

    from data.dataset import Photo, rescale_photo
    from models.inference import predict_view
    from models.network import ModelSettings, build_model

    mask = np.ones((60, 90), np.uint8)
    mask[:, 40] = 2  # a strand one pixel wide
    photo = Photo(
        image=np.zeros((60, 90, 3), np.uint8),
        mask=mask,
        points=np.array([[45.0, 30.0]]),
        visible=np.ones(1, bool),
        has_points=True,
        px_per_mm=24.0,
        class_counts=np.zeros(3, np.int64),
    )
    small = rescale_photo(photo, 16 / 24)
    assert small.mask.shape == (40, 60) and small.px_per_mm == pytest.approx(16.0)
    assert ((small.mask == 2).sum(axis=1) >= 1).all()  # still a line, row by row
    assert ((small.mask == 2).sum(axis=1) <= 2).all()
    assert np.allclose(small.points, [[29.83333, 19.83333]], atol=1e-4)
    big = rescale_photo(photo, 2.0)
    assert big.mask.shape == (120, 180) and big.px_per_mm == pytest.approx(48.0)
    assert set(np.unique(big.mask)) == {1, 2} and (big.mask == 2).sum() == 2 * 120

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    settings = _TINY_NET
    torch.manual_seed(0)
    plain = build_model(ModelSettings(**settings)).eval()
    torch.manual_seed(0)
    one_scale = build_model(ModelSettings(**settings, closeup_px_per_mm=16.0)).eval()
    direct = predict_view(plain, image, "closeup").labels
    assert np.array_equal(predict_view(one_scale, image, "closeup", px_per_mm=16.0).labels, direct)
    assert np.array_equal(predict_view(one_scale, image, "closeup").labels, direct)  # scale unknown
    coarse = predict_view(one_scale, image, "closeup", px_per_mm=32.0)
    assert coarse.labels.shape == (96, 128) and not np.array_equal(coarse.labels, direct)


def test_resize_points_keeps_pixel_centres_and_other_columns():
    from data.geometry import resize_points

    xy = np.array([[0.0, 0.0, 0.7], [9.0, 4.0, 0.2]], np.float32)
    out = resize_points(xy, 2.0, 0.5)
    assert out.dtype == np.float32 and np.allclose(out, [[0.5, -0.25, 0.7], [18.5, 1.75, 0.2]])
    assert xy[1, 0] == 9.0  # the input is left as it is
    assert resize_points(np.zeros((0, 2)), 2.0, 2.0).shape == (0, 2)
