"""Segmenting a user's images and whole slides with a trained model.

- :mod:`~nucstudy.segment.image`: one image of any size that fits in memory, tile by tile,
  seams merged (:mod:`~nucstudy.segment.tiling`);
- :mod:`~nucstudy.segment.images`: files and folders of images, the outputs written
  (:mod:`~nucstudy.segment.export`: CSV, GeoJSON, overlays);
- :mod:`~nucstudy.segment.slides`, :mod:`~nucstudy.segment.tissue`,
  :mod:`~nucstudy.segment.regions`, :mod:`~nucstudy.segment.slide_segment`,
  :mod:`~nucstudy.segment.slide_export`: whole slides, read level by level and region by
  region, tissue only, resumable, written for QuPath.

May import :mod:`nucstudy.engine` and the layers below it; never the study or cli layers.
"""


def __getattr__(name: str):
    """The names of the old module ``nucstudy.segment`` (see :mod:`nucstudy._compat`)."""
    from nucstudy._compat import package_getattr

    return package_getattr("nucstudy.segment", name)
