"""Label Studio's formats: its brush RLE, the labelling config, tasks with predictions, and
reading the annotations of its JSON export back into masks (pure numpy, no Label Studio).

A brush mask travels as Label Studio's own RLE (the ``rle-pack`` codec its front end
uses) over the mask's RGBA pixels, row by row: a 32-bit value count, the word size less
one (5 bits), four run-length field sizes less one (4 bits each), then runs. A run is
one bit (1: one value repeated; 0: literal values), two bits choosing the length field,
the length less one, then the value(s). The codec here writes what Label Studio's own
encoder writes (runs of 2 to 8 values in 3 bits, up to 16 in 4, up to 256 in 8, longer
in 16-bit pieces) and reads anything it may write. The codec is written here, not taken
from label-studio-sdk, because that package pins numpy below what this project needs; the
tests check both directions against the SDK's own decoder and encoder.
"""

from __future__ import annotations

import colorsys
import json
from typing import Any, Iterable, Iterator
from xml.sax.saxutils import quoteattr

import numpy as np

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)
FROM_NAME, TO_NAME = "label", "image"  # the control and object tag names of the exported config


# ------------------------------------------------------------------ the RLE codec


def encode_rle(mask: np.ndarray) -> list[int]:
    """A 2-D boolean/uint8 mask (nonzero = painted) -> Label Studio's brush RLE (a list of bytes).

    Painted pixels are RGBA (255, 255, 255, 255), the others (0, 0, 0, 0), as Label Studio's
    ``mask2rle`` makes them; its decoder reads the alpha channel.
    """
    if mask.ndim != 2:
        raise ValueError(f"a brush mask must be 2-D, got shape {mask.shape}")
    flat = np.where(np.asarray(mask).reshape(-1) > 0, 255, 0).astype(np.uint8)
    count = flat.size * 4
    bits = [f"{count:032b}", f"{WORD_SIZE - 1:05b}", "".join(f"{s - 1:04b}" for s in RLE_SIZES)]
    if flat.size:
        edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        starts = np.r_[0, edges]
        lengths = np.diff(np.r_[starts, flat.size]) * 4  # every pixel is four equal channel values
        for value, length in zip(flat[starts].tolist(), lengths.tolist()):
            bits.append(_run(value, length))
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return np.packbits(np.frombuffer(text.encode(), np.uint8) - ord("0")).tolist()


def _run(value: int, length: int) -> str:
    """The bits of `length` repeats of `value` (length >= 4 here: a pixel is four channels)."""
    word = f"{value:08b}"
    out = []
    while length > 2 ** 16:
        out.append("111" + f"{2 ** 16 - 1:016b}" + word)
        length -= 2 ** 16
    for index, size in enumerate(RLE_SIZES):
        if length <= 2 ** size:
            return "".join(out) + "1" + f"{index:02b}" + f"{length - 1:0{size}b}" + word
    raise AssertionError("unreachable: the last field holds 2**16")


def decode_rle(rle: Iterable[int], height: int, width: int) -> np.ndarray:
    """Label Studio's brush RLE -> HxW bool mask (the alpha channel is nonzero)."""
    bits = np.unpackbits(np.asarray(list(rle), np.uint8))
    reader = _Bits(bits)
    count = reader.read(32)
    word = reader.read(5) + 1
    sizes = [reader.read(4) + 1 for _ in range(4)]
    if count != height * width * 4:
        raise ValueError(f"the brush RLE holds {count} values, not the {height}x{width}x4 of its image; "
                         f"export the annotations again from Label Studio")
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeated = reader.read(1)
        end = min(count, i + 1 + reader.read(sizes[reader.read(2)]))
        if repeated:
            out[i:end] = reader.read(word)
        else:
            out[i:end] = [reader.read(word) for _ in range(end - i)]
        i = end
    return out.reshape(height, width, 4)[:, :, 3] > 0


class _Bits:
    """A big-endian bit reader over an unpacked bit array."""

    def __init__(self, bits: np.ndarray):
        self.text, self.at = (bits + ord("0")).astype(np.uint8).tobytes().decode(), 0

    def read(self, n: int) -> int:
        if self.at + n > len(self.text):
            raise ValueError("the brush RLE ends early; export the annotations again from Label Studio")
        self.at += n
        return int(self.text[self.at - n:self.at], 2)


