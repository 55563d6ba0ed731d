"""RoI heads: feature extraction, box / mask / semantic heads, the three RoI heads, post-processing.

One file per role:

* :mod:`.layers` — :class:`ConvModule`, :class:`SingleRoIExtractor` (multi-level RoIAlign);
* :mod:`.bbox_head` — :class:`Shared2FCBBoxHead` (+ its targets and loss);
* :mod:`.mask_heads` — :class:`FCNMaskHead` (+ mask loss), :class:`HTCMaskHead`;
* :mod:`.semantic_head` — :class:`FusedSemanticHead` (HTC, + its loss);
* :mod:`.base` — :class:`RoIHead`: the stage loop, for training (``loss``) and inference
  (``simple_test``) alike;
* :mod:`.standard` — :class:`StandardRoIHead` (Mask R-CNN);
* :mod:`.cascade` — :class:`CascadeRoIHead`, :class:`HybridTaskCascadeRoIHead`;
* :mod:`.postprocess` — :class:`RoIDetections`, box decoding + NMS, :func:`paste_masks`.

Module names and registration order follow mmdet so the state dicts match its checkpoints.
"""

from nuimcli.models.roi_heads.base import GroundTruth, RoIHead
from nuimcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from nuimcli.models.roi_heads.cascade import CascadeRoIHead, HybridTaskCascadeRoIHead
from nuimcli.models.roi_heads.layers import ConvModule, SingleRoIExtractor
from nuimcli.models.roi_heads.mask_heads import FCNMaskHead, HTCMaskHead
from nuimcli.models.roi_heads.postprocess import RoIDetections, detect_boxes, paste_masks
from nuimcli.models.roi_heads.semantic_head import FusedSemanticHead
from nuimcli.models.roi_heads.standard import StandardRoIHead

__all__ = [
    "CascadeRoIHead", "ConvModule", "FCNMaskHead", "FusedSemanticHead", "GroundTruth", "HTCMaskHead",
    "HybridTaskCascadeRoIHead", "RoIDetections", "RoIHead", "Shared2FCBBoxHead", "SingleRoIExtractor",
    "StandardRoIHead", "detect_boxes", "paste_masks",
]
