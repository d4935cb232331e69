"""High-level importers: an export file and a photo folder in, the project format out."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from data.importers.coco import parse_coco
from data.importers.cvat import parse_cvat_xml
from data.importers.label_studio import _LS_UUID, parse_label_studio
from data.importers.plain import read_png_mask, read_points_csv
from data.importers.results import (
    DatasetInfo,
    ImageLabels,
    ImportFailure,
    ImportReport,
    LabelImportError,
    LabelScheme,
    Origin,
    ParsedExport,
)
from data.importers.writer import _image_header, _safe_stem, write_project_labels

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelImportError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LabelImportError(f"{path}: is a folder, expected an export file") from None
    except UnicodeDecodeError:
        raise LabelImportError(f"{path}: not UTF-8 text") from None


def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LabelImportError(f"{path}: malformed JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None


def _load_xml(path: Path) -> ET.Element:
    text = _read_text(path)
    try:
        return ET.fromstring(text.encode("utf-8"))
    except ET.ParseError as err:
        line, col = err.position
        raise LabelImportError(f"{path}: malformed XML (line {line}, column {col})") from None


def _find_image(images_dir: Path, candidates: Sequence[str], export: str, name: str) -> Path:
    tried: list[str] = []
    for candidate in candidates:
        rel = PurePosixPath(candidate.replace("\\", "/"))
        if rel.is_absolute() and Path(rel).is_file():
            return Path(rel)
        rel_parts = [p for p in rel.parts if p not in ("/", "..", ".")]
        if not rel_parts:
            continue
        path = images_dir.joinpath(*rel_parts)
        tried.append(str(PurePosixPath(*rel_parts)))
        if path.is_file():
            return path
    raise LabelImportError(
        f"{export}: image {name!r} not found in {images_dir} (tried {', '.join(dict.fromkeys(tried))})"
    )


def _name_candidates(name: str) -> list[str]:
    base = PurePosixPath(name.replace("\\", "/")).name
    return [name, base]


def _ls_candidates(name: str) -> list[str]:
    return [name, _LS_UUID.sub("", name)]


def _write_parsed(
    parsed: ParsedExport,
    *,
    export: Path,
    images_dir: Path,
    out_dir: Path,
    source: str,
    info: DatasetInfo,
    candidates: Callable[[str], list[str]],
) -> ImportReport:
    rows: list[dict[str, Any]] = []
    failures = list(parsed.failures)
    folders: set[str] = set()
    for labels in parsed.images:
        try:
            image = _find_image(Path(images_dir), candidates(labels.name), export.name, labels.name)
            folder = stem = _safe_stem(_LS_UUID.sub("", image.name) if source == "labelstudio" else image.name)
            n = 1
            while folder in folders:
                n += 1
                folder = f"{stem}-{n}"
            folders.add(folder)
            rows.append(
                write_project_labels(
                    labels, image, Path(out_dir), source=source, info=info, folder=folder, export=export
                )
            )
        except LabelImportError as err:
            message = str(err)
            if export.name not in message:
                message = f"{export.name}: image {labels.name!r}: {message}"
            failures.append(ImportFailure(labels.name, message))
    return ImportReport(tuple(rows), tuple(failures), parsed.skipped)


def import_coco(
    json_path: Path,
    images_dir: Path,
    out_dir: Path,
    *,
    scheme: LabelScheme = LabelScheme(),
    info: DatasetInfo = DatasetInfo(),
) -> ImportReport:
    """Import a COCO JSON export: photos from ``images_dir``, project format into ``out_dir``."""
    json_path = Path(json_path)
    parsed = parse_coco(_load_json(json_path), source=json_path.name, scheme=scheme)
    return _write_parsed(
        parsed,
        export=json_path,
        images_dir=Path(images_dir),
        out_dir=Path(out_dir),
        source="coco",
        info=info,
        candidates=_name_candidates,
    )


def import_cvat_xml(
    xml_path: Path,
    images_dir: Path,
    out_dir: Path,
    *,
    scheme: LabelScheme = LabelScheme(),
    info: DatasetInfo = DatasetInfo(),
) -> ImportReport:
    """Import a CVAT for images 1.1 XML export."""
    xml_path = Path(xml_path)
    parsed = parse_cvat_xml(_load_xml(xml_path), source=xml_path.name, scheme=scheme)
    return _write_parsed(
        parsed,
        export=xml_path,
        images_dir=Path(images_dir),
        out_dir=Path(out_dir),
        source="cvat",
        info=info,
        candidates=_name_candidates,
    )


def import_label_studio(
    json_path: Path,
    images_dir: Path,
    out_dir: Path,
    *,
    scheme: LabelScheme = LabelScheme(),
    info: DatasetInfo = DatasetInfo(),
    image_key: str = "image",
) -> ImportReport:
    """Import a Label Studio JSON export (photos looked up by file name, upload prefix optional)."""
    json_path = Path(json_path)
    parsed = parse_label_studio(_load_json(json_path), source=json_path.name, scheme=scheme, image_key=image_key)
    return _write_parsed(
        parsed,
        export=json_path,
        images_dir=Path(images_dir),
        out_dir=Path(out_dir),
        source="labelstudio",
        info=info,
        candidates=_ls_candidates,
    )


def import_png_csv(
    images_dir: Path,
    out_dir: Path,
    *,
    masks_dir: Path | None = None,
    dots_dir: Path | None = None,
    mask_pattern: str = "{stem}.png",
    dots_pattern: str = "{stem}.csv",
    value_map: Mapping[int, int] | None = None,
    dots_origin: Origin = "centre",
    info: DatasetInfo = DatasetInfo(),
) -> ImportReport:
    """Import photos with class-mask PNGs and/or dot CSVs matched by file stem.

    For ``images_dir/a.jpg`` the mask is ``masks_dir/a.png`` and the dots ``dots_dir/a.csv``
    (see the patterns). A photo with neither is skipped; with only one, the other part counts
    as unlabelled (mask all 255, or no ``dots.csv``).
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise LabelImportError(f"{images_dir}: images folder not found")
    for d in (masks_dir, dots_dir):
        if d is not None and not Path(d).is_dir():
            raise LabelImportError(f"{d}: folder not found")
    photos = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    mask_of = {p: Path(masks_dir) / mask_pattern.format(stem=p.stem) for p in photos} if masks_dir else {}
    mask_files = {m.resolve() for m in mask_of.values()}
    photos = [p for p in photos if p.resolve() not in mask_files]
    rows: list[dict[str, Any]] = []
    failures: list[ImportFailure] = []
    skipped: list[str] = []
    for photo in photos:
        mask_path = mask_of.get(photo)
        dots_path = Path(dots_dir) / dots_pattern.format(stem=photo.stem) if dots_dir else None
        mask_path = mask_path if mask_path is not None and mask_path.is_file() else None
        dots_path = dots_path if dots_path is not None and dots_path.is_file() else None
        if mask_path is None and dots_path is None:
            skipped.append(photo.name)
            continue
        try:
            raw, (width, height), _ = _image_header(photo)
            mask = None if mask_path is None else read_png_mask(mask_path, value_map=value_map)
            if mask is not None:
                if (mask.shape[1], mask.shape[0]) not in (raw, (width, height)):
                    raise LabelImportError(
                        f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but image "
                        f"{photo.name} is {width}x{height}"
                    )
                height, width = mask.shape
            xy, ids = (
                (None, None)
                if dots_path is None
                else read_points_csv(dots_path, width=width, height=height, origin=dots_origin)
            )
            labels = ImageLabels(photo.name, width, height, mask, xy, ids)
            rows.append(write_project_labels(labels, photo, out_dir, source="png+csv", info=info))
        except LabelImportError as err:
            failures.append(ImportFailure(photo.name, str(err)))
    return ImportReport(tuple(rows), tuple(failures), tuple(skipped))
