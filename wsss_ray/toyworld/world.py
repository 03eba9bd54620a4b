"""A procedural world with exact masks: the offline stand-in for VOC.

Every image is a function of one integer seed. A scene is an upper and a lower
"stuff" region (sky over water, wall over floor, ...) with its own texture, and
1-3 objects drawn on top, each a class-specific shape, texture and colour
family. Objects mostly appear in their usual context (boats on water, planes
in the sky), so a model can learn to cheat from context, which is exactly what
CLIP-ES's background words (and SemPLeS's learned prompts) are there to fight.

Masks are exact: index i (1-based) is ``CLASSES[i-1]``, 0 is background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ---------------------------------------------------------------- vocabulary

CLASSES: tuple[str, ...] = ("boat", "plane", "car", "cow", "bird", "chair", "bottle", "sheep")
SYNONYMS: dict[str, tuple[str, ...]] = {
    "boat": ("boat", "ship", "sailboat"),
    "plane": ("plane", "airplane", "jet"),
    "car": ("car", "automobile"),
    "cow": ("cow", "cattle"),
    "bird": ("bird", "avian"),
    "chair": ("chair", "seat"),
    "bottle": ("bottle", "flask"),
    "sheep": ("sheep", "lamb"),
}
STUFF: tuple[str, ...] = ("sky", "wall", "water", "grass", "road", "sand", "snow", "floor")
UPPER_STUFF = ("sky", "wall")
LOWER_STUFF = ("water", "grass", "road", "sand", "snow", "floor")

# Where each class usually is: (upper, lower) stuff of its home scene, and whether it flies.
HOME: dict[str, tuple[str, str]] = {
    "boat": ("sky", "water"),
    "plane": ("sky", "snow"),
    "car": ("sky", "road"),
    "cow": ("sky", "grass"),
    "bird": ("sky", "sand"),
    "chair": ("wall", "floor"),
    "bottle": ("wall", "floor"),
    "sheep": ("sky", "grass"),
}
FLYING = frozenset({"plane", "bird"})

IN_CONTEXT_P = 0.6          # probability that the scene is the first object's home
MIN_VISIBLE_FRACTION = 0.5  # an object must keep this share of its pixels after occlusion

# Seeds: an image's seed is split_start + index, so splits never overlap.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}

# Caption templates used to train the tiny CLIP. {o} = objects phrase, {s} = stuff word.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of {o}.",
    "a photo of {o} on the {s}.",
    "{o} near the {s}.",
    "a picture of {o}.",
    "there is {o} in the {s}.",
    "an image of {o} and {s}.",
    "{o}.",
    "a photo of {o} with {s} behind.",
    "a rendering of {o}.",
    "a small picture of {o} by the {s}.",
    "a photo of the {s} with {o}.",
)


@dataclass(frozen=True)
class Sample:
    """One generated image: RGB uint8 HxWx3, mask uint8 HxW, and what is in it."""

    seed: int
    image: np.ndarray
    mask: np.ndarray
    labels: tuple[str, ...]   # classes present in the mask, in CLASSES order
    counts: tuple[int, ...]   # visible instances of each label
    stuff: tuple[str, str]    # (upper, lower)

    @property
    def id(self) -> str:
        return f"toy{self.seed:07d}"


# ---------------------------------------------------------------- helpers


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 25) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise in [0,1] with features about `cell` pixels wide."""
    gh, gw = h // cell + 2, w // cell + 2
    g = rng.random((gh, gw), dtype=np.float32)
    ys = np.linspace(0, gh - 2, h, dtype=np.float32)
    xs = np.linspace(0, gw - 2, w, dtype=np.float32)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0


