"""Write the calibration card as a print-ready file (PDF, SVG or PNG).

Physical size is what matters: the pipeline turns the marker's size in pixels
into px/mm, so a card printed 3 % too small makes every density 6 % too high.
The vector formats therefore state their size in physical units (SVG ``mm``,
PDF page = paper size in points, 72 pt per inch) and the PNG records its dpi.
Print at 100 % ("actual size"), never "fit to page".

All three are drawn from the same :class:`data.card.CardSpec` the generator
and the detector use, in the card frame (mm, origin at the marker's top-left
outer corner, y down).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.card import CardSpec, marker_bits, patch_rects_mm, render_card
from pipeline.errors import UserError

__all__ = ["FORMATS", "DPI_RANGE", "write_card"]

#: File suffixes ``write_card`` understands.
FORMATS = (".pdf", ".svg", ".png")
#: Accepted print resolutions (dots per inch) for PNG output.
DPI_RANGE = (72, 2400)

_MM_PER_INCH = 25.4
_PT_PER_MM = 72.0 / _MM_PER_INCH
_LABEL_GREY = (85, 85, 85)
# Average advance width of Helvetica/Arial glyphs in a label like ours, in em;
# generous, so the estimated width is an upper bound and the label fits its box.
_EM_WIDTH = 0.6
_DESCENT_EM = 0.22


@dataclass(frozen=True)
class _Label:
    """A one-line text label in the card frame (mm)."""

    text: str
    x: float  # left end of the baseline
    baseline: float
    font_mm: float  # em size
    width_mm: float  # width the text is fitted to
    box: tuple[float, float, float, float]  # clip box, never overlaps marker or patches


def _label(card: CardSpec, marker_id: int) -> _Label | None:
    """Place "<card> id <n> marker <size> mm" in the strip below the marker and patches.

    The strip starts one module right of the marker (the ArUco quiet zone stays
    white: ink close to the marker disturbs its detection) and ends at the
    paper's right edge. Returns None when the strip is too small to be legible.
    """
    gap = 0.4
    marker = card.marker
    rects = patch_rects_mm(card)
    x0p, _, x1p, y1p = card.paper_mm
    top = max(marker.origin_mm[1] + marker.size_mm, float(rects[:, 3].max())) + gap
    bottom = y1p - gap
    left = max(marker.origin_mm[0] + marker.size_mm + marker.size_mm / marker.modules, float(rects[:, 0].min()))
    right = x1p - gap
    if bottom - top < 0.8 or right - left < 8.0:
        return None
    text = f"{card.name}  id {marker_id}  marker {marker.size_mm:g} mm"
    font = min(1.6, (bottom - top) / (1.0 + _DESCENT_EM), (right - left) / (_EM_WIDTH * len(text)))
    if font < 0.7:
        return None
    return _Label(
        text=text,
        x=left,
        baseline=bottom - _DESCENT_EM * font,
        font_mm=font,
        width_mm=_EM_WIDTH * font * len(text),
        box=(left, top, right, bottom),
    )


def _num(value: float) -> str:
    """A coordinate in a vector file: fixed point, 4 decimals (0.1 um), no trailing zeros."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _hex(srgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*srgb)


def _black_modules(card: CardSpec, marker_id: int) -> list[tuple[float, float, float]]:
    """(x, y, side) mm of each black marker module."""
    bits = marker_bits(card, marker_id)
    module = card.marker.size_mm / bits.shape[0]
    ox, oy = card.marker.origin_mm
    return [(ox + c * module, oy + r * module, module) for r, c in zip(*np.nonzero(bits == 0))]


# --------------------------------------------------------------------------- SVG


