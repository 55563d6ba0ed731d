"""DEV-ONLY, runs inside the oracle venv (mmdet 3.3.0), never with the project's Python.

Training losses of real mmdet on the batch and weights that ``bench/training_parity.py`` wrote
to WORK (``weights.pth``: our state dict, mmdet names; ``batch.pt``: images, metas, GT, the
full-size semantic map; ``setup.json``: architecture and channel sizes). Writes WORK/oracle.pt:
every loss term plus diagnostics (RPN proposals, sampled counts of every sampler call,
(gallery size, num) of every random choice).

    ORACLE_PY bench/_oracle_training_side.py WORK

What is changed in mmdet, and why:
* ``RandomSampler.random_choice`` (every sampler: RPN and each R-CNN stage) keeps evenly spaced
  members of the gallery, the rule of ``nuimcli.testing.training_parity.even_choice``, so both
  sides sample the same anchors and RoIs;
* the HTC semantic loss gets ``avg_non_ignore=True``: mmdet 2.5-2.7 (the released models)
  used ``nn.CrossEntropyLoss(ignore_index=0)``, a mean over non-ignored pixels; mmdet's own
  CrossEntropyLoss (since PR #5881, 2.17) averages over all pixels unless told otherwise;
* the configs are ``nuim_configs`` with the small channel sizes of the parity models.
"""

import json
import sys

import torch

sys.path.insert(0, "/work/shared/oracle")
import nuim_configs as C  # noqa: E402


def even_choice(gallery, num):
    """Same rule as nuimcli.testing.training_parity.even_choice (floor(i * K / num))."""
    k = gallery.numel()
    idx = torch.div(torch.arange(num, dtype=torch.int64) * k, num, rounding_mode="floor")
    return gallery[idx.to(gallery.device)]


def _as_list(x):
    return x if isinstance(x, list) else [x]


def small_cfg(arch, setup):
    """The architecture's model config with the parity models' channel sizes."""
    cfg = C.model_cfg(arch)
    c, fc, depth = setup["fpn_channels"], setup["fc_channels"], setup["depth"]
    cfg["backbone"]["depth"] = depth
    cfg["neck"]["in_channels"] = setup["backbone_channels"]
    cfg["neck"]["out_channels"] = c
    cfg["rpn_head"].update(in_channels=c, feat_channels=c)
    rh = cfg["roi_head"]
    for key in ("bbox_roi_extractor", "mask_roi_extractor", "semantic_roi_extractor"):
        if key in rh:
            rh[key]["out_channels"] = c
    for h in _as_list(rh["bbox_head"]):
        h.update(in_channels=c, fc_out_channels=fc)
    for h in _as_list(rh["mask_head"]):
        h.update(in_channels=c, conv_out_channels=c)
    if "semantic_head" in rh:
        rh["semantic_head"].update(in_channels=c, conv_out_channels=c)
        rh["semantic_head"]["loss_seg"]["avg_non_ignore"] = True
    return cfg


def data_samples(batch):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData

    hb, wb = batch["images"].shape[-2:]
    out = []
    for i, meta in enumerate(batch["img_metas"]):
        ds = DetDataSample(metainfo=dict(
            img_shape=tuple(meta["img_shape"]), ori_shape=tuple(meta["ori_shape"]),
            pad_shape=tuple(meta["pad_shape"]), batch_input_shape=(hb, wb),
            scale_factor=tuple(meta["scale_factor"][:2])))
        masks = batch["gt_masks"][i].numpy()
        ds.gt_instances = InstanceData(bboxes=batch["gt_bboxes"][i].float(), labels=batch["gt_labels"][i].long(),
                                       masks=BitmapMasks(masks, masks.shape[1], masks.shape[2]))
        ds.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(batch["semantic"][i]))
        out.append(ds)
    return out


def main():
    work = sys.argv[1]
    from mmdet.models.task_modules.samplers import RandomSampler
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    register_all_modules(init_default_scope=True)
    setup = json.loads(open(f"{work}/setup.json").read())
    batch = torch.load(f"{work}/batch.pt", weights_only=False)
    model = MODELS.build(ConfigDict(small_cfg(setup["arch"], setup)))
    model.double()
    model.load_state_dict(torch.load(f"{work}/weights.pth", weights_only=True), strict=True)
    model.train()

    samples = []  # (num_pos, num_neg, num_gt_proposals) of every sampler call, in call order
    orig_sample = RandomSampler.sample

    def sample(self, *args, **kwargs):
        r = orig_sample(self, *args, **kwargs)
        samples.append([int(r.pos_inds.numel()), int(r.neg_inds.numel()), int(r.pos_is_gt.sum())])
        return r

    choices = []  # (gallery size, num) of every random_choice call, in call order

    def random_choice(self, gallery, num):
        choices.append([int(gallery.numel()), int(num)])
        return even_choice(gallery, num)

    RandomSampler.random_choice = random_choice
    RandomSampler.sample = sample
    proposals = []
    orig_lp = model.rpn_head.loss_and_predict

    def loss_and_predict(*args, **kwargs):
        losses, results = orig_lp(*args, **kwargs)
        proposals.extend(torch.cat([r.bboxes, r.scores[:, None]], 1).clone() for r in results)
        return losses, results

    model.rpn_head.loss_and_predict = loss_and_predict
    with torch.no_grad():
        losses = model.loss(batch["images"], data_samples(batch))
    out = {k: float(sum(v) if isinstance(v, (list, tuple)) else v) for k, v in losses.items()}
    torch.save({"losses": out, "proposals": proposals, "samples": samples, "choices": choices}, f"{work}/oracle.pt")


if __name__ == "__main__":
    main()