# ------------------------------------------------------------------ the project and its tasks


def colour(index: int, palette: np.ndarray | None = None) -> str:
    """The ``#rrggbb`` of mask value `index` (the VOC palette the PNGs use, when given)."""
    if palette is not None:
        r, g, b = (int(v) for v in palette[index])
    else:
        r, g, b = (int(255 * v) for v in colorsys.hsv_to_rgb((index * 0.618) % 1, 0.7, 0.95))
    return f"#{r:02x}{g:02x}{b:02x}"


def labeling_config(classes: list[str], palette: np.ndarray | None = None) -> str:
    """The labelling config (XML) of a project that shows the image and a brush per class."""
    labels = "\n".join(f"    <Label value={quoteattr(name)} background={quoteattr(colour(i + 1, palette))}/>"
                       for i, name in enumerate(classes))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </BrushLabels>\n</View>\n')


def brush_results(mask: np.ndarray, classes: list[str], values: Iterable[int]) -> list[dict]:
    """One ``brushlabels`` result per mask value in `values` present in `mask` (value v = classes[v-1])."""
    height, width = mask.shape
    out = []
    for v in values:
        region = mask == v
        if v == 0 or v > len(classes) or not region.any():
            continue
        out.append({"id": f"{FROM_NAME}-{v}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "brushlabels",
                    "original_width": width, "original_height": height, "image_rotation": 0,
                    "value": {"format": "rle", "rle": encode_rle(region), "brushlabels": [classes[v - 1]]}})
    return out


def task(row_id: str, image_url: str, results: list[dict], *, score: float | None, model_version: str | None,
         reviewed: bool = False) -> dict:
    """A task: the image and the row's id in ``data``; the mask as a prediction (or, once a person
    reviewed it, as an annotation) scored by the row's quality."""
    out: dict[str, Any] = {"data": {"image": image_url, "id": row_id}}
    if reviewed:
        out["annotations"] = [{"result": results, "ground_truth": False}]
    else:
        out["predictions"] = [{"model_version": model_version or "", "score": score, "result": results}]
    return out


class JsonArrayWriter:
    """Write a JSON array one element at a time (to a text stream), so memory stays flat."""

    def __init__(self, stream):
        self.stream, self.first = stream, True
        stream.write("[")

    def add(self, item: Any) -> None:
        self.stream.write(("\n" if self.first else ",\n") + json.dumps(item, separators=(",", ":")))
        self.first = False

    def close(self) -> None:
        self.stream.write("\n]\n")


# ------------------------------------------------------------------ annotations back


def annotation_masks(tasks: list[dict], classes: list[str]) -> Iterator[dict]:
    """The latest annotation of each task of a Label Studio JSON export, as a mask.

    Yields ``{"id", "mask" (HxW uint8, 0 = background), "reviewer", "reviewed_at",
    "task", "annotation"}``; cancelled (skipped) annotations and tasks without an ``id`` in
    ``data`` are passed over. Brush results paint their class in order (a later one wins
    where two overlap); unpainted pixels are background.
    """
    for t in tasks:
        row_id = (t.get("data") or {}).get("id")
        done = [a for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        if row_id is None or not done:
            continue
        latest = max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
        brushes = [r for r in latest.get("result") or [] if r.get("type") == "brushlabels"]
        if not brushes:
            continue
        height, width = brushes[0]["original_height"], brushes[0]["original_width"]
        mask = np.zeros((height, width), np.uint8)
        for r in brushes:
            value = r.get("value") or {}
            for name in value.get("brushlabels") or []:
                if name not in classes:
                    raise ValueError(f"task {t.get('id')} paints {name!r}, which is not a class of the labelset "
                                     f"({', '.join(classes)}); import with the labelset the project was made from")
                mask[decode_rle(value["rle"], height, width)] = classes.index(name) + 1
        yield {"id": str(row_id), "mask": mask, "reviewer": _who(latest.get("completed_by")),
               "reviewed_at": str(latest.get("updated_at") or latest.get("created_at") or ""),
               "task": t.get("id"), "annotation": latest.get("id")}


def _who(completed_by: Any) -> str:
    """Label Studio's ``completed_by``: a user id, or (in some exports) a dict with the email."""
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else f"user {completed_by}"
