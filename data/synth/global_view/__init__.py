"""Global scenes: a whole head in front of a background (1-6 px/mm), with exact truth.

The scene is a small 3-D model seen by a pinhole camera:

* **Body.** The head is a union of ellipsoids in a head frame (millimetres, origin at
  eyebrow level in the middle of the head; x = the subject's right, y = forward, z = up):
  a cranium made of a front and a back half-ellipsoid (the back of the skull is longer),
  a face, a nose, two ears, a neck, and shoulders and chest wearing clothes. Rays are cast
  analytically per pixel (a quadratic per ellipsoid, evaluated only inside the part's
  projected bounding box), giving a z-buffer, the part of every pixel, its 3-D position
  and normal. A smooth, small image warp of the rays makes the outline slightly
  irregular, as real skulls are.
* **Scalp.** Head-scale thinning patterns live on the cranium's parametric sphere
  (``u = p / axes``): a natural hairline (frontal, temples, sideburns, above the ears,
  nape) with per-client jitter, the pattern of :class:`data.synth.hair.HairParams`
  (``diffuse`` thinning on top, ``crown`` bald spot at the whorl, ``receding`` temples and
  front, alopecia ``patches``, ``none``) and a hair flow radiating from a crown whorl
  (forwards on top, down on the sides and back), with a spiral at the whorl, combing and
  gravity for long hair. :func:`data.synth.hair.thinning_map` describes a close-up frame;
  a head needs these patterns on a sphere, hence :class:`ScalpPattern`.
* **Hair.** Every visible hair is a 3-D polyline (stubble: one straight segment standing
  out of the skin; long hair: a path that follows the head at a small lift). At 1-6 px/mm
  a hair is far thinner than a pixel, so strands are not rasterised as lines: each is
  sampled about every 0.75 px and the covered area (width x length) is accumulated per
  pixel as an optical depth ``tau``; the hair coverage is ``1 - exp(-tau)`` (the
  uncovered fraction of a pixel crossed by many random thin fibres). Samples hidden
  behind the head (z-buffer) are dropped, so strands sticking out beyond the outline
  are drawn over the background. The cost is bounded: beyond ``MAX_STRANDS`` hairs,
  strands are merged while they stay under half a pixel wide; beyond a sample budget,
  strands are sampled every 2-3 px and then merged into locks, and the accumulated
  optical depth is spread over the area a sample stands for (so dense hair still covers
  the skin), keeping the per-pixel shading sharp for strand texture.
* **SMP dots** are placed with :func:`data.synth.dots.place_dots` on a plane of the head's
  size: a Lambert azimuthal equal-area map of the cranium's visible half, centred on the
  point facing the camera, so that dots keep their density per area of scalp and crowd
  towards the outline as on a real head. The treated area follows the thin and receded
  parts of the scalp. Dots are drawn with :func:`dot_sprites` / :func:`render_density` at
  the image scale; below a pixel the optical density is rescaled so that each dot
  absorbs the light its true area absorbs (sprites have an edge of at least half a pixel).
* **Camera.** Light, white balance, exposure, noise and 8-bit encoding are those of
  :mod:`data.synth.camera`; shading is Lambertian with a key light near the camera, a soft
  screen-space ambient occlusion (neck under the chin, ear roots), Blinn-Phong sheen on
  skin and Kajiya-Kay sheen on hair.

Truth: the mask (0 background incl. face, ears, neck, clothes, card; 1 scalp of the
hair-bearing region; 2 hair where the coverage is at least 0.5), every visible dot with
its physical diameter and colour, the card's marker corners, ``clean_lstar`` (L* of the
reflectance before light and camera) and ``skin_lstar`` (L* of the bare scalp under hair
and dots; elsewhere the reflectance's own L*). Pixel coordinates follow OpenCV (pixel
``[i, j]`` has its centre at ``(x, y) = (j, i)``). ``plane_to_image`` is the nominal
similarity (``px_per_mm`` at the head centre) from the dot plane to the image.

The hair-bearing region (classes 1 and 2) is the *natural* hairline's region: a receded
hairline leaves bare scalp (class 1) in front of the remaining hair, down to where the
original hairline was, which is also where an SMP artist rebuilds it.

Modules: :mod:`.head` (the body model: head and body ellipsoids, pose, ray casting, seams),
:mod:`.scalp` (hairline, thinning pattern, hair flow, scars), :mod:`.hair` (strands and
their accumulation), :mod:`.dots` (dot plane, treated area, placement, drawing),
:mod:`.backdrop` (wall, clothes), :mod:`.skin` (skin region, texture, tints, face),
:mod:`.card` (card placement and pasting) and :mod:`.scene` (:func:`single_global`, the
photo as a sequence of steps).
"""

from __future__ import annotations

from data.synth.global_view.backdrop import render_backdrop
from data.synth.global_view.dots import DotPlane, dot_density_image, make_dot_plane, place_head_dots
from data.synth.global_view.hair import MAX_STRANDS, HairAccum, render_head_hair
from data.synth.global_view.head import (
    BG,
    CLOTHES,
    CRANIUM,
    EAR,
    FACE,
    NECK,
    NOSE,
    VIEW_KINDS,
    Ellipsoid,
    Head,
    Hits,
    Pose,
    cast_rays,
    draw_head,
    draw_pose,
    smooth_seams,
    xs_at,
)
from data.synth.global_view.scalp import ScalpPattern, draw_scalp
from data.synth.global_view.scene import single_global

__all__ = [
    "BG",
    "CLOTHES",
    "CRANIUM",
    "EAR",
    "FACE",
    "MAX_STRANDS",
    "NECK",
    "NOSE",
    "VIEW_KINDS",
    "DotPlane",
    "Ellipsoid",
    "HairAccum",
    "Head",
    "Hits",
    "Pose",
    "ScalpPattern",
    "cast_rays",
    "dot_density_image",
    "draw_head",
    "draw_pose",
    "draw_scalp",
    "make_dot_plane",
    "place_head_dots",
    "render_backdrop",
    "render_head_hair",
    "single_global",
    "smooth_seams",
    "xs_at",
]
