"""A region of a client's scalp over their visits.

``track`` follows the region's dots from visit to visit, ``fading`` fits how fast each dot's
pigment fades and what turns, ``history`` reads a client's visits from the records and runs
:func:`pipeline.over_time.track.track_region`, the only place that knows that order.
"""
