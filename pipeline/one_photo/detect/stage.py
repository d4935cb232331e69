"""The dot stage as one call, :func:`detect_dots`: the photo at the canonical scale, the scale
space and the skin's texture, the candidates, their evidence, the decision and the second look,
in that order (see :mod:`pipeline.one_photo.detect`)."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np
from numpy.typing import NDArray

from data.metrics import BACKGROUND, dots_in_roi
from data.synth.visibility import disc_mean  # the truth's own hair-over-disc measure: one rule for both
from models.dot_patch import PatchRanker
from models.dot_ranker import FEATURES, DotRanker, candidate_features
from pipeline.one_photo.detect.canonical import _classes_at, _compact_blobs, _fill, _resize
from pipeline.one_photo.detect.evidence import _continuation, _ridge_axis, dot_patches
from pipeline.one_photo.detect.results import REJECT, CandidateTable, Detection, DotEvidence
from pipeline.one_photo.detect.scale_space import _at, _blob_texture, _local_rms, _nonzero
from pipeline.one_photo.detect.settings import DetectSettings, resample_factor
from pipeline.one_photo.dots import DotGeometry, DotSettings, radial_profile, skin_reference, suppress_duplicates
from pipeline.one_photo.segment import hair_strands, local_darkness


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def detect_dots(
    lstar: np.ndarray,
    labels: np.ndarray,
    px_per_mm: float,
    settings: DetectSettings,
    dot_settings: DotSettings,
    min_contrast_dl: float,
    max_hair_cover: float = 0.5,
    *,
    model_xy: np.ndarray | None = None,
    model_score: np.ndarray | None = None,
    ranker: DotRanker | None = None,
    patch_ranker: PatchRanker | None = None,
) -> Detection:
    """Dots of one close-up (see the package docstring, :mod:`pipeline.one_photo.detect`).

    ``lstar``: HxW float32 colour-corrected L*; ``labels``: HxW classes;
    ``px_per_mm``: the photo's scale; ``min_contrast_dl``, ``max_hair_cover``: the
    visibility rule (``FlagSettings.visible_min_contrast_dl``, ``visible_max_hair_cover``).
    ``model_xy``/``model_score``: centres a learned model proposes (photo pixels), optional.
    ``ranker``: the learned ranking of the admitted candidates (``models.dot_ranker``), needed
    when ``settings.decision`` is ``ranker``.
    ``patch_ranker``: the second look at the pixels (``models.dot_patch``; without one, or with
    ``settings.patch_look`` off, none is taken).
    Raises :class:`ScaleOutOfRange` outside the supported scales.
    """
    if settings.decision == "ranker" and ranker is None:
        raise ValueError("detect.decision is 'ranker' but no ranker was given")
    f = resample_factor(px_per_mm, settings)
    c = settings.canonical_px_per_mm
    lum = lstar if abs(f - 1) < 1e-9 else _resize(lstar, f)
    scalp, hair = _classes_at(labels, f)
    h, w = lum.shape
    # hair is a strand: compact dark blobs a segmenter calls hair (a dot, a cut end) are given back
    # to the scalp and judged like every other candidate (the strand test still applies to them)
    blobs = _compact_blobs(hair, c, settings.diameter_mm[1])
    if blobs.any():
        hair = hair & ~blobs
        scalp = scalp | blobs
    ld = local_darkness(lum, c)
    if settings.hair != "segmenter":
        # hair as what it physically is: thin, long dark ridges of this photo (pipeline.one_photo.segment.hair_strands)
        skin = scalp | hair
        # dark hair: thin long dark ridges. Light (blond, grey) hair: anything clearly lighter than the
        # skin around it, since pigment only darkens skin (the gaps between light strands would
        # otherwise read as dark blobs)
        light = ld < -6.0
        if settings.light_hair_mm:
            # light strands narrower than light_hair_mm: what an opening (a minimum, then a maximum)
            # removes, lighter than what it leaves by 6 L*. In dense light hair the median above is
            # the hair's level, the skin between strands reads as dark blobs; this is not fooled
            k_lh = max(3, int(round(settings.light_hair_mm * c)) | 1)
            disc_lh = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_lh, k_lh))
            light |= cv2.morphologyEx(lum, cv2.MORPH_TOPHAT, disc_lh) > 6.0
        strands = (
            hair_strands(ld, c, line_mm=settings.strand_line_mm, max_width_mm=settings.strand_width_mm) | light
        ) & skin
        hair = strands if settings.hair == "strands" else (hair | strands)
        scalp = skin & ~hair
    # the exact factor of each axis (whole pixels: it differs from f by up to half a pixel per edge)
    fxy = np.array([w / lstar.shape[1], h / lstar.shape[0]])
    # hair is not skin: its pixels (and a 1-px rim of soft edges) are filled from the skin and dots
    # around them, so a strand leaves no ridge in the darkness and a dot it crosses stays a dot.
    # (A light strand's rim too: left as skin, the skin beside dense light strands reads as dark
    # blobs; measured: a pigment-free demo photo under light hair 0.7 -> 3.1 false dots per cm2.)
    hair_rim = cv2.dilate(hair.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) if hair.any() else hair
    raw = lum
    if hair_rim.any():
        lum = _fill(lum, hair_rim, 0.06 * c)
    skin_like = scalp | hair
    # the scale space needs no skin level (a Laplacian ignores an offset and a smooth reference):
    # it runs on the negated lightness, and the skin level is taken later, from the quiet skin
    dark = np.negative(lum, dtype=np.float32)

    # --- scale space: scale-normalised LoG of the darkness ---
    r_lo, r_hi = (r * c for r in settings.radius_mm)
    sigmas = np.geomspace(max(0.6, r_lo / np.sqrt(2)), max(0.9, r_hi / np.sqrt(2)), settings.n_scales)
    bare = scalp & ~hair_rim
    # the blurred darkness is read again only by the strand test, and only when no hair was filled
    # (otherwise it blurs the photo as it is): not kept when it is not needed (a 12 MP photo's
    # planes are ~30 MB each)
    resp, blurred = [], []
    kernel = np.ones((3, 3), np.uint8)
    maxima = []
    for sg in sigmas:
        g = cv2.GaussianBlur(dark, (0, 0), float(sg))
        blurred.append(g if raw is lum else None)
        r = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
        del g
        r *= np.float32(-sg * sg)
        resp.append(r)
        # the local maxima over 3x3 (plateaus included) with a positive response, as points: the
        # structures left out of the texture, the skin's blobs and the candidates are all among
        # them (every noise level is positive, so each threshold on it implies a positive
        # response), and testing a list of points is cheaper than testing whole frames again
        is_max = r >= cv2.dilate(r, kernel)
        is_max &= r > 0
        ys_k, xs_k = _nonzero(is_max)
        maxima.append((ys_k, xs_k, r[ys_k, xs_k]))
    del dark
    # the skin's texture at each scale: first over all bare skin, then again without the
    # neighbourhoods of the strong structures that first pass finds (in a dense dot field the
    # dots themselves would otherwise be counted as texture and hide each other)
    quiet = bare
    noise = [_local_rms(r, quiet, c, settings.noise_sigma_mm) for r in resp]
    # pigment (and the darkest look-alikes): clearly darker than the skin around it. Left out of the
    # texture with the reach of each scale, so that between the dots of a dense field the skin
    # itself is measured; only its dark side (pigment only darkens: the bright side between dense
    # dots is their surround, not texture)
    pigment = (ld >= settings.texture_max_dl).view(np.uint8) if settings.texture_max_dl is not None else None

    def _disc(radius: float) -> np.ndarray:
        r = int(np.ceil(radius))
        return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))

    # what the pigment takes out of each scale does not change from pass to pass
    near_pigment = [
        None if pigment is None else cast(NDArray[np.uint8], cv2.dilate(pigment, _disc(sg))) for sg in sigmas
    ]  # (uint8 kept)
    stills = [quiet] * len(sigmas)
    for _ in range(settings.noise_passes):
        stills = []
        for k, sg in enumerate(sigmas):
            ys_k, xs_k, v = maxima[k]
            strong = v >= settings.noise_exclude * noise[k][ys_k, xs_k]
            peaks = np.zeros((h, w), np.uint8)
            peaks[ys_k[strong], xs_k[strong]] = 1
            busy = cast(NDArray[np.uint8], cv2.dilate(peaks, _disc(settings.exclude_reach * sg)))  # keeps uint8
            near = near_pigment[k]
            if near is not None:
                busy |= near
            st = quiet & (busy == 0)
            stills.append(st if np.count_nonzero(st[::4, ::4]) >= 200 else quiet)
        del noise  # (not held beside its successor)
        noise = [
            _local_rms(r, st, c, 2.0 * settings.noise_sigma_mm, dark_side=pigment is not None)
            for r, st in zip(resp, stills)
        ]
    # the skin away from every structure at any scale: where the bare-skin reference is taken
    still = np.logical_and.reduce(stills) if len(stills) > 1 else stills[0]
    if settings.texture == "blobs":
        for mx, n, st in zip(maxima, noise, stills):
            np.maximum(n, _blob_texture(mx, st, c, 2.0 * settings.noise_sigma_mm), out=n)
    # the bare-skin reference from the quiet skin (away from every dot-like structure and hair)
    base = still if np.count_nonzero(still[::4, ::4]) >= 200 else (bare if bare.any() else skin_like)
    ref = skin_reference(
        lum,
        base,
        c,
        dot_settings.skin_sigma_mm,
        clip_sd=dot_settings.skin_clip_sd,
        iterations=dot_settings.skin_iterations,
    )
    # candidates: maxima over 3x3 in space at each scale (a dot among dots is a maximum at its own
    # scale, not at the larger scales where its neighbours merge with it)
    found = []
    if not (settings.candidates == "model" and model_xy is not None):
        for k, (ys_k, xs_k, v) in enumerate(maxima):
            is_cand = (v >= settings.candidate_significance * noise[k][ys_k, xs_k]) & skin_like[ys_k, xs_k]
            found.append((np.full(np.count_nonzero(is_cand), k), ys_k[is_cand], xs_k[is_cand]))
    ks, ys, xs = (np.concatenate(a) for a in zip(*found)) if found else (np.zeros(0, np.int64),) * 3
    sig = _at(resp, ks, ys, xs) / _at(noise, ks, ys, xs)
    # one candidate per place: the scale with the highest significance
    cand = np.column_stack([xs, ys]).astype(np.float64)
    from_model = np.zeros(len(cand), bool)
    if model_xy is not None and len(model_xy) and settings.candidates != "scale_space":
        mxy = (np.asarray(model_xy, np.float64).reshape(-1, 2) + 0.5) * fxy - 0.5
        inside = (mxy[:, 0] >= 0) & (mxy[:, 0] <= w - 1) & (mxy[:, 1] >= 0) & (mxy[:, 1] <= h - 1)
        mxy = mxy[inside]
        mi = np.clip(np.round(mxy).astype(np.int64), 0, [w - 1, h - 1])
        mk = np.argmax(np.stack([r[mi[:, 1], mi[:, 0]] / n[mi[:, 1], mi[:, 0]] for r, n in zip(resp, noise)]), axis=0)
        cand = np.vstack([cand, mxy])
        ks = np.concatenate([ks, mk])
        sig = np.concatenate([sig, _at(resp, mk, mi[:, 1], mi[:, 0]) / _at(noise, mk, mi[:, 1], mi[:, 0])])
        from_model = np.concatenate([from_model, np.ones(len(mxy), bool)])
    n_cand = len(cand)
    if n_cand:
        # one candidate per blob: ranked by the scale-normalised response (largest at the blob's own
        # scale), each suppressing the weaker ones within its radius (the ends of a large elongated dot
        # are maxima at a small scale, inside the dot's radius at its own scale)
        ci = np.clip(np.round(cand).astype(np.int64), 0, [w - 1, h - 1])
        strength = _at(resp, ks, ci[:, 1], ci[:, 0])
        keep = suppress_duplicates(
            cand,
            (strength if settings.blob_merge else sig) + 1e-6 * from_model,
            dot_settings.min_separation_mm * c,
            reach_px=(settings.blob_merge * np.sqrt(2) * sigmas[ks] if settings.blob_merge else None),
        )
        cand, ks, sig = cand[keep], ks[keep], sig[keep]

    # --- evidence ---
    prof = radial_profile(lum, ref, cand, c, dot_settings)
    xi = np.clip(np.round(prof.xy[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(prof.xy[:, 1]).astype(np.int64), 0, h - 1)
    resp_at = _at(resp, ks, yi, xi)
    noise_at = _at(noise, ks, yi, xi)
    # the scale space and the skin's texture are read no further: their planes (~30 MB each at the
    # canonical scale of a 12 MP photo) are let go before the strand test and the re-centring on
    # the photo's own pixels allocate theirs
    del resp, noise, maxima, stills, still, base, quiet, bare, near_pigment, pigment, ld
    # significance at the refined centre (the maximum may sit half a pixel off)
    sig = np.maximum(sig, resp_at / np.maximum(noise_at, 1e-6))
    # the axis is read at no less than ~0.1 mm of blur: a thin strand, aliased into dashes, reads as a
    # row of specks at the finest scale and as a ridge from there on
    k_axis = np.maximum(ks, int(np.searchsorted(sigmas, 0.07 * c)))
    k_axis = np.minimum(k_axis, len(sigmas) - 1)
    # the strand test (curvature ratio, axis, continuation) reads the photo as it is (hair not
    # filled): at the tip of a strand the hair mask covers, the filled darkness is a round blob,
    # the photo a ridge
    raw_dark = np.subtract(ref, raw, dtype=np.float32)
    axis, ridge_ratio = np.zeros(len(cand)), np.ones(len(cand))
    for k in np.unique(k_axis):  # one blurred plane at a time
        i = np.flatnonzero(k_axis == k)
        g = blurred[k] if raw is lum else cv2.GaussianBlur(raw_dark, (0, 0), float(sigmas[k]))
        axis[i], ridge_ratio[i] = _ridge_axis(g, prof.xy[i])
        del g
    del blurred
    r_half = np.maximum(prof.radius_px, 0.5)
    reach = np.maximum(r_half * np.sqrt(np.maximum(prof.elongation, 1.0)), sigmas[ks] * np.sqrt(2))
    # continuation on the photo as it is (hair not filled): a piece of a strand the hair mask missed
    # continues into the masked part
    cont = _continuation(
        cv2.GaussianBlur(raw_dark, (0, 0), float(sigmas[0])),
        prof.xy,
        axis,
        reach + np.maximum(0.1 * c, 0.8 * reach),
        r_half,
        prof.peak_dl,
    )
    diameter_mm = 2.0 * prof.radius_px / c
    # on scalp: not background, and less than half of the dot's disc under hair (the `visible` rule)
    hair_cover = disc_mean(hair.astype(np.float32), prof.xy, np.maximum(prof.radius_px, 0.5))
    on_scalp = (skin_like[yi, xi] & (hair_cover < max_hair_cover)) if len(cand) else np.zeros(0, bool)
    inside = (prof.xy[:, 0] >= -0.5) & (prof.xy[:, 0] <= w - 0.5) & (prof.xy[:, 1] >= -0.5) & (prof.xy[:, 1] <= h - 0.5)
    # the model's view of each dot: its best score within the separation radius (NaN without a model)
    if model_xy is not None and model_score is not None:
        mscore = np.zeros(len(cand))
        if len(model_xy) and len(cand):
            from scipy.spatial import cKDTree

            mxy = (np.asarray(model_xy, np.float64).reshape(-1, 2) + 0.5) * fxy - 0.5
            pairs = cKDTree(prof.xy).sparse_distance_matrix(
                cKDTree(mxy), dot_settings.min_separation_mm * c, output_type="ndarray"
            )
            ms = np.asarray(model_score, np.float64)
            np.maximum.at(mscore, pairs["i"], ms[pairs["j"]])
    else:
        mscore = np.full(len(cand), np.nan)
    d_lo, d_hi = settings.diameter_mm
    reason = np.zeros(len(cand), np.int64)
    # a second opinion lowers the bar, never below the physical floor: where the learned model also
    # sees a dot, significance must reach min_significance_supported and only a candidate that is both
    # a ridge and continues along it is a strand; alone, the scale space needs min_significance and
    # either sign of a strand rejects
    supported = np.nan_to_num(mscore) >= settings.model_support
    ridge = ridge_ratio < settings.min_curvature_ratio
    runs_on = cont > settings.max_continuation
    # (continuing darkness alone is no proof: in a dense field a neighbour often lies along the axis)
    strand = np.where(supported, ridge & runs_on, ridge | (runs_on & (ridge_ratio < settings.blob_curvature_ratio)))
    rules = settings.decision == "rules"
    # the physical floors hold in every mode; the rules add their thresholds on significance and the
    # strand tests, the ranker weighs all the evidence instead
    rules_need = np.where(supported, settings.min_significance_supported, settings.min_significance)
    need = rules_need if rules else np.full(len(cand), settings.candidate_significance)
    tests = [
        (REJECT["not_scalp"], ~(on_scalp & inside)),
        (REJECT["contrast"], ~(prof.peak_dl >= max(min_contrast_dl, settings.min_contrast_dl))),
        (REJECT["significance"], ~(sig >= need)),
        (REJECT["size"], ~((diameter_mm >= d_lo) & (diameter_mm <= d_hi))),
        (REJECT["elongation"], ~(prof.elongation <= settings.max_elongation)),
    ]
    if rules:
        tests += [(REJECT["continuation"], strand & runs_on), (REJECT["ridge"], strand & ridge)]
    else:
        # a floor too: a ridge that continues beyond its end is a strand whatever else is measured
        tests += [(REJECT["continuation"], ridge & runs_on), (REJECT["ridge"], ridge & runs_on)]
    for bit, failed in tests:
        reason |= np.where(failed, bit, 0)
    real = reason == 0
    if len(cand):
        # two admitted candidates closer than the separation are one dot (re-centring can bring them together)
        idx = np.flatnonzero(real)
        if len(idx):
            # ... and so are two whose centres lie within the stronger one's half-maximum footprint (the
            # ends of a large or elongated dot are maxima of their own at a small scale)
            foot = settings.footprint_merge * prof.radius_px[idx] * np.sqrt(np.clip(prof.elongation[idx], 1.0, 4.0))
            keep = idx[
                suppress_duplicates(
                    prof.xy[idx],
                    sig[idx],
                    dot_settings.min_separation_mm * c,
                    reach_px=foot if settings.footprint_merge else None,
                )
            ]
            real = np.zeros(len(cand), bool)
            real[keep] = True
            reason[idx[~real[idx]]] |= REJECT["duplicate"]

    features = np.zeros((len(cand), 0 if rules else len(FEATURES)))
    if rules:
        conf = (
            _sigmoid((sig - settings.min_significance) / 1.5)
            * _sigmoid((prof.peak_dl - min_contrast_dl) / 1.5)
            * np.clip(1.0 - 0.5 * cont / settings.max_continuation, 0.0, 1.0)
        )
        conf = np.where(np.isnan(mscore), conf, conf * (0.6 + 0.4 * np.nan_to_num(mscore)))
    else:
        # the ranker weighs the evidence of the candidates physics admitted; it never sees the others
        conf = np.full(len(cand), np.nan)
        idx = np.flatnonzero(real)
        if len(idx):
            features[idx] = candidate_features(
                significance=sig[idx],
                contrast_dl=prof.peak_dl[idx],
                noise_dl=noise_at[idx],
                diameter_mm=diameter_mm[idx],
                curvature_ratio=ridge_ratio[idx],
                continuation=cont[idx],
                skin_lstar=ref[yi[idx], xi[idx]],
            )
            if ranker is not None:
                conf[idx] = ranker.probability(features[idx])
            if settings.decision == "ranker":
                # what the rules admit stays unless the ranker is sure it is a look-alike (under
                # ranker_veto); what they refuse needs the ranker's threshold
                by_rules = ~(strand & (ridge | runs_on)) & (sig >= rules_need)
                dot_ranker = cast(DotRanker, ranker)  # decision 'ranker' without a ranker was refused above
                veto = (
                    dot_ranker.threshold
                    if settings.ranker_veto is None
                    else min(settings.ranker_veto, dot_ranker.threshold)
                )
                need_p = np.where(by_rules[idx], veto, dot_ranker.threshold)
                low = idx[~(conf[idx] >= need_p)]
                real[low] = False
                reason[low] |= REJECT["ranker"]
    # the second look at the pixels (the photo as it is, hair not filled): it can only refuse
    patches = None
    pscore = np.full(len(cand), np.nan)
    look = patch_ranker is not None and settings.patch_look and settings.decision != "floors"
    if look or settings.decision == "floors":
        idx = np.flatnonzero(real)
        pt = dot_patches(raw, prof.xy[idx])
        if settings.decision == "floors":
            patches = pt
        if look and len(idx):
            second = cast(PatchRanker, patch_ranker)  # look: there is one
            veto = second.veto if settings.patch_veto is None else settings.patch_veto
            pscore[idx] = second.probability(pt)
            low = idx[~(pscore[idx] >= veto)]
            real[low] = False
            reason[low] |= REJECT["patch"]
    ev = DotEvidence(
        contrast_dl=prof.peak_dl,
        noise_dl=noise_at.astype(np.float64),
        significance=sig,
        continuation=cont,
        curvature_ratio=ridge_ratio,
        model_score=mscore,
        patch_score=pscore,
        confidence=conf,
        features=features,
    )

    sel = np.flatnonzero(real)
    xy_all = (prof.xy + 0.5) / fxy - 0.5
    # the bare-skin reference at the photo's pixels (reported, and read by the re-centring below)
    skin = (
        ref if abs(f - 1) < 1e-9 else cv2.resize(ref, (lstar.shape[1], lstar.shape[0]), interpolation=cv2.INTER_LINEAR)
    )
    if f < 0.8 and len(sel):
        # a photo finer than the canonical scale: the decided dots are re-centred on its own pixels
        # (an elongated fresh dot of a macro photo is located to ~1 canonical px otherwise)
        fine = radial_profile(
            lstar,
            skin,
            xy_all[sel],
            px_per_mm,
            dot_settings.model_copy(update={"recentre_passes": settings.fine_recentre_passes}),
        )
        moved = np.hypot(*(fine.xy - xy_all[sel]).T)
        ok = np.isfinite(moved) & (moved <= np.maximum(prof.radius_px[sel] / f, 1.0))
        xy_all[sel[ok]] = fine.xy[ok]
    if len(sel):
        # where it is reported: a dot whose final centre pixel is background in the photo's own label
        # map (the classes were read at the canonical scale; re-centring moves a dot by up to its
        # radius) is refused here, so every reported dot is one the metrics count (data.metrics.dots_in_roi)
        off = ~dots_in_roi(xy_all[sel], labels != BACKGROUND)
        real[sel[off]] = False
        reason[sel[off]] |= REJECT["not_scalp"]
        sel = sel[~off]
        if patches is not None:  # one per decided dot (decision "floors": nothing refused since)
            patches = patches[~off]
    geom = DotGeometry(
        xy=xy_all[sel],
        radius_px=prof.radius_px[sel] / f,
        peak_dl=prof.peak_dl[sel],
        elongation=prof.elongation[sel],
        orientation=prof.orientation[sel],
        score=conf[sel],
    )
    rejected = CandidateTable(
        xy=xy_all[~real],
        diameter_mm=diameter_mm[~real],
        elongation=prof.elongation[~real],
        evidence=ev.take(np.flatnonzero(~real)),
        reason=reason[~real],
    )
    return Detection(
        geometry=geom,
        evidence=ev.take(sel),
        factor=f,
        n_candidates=n_cand,
        rejected=rejected,
        skin_lstar=skin,
        patches=patches,
    )