def _rect(yy: np.ndarray, xx: np.ndarray, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def _polygon(yy: np.ndarray, xx: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    """Convex polygon given as (x, y) points in either winding order."""
    inside_pos = np.ones_like(yy, dtype=bool)
    inside_neg = np.ones_like(yy, dtype=bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        cross = (x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0)
        inside_pos &= cross >= 0
        inside_neg &= cross <= 0
    return inside_pos | inside_neg


# ---------------------------------------------------------------- stuff textures


def _paint_stuff(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    yy, xx = _grid(h, w)
    n = _noise(rng, h, w, max(2, w // 8))
    if name == "sky":
        top, bottom = _jitter(rng, (90, 150, 230), 15), _jitter(rng, (180, 215, 245), 10)
        t = (yy / max(h - 1, 1))[..., None]
        img = top * (1 - t) + bottom * t
        cloud = _noise(rng, h, w, max(3, w // 5)) > 0.72
        img[cloud] = img[cloud] * 0.3 + 240 * 0.7
    elif name == "wall":  # bricks
        base = _jitter(rng, (170, 85, 60), 20)
        bh = max(3, h // 10)
        row = (yy // bh).astype(int)
        mortar = (yy % bh < 1) | (((xx + (row % 2) * bh) % (2 * bh)) < 1)
        img = np.broadcast_to(base, (h, w, 3)) * (0.85 + 0.3 * n[..., None])
        img = np.where(mortar[..., None], 210.0, img)
    elif name == "water":
        base = _jitter(rng, (30, 80, 160), 15)
        waves = 0.5 + 0.5 * np.sin(yy * rng.uniform(1.2, 1.8) + 2.5 * np.sin(xx * 0.25 + rng.uniform(0, 6)))
        img = base * (0.75 + 0.45 * waves[..., None])
    elif name == "grass":
        base = _jitter(rng, (60, 150, 50), 15)
        blades = _noise(rng, h, w * 3, 2)[:, ::3]
        img = base * (0.6 + 0.6 * blades[..., None])
    elif name == "road":
        base = _jitter(rng, (95, 95, 100), 10)
        img = base * (0.9 + 0.2 * _noise(rng, h, w, 1)[..., None])
        lane = (np.abs(yy - h * rng.uniform(0.4, 0.6)) < 1) & (xx % 10 < 5)
        img = np.where(lane[..., None], np.array([235, 220, 80.0]), img)
    elif name == "sand":
        base = _jitter(rng, (220, 195, 140), 12)
        img = base * (0.85 + 0.25 * rng.random((h, w, 1), dtype=np.float32))
    elif name == "snow":
        base = _jitter(rng, (235, 240, 250), 6)
        img = base * (0.9 + 0.1 * n[..., None])
        img[rng.random((h, w)) < 0.04] = 255.0
    elif name == "floor":  # wooden planks
        base = _jitter(rng, (150, 105, 60), 15)
        pw = max(4, w // 6)
        grain = 0.5 + 0.5 * np.sin(xx * 0.3 + 6 * _noise(rng, h, w, 4))
        seam = (xx % pw) < 1
        img = base * (0.8 + 0.3 * grain[..., None])
        img = np.where(seam[..., None], base * 0.5, img)
    else:
        raise ValueError(f"unknown stuff {name!r}; choose from {STUFF}")
    return img.astype(np.float32)


# ---------------------------------------------------------------- objects
# Each painter draws one object of size (oh, ow) into a local canvas and returns (rgb, mask).


def _obj_boat(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    hull_top = oh * 0.62
    hull = _polygon(yy, xx, [(0, hull_top), (ow - 1, hull_top), (ow * 0.8, oh - 1), (ow * 0.2, oh - 1)])
    mast_x = ow * rng.uniform(0.4, 0.6)
    sail = _polygon(yy, xx, [(mast_x, 0), (mast_x, hull_top - 1), (ow * 0.12, hull_top - 1)])
    sail |= _polygon(yy, xx, [(mast_x + 1, oh * 0.15), (mast_x + 1, hull_top - 1), (ow * 0.85, hull_top - 1)])
    hull_rgb = _jitter(rng, [(170, 30, 30), (120, 70, 30), (40, 40, 40)][rng.integers(3)], 20)
    sail_rgb = _jitter(rng, (245, 240, 225), 8)
    img = np.zeros((oh, ow, 3), np.float32)
    img[sail] = sail_rgb
    stripe = hull & (np.abs(yy - oh * 0.75) < max(1, oh * 0.05))
    img[hull] = hull_rgb
    img[stripe] = 235
    return img, hull | sail


def _obj_plane(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    cy = oh * 0.5
    body = _ellipse(yy, xx, cy, ow * 0.5, oh * 0.16, ow * 0.5)
    wing = _polygon(yy, xx, [(ow * 0.55, cy), (ow * 0.35, 0), (ow * 0.25, 0), (ow * 0.38, cy)])
    wing |= _polygon(yy, xx, [(ow * 0.55, cy), (ow * 0.35, oh - 1), (ow * 0.25, oh - 1), (ow * 0.38, cy)])
    tail = _polygon(yy, xx, [(ow * 0.02, cy - oh * 0.35), (ow * 0.12, cy - oh * 0.35), (ow * 0.2, cy), (ow * 0.05, cy)])
    mask = body | wing | tail
    base = _jitter(rng, (200, 205, 215), 15)
    img = np.broadcast_to(base, (oh, ow, 3)).copy()
    img[wing] *= 0.8
    windows = body & (np.abs(yy - cy + oh * 0.03) < max(0.6, oh * 0.04)) & ((xx.astype(int) % 4) < 2) & (xx > ow * 0.3)
    img[windows] = (40, 60, 110)
    tailfin = tail
    img[tailfin] = _jitter(rng, (200, 40, 40), 25)
    return img, mask


def _obj_car(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    body = _rect(yy, xx, oh * 0.4, 0, oh * 0.82, ow)
    cabin = _polygon(yy, xx, [(ow * 0.22, oh * 0.4), (ow * 0.32, oh * 0.05), (ow * 0.7, oh * 0.05), (ow * 0.82, oh * 0.4)])
    r = oh * 0.2
    wheels = _ellipse(yy, xx, oh - r - 0.5, ow * 0.22, r, r) | _ellipse(yy, xx, oh - r - 0.5, ow * 0.78, r, r)
    colour = _jitter(rng, [(200, 30, 30), (30, 60, 190), (240, 200, 20), (30, 140, 60)][rng.integers(4)], 20)
    img = np.zeros((oh, ow, 3), np.float32)
    img[body | cabin] = colour
    glass = cabin & _polygon(yy, xx, [(ow * 0.28, oh * 0.38), (ow * 0.35, oh * 0.12), (ow * 0.67, oh * 0.12), (ow * 0.76, oh * 0.38)])
    img[glass] = (170, 210, 235)
    img[wheels] = 20
    return img, body | cabin | wheels


def _obj_cow(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    body = _ellipse(yy, xx, oh * 0.42, ow * 0.45, oh * 0.27, ow * 0.38)
    head = _ellipse(yy, xx, oh * 0.3, ow * 0.86, oh * 0.17, ow * 0.13)
    legs = np.zeros_like(body)
    for lx in (0.18, 0.33, 0.57, 0.7):
        legs |= _rect(yy, xx, oh * 0.55, ow * lx, oh, ow * lx + max(1.5, ow * 0.07))
    mask = body | head | legs
    spots = _noise(rng, oh, ow, max(2, ow // 6)) > 0.55
    img = np.where(spots[..., None], np.array([25, 20, 20.0]), _jitter(rng, (245, 245, 240), 8))
    img = np.broadcast_to(img, (oh, ow, 3)).copy()
    img[legs & ~body] = (60, 50, 45)
    img[head] = _jitter(rng, (230, 180, 170), 10)
    return img, mask


def _obj_bird(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    body = _ellipse(yy, xx, oh * 0.55, ow * 0.45, oh * 0.22, ow * 0.33)
    head = _ellipse(yy, xx, oh * 0.38, ow * 0.78, oh * 0.15, ow * 0.13)
    beak = _polygon(yy, xx, [(ow * 0.88, oh * 0.32), (ow - 1, oh * 0.4), (ow * 0.88, oh * 0.46)])
    up = rng.random() < 0.5
    wing = _polygon(yy, xx, [(ow * 0.25, oh * 0.5), (ow * 0.6, oh * 0.5), (ow * 0.3, 0 if up else oh - 1)])
    tail = _polygon(yy, xx, [(0, oh * 0.35), (ow * 0.2, oh * 0.5), (0, oh * 0.7)])
    mask = body | head | beak | wing | tail
    colour = _jitter(rng, [(240, 140, 20), (220, 40, 40), (250, 220, 40)][rng.integers(3)], 15)
    img = np.broadcast_to(colour, (oh, ow, 3)).copy()
    img[wing] *= 0.6
    img[beak] = (250, 200, 0)
    img[_ellipse(yy, xx, oh * 0.35, ow * 0.8, max(0.7, oh * 0.04), max(0.7, ow * 0.04))] = 0
    return img, mask


def _obj_chair(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    t = max(2.5, ow * 0.18)
    back = _rect(yy, xx, 0, 0, oh * 0.6, t)
    back |= _rect(yy, xx, oh * 0.05, 0, oh * 0.05 + t, ow * 0.85)
    back |= _rect(yy, xx, 0, ow * 0.85 - t, oh * 0.5, ow * 0.85)
    seat = _rect(yy, xx, oh * 0.5, 0, oh * 0.5 + t, ow)
    legs = _rect(yy, xx, oh * 0.5, 0, oh, t) | _rect(yy, xx, oh * 0.5, ow - t, oh, ow)
    mask = back | seat | legs
    wood = _jitter(rng, (110, 60, 25), 15) * (0.75 + 0.4 * (np.sin(yy * 1.3 + xx * 0.4) * 0.5 + 0.5))[..., None]
    img = wood.astype(np.float32)
    img[seat] = _jitter(rng, [(170, 30, 40), (40, 90, 170)][rng.integers(2)], 15)
    return img, mask


def _obj_bottle(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    cx = ow * 0.5
    body = _rect(yy, xx, oh * 0.38, ow * 0.1, oh, ow * 0.9)
    shoulder = _ellipse(yy, xx, oh * 0.38, cx, oh * 0.12, ow * 0.4)
    neck = _rect(yy, xx, oh * 0.05, cx - ow * 0.16, oh * 0.4, cx + ow * 0.16)
    cap = _rect(yy, xx, 0, cx - ow * 0.2, oh * 0.08, cx + ow * 0.2)
    mask = body | shoulder | neck | cap
    glass = _jitter(rng, [(30, 130, 50), (120, 60, 20), (60, 150, 200)][rng.integers(3)], 15)
    img = np.broadcast_to(glass, (oh, ow, 3)).copy()
    img[(np.abs(xx - ow * 0.28) < max(0.6, ow * 0.07)) & body] = 235
    img[_rect(yy, xx, oh * 0.6, ow * 0.1, oh * 0.8, ow * 0.9)] = _jitter(rng, (240, 230, 200), 10)
    img[cap] = (200, 30, 30)
    return img, mask


def _obj_sheep(rng, oh, ow):
    yy, xx = _grid(oh, ow)
    fluff = np.zeros((oh, ow), bool)
    for _ in range(7):
        fluff |= _ellipse(yy, xx, oh * rng.uniform(0.25, 0.5), ow * rng.uniform(0.2, 0.65), oh * 0.2, ow * 0.18)
    head = _ellipse(yy, xx, oh * 0.3, ow * 0.85, oh * 0.15, ow * 0.12)
    legs = np.zeros_like(fluff)
    for lx in (0.22, 0.35, 0.52, 0.64):
        legs |= _rect(yy, xx, oh * 0.55, ow * lx, oh, ow * lx + max(1.5, ow * 0.06))
    mask = fluff | head | legs
    wool = _jitter(rng, (225, 220, 205), 8) * (0.8 + 0.3 * (_noise(rng, oh, ow, 1) > 0.5))[..., None]
    img = wool.astype(np.float32)
    img[(head | legs) & ~fluff] = (35, 30, 30)
    return img, mask


PAINTERS = {
    "boat": _obj_boat, "plane": _obj_plane, "car": _obj_car, "cow": _obj_cow,
    "bird": _obj_bird, "chair": _obj_chair, "bottle": _obj_bottle, "sheep": _obj_sheep,
}
# (min, max) object width as a share of the image width, and height/width aspect range.
SIZE = {
    "boat": ((0.35, 0.6), (0.8, 1.1)), "plane": ((0.45, 0.7), (0.55, 0.8)),
    "car": ((0.4, 0.6), (0.5, 0.65)), "cow": ((0.4, 0.6), (0.65, 0.8)),
    "bird": ((0.34, 0.5), (0.7, 0.9)), "chair": ((0.36, 0.5), (1.1, 1.35)),
    "bottle": ((0.26, 0.34), (1.6, 2.1)), "sheep": ((0.38, 0.55), (0.7, 0.85)),
}


# ---------------------------------------------------------------- scenes


def _choose_objects(rng: np.random.Generator) -> list[str]:
    n = int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    first = CLASSES[rng.integers(len(CLASSES))]
    objs = [first]
    for _ in range(n - 1):
        # Sometimes a second of the same class; otherwise a class that shares the scene type.
        if rng.random() < 0.25:
            objs.append(first)
        else:
            objs.append(CLASSES[rng.integers(len(CLASSES))])
    return objs


def _choose_scene(rng: np.random.Generator, first: str) -> tuple[str, str]:
    if rng.random() < IN_CONTEXT_P:
        return HOME[first]
    upper = UPPER_STUFF[rng.integers(2)]
    lower = "floor" if upper == "wall" else LOWER_STUFF[rng.integers(len(LOWER_STUFF) - 1)]
    return upper, lower


def render(seed: int, size: int = 64) -> Sample:
    """Render the image of `seed` at `size` x `size` pixels (deterministic)."""
    if size < 32:
        raise ValueError(f"size {size} is too small for objects to be visible; use 32 or more")
    rng = np.random.default_rng(seed)
    h = w = size
    objs = _choose_objects(rng)
    upper, lower = _choose_scene(rng, objs[0])
    horizon = int(h * rng.uniform(0.35, 0.55))
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:horizon] = _paint_stuff(rng, upper, horizon, w)
    canvas[horizon:] = _paint_stuff(rng, lower, h - horizon, w)
    mask = np.zeros((h, w), np.uint8)
    placed: list[tuple[str, np.ndarray, int]] = []  # (class, visible region, drawn area)

    for name in objs:
        region, rgb = _place(rng, name, h, w, horizon)
        area = int(region.sum())
        # Keep the object only if it is visible enough and every earlier one stays mostly visible.
        if area < 12 or any((r & ~region).sum() < MIN_VISIBLE_FRACTION * a for _, r, a in placed):
            continue
        canvas[region] = rgb[region]
        placed = [(c, r & ~region, a) for c, r, a in placed] + [(name, region, area)]
        mask[region] = CLASSES.index(name) + 1

    shade = 1.0 + rng.normal(0, 0.05)
    image = np.clip(canvas * shade + rng.normal(0, 3, canvas.shape), 0, 255).astype(np.uint8)
    labels = tuple(c for i, c in enumerate(CLASSES) if (mask == i + 1).any())
    counts = tuple(sum(1 for p, r, _ in placed if p == c and r.any()) for c in labels)
    return Sample(seed, image, mask, labels, counts, (upper, lower))


def _place(rng: np.random.Generator, name: str, h: int, w: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Paint one object at a plausible spot; returns its full-image mask and RGB layer."""
    (wmin, wmax), (amin, amax) = SIZE[name]
    ow = max(6, int(w * rng.uniform(wmin, wmax)))
    oh = max(6, min(h - 2, int(ow * rng.uniform(amin, amax))))
    rgb, omask = PAINTERS[name](rng, oh, ow)
    if rng.random() < 0.5:
        rgb, omask = rgb[:, ::-1], omask[:, ::-1]
    if name in FLYING:
        y0 = int(rng.uniform(0, max(1, horizon - oh * 0.5)))
    elif name == "boat":
        y0 = int(np.clip(horizon - oh * 0.55 + rng.uniform(0, (h - horizon) * 0.5), 0, h - oh))
    else:
        y0 = int(rng.uniform(max(0, horizon - oh * 0.6), max(1, h - oh)))
    x0 = int(rng.uniform(-ow * 0.1, w - ow * 0.9))
    ys, xs = slice(max(y0, 0), min(y0 + oh, h)), slice(max(x0, 0), min(x0 + ow, w))
    local = (slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0))
    region = np.zeros((h, w), bool)
    layer = np.zeros((h, w, 3), np.float32)
    region[ys, xs] = omask[local]
    layer[ys, xs] = rgb[local]
    return region, layer


STUFF_TEMPLATES = ("a photo of the {s}.", "a photo of the {s} and the {t}.", "the {s}.", "a picture of the {s}.")


def caption(sample: Sample, rng: np.random.Generator, partial_p: float = 0.3, stuff_only_p: float = 0.2
            ) -> tuple[str, frozenset[str], str | None]:
    """A random training caption of `sample`: (text, classes it names, stuff word or None).

    Objects are named by a random synonym, with "two" for repeated classes, in random
    order. With probability `partial_p` a multi-object image is described by a random
    non-empty subset of its classes ("a photo of a cow." for a cow and a sheep), so that
    single-class prompts match every image that contains the class. With probability
    `stuff_only_p` the caption names only the scene's stuff ("a photo of the sky."),
    which grounds the background words CLIP-ES puts in its softmax.
    """
    if rng.random() < stuff_only_p:
        upper, lower = sample.stuff if rng.random() < 0.5 else sample.stuff[::-1]
        template = STUFF_TEMPLATES[rng.integers(len(STUFF_TEMPLATES))]
        # A two-stuff caption counts as true wherever its first word is (a small approximation).
        return template.format(s=upper, t=lower), frozenset(), upper
    order = list(rng.permutation(len(sample.labels)))
    if len(order) > 1 and rng.random() < partial_p:
        order = order[:rng.integers(1, len(order))]
    phrases = []
    for i in order:
        c = sample.labels[i]
        word = SYNONYMS[c][rng.integers(len(SYNONYMS[c]))]
        plural = sample.counts[i] > 1 and word not in ("sheep", "cattle")
        phrases.append(f"two {word}s" if plural else f"a {word}")
    objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    place = sample.stuff[rng.integers(2)]
    template = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))]
    named = frozenset(sample.labels[i] for i in order)
    return template.format(o=objects, s=place), named, (place if "{s}" in template else None)


def split_samples(split: str, n: int, size: int = 64) -> list[Sample]:
    """The first n images of a split (train | val | test), rendered at `size`."""
    start = SPLIT_SEEDS[split]
    return [render(s, size) for s in range(start, start + n)]
