"""Which classes a model detects: from the training annotation file, a ``--classes`` selection,
or a checkpoint's meta — and the preset that goes with them.

Label ``i`` means ``classes[i]`` everywhere (training targets, ``fc_cls`` column ``i``, mask
channel ``i``, the names in predict's JSON and pictures, the category evaluated). The list is
chosen once, when training starts, and travels in every checkpoint (``meta.CLASSES`` as mmdet 2.x
writes it, ``meta.dataset_meta.classes`` as 3.x does, and our ``meta.nuim_preset_config``), so
eval and predict never guess it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

from nuimcli import CLASSES
from nuimcli.errors import UserError
from nuimcli.presets import Preset, validate_semantics
from nuimcli.utils.typed_config import suggest


def parse_classes_option(text: Optional[str]) -> Optional[list[str]]:
    """``--classes "vehicle,person,cone"`` → ``["vehicle", "person", "cone"]`` (None stays None).

    Empty names and repeated names are mistakes (a repeated name would give two labels one
    category), reported as a :class:`UserError`.
    """
    if text is None:
        return None
    names = [n.strip() for n in str(text).split(",")]
    if not names or any(not n for n in names):
        raise UserError(f"--classes {text!r}: give comma-separated category names, e.g. --classes car,pedestrian")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"--classes {text!r}: {', '.join(dup)} named twice")
    return names


def training_classes(categories: Sequence[Mapping[str, Any]], select: Optional[Sequence[str]], where: str) -> list[str]:
    """The class list of a training run.

    ``select`` (``--classes``, or a preset whose ``data.classes`` someone changed) picks those
    categories by name, in that order; the file's other categories are ignored, as mmdet's
    ``metainfo=dict(classes=...)`` does. A selected name the file lacks is a :class:`UserError`.
    Without ``select``: every category of the file, by ascending id (the converter numbers the
    10 nuImages classes 0..9 in their canonical order, so a nuImages file gives exactly
    :data:`nuimcli.CLASSES`).
    """
    names = [str(c.get("name")) for c in sorted(categories, key=lambda c: _id_key(c.get("id")))]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"{where}: category name {dup[0]!r} is used by more than one category id")
    if select is None:
        if not names:
            raise UserError(f"{where}: 'categories' is empty: nothing to train")
        return names
    for n in select:
        if n not in names:
            raise UserError(f"{where}: has no category named {n!r}{suggest(n, names)} (its categories: "
                            f"{', '.join(names[:12])}{' …' if len(names) > 12 else ''})")
    return list(select)


def _id_key(v: Any) -> tuple[int, Any]:
    # ids are ints in COCO, but a hand-made file may use strings: sort those after, by text
    return (0, v) if isinstance(v, int) and not isinstance(v, bool) else (1, str(v))


def selection_of(preset: Preset, classes_option: Optional[Sequence[str]]) -> Optional[list[str]]:
    """The names a run selects: ``--classes``, else the preset's ``data.classes`` when someone set
    them (a preset YAML or ``--set data.classes=...`` naming other than the 10 nuImages classes),
    else None (take the training file's categories)."""
    if classes_option is not None:
        return list(classes_option)
    if list(preset.data.classes) != list(CLASSES):
        return list(preset.data.classes)
    return None


def with_classes(preset: Preset, classes: Sequence[str]) -> Preset:
    """``preset`` for this class list: ``data.classes`` and ``model.num_classes`` set.

    The same list returns ``preset`` itself. Another list also drops ``release`` and
    ``state_dict_manifest``: the model is no longer that results-table row (its published AP
    and its manifest's shapes do not describe it), though its keys stay mmdet's.
    """
    classes = [str(c) for c in classes]
    if classes == list(preset.data.classes):
        return preset
    out = dataclasses.replace(
        preset,
        data=dataclasses.replace(preset.data, classes=classes),
        model=dataclasses.replace(preset.model, num_classes=len(classes)),
        release=None,
        state_dict_manifest=None,
    )
    validate_semantics(out, f"{preset.name} with classes {', '.join(classes)}")
    return out


def checkpoint_classes(meta: Mapping[str, Any]) -> Optional[list[str]]:
    """The class names a checkpoint's ``meta`` records, or None when it records none.

    Order: our ``nuim_preset_config.data.classes``, then mmdet 3.x ``dataset_meta.classes``,
    then mmdet 2.x ``CLASSES`` (a tuple, or one string for a single class as mmdet allows).
    """
    config = meta.get("nuim_preset_config")
    if isinstance(config, Mapping):
        data = config.get("data")
        if isinstance(data, Mapping) and isinstance(data.get("classes"), (list, tuple)):
            return [str(c) for c in data["classes"]]
    dataset_meta = meta.get("dataset_meta")
    if isinstance(dataset_meta, Mapping) and isinstance(dataset_meta.get("classes"), (list, tuple)):
        return [str(c) for c in dataset_meta["classes"]]
    found = meta.get("CLASSES")
    if isinstance(found, str):
        return [found]
    if isinstance(found, (list, tuple)):
        return [str(c) for c in found]
    return None
