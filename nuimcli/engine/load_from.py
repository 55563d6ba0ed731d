"""``load_from`` onto a model of possibly other classes: fine-tuning a detector on new data.

A released nuImages model (or any checkpoint) gives every tensor it can; the class-dependent
ones (box classifier, box regressor unless class-agnostic, mask logits — each head declares
them, :func:`~nuimcli.models.state_dict.class_dependent_keys`) are taken only when the file's
class names equal this run's, in the same order. Comparing names rather than shapes matters: a
new 10-class list has the nuImages shapes, and inheriting the nuImages rows would start "class 3"
as a bus detector. A tensor left out keeps the value the freshly built model gave it, i.e. it is
re-initialised by the head's own initialisation.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from torch import nn

from nuimcli.zoo import Resolved


@dataclass
class LoadFromReport:
    """What a ``load_from`` kept and what it left at initial values."""

    path: str
    source_classes: Optional[list[str]]  #: the file's class names; None when it records none
    classes: list[str]  #: this run's
    kept: list[str] = field(default_factory=list)  #: model keys loaded from the file
    reinitialised: list[str] = field(default_factory=list)  #: class-dependent keys not taken (classes differ)
    skipped: list[str] = field(default_factory=list)  #: other keys not taken (absent from the file, or another shape)

    @property
    def classes_differ(self) -> bool:
        return self.source_classes != self.classes

    def lines(self) -> list[str]:
        """Human lines for the run's log: what was kept (counted per top-level module), which
        class-dependent tensors were re-initialised and why, and what else was left out."""
        per_module = Counter(k.split(".", 1)[0] for k in self.kept)
        kept = ", ".join(f"{m} {n}" for m, n in per_module.items())
        out = [f"load_from {self.path}: kept {len(self.kept)} tensors ({kept})"]
        if self.reinitialised:
            if self.source_classes is None:
                why = "the file records no class names"
            else:
                why = (f"its {len(self.source_classes)} classes ({_names(self.source_classes)}) are not this "
                       f"run's {len(self.classes)} ({_names(self.classes)})")
            out.append(f"re-initialised {len(self.reinitialised)} class-dependent tensors, because {why}: "
                       f"{', '.join(self.reinitialised)}")
        if self.skipped:
            out.append(f"left at initial values (not in the file or another shape): {len(self.skipped)} tensors: "
                       f"{', '.join(self.skipped[:8])}{' …' if len(self.skipped) > 8 else ''}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """For the ``mode: info`` line of log.jsonl."""
        return {"file": self.path, "source_classes": self.source_classes, "classes": self.classes,
                "kept": len(self.kept), "reinitialised": self.reinitialised, "skipped": self.skipped}


def _names(names: Sequence[str], show: int = 4) -> str:
    return ", ".join(names[:show]) + (", …" if len(names) > show else "")


def source_classes(found: Resolved, meta: dict) -> Optional[list[str]]:
    """The class names of a ``load_from`` file: a zoo entry's preset (the released nuImages
    files; what their meta holds was never checked), else what the meta records (ours, mmdet
    2.x / 3.x), else a released file recognised by its hash, else None."""
    from nuimcli.checkpoints import released_preset_for_hash
    from nuimcli.data.classes import checkpoint_classes
    from nuimcli.presets import load_preset
    from nuimcli.utils.hashing import sha256_file

    if found.preset:
        return list(load_preset(found.preset).data.classes)
    names = checkpoint_classes(meta)
    if names is not None:
        return names
    released = released_preset_for_hash(sha256_file(found.path)[:8])
    return list(released.data.classes) if released is not None else None


def load_from(model: nn.Module, found: Resolved, classes: Sequence[str], trust: bool = False) -> LoadFromReport:
    """Load ``found`` (a resolved ``load_from`` file) into ``model`` (freshly built for
    ``classes``), non-strictly; class-dependent tensors only when the class lists are equal."""
    from nuimcli.checkpoints import load_checkpoint
    from nuimcli.models.state_dict import class_dependent_keys, load_partial, normalise_state_dict

    ckpt = load_checkpoint(found.path, trust=trust)
    report = LoadFromReport(path=str(found.path), source_classes=source_classes(found, ckpt.get("meta") or {}),
                            classes=list(classes))
    state = normalise_state_dict(ckpt["state_dict"])
    drop: set[str] = set()
    if report.classes_differ:
        drop = set(class_dependent_keys(model))
        state = OrderedDict((k, v) for k, v in state.items() if k not in drop)
    partial = load_partial(model, state, source=str(found.path), warn=False)  # lines() reports it
    not_loaded = set(partial.skipped)
    for k in model.state_dict():
        if k in drop:
            report.reinitialised.append(k)
        elif k in not_loaded:
            report.skipped.append(k)
        else:
            report.kept.append(k)
    return report
