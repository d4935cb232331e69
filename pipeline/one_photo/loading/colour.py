"""Any accepted pixel format to sRGB RGB: alpha composited on white, palettes expanded, CMYK and
embedded ICC profiles converted; each conversion leaves a note."""

from __future__ import annotations

import io
from typing import cast

from PIL import Image, ImageCms

from pipeline.one_photo.loading.errors import PhotoError, _brief

_WHITE = (255, 255, 255, 255)


def _flatten(img: Image.Image, name: str, notes: list[str]) -> Image.Image:
    """Reduce any accepted mode to L, RGB or CMYK: alpha composited on white, palettes expanded."""
    mode = img.mode
    if mode in ("RGB", "L", "CMYK"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("RGBX", "YCbCr"):
        return img.convert("RGB")
    if mode in ("P", "PA"):
        notes.append("palette (indexed-colour) image expanded to RGB")
        has_alpha = mode == "PA" or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        if not has_alpha:
            return img
        mode = "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La"):
        gray = mode in ("LA", "La")
        rgba = img.convert("RGBA")
        low, _ = cast(tuple[float, float], rgba.getchannel("A").getextrema())  # one band: (min, max)
        if low < 255:
            # Transparent pixels have no scalp behind them; white keeps them
            # obviously "not skin" for every later stage.
            rgba = Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba)
            notes.append("alpha channel dropped (composited on white)")
        # A fully opaque alpha channel changes nothing, so it goes without a note.
        return rgba.convert("L" if gray else "RGB")
    raise PhotoError(name, f"pixel format {mode!r} is not supported")


def _to_srgb(img: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bool]:
    """Convert an L/RGB/CMYK image to sRGB RGB; True when an ICC profile was applied."""
    if img.mode == "CMYK":
        notes.append("CMYK converted to sRGB" + ("" if icc else " (no embedded profile: colours are approximate)"))
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            description = _profile_description(source)
            if _is_srgb(description) and img.mode in ("RGB", "L"):
                # Already sRGB (gray pixels tagged sRGB are neutral sRGB values):
                # skip a transform that would change nothing.
                return (img if img.mode == "RGB" else img.convert("RGB")), False
            # Relative colorimetric keeps in-gamut colours exact (what colour
            # measurement needs) and clips the rest; perceptual tables would
            # shift in-gamut colours too. Matrix profiles behave the same either way.
            converted = ImageCms.profileToProfile(
                img,
                source,
                ImageCms.createProfile("sRGB"),
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
            notes.append(
                "embedded ICC profile could not be applied; colours may be off "
                f"({_brief(str(exc), 80) or type(exc).__name__})"
            )
        else:
            if converted is not None:
                notes.append(f"embedded ICC profile '{description}' converted to sRGB")
                return converted, True
    return (img if img.mode == "RGB" else img.convert("RGB")), False


def _profile_description(profile: ImageCms.ImageCmsProfile) -> str:
    try:
        text = ImageCms.getProfileDescription(profile) or ImageCms.getProfileName(profile)
    except ImageCms.PyCMSError:
        text = ""
    return _brief(text, 60) or "unnamed"


def _is_srgb(description: str) -> bool:
    lowered = description.lower()
    return "srgb" in lowered and "linear" not in lowered
