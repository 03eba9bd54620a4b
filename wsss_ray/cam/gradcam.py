"""CLIP-ES softmax-GradCAM with one last-block forward per image.

What the reference code does (see ../shared/reference/methods.md §1b), and so what
this does: blocks 0..L-2 run once per image without gradients; the last block runs
with gradients; the image embedding is ``ln_post`` -> mean of patch tokens ->
projection, L2-normalised; logits are scaled cosines against the image's present
classes followed by the background words; the back-propagated scalar is the
softmax probability of the target class; activations and gradients are taken at
the output of the last block's ``ln_1``; channel weights are the spatial mean of
the gradient; the CAM is ReLU(sum_c w_c A_c), min-max normalised to [0, 1].

The reference runs the last block forward and backward once per class. Here it runs
forward once per image (a batch of images with the same number K of classes at a
time) and each class's gradient comes from one vector-Jacobian product through
that shared graph: K backward passes, not K forward and K backward. The products
stop at the block's input projection, the only consumer of ``ln_1``'s output, and
the same pass keeps the block's attention for CAA. The CAMs are the per-class ones
to float rounding (tests pin 1e-5). ``gradcam_loop`` is the reference's per-class
loop, kept for tests and benchmarks.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsss_ray.config import SCORES
from wsss_ray.vit import block_attention, block_forward, in_projection, patch_size, pool_tokens, vit_tokens


def patch_aligned_size(height: int, width: int, patch: int, scale: float = 1.0) -> tuple[int, int]:
    """CLIP-ES input size: the image's own size times `scale`, rounded up to a patch multiple."""
    return (max(patch, math.ceil(scale * height / patch) * patch),
            max(patch, math.ceil(scale * width / patch) * patch))


def to_model_input(image: np.ndarray | torch.Tensor, size: tuple[int, int], mean, std,
                   mode: str = "bicubic") -> torch.Tensor:
    """uint8 HxWx3 RGB (an array, or a tensor on any device) -> normalised 3xH'xW' float tensor
    at `size` on the image's device: resized with `mode` (``bicubic``, as CLIP-ES, clamped to
    the pixel range; ``bilinear``, as ExCEL, without antialiasing), then normalised."""
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.require(image, requirements=["C", "W"]))
    x = image.permute(2, 0, 1).float().div_(255)
    if tuple(x.shape[1:]) != tuple(size):
        x = F.interpolate(x[None], size=size, mode=mode, align_corners=False)[0].clamp_(0, 1)
    mean, std = (torch.tensor(v, device=x.device).view(3, 1, 1) for v in (mean, std))
    return (x - mean) / std


@dataclass
class Encoded:
    """One forward of blocks 0..L-2 for a batch of same-size images."""

    last_in: torch.Tensor              # Bx(1+N)xD input of the last block
    attention: list[torch.Tensor]      # captured Bx(1+N)x(1+N) maps, oldest first (last block included)
    grid: tuple[int, int]              # (gh, gw), N = gh*gw


