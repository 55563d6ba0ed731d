"""Training loop mechanics on a toy detector: schedule, logs, checkpoints, exact resume, Ctrl-C, DDP."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from nuimcli import CLASSES
from nuimcli.engine.trainer import TrainOptions, Trainer, lr_at, parse_losses, scaled_lr
from nuimcli.errors import UserError
from nuimcli.presets import load_preset


class ToyDetector(nn.Module):
    """Regresses the mean GT box from the image; a seeded random subset of coordinates per image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Linear(4, 4)

    def loss(self, batch):
        x = self.backbone(batch.images).mean((2, 3))
        pred = self.head(x)
        tgt = torch.stack([b.mean(0) / 100 for b in batch.gt_bboxes])
        sel = []
        for m in batch.img_metas:
            g = torch.Generator().manual_seed(m.seed)
            sel.append(torch.randperm(4, generator=g)[:2])
        sel = torch.stack(sel)
        diff = (pred.gather(1, sel) - tgt.gather(1, sel)).abs()
        return {"loss_box": diff.mean(), "loss_all": 0.1 * (pred - tgt).abs().mean(),
                "acc": torch.tensor(50.0)}


def make_set(root: Path, n: int = 4) -> Path:
    (root / "img").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = (96, 64) if i < 8 else (64, 96)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "img" / f"{i}.jpg"), img)
        images.append({"id": i, "file_name": f"img/{i}.jpg", "width": w, "height": h})
        anns.append({"id": i, "image_id": i, "category_id": i % 10, "bbox": [5 + i, 6, 20, 30 + i],
                     "area": 600, "iscrowd": 0,
                     "segmentation": [[5 + i, 6, 25 + i, 6, 25 + i, 36 + i, 5 + i, 36 + i]]})
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": i, "name": c} for i, c in enumerate(CLASSES)]}))
    return path


def toy_preset(**sched):
    p = load_preset("mask-rcnn-r18-tiny", [
        "data.train_scales=[[96, 64], [128, 80]]", "data.samples_per_gpu=2", "schedule.epochs=3",
        "schedule.lr_steps=[2]", "schedule.warmup_iters=3", "schedule.lr=0.05", "schedule.base_batch_size=2",
        "schedule.grad_clip=10.0",
    ])
    for k, v in sched.items():
        setattr(p.schedule, k, v)
    return p


def opts(tmp: Path, ann: Path, **kw) -> TrainOptions:
    base = dict(work_dir=tmp / "work", data_root=ann.parent, train_ann=ann, progress=False, log_interval=1,
                tensorboard=False, workers=0)
    base.update(kw)
    return TrainOptions(**base)


def test_lr_schedule_and_scaling():
    s = load_preset("mask-rcnn-r50-1x").schedule
    assert lr_at(0.02, s, 0, 0) == pytest.approx(0.02 * 0.001)
    assert lr_at(0.02, s, 250, 0) == pytest.approx(0.02 * (1 - 0.5 * 0.999))
    assert lr_at(0.02, s, 500, 0) == pytest.approx(0.02)
    assert lr_at(0.02, s, 10**5, 7) == pytest.approx(0.02)
    assert lr_at(0.02, s, 10**5, 8) == pytest.approx(0.002)
    assert lr_at(0.02, s, 10**5, 11) == pytest.approx(0.0002)
    assert scaled_lr(s, 2, True) == pytest.approx(0.0025) and scaled_lr(s, 2, False) == 0.02
    assert scaled_lr(s, 32, True) == pytest.approx(0.04)


def test_parse_losses_sums_only_losses():
    total, logs = parse_losses({"loss_a": torch.tensor(1.0), "s0.loss_b": torch.tensor(2.0),
                                "acc": torch.tensor(90.0), "loss_c": [torch.tensor(1.0), torch.tensor(0.5)]})
    assert float(total) == 4.5 and logs["loss"] == 4.5 and logs["acc"] == 90.0


