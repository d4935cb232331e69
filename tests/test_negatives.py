"""Scalp-free photos cut from whole-head views (data.negatives)."""

import numpy as np
import pytest

from data.metrics import BACKGROUND, HAIR, SCALP
from data.negatives import background_windows, scalp_free_photos


def _scene():
    mask = np.full((200, 300), BACKGROUND, np.uint8)
    mask[50:150, 150:260] = SCALP  # a head on the right
    mask[60:70, 160:200] = HAIR
    image = np.zeros((200, 300, 3), np.uint8)
    image[..., 1] = np.arange(300)[None, :] % 256  # every column its own green: windows can be told apart
    return image, mask


def test_background_windows_are_the_all_background_ones():
    _, mask = _scene()
    spots = background_windows(mask, 50, 25)
    assert spots and all((mask[y : y + 50, x : x + 50] == BACKGROUND).all() for x, y in spots)
    # every grid window that is all background is there
    grid = [
        (x, y)
        for y in range(0, 151, 25)
        for x in range(0, 251, 25)
        if (mask[y : y + 50, x : x + 50] == BACKGROUND).all()
    ]
    assert spots == grid
    # with a looser share, windows reaching 10% into the head count too
    assert len(background_windows(mask, 50, 25, min_share=0.9)) > len(spots)
    with pytest.raises(ValueError):
        background_windows(mask, 0, 25)
    with pytest.raises(ValueError):
        background_windows(mask, 50, 25, min_share=0)


def test_scalp_free_photos_keep_scale_mask_and_pixels():
    image, mask = _scene()
    rng = np.random.default_rng(3)
    cuts = scalp_free_photos(image, mask, 4.0, rng, size=64, max_n=3)
    assert len(cuts) == 3
    for c in cuts:
        x, y = c.origin
        assert c.image.shape == (64, 64, 3) and c.mask.shape == (64, 64)
        assert (c.mask == BACKGROUND).all() and c.px_per_mm == pytest.approx(4.0) and c.zoom == 1.0
        assert np.array_equal(c.image, image[y : y + 64, x : x + 64])
    # the same generator state gives the same photos
    again = scalp_free_photos(image, mask, 4.0, np.random.default_rng(3), size=64, max_n=3)
    assert [c.origin for c in again] == [c.origin for c in cuts]


def test_zoomed_cuts_scale_up_and_mark_what_is_not_background():
    image, mask = _scene()
    cuts = scalp_free_photos(
        image, mask, 4.0, np.random.default_rng(0), size=64, max_n=2, zoom=(2.0, 2.0), min_share=0.5
    )
    assert cuts and all(c.px_per_mm == pytest.approx(8.0) and c.zoom == 2.0 for c in cuts)
    for c in cuts:
        assert set(np.unique(c.mask)) <= {BACKGROUND, 255}
    full = np.full((40, 40), SCALP, np.uint8)
    assert scalp_free_photos(np.zeros((40, 40, 3), np.uint8), full, 4.0, np.random.default_rng(0), size=16) == []
    with pytest.raises(ValueError):
        scalp_free_photos(image, mask[:10], 4.0, np.random.default_rng(0))
    with pytest.raises(ValueError):
        scalp_free_photos(image, mask, 4.0, np.random.default_rng(0), zoom=(0.5, 1.0))


def test_recipe_appends_scalp_free_photos_that_the_dataset_reads(tmp_path):
    import cv2
    import pandas as pd

    from data.dataset import load_photo
    from data.manifest import read_manifest
    from scripts.train_recipe import add_scalp_free

    image, mask = _scene()
    src = tmp_path / "data" / "global" / "img_00000"
    src.mkdir(parents=True)
    cv2.imwrite(str(src / "photo.jpg"), image)
    cv2.imwrite(str(src / "mask.png"), mask)
    cols = "image,mask,dots,truth,px_per_mm,view,split,source,client,visit"
    (tmp_path / "data" / "global" / "manifest.csv").write_text(
        f"{cols}\nimg_00000/photo.jpg,img_00000/mask.png,,,4.0,global,val,synthetic,,\n"
    )
    combined = tmp_path / "data" / "manifest.csv"
    combined.write_text(f"{cols}\nglobal/img_00000/photo.jpg,global/img_00000/mask.png,,,4.0,global,val,synthetic,,\n")
    spec = ("scalp_free", ("global",), 1, 0, 64)
    add_scalp_free(tmp_path, combined, spec)
    add_scalp_free(tmp_path, combined, spec)  # a second call neither cuts again nor appends twice
    df = pd.read_csv(combined, dtype=str, keep_default_na=False)
    assert len(df) == 2 and df.iloc[1]["image"].startswith("scalp_free/")
    row = read_manifest(combined).rows[1]
    assert row.view == "closeup" and row.split == "val"  # the source photo's split: never across splits
    photo = load_photo(row)
    assert (photo.mask == 0).all() and photo.has_points and len(photo.points) == 0
