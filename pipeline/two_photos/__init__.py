"""Two photos of one scalp: a before and an after.

``register`` lines the after photo up with the before photo, ``link`` pairs their dots and
``compare`` turns two assessments into one comparison; :func:`pipeline.two_photos.compare.compare_photos`
is the only place that knows that order.
"""