def test_run_writes_logs_checkpoints_and_preset(tmp_path):
    ann = make_set(tmp_path)
    res = Trainer(toy_preset(), opts(tmp_path, ann), model=ToyDetector()).run()
    work = tmp_path / "work"
    assert res.global_iter == 6 and res.epoch == 3 and not res.interrupted
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]
    assert os.path.realpath(work / "latest.pth") == str((work / "epoch_3.pth").resolve())
    lines = [json.loads(x) for x in (work / "log.jsonl").read_text().splitlines()]
    assert lines[0]["mode"] == "info" and lines[0]["lr"] == pytest.approx(0.05) and lines[0]["total_batch"] == 2
    train = [x for x in lines if x["mode"] == "train"]
    assert len(train) == 6
    for k in ("epoch", "iter", "lr", "loss", "loss_box", "loss_all", "acc", "time"):
        assert k in train[0]
    assert train[0]["lr"] == pytest.approx(0.05 * 0.001) and train[-1]["lr"] == pytest.approx(0.005)
    assert [(x["epoch"], x["iter"]) for x in train] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
    ck = torch.load(work / "epoch_2.pth", weights_only=False)
    assert ck["meta"]["nuim_preset"] == "mask-rcnn-r18-tiny" and ck["meta"]["epoch"] == 2 and ck["meta"]["iter"] == 4
    assert "optimizer" in ck and set(ck["state_dict"]) == set(ToyDetector().state_dict())
    import yaml

    saved = yaml.safe_load((work / "preset.yaml").read_text())
    assert saved["data"]["train_scales"] == [[96, 64], [128, 80]]


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stop_at", [3, 4])  # mid-epoch, and exactly at an epoch end
def test_interrupt_and_resume_equals_uninterrupted(tmp_path, stop_at):
    ann = make_set(tmp_path)
    ref = ToyDetector()
    Trainer(toy_preset(), opts(tmp_path / "a", ann), model=ref).run()

    def stop(trainer, _):
        if trainer.global_iter == stop_at:
            trainer.stop_requested = True

    first = ToyDetector()
    res = Trainer(toy_preset(), opts(tmp_path / "b", ann, callbacks=[stop]), model=first).run()
    assert res.interrupted and res.global_iter == stop_at
    torch.manual_seed(123)  # resume must not depend on the RNG state of the new process
    np.random.seed(5)
    second = ToyDetector()
    res2 = Trainer(toy_preset(), opts(tmp_path / "b", ann, resume="latest"), model=second).run()
    assert res2.global_iter == 6 and not res2.interrupted
    a, b = _params(ref), _params(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logs = [json.loads(x) for x in (tmp_path / "b" / "work" / "log.jsonl").read_text().splitlines()]
    assert [x["global_iter"] for x in logs if x["mode"] == "train"] == [1, 2, 3, 4, 5, 6][:stop_at] + list(range(stop_at + 1, 7))


def test_max_iters_then_resume(tmp_path):
    ann = make_set(tmp_path)
    ref = ToyDetector()
    Trainer(toy_preset(), opts(tmp_path / "a", ann, max_iters=5), model=ref).run()
    m = ToyDetector()
    r = Trainer(toy_preset(), opts(tmp_path / "b", ann, max_iters=3), model=m).run()
    assert r.global_iter == 3 and (tmp_path / "b" / "work" / "iter_3.pth").exists()
    m2 = ToyDetector()
    r2 = Trainer(toy_preset(), opts(tmp_path / "b", ann, max_iters=5, resume=str(tmp_path / "b" / "work" / "iter_3.pth")),
                 model=m2).run()
    assert r2.global_iter == 5
    for k, v in _params(ref).items():
        assert torch.equal(v, _params(m2)[k]), k


def test_sigint_saves_checkpoint(tmp_path):
    ann = make_set(tmp_path)

    def ctrl_c(trainer, _):
        if trainer.global_iter == 1:
            os.kill(os.getpid(), signal.SIGINT)

    res = Trainer(toy_preset(), opts(tmp_path, ann, callbacks=[ctrl_c]), model=ToyDetector()).run()
    assert res.interrupted and res.global_iter == 1
    assert (tmp_path / "work" / "iter_1.pth").exists() and (tmp_path / "work" / "latest.pth").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_errors(tmp_path):
    ann = make_set(tmp_path)
    with pytest.raises(UserError, match="no latest.pth"):
        Trainer(toy_preset(), opts(tmp_path, ann, resume="latest"), model=ToyDetector()).run()
    bad = tmp_path / "weights.pth"
    torch.save({"state_dict": ToyDetector().state_dict()}, bad)
    with pytest.raises(UserError, match="not a nuim training checkpoint"):
        Trainer(toy_preset(), opts(tmp_path, ann, resume=str(bad)), model=ToyDetector()).run()
    with pytest.raises(UserError, match="gone.pth: no such resume checkpoint file"):
        Trainer(toy_preset(), opts(tmp_path, ann, resume=str(tmp_path / "gone.pth")), model=ToyDetector()).run()


def test_diverging_loss_is_reported(tmp_path):
    ann = make_set(tmp_path)

    class Nan(ToyDetector):
        def loss(self, batch):
            out = super().loss(batch)
            out["loss_box"] = out["loss_box"] * float("nan")
            return out

    from nuimcli.engine.trainer import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=r"diverged at iteration 1 \(epoch 1\): loss_box is nan; try a lower lr"):
        Trainer(toy_preset(), opts(tmp_path, ann), model=Nan()).run()


