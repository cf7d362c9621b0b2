"""A Label Studio project's labelling config, read for what the backend needs: the image tag and the
``BrushLabels`` / ``PolygonLabels`` tags with their label names, matched to a run's classes by name.

The config is XML sent by Label Studio (``/setup``, ``/predict``); it is parsed within a size limit and a
document type declaration is refused (no entities of any kind are expanded).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_CONFIG_BYTES = 1 << 20
KINDS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}


class ConfigMismatch(ValueError):
    """The labelling config cannot be served by the run (no image tag, no mask tag, or label names that are
    not the run's classes); the message says which names differ."""


@dataclass(frozen=True)
class MaskTag:
    """One ``BrushLabels`` or ``PolygonLabels`` tag: ``kind`` (``brushlabels`` or ``polygonlabels``), its
    ``name`` (results' ``from_name``), ``to_name`` (the image tag) and its label values in config order."""

    kind: str
    name: str
    to_name: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabellingConfig:
    """What the backend reads from a config: the image tag's name and data key, and the mask tags."""

    image_name: str
    image_key: str
    tags: tuple[MaskTag, ...] = field(default_factory=tuple)

    def class_map(self, classes: Sequence[str]) -> dict[str, int]:
        """Label name -> class index of ``classes`` (background first), for every label of every mask tag.

        Raises:
            ConfigMismatch: a label that is no class of the run, or a foreground class no label names.
        """
        index = {name.lower(): k for k, name in enumerate(classes) if k > 0}
        labels = {label for tag in self.tags for label in tag.labels}
        unknown = sorted(label for label in labels if label.lower() not in index)
        missing = sorted(name for name in classes[1:] if name.lower() not in {lab.lower() for lab in labels})
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"label(s) {', '.join(unknown)} are not classes of the run")
            if missing:
                parts.append(f"the run's class(es) {', '.join(missing)} have no label")
            raise ConfigMismatch(f"the labelling config does not match the run: {'; '.join(parts)} "
                                 f"(the run's classes: {', '.join(classes[1:])}); name the labels as the classes")
        return {label: index[label.lower()] for label in labels}


def parse_config(text: str) -> LabellingConfig:
    """Read a labelling config's image tag and mask tags.

    Args:
        text: the config's XML.

    Returns:
        The image tag (the first ``Image``) and every ``BrushLabels`` / ``PolygonLabels`` tag on it.

    Raises:
        ConfigMismatch: too large, not XML, a document type declaration, no ``Image`` tag, or no mask tag.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigMismatch("the labelling config is empty")
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigMismatch(f"the labelling config is larger than {MAX_CONFIG_BYTES} bytes")
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        raise ConfigMismatch("the labelling config declares a document type; Label Studio configs never do")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ConfigMismatch(f"the labelling config is not XML ({err})") from err
    images = [el for el in root.iter() if el.tag.lower() == "image" and el.get("name")]
    if not images:
        raise ConfigMismatch("the labelling config has no <Image> tag to segment")
    image = images[0]
    key = (image.get("value") or "$image").lstrip("$")
    tags = tuple(
        MaskTag(kind=KINDS[el.tag.lower()], name=str(el.get("name")), to_name=str(el.get("toName") or image.get("name")),
                labels=tuple(str(lab.get("value")) for lab in el if lab.tag.lower() == "label" and lab.get("value")))
        for el in root.iter() if el.tag.lower() in KINDS and el.get("name")
    )  # fmt: skip
    if not tags:
        raise ConfigMismatch("the labelling config has no <BrushLabels> or <PolygonLabels> tag: unetkit predicts masks")
    return LabellingConfig(image_name=str(image.get("name")), image_key=key, tags=tags)