@torch.no_grad()
def encode(model, images: torch.Tensor, attention_layers: int = 0, attention_source: str = "attention",
           last_block: bool = True) -> Encoded:
    """Run all blocks but the last; capture the attention of the last `attention_layers` blocks
    (the last block's too, computed from its input, unless `last_block` is False: then the
    caller takes it from its own pass through that block, see :func:`explain`)."""
    blocks = model.visual.transformer.resblocks
    p = patch_size(model)
    last_in, attn = vit_tokens(model, images, stop_at=len(blocks) - 1,
                               capture=max(attention_layers - 1, 0), source=attention_source)
    if attention_layers > 0 and last_block:
        attn = attn + [block_attention(blocks[-1], last_in, source=attention_source)]
    return Encoded(last_in, attn, (images.shape[-2] // p, images.shape[-1] // p))


@contextlib.contextmanager
def _capture_ln1(block):
    """Record the output of `block.ln_1` (the CLIP-ES target layer) while the block runs."""
    store: list[torch.Tensor] = []
    handle = block.ln_1.register_forward_hook(lambda m, i, o: store.append(o))
    try:
        yield store
    finally:
        handle.remove()


def full_precision(t: torch.Tensor):
    """A context that turns autocast off on `t`'s device: CAM arithmetic stays float32
    whatever precision the model runs in (see ``Labeler``'s ``precision``)."""
    return torch.autocast(t.device.type, enabled=False)


def _gradcam(acts: torch.Tensor, weights: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Grad-CAMs from Rx(1+N)xD activations and KxRxD channel weights (class token dropped)
    -> KxRxghxgw in [0,1]."""
    with full_precision(acts):
        cam = F.relu(torch.einsum("krd,rnd->krn", weights.float(), acts[:, 1:].float()))  # ReLU(sum_c w_c A_c)
        return minmax(cam.reshape(*cam.shape[:2], *grid))


def _channel_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights: the spatial mean of KxRx(1+N)xD gradients over the patch tokens -> KxRxD."""
    with full_precision(grads):
        return grads[:, :, 1:].float().mean(dim=2)


def minmax(cam: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation over the last two dims, as CLIP-ES's scale_cam_image."""
    flat = cam.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    flat = flat - lo
    flat = flat / (1e-7 + flat.max(-1, keepdim=True).values)
    return flat.view_as(cam)


def _scores(model, tokens: torch.Tensor, text: torch.Tensor, valid: torch.Tensor, target: torch.Tensor,
            score: str) -> torch.Tensor:
    """The scalars that are back-propagated: softmax prob (or raw logit) of each `target` row.

    tokens: Px(1+N)xD last-block outputs; text: PxTxD rows (padded); valid: PxT; target: PxK.
    Returns PxK.
    """
    embedding = pool_tokens(model, tokens)
    with full_precision(embedding):
        img = F.normalize(embedding.float(), dim=-1)
        logits = model.logit_scale.exp() * torch.einsum("pd,ptd->pt", img, text.float())
        if score == "softmax":
            logits = logits.masked_fill(~valid, float("-inf")).softmax(-1)
        elif score != "logit":
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        return logits.gather(1, target)


def _padded(texts: list[torch.Tensor], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the text rows of images `rows` into PxTxD, zero-padded, with a PxT validity mask."""
    width = max(texts[b].shape[0] for b in rows)
    text = texts[rows[0]].new_zeros((len(rows), width, texts[rows[0]].shape[1]))
    valid = torch.zeros(len(rows), width, dtype=torch.bool, device=text.device)
    for i, b in enumerate(rows):
        text[i, :texts[b].shape[0]] = texts[b]
        valid[i, :texts[b].shape[0]] = True
    return text, valid


def _last_block_cams(model, enc: Encoded, texts: list[torch.Tensor], pairs: list[tuple[int, int]],
                     score: str) -> torch.Tensor:
    """Pxghxgw CAMs for (image, target row) pairs: the last block run once per pair (the reference's way)."""
    block = model.visual.transformer.resblocks[-1]
    rows = [b for b, _ in pairs]
    text, valid = _padded(texts, rows)
    target = torch.tensor([[t] for _, t in pairs], device=enc.last_in.device)
    x = enc.last_in[rows]
    with torch.enable_grad(), _capture_ln1(block) as store:
        s = _scores(model, block(x), text, valid, target, score)
        grads = torch.autograd.grad(s.sum(), store[0])[0]
    return _gradcam(store[0].detach(), _channel_weights(grads[None]), enc.grid)[0]


def _image_chunks(targets: list[list[int]], max_pairs: int) -> list[list[int]]:
    """The images with targets, grouped by how many they have (so no gradient is computed for a
    target an image lacks), each group at most `max_pairs` (image, target) pairs (at least one image)."""
    by_count: dict[int, list[int]] = {}
    for b, ts in enumerate(targets):
        if ts:
            by_count.setdefault(len(ts), []).append(b)
    return [rows[i:i + max(1, max_pairs // k)] for k, rows in sorted(by_count.items())
            for i in range(0, len(rows), max(1, max_pairs // k))]


@dataclass
class GradCams:
    """What :func:`explain` returns: per image, its CAMs and the last block's attention map."""

    cams: list[torch.Tensor]                # Kxghxgw in [0, 1]
    attention: list[torch.Tensor | None]    # (1+N)x(1+N), head-averaged; None when not asked or no targets


def _one_forward_cams(model, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]],
                      rows: list[int], score: str, attention_source: str | None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CAMs (RxKxghxgw) of every target of images `rows` (each has the same number K of targets):
    one last-block forward for them all, then K vector-Jacobian products through that one graph.

    The products stop at the block's input projection qkv = W_in ln_1(x) + b, the only
    use of the target layer ln_1(x): its gradient is g_qkv W_in, and Grad-CAM needs only
    its mean over the patches, (mean g_qkv) W_in. The pass also keeps the block's attention.
    """
    block = model.visual.transformer.resblocks[-1]
    x = enc.last_in[rows]
    text, valid = _padded(texts, rows)
    target = torch.tensor([targets[b] for b in rows], device=x.device)
    k = target.shape[1]
    picks = torch.eye(k, device=x.device)[:, None].expand(k, len(rows), k)  # picks[j]: each image's j-th target
    with torch.no_grad():
        acts = block.ln_1(x)  # the CLIP-ES target layer: the last block's ln_1 output
        qkv = in_projection(block, acts)
    with torch.enable_grad():
        qkv.requires_grad_(True)
        tokens, attention = block_forward(block, x, capture=attention_source, qkv=qkv)
        s = _scores(model, tokens, text, valid, target, score)
        grads = torch.stack([torch.autograd.grad(s, qkv, grad_outputs=p, retain_graph=j < k - 1)[0]
                             for j, p in enumerate(picks)])
    with torch.no_grad(), full_precision(acts):
        weights = _channel_weights(grads) @ block.attn.in_proj_weight.float()
        cams = _gradcam(acts, weights, enc.grid).transpose(0, 1)
    return cams, None if attention is None else attention.detach()


def explain(model, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]], score: str = "softmax",
            max_pairs: int = 64, attention_source: str | None = None) -> GradCams:
    """Softmax-GradCAMs of every (image, target) pair, the last block run forward once per image.

    Args:
        enc: output of :func:`encode` for B images.
        texts: per image, the TxD text rows its softmax runs over (see TextFeatures.for_image).
        targets: per image, the rows (into its texts) to explain, one CAM each.
        score: ``softmax`` (CLIP-ES) or ``logit`` (plain Grad-CAM of the raw similarity).
        max_pairs: bounds the gradients held at once: images x their most targets per pass
            (memory only; the CAMs do not depend on it).
        attention_source: also keep the last block's attention of this kind (for CAA),
            from the same pass (images without targets get None).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    cams = [enc.last_in.new_zeros((0, *enc.grid), dtype=torch.float32) for _ in targets]
    attention: list[torch.Tensor | None] = [None] * len(targets)
    for rows in _image_chunks(targets, max_pairs):
        maps, kept = _one_forward_cams(model, enc, texts, targets, rows, score, attention_source)
        for i, b in enumerate(rows):
            cams[b] = maps[i]
            attention[b] = None if kept is None else kept[i]
    return GradCams(cams, attention)


def softmax_gradcam(model, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]],
                    score: str = "softmax", max_pairs: int = 64) -> list[torch.Tensor]:
    """Per image, a Kxghxgw tensor in [0,1] (K = len(targets[b])): :func:`explain`'s CAMs."""
    return explain(model, enc, texts, targets, score, max_pairs).cams


def gradcam_loop(model, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]],
                 score: str = "softmax") -> list[torch.Tensor]:
    """The reference implementation's order: one image, one class, one last-block pass at a time."""
    return [torch.cat([_last_block_cams(model, enc, texts, [(b, t)], score) for t in ts]) if ts
            else enc.last_in.new_zeros((0, *enc.grid), dtype=torch.float32) for b, ts in enumerate(targets)]


def explain_loop(model, enc: Encoded, texts: list[torch.Tensor], targets: list[list[int]], score: str = "softmax",
                 attention_source: str | None = None) -> GradCams:
    """:func:`explain` in the reference's order (:func:`gradcam_loop`), for tests and benchmarks."""
    cams = gradcam_loop(model, enc, texts, targets, score)
    if attention_source is None:
        return GradCams(cams, [None] * len(cams))
    with torch.no_grad():
        last = block_attention(model.visual.transformer.resblocks[-1], enc.last_in, source=attention_source)
    return GradCams(cams, list(last))