def test_val_split_evaluated_after_every_epoch(tmp_path, monkeypatch):
    import nuimcli.engine.evaluate as ev

    ann = make_set(tmp_path)
    calls = []

    def fake(model, ann_file, data_root, device="cpu", progress=True, **kw):
        calls.append((Path(ann_file), model.training))
        return {"bbox_mAP": 0.25, "segm_mAP": 0.125, "bbox_mAP_s": None}

    monkeypatch.setattr(ev, "evaluate_detector", fake)
    model = ToyDetector()
    Trainer(toy_preset(), opts(tmp_path, ann, val_ann=ann), model=model).run()
    assert len(calls) == 3 and all(c[0] == ann for c in calls) and model.training
    vals = [json.loads(x) for x in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    vals = [x for x in vals if x["mode"] == "val"]
    assert [v["epoch"] for v in vals] == [1, 2, 3] and vals[0]["bbox_mAP"] == 0.25


def test_bad_val_split_fails_before_training(tmp_path, monkeypatch):
    """A broken val split is reported at set-up, not after the first epoch."""
    import nuimcli.engine.evaluate as ev

    ann = make_set(tmp_path)
    monkeypatch.setattr(ev, "evaluate_detector", lambda *a, **k: pytest.fail("training should not start"))
    not_coco = tmp_path / "val.json"
    not_coco.write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="val.json"):
        Trainer(toy_preset(), opts(tmp_path, ann, val_ann=not_coco), model=ToyDetector()).setup()
    val = json.loads(ann.read_text())
    val["images"][1]["file_name"] = "img/gone.jpg"
    (tmp_path / "val2.json").write_text(json.dumps(val))
    with pytest.raises(UserError, match="gone.jpg.*not found"):
        Trainer(toy_preset(), opts(tmp_path, ann, val_ann=tmp_path / "val2.json"), model=ToyDetector()).setup()
    Trainer(toy_preset(), opts(tmp_path, ann, val_ann=tmp_path / "val2.json", evaluate=False),
            model=ToyDetector()).setup()  # --no-eval: the val split is not needed


def test_unreadable_image_in_a_worker_is_one_line(tmp_path):
    ann = make_set(tmp_path)
    (tmp_path / "img" / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError) as e:
        Trainer(toy_preset(), opts(tmp_path, ann, workers=1), model=ToyDetector()).run()
    msg = str(e.value)
    assert "2.jpg: cannot read the image" in msg and "\n" not in msg and "Traceback" not in msg


