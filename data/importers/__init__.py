"""Import labels made with annotation tools into the project's dataset format, and export back.

Supported sources
-----------------
* COCO JSON (``source="coco"``): region categories as polygons or RLE (uncompressed count
  lists and compressed COCO strings); dots as keypoints (``[x, y, v]``) or a bbox centre.
* CVAT for images 1.1 XML (``"cvat"``): ``<points>``, ``<box>``/``<ellipse>`` centres for dots;
  ``<polygon>``, ``<box>`` and ``<mask>`` for regions.
* Label Studio JSON export (``"labelstudio"``): ``keypointlabels``, ``polygonlabels`` and
  ``rectanglelabels`` in percent of ``original_width``/``original_height``. Brush masks are
  refused (their RLE is a Label Studio-specific bit stream): export such projects as COCO.
* Plain PNG class masks plus CSV dot tables (``"png+csv"``).

What is written (the project format, as :mod:`data.synth.scene` writes it)
------------------------------------------------------------------------
For every imported image a folder ``<out>/<photo stem>/`` with ``photo<suffix>``, ``mask.png``
(uint8 class indices: 0 background, 1 scalp, 2 hair, 255 unlabelled/ignore), ``dots.csv``
(``dot_id,x,y``) and ``label_source.json`` (provenance: tool, export file, image sha256).
The importers return manifest rows (the columns of :data:`data.manifest.COLUMNS`, paths
relative to the import's output folder); :func:`write_manifest` writes them, and
:func:`data.manifest.read_manifest` reads them back like any other manifest.

Conventions, stated once
------------------------
* Coordinates. The project (and OpenCV) puts pixel *centres* at integers: the top-left pixel
  spans [-0.5, 0.5]. COCO, CVAT and Label Studio put pixel *corners* at integers: the top-left
  pixel spans [0, 1]. Tool coordinates are therefore shifted by -0.5 on import and +0.5 on
  export (``LabelScheme.origin`` switches this off for tools that use centres). CSV dot tables
  read by the PNG+CSV importer are in the project convention by default.
* Rasterising. A pixel belongs to a polygon when its centre is inside (even-odd rule), with
  half-open edges (a centre exactly on a left/top edge is in, on a right/bottom edge is out),
  so polygons that share an edge never share a pixel and the COCO square
  ``[0,0, 4,0, 4,4, 0,4]`` is exactly pixels 0..3.
* Overlaps. Every class is painted in ``LabelScheme.priority`` order, later wins. The default
  ``(background, scalp, hair, ignore)`` means hair over scalp whatever the annotation order, and an
  "ignore" region overrides everything. Pixels no annotation covers get ``LabelScheme.unlabelled``.
* What an export labels. Regions count as labelled in an export when it declares or uses a
  region label (COCO categories, CVAT ``<meta>`` labels, anything used). Otherwise ``mask.png`` is
  all 255 (nothing known). Dots likewise; an export without dot labels writes no ``dots.csv`` and
  the manifest's ``dots`` cell stays empty, because "no dot labelled" is not "no dot there".
  Images without a single usable annotation are skipped (listed in ``ImportReport.skipped``).
* Errors. Anything wrong with an export as a whole (missing or malformed file, an unmapped
  label, refused brush masks) raises :class:`LabelImportError` with a one-line message naming the
  file. Anything wrong with one image (image not found, size mismatch, a dot outside the image,
  a broken polygon) is reported in ``ImportReport.failures`` and the import goes on.

Modules
-------
``results`` (settings, labels, reports), ``rle`` (COCO run-length encoding), ``polygons``
(polygons <-> pixels), ``builder`` (one image's labels while parsing), ``coco``, ``cvat``,
``label_studio``, ``plain`` (PNG masks, CSV dots), ``writer`` (the project format and the
manifest), ``api`` (the high-level importers). Import from ``data.importers``: this package
re-exports the public names.
"""

from data.importers.api import (
    IMAGE_SUFFIXES,
    import_coco,
    import_cvat_xml,
    import_label_studio,
    import_png_csv,
)
from data.importers.coco import (
    export_coco,
    parse_coco,
)
from data.importers.cvat import (
    export_cvat_xml,
    parse_cvat_xml,
)
from data.importers.label_studio import (
    export_label_studio,
    label_studio_image_name,
    parse_label_studio,
)
from data.importers.plain import (
    read_png_mask,
    read_points_csv,
)
from data.importers.polygons import (
    compose_mask,
    mask_outlines,
    rasterise_polygon,
)
from data.importers.results import (
    BACKGROUND,
    CLASS_VALUES,
    DEFAULT_CLASSES,
    DEFAULT_DOT_LABELS,
    DEFAULT_PRIORITY,
    HAIR,
    IGNORE,
    SCALP,
    DatasetInfo,
    ImageLabels,
    ImportFailure,
    ImportReport,
    LabelImportError,
    LabelScheme,
    Origin,
    ParsedExport,
)
from data.importers.rle import (
    rle_counts_from_string,
    rle_counts_to_string,
    rle_decode,
    rle_encode,
)
from data.importers.writer import (
    PROVENANCE_SCHEMA,
    SPLIT_FRACTIONS,
    assign_split,
    read_project_labels,
    write_manifest,
    write_project_labels,
)

__all__ = [
    "BACKGROUND",
    "CLASS_VALUES",
    "DEFAULT_CLASSES",
    "DEFAULT_DOT_LABELS",
    "DEFAULT_PRIORITY",
    "DatasetInfo",
    "HAIR",
    "IGNORE",
    "IMAGE_SUFFIXES",
    "ImageLabels",
    "ImportFailure",
    "ImportReport",
    "LabelImportError",
    "LabelScheme",
    "Origin",
    "PROVENANCE_SCHEMA",
    "ParsedExport",
    "SCALP",
    "SPLIT_FRACTIONS",
    "assign_split",
    "compose_mask",
    "export_coco",
    "export_cvat_xml",
    "export_label_studio",
    "import_coco",
    "import_cvat_xml",
    "import_label_studio",
    "import_png_csv",
    "label_studio_image_name",
    "mask_outlines",
    "parse_coco",
    "parse_cvat_xml",
    "parse_label_studio",
    "rasterise_polygon",
    "read_png_mask",
    "read_points_csv",
    "read_project_labels",
    "rle_counts_from_string",
    "rle_counts_to_string",
    "rle_decode",
    "rle_encode",
    "write_manifest",
    "write_project_labels",
]