def _svg(card: CardSpec, marker_id: int) -> str:
    x0, y0, x1, y1 = card.paper_mm
    w, h = x1 - x0, y1 - y0
    # The marker is one <path> of module squares rather than one <rect> each:
    # a single filled shape has no hairline seams between adjacent modules
    # (renderers antialias each <rect> separately), which would break the border.
    modules = "".join(
        f"M{_num(x)} {_num(y)}h{_num(s)}v{_num(s)}h{_num(-s)}z" for x, y, s in _black_modules(card, marker_id)
    )
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{_num(w)}mm" height="{_num(h)}mm" '
        f'viewBox="{_num(x0)} {_num(y0)} {_num(w)} {_num(h)}">',
        f"<title>{escape(card.name)} calibration card, marker {card.marker.dictionary} id {marker_id}</title>",
        "<desc>Units: mm; origin at the top-left outer corner of the marker. Print at 100 % (actual size).</desc>",
        f'<rect id="paper" x="{_num(x0)}" y="{_num(y0)}" width="{_num(w)}" height="{_num(h)}" '
        f'fill="{_hex(card.paper_srgb)}"/>',
        f'<path id="marker" d="{modules}" fill="{_hex(card.ink_srgb)}"/>',
        '<g id="patches">',
    ]
    for ref, (px0, py0, px1, py1) in zip(card.patches.references, patch_rects_mm(card)):
        lines.append(
            f'<rect id="patch-{ref.name}" x="{_num(px0)}" y="{_num(py0)}" width="{_num(px1 - px0)}" '
            f'height="{_num(py1 - py0)}" fill="{_hex(ref.srgb)}"/>'
        )
    lines.append("</g>")
    label = _label(card, marker_id)
    if label is not None:
        # textLength pins the rendered width, so whatever font substitutes
        # Helvetica the text stays inside its strip.
        lines.append(
            f'<text id="label" x="{_num(label.x)}" y="{_num(label.baseline)}" '
            'font-family="Helvetica, Arial, sans-serif" '
            f'font-size="{_num(label.font_mm)}" textLength="{_num(label.width_mm)}" lengthAdjust="spacingAndGlyphs" '
            f'fill="{_hex(_LABEL_GREY)}">{escape(label.text)}</text>'
        )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- PDF


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _pdf_rgb(srgb: tuple[int, int, int]) -> str:
    return " ".join(_num(v / 255.0) for v in srgb) + " rg"


def _pdf_content(card: CardSpec, marker_id: int) -> str:
    """Page content in card mm: one ``cm`` maps mm (y down) to PDF points (y up)."""
    x0, y0, x1, y1 = card.paper_mm
    page_h = (y1 - y0) * _PT_PER_MM
    k = _PT_PER_MM
    ops = [
        "q",
        f"{_num(k)} 0 0 {_num(-k)} {_num(-x0 * k)} {_num(page_h + y0 * k)} cm",
        f"{_pdf_rgb(card.paper_srgb)} {_num(x0)} {_num(y0)} {_num(x1 - x0)} {_num(y1 - y0)} re f",
        # All modules in one path, one fill (nonzero winding = their union): no seams.
        _pdf_rgb(card.ink_srgb),
        *(f"{_num(x)} {_num(y)} {_num(s)} {_num(s)} re" for x, y, s in _black_modules(card, marker_id)),
        "f",
    ]
    for ref, (px0, py0, px1, py1) in zip(card.patches.references, patch_rects_mm(card)):
        ops.append(f"{_pdf_rgb(ref.srgb)} {_num(px0)} {_num(py0)} {_num(px1 - px0)} {_num(py1 - py0)} re f")
    label = _label(card, marker_id)
    if label is not None:
        # Clipped to its strip (the viewer's Helvetica metrics are not known here);
        # the text matrix flips y back so glyphs stand upright in the y-down frame.
        bx0, by0, bx1, by1 = label.box
        ops += [
            "q",
            f"{_num(bx0)} {_num(by0)} {_num(bx1 - bx0)} {_num(by1 - by0)} re W n",
            _pdf_rgb(_LABEL_GREY),
            f"BT /F1 {_num(label.font_mm)} Tf 1 0 0 -1 {_num(label.x)} {_num(label.baseline)} Tm "
            f"{_pdf_string(label.text)} Tj ET",
            "Q",
        ]
    ops.append("Q")
    return "\n".join(ops) + "\n"