# --------------------------------------------------------------------------- two CPU processes


def _ddp_worker(world, root: str, out: str) -> None:
    from nuimcli.engine.distributed import cleanup, init

    init(world, "cpu")
    torch.set_num_threads(1)
    seen = []

    class Recording(ToyDetector):
        def loss(self, batch):
            seen.extend(m.image_id for m in batch.img_metas)
            return super().loss(batch)

    try:
        model = Recording()
        ann = Path(root) / "train.json"
        p = toy_preset()
        p.data.samples_per_gpu = 1
        Trainer(p, opts(Path(root), ann, max_iters=4), world=world, model=model).run()
        torch.save({"params": _params(model), "seen": seen}, Path(out) / f"rank{world.rank}.pt")
    finally:
        cleanup()


def test_two_process_ddp_keeps_ranks_in_sync(tmp_path):
    from nuimcli.engine.distributed import spawn

    make_set(tmp_path, n=8)
    spawn(_ddp_worker, 2, args=(str(tmp_path), str(tmp_path)))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for k, v in r0["params"].items():
        if "running" in k or "num_batches" in k:
            continue  # BN statistics are per process (no SyncBN), as in mmdet
        assert torch.allclose(v, r1["params"][k], atol=1e-6), k
    # One epoch of 8 images = 4 iterations x 2 ranks x 1 image: disjoint halves.
    assert len(r0["seen"]) == len(r1["seen"]) == 4
    assert sorted(r0["seen"] + r1["seen"]) == list(range(8))
    log = [json.loads(x) for x in (tmp_path / "work" / "log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2 and log[0]["total_batch"] == 2


def test_real_detector_resume_is_exact(tmp_path):
    """Interrupt + resume of the real (small) Mask R-CNN equals the uninterrupted run."""
    from nuimcli.data.convert import convert
    from nuimcli.synthetic import generate_nuimages
    from nuimcli.models.build import build_model

    root = tmp_path / "nuim"
    generate_nuimages(root, version="v1.0-train", num_samples=4, width=160, height=96, seed=4,
                      sweeps_per_sample=0, objects_per_image=(2, 3), null_mask_fraction=0.0)
    convert(root, ["v1.0-train"], nproc=0)
    sets = ["model.backbone.depth=18", "model.fpn_channels=16", "model.rpn.feat_channels=16",
            "model.roi.fc_out_channels=32", "model.rpn.train_nms_pre=200", "model.rpn.train_max_per_img=100",
            "data.train_scales=[[160, 96], [192, 112]]", "schedule.warmup_iters=2"]

    def run(work, model, **kw):
        return Trainer(load_preset("mask-rcnn-r18-tiny", sets),
                       TrainOptions(work_dir=work, data_root=root, progress=False, log_interval=1, tensorboard=False,
                                    evaluate=False, **kw), model=model).run()

    torch.manual_seed(0)
    ref = build_model(load_preset("mask-rcnn-r18-tiny", sets))
    init = copy.deepcopy(ref.state_dict())
    run(tmp_path / "a", ref, max_iters=3)

    def stop(trainer, _):
        if trainer.global_iter == 1:
            trainer.stop_requested = True

    first = build_model(load_preset("mask-rcnn-r18-tiny", sets))
    first.load_state_dict(init)
    assert run(tmp_path / "b", first, max_iters=3, callbacks=[stop]).interrupted
    second = build_model(load_preset("mask-rcnn-r18-tiny", sets))  # fresh weights: the checkpoint must restore them
    run(tmp_path / "b", second, max_iters=3, resume="latest")
    a, b = _params(ref), _params(second)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pretrained_backbone_and_load_from(tmp_path):
    """--pretrained loads a local torchvision ResNet file; --load-from skips tensors of another shape."""
    from torchvision.models import resnet18

    from nuimcli.models.build import build_model

    ann = make_set(tmp_path)
    torch.manual_seed(1)
    tv = resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    preset = load_preset("mask-rcnn-r18-tiny")
    t = Trainer(preset, opts(tmp_path, ann, pretrained=str(tmp_path / "resnet18.pth")), model=build_model(preset))
    t.setup()
    assert torch.equal(t.model.backbone.layer3[0].conv1.weight, tv.layer3[0].conv1.weight)

    donor = build_model(preset).state_dict()
    donor["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(81, donor["roi_head.bbox_head.fc_cls.weight"].shape[1])
    donor["roi_head.bbox_head.fc_cls.bias"] = torch.zeros(81)
    torch.save({"state_dict": donor, "meta": {}}, tmp_path / "coco.pth")
    model = build_model(preset)
    before = model.roi_head.bbox_head.fc_cls.weight.detach().clone()
    t = Trainer(preset, opts(tmp_path, ann, load_from=str(tmp_path / "coco.pth")), model=model)
    t.setup()
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, before)  # 81 vs 11 rows: skipped
    assert torch.equal(model.roi_head.bbox_head.shared_fcs[0].weight, donor["roi_head.bbox_head.shared_fcs.0.weight"])
    with pytest.raises(UserError, match="nope.pth: no such load_from detector file"):
        Trainer(preset, opts(tmp_path, ann, load_from=str(tmp_path / "nope.pth")), model=build_model(preset)).setup()


def test_load_from_takes_a_zoo_name(tmp_path, monkeypatch):
    """--load-from mask-rcnn-r50-1x uses the zoo's cached file (as eval/predict accept zoo names)."""
    from nuimcli import zoo
    from nuimcli.models.build import build_model

    monkeypatch.setenv("NUIM_HOME", str(tmp_path / "home"))
    ann = make_set(tmp_path)
    preset = load_preset("mask-rcnn-r18-tiny")
    donor = build_model(preset).state_dict()
    entry = zoo.get_entry("mask-rcnn-r50-1x")
    entry.path.parent.mkdir(parents=True)
    torch.save({"state_dict": donor, "meta": {}}, entry.path)
    model = build_model(preset)
    Trainer(preset, opts(tmp_path, ann, load_from="mask-rcnn-r50-1x"), model=model).setup()
    assert torch.equal(model.roi_head.bbox_head.shared_fcs[0].weight, donor["roi_head.bbox_head.shared_fcs.0.weight"])
    with pytest.raises(UserError, match="neither a load_from detector file nor a zoo name"):
        Trainer(preset, opts(tmp_path, ann, load_from="mask-rcnn-r50-1y"), model=build_model(preset)).setup()


# --------------------------------------------------------------------------- real learning


OVERFIT_ITERS = 70


def overfit_tiny_preset(work: str, seed: int) -> dict:
    """Train the tiny preset, as shipped, on 4 synthetic images; loss ratio and box AP50 on them."""
    from nuimcli.data.convert import convert
    from nuimcli.synthetic import generate_nuimages
    from nuimcli.engine.evaluate import evaluate_detector
    from nuimcli.models.build import build_model

    root = Path(work) / "nuim"
    generate_nuimages(root, version="v1.0-train", num_samples=4, width=384, height=216, seed=1 + seed,
                      sweeps_per_sample=0, objects_per_image=(2, 5), null_mask_fraction=0.0)
    convert(root, ["v1.0-train"], nproc=0)
    # Only the schedule length changes: the run must not reach the preset's lr steps.
    preset = load_preset("mask-rcnn-r18-tiny", ["schedule.epochs=1000", "schedule.lr_steps=[999]"])
    torch.manual_seed(seed)
    model = build_model(preset)
    res = Trainer(preset, TrainOptions(work_dir=Path(work) / "work", data_root=root, progress=False, log_interval=1,
                                       tensorboard=False, max_iters=OVERFIT_ITERS, evaluate=False, seed=seed),
                  model=model).run()
    losses = [h["loss"] for h in res.history]
    metrics = evaluate_detector(model, root / "annotations" / "nuimages_v1.0-train.json", root, progress=False)
    return dict(iters=len(losses), start=losses[0], end=float(np.mean(losses[-5:])), ap50=metrics["bbox_mAP_50"])


@pytest.mark.slow
def test_tiny_preset_overfits_synthetic_images(tmp_path, learning_seed):
    """The tiny preset, as shipped, learns 4 synthetic images: loss halves and box AP50 >= 0.5.

    Runs in a fresh interpreter: a chaotic 70-step training amplifies the last bit of any process
    state earlier tests leave behind (issue 12 saw AP50 0.27 in file order where alone it passed),
    and the test must pass in any order. Margins, by hand:
    ``NUIM_LEARNING_SEEDS=0-4 pytest -s -m slow tests/engine/test_trainer.py`` (seed = data, model
    init and sampling); worst of seeds 0-4 when written: loss ratio 0.244, AP50 0.583.
    """
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_trainer as t; "
            "print(json.dumps(t.overfit_tiny_preset(sys.argv[2], int(sys.argv[3]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path), str(learning_seed)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nLEARNING overfit seed={learning_seed}: loss end/start {r['end'] / r['start']:.3f} (threshold 0.5), "
          f"bbox_mAP_50 {r['ap50']:.3f} (threshold 0.5)")
    assert r["iters"] == OVERFIT_ITERS
    assert r["end"] <= 0.5 * r["start"], r
    assert r["ap50"] >= 0.5, r


def test_save_best_and_keep_survive_resume(tmp_path, monkeypatch, capfd):
    """--save-best bbox_mAP --keep 1 over 3 epochs whose val bbox_mAP is .5, .2, .3, stopped after
    epoch 2 and resumed: best.pth stays epoch 1 (the resumed run remembers .5 beats .3), only
    epoch_3.pth is left, latest.pth points at it."""
    import nuimcli.engine.evaluate as ev

    ann = make_set(tmp_path)
    values = iter([0.5, 0.2, 0.3])
    monkeypatch.setattr(ev, "evaluate_detector", lambda *a, **k: {"bbox_mAP": next(values), "segm_mAP": 0.1})
    o = dict(val_ann=ann, save_best="bbox_mAP", keep=1)
    Trainer(toy_preset(), opts(tmp_path, ann, max_iters=4, **o), model=ToyDetector()).run()
    work = tmp_path / "work"
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_2.pth"]
    assert json.loads((work / "best.json").read_text())["epoch"] == 1
    Trainer(toy_preset(), opts(tmp_path, ann, resume="latest", **o), model=ToyDetector()).run()
    assert sorted(p.name for p in work.glob("epoch_*.pth")) == ["epoch_3.pth"]
    assert os.path.realpath(work / "latest.pth") == str((work / "epoch_3.pth").resolve())
    best = json.loads((work / "best.json").read_text())
    assert best == {"metric": "bbox_mAP", "value": 0.5, "epoch": 1, "file": "epoch_1.pth"}
    ck = torch.load(work / "best.pth", weights_only=False)
    assert ck["meta"]["epoch"] == 1 and ck["meta"]["iter"] == 2  # epoch 1's file, though it was deleted
    err = capfd.readouterr().err
    assert "best.pth is now epoch 1 (bbox_mAP 0.5000)" in err and "epoch 1 (bbox_mAP 0.5000) stays best.pth" in err


def test_save_best_needs_a_val_split_and_a_known_metric(tmp_path):
    ann = make_set(tmp_path)
    with pytest.raises(UserError, match="--save-best needs the end-of-epoch evaluation"):
        Trainer(toy_preset(), opts(tmp_path, ann, save_best="bbox_mAP"), model=ToyDetector()).run()
    with pytest.raises(UserError, match="choose one of bbox_mAP, segm_mAP"):
        Trainer(toy_preset(), opts(tmp_path, ann, val_ann=ann, save_best="AP"), model=ToyDetector()).run()
