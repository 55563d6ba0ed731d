"""Synthetic nuImages in the official schema: all ten tables, RLE masks and JPEG images.

The output loads in the official devkit (``nuimages.NuImages``) and in ``nuim convert``
exactly like a real release: same tables, fields, types and conventions (32-hex tokens,
``samples/<CAM>/<logfile>__<CAM>__<timestamp>.jpg`` key frames, ``sweeps/...`` sweeps linked
by ``prev``/``next``, amodal ``[xmin, ymin, xmax, ymax]`` int boxes, visible masks as base64
COCO compressed RLE, some ``null`` masks, ``flat.driveable_surface`` and ``vehicle.ego``
surfaces).

Scenes are built so that a small detector can learn from a few images: each object is a
class-specific silhouette standing on a road below the horizon, painted in a class colour
with a mild class texture. Objects are drawn far to near, so nearer (later) objects occlude
earlier ones; an object's mask is its visible part, its box the whole (amodal) shape clipped
to the image. The ego vehicle covers the bottom edge and occludes everything.

Masks are drawn per object on a small canvas and run-length encoded from that canvas (the
full-image mask is never materialised), so tables-only generation of 1,000 1600x900 key
frames with 10-30 objects takes seconds.

Not part of the core (``nuimcli.data`` reads real and synthetic versions alike); the tests, the
demo and the benchmarks use it. One module per role:

* :mod:`~nuimcli.synthetic.schema` — the nuImages vocabulary (cameras, categories, attributes);
* :mod:`~nuimcli.synthetic.styles` — how each category looks and behaves;
* :mod:`~nuimcli.synthetic.painters` — the class silhouettes;
* :mod:`~nuimcli.synthetic.layout` — placing road, ego vehicle and objects; the label map;
* :mod:`~nuimcli.synthetic.render` — key frame and sweep images;
* :mod:`~nuimcli.synthetic.rle` — masks as nuImages stores them;
* :mod:`~nuimcli.synthetic.rig` — logs and calibrated cameras;
* :mod:`~nuimcli.synthetic.sweeps` — a sample's key frame, sweeps and ego poses;
* :mod:`~nuimcli.synthetic.annotations` — object and surface annotation rows;
* :mod:`~nuimcli.synthetic.tables` — tokens, random streams, the shared tables, writing them;
* :mod:`~nuimcli.synthetic.generate` — :func:`generate_nuimages` and the demo set.
"""

from nuimcli.synthetic.generate import SyntheticSummary, generate_nuimages, write_default_demo_set
from nuimcli.synthetic.rle import encode_mask, encode_mask_crop
from nuimcli.synthetic.schema import ATTRIBUTES, CAMERAS, CATEGORIES, EGO_CATEGORY, SURFACE_CATEGORY
from nuimcli.synthetic.styles import CATEGORY_RGB, CATEGORY_TO_CLASS, EGO_RGB, ROAD_RGB

__all__ = [
    "ATTRIBUTES", "CAMERAS", "CATEGORIES", "CATEGORY_RGB", "CATEGORY_TO_CLASS", "EGO_CATEGORY", "EGO_RGB",
    "ROAD_RGB", "SURFACE_CATEGORY", "SyntheticSummary", "encode_mask", "encode_mask_crop",
    "generate_nuimages", "write_default_demo_set",
]