def _pdf(card: CardSpec, marker_id: int) -> bytes:
    """A one-page PDF 1.4 whose MediaBox is exactly the paper.

    Written by hand: the page is a dozen filled rectangles, and a hand-written
    file controls the page size and colours exactly (no backend margins, dpi
    snapping or colour conversion).
    """
    x0, y0, x1, y1 = card.paper_mm
    width_pt, height_pt = (x1 - x0) * _PT_PER_MM, (y1 - y0) * _PT_PER_MM
    content = _pdf_content(card, marker_id).encode("cp1252", errors="replace")  # /WinAnsiEncoding
    title = _pdf_string(f"{card.name} calibration card, marker id {marker_id}")
    objects = [
        "<< /Type /Catalog /Pages 2 0 R /ViewerPreferences << /PrintScaling /None >> >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_num(width_pt)} {_num(height_pt)}] "
        "/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        None,  # content stream, below
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        f"<< /Title {title} /Producer (smp-assess) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        if body is None:
            out += f"{number} 0 obj\n<< /Length {len(content)} >>\nstream\n".encode("latin-1")
            # the EOL before "endstream" is not part of the stream (/Length)
            out += content + b"\nendstream\nendobj\n"
        else:
            out += f"{number} 0 obj\n{body}\nendobj\n".encode("cp1252", errors="replace")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("latin-1")
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode("latin-1")
    out += (f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\nstartxref\n{xref}\n%%EOF\n").encode(
        "latin-1"
    )
    return bytes(out)


# --------------------------------------------------------------------------- PNG


def _png_image(card: CardSpec, dpi: int, marker_id: int) -> Image.Image:
    """The card rasterised by :func:`data.card.render_card`, cropped to the paper."""
    ppm = dpi / _MM_PER_INCH
    raster = render_card(card, ppm, marker_id)
    x0, y0, x1, y1 = card.paper_mm
    w = max(1, round((x1 - x0) * ppm))
    h = max(1, round((y1 - y0) * ppm))
    # Drop the raster's 1-px empty margin; any partly covered last column/row is
    # shown over a white page.
    rgb = raster.rgb[1 : 1 + h, 1 : 1 + w]
    alpha = raster.alpha[1 : 1 + h, 1 : 1 + w, None]
    page = rgb * alpha + (1.0 - alpha)
    image = Image.fromarray(np.rint(np.clip(page, 0.0, 1.0) * 255.0).astype(np.uint8), mode="RGB")
    label = _label(card, marker_id)
    if label is not None:
        _draw_label(image, label, ppm, (x0, y0))
    return image


def _draw_label(image: Image.Image, label: _Label, ppm: float, origin: tuple[float, float]) -> None:
    """Draw the label with Pillow's bundled font, scaled to fit its strip (no-op without FreeType)."""
    try:
        font = ImageFont.load_default(size=max(1, round(label.font_mm * ppm)))
    except (ImportError, OSError, TypeError):
        return
    if not isinstance(font, ImageFont.FreeTypeFont):
        return
    bx0, by0, bx1, by1 = label.box
    box_w, box_h = (bx1 - bx0) * ppm, (by1 - by0) * ppm
    left, top, right, bottom = font.getbbox(label.text)
    scale = min(1.0, box_w / max(1, right - left), box_h / max(1, bottom - top))
    if scale < 1.0:
        font = font.font_variant(size=max(1, int(font.size * scale)))
        left, top, right, bottom = font.getbbox(label.text)
    x = (bx0 - origin[0]) * ppm - left
    y = (by1 - origin[1]) * ppm - bottom
    ImageDraw.Draw(image).text((x, y), label.text, font=font, fill=_LABEL_GREY)


# --------------------------------------------------------------------------- entry point


def write_card(
    path: str | os.PathLike[str],
    card: CardSpec,
    dpi: int = 600,
    marker_id: int | None = None,
) -> Path:
    """Write ``card`` to ``path``; the suffix (.pdf, .svg, .png) picks the format.

    PDF and SVG are vector and exact in physical size; PNG is rendered at
    ``dpi`` (72-2400; 8-bit sRGB, the dpi recorded in the file). ``marker_id``
    defaults to the card's id. Returns the path written. A bad suffix, dpi or
    marker id raises :class:`UserError` (or ``ConfigError`` for the id).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UserError(
            f"{path.name}: unknown card format {path.suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}"
        )
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or not DPI_RANGE[0] <= dpi <= DPI_RANGE[1]:
        raise UserError(f"dpi must be an integer from {DPI_RANGE[0]} to {DPI_RANGE[1]}, got {dpi!r}")
    count = card.marker.id_count
    ident = card.marker.id if marker_id is None else marker_id
    if isinstance(ident, bool) or not isinstance(ident, (int, np.integer)) or not 0 <= ident < count:
        raise UserError(f"marker id {ident!r} is outside {card.marker.dictionary} (ids 0-{count - 1})")
    ident = int(ident)

    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".svg":
        path.write_text(_svg(card, ident), encoding="utf-8")
    elif suffix == ".pdf":
        path.write_bytes(_pdf(card, ident))
    else:
        _png_image(card, int(dpi), ident).save(path, format="PNG", dpi=(int(dpi), int(dpi)))
    return path
