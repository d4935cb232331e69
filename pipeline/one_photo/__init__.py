"""One photo, from file to figures.

The stages, in the order :func:`pipeline.one_photo.assess.assess_photo` runs them (the only
place that knows that order): ``loading`` (the file to RGB pixels and a header), ``calibration``
(the card: scale in px/mm and the colour correction), ``segment`` (background / scalp / hair),
``detect`` and ``dots`` (the SMP dots and their measurements), ``pigment`` (each dot's colour
in CIELAB and the flags), ``quality`` (what the photo allows to be measured), ``overlay`` (the
picture of it all). ``clean_copy`` writes a photo without its camera metadata.
"""
