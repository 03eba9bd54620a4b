"""The two hooks CAM methods need inside open_clip's ViT image tower, without editing open_clip.

:func:`vit_tokens` runs the vision tower at any patch-aligned input size (positional
embeddings interpolated as CLIP-ES does) and returns the tokens entering a chosen
block, keeping the attention maps of the last blocks it runs (:func:`block_forward`
computes a block once and keeps its map); :func:`block_attention` recomputes a
block's self-attention weights on the autograd path. CLIP Surgery's value-value path
(:func:`value_attention`, :func:`surgery_tokens`) serves FreeSeg.
"""

from __future__ import annotations

from typing import NamedTuple

import open_clip
import torch
import torch.nn.functional as F

from wsss_ray.clip import ClipLoadError
from wsss_ray.config import CAA_SOURCES


def patch_size(model: open_clip.CLIP) -> int:
    ps = model.visual.conv1.kernel_size
    return int(ps[0] if isinstance(ps, tuple) else ps)


def _check_vit(model: open_clip.CLIP) -> None:
    v = model.visual
    if not isinstance(v, open_clip.transformer.VisionTransformer):
        raise ClipLoadError(f"CAM methods need a ViT image tower; {type(v).__name__} (e.g. a ResNet CLIP) "
                            f"is not supported, use a ViT model such as ViT-B-16")


def interpolate_pos_embed(model: open_clip.CLIP, grid_hw: tuple[int, int]) -> torch.Tensor:
    """The positional embedding resized to a (gh, gw) patch grid: (1 + gh*gw, width).

    Bilinear, as CLIP-ES does on every forward; the class position is kept as is.
    """
    pos = model.visual.positional_embedding
    n = pos.shape[0] - 1
    side = int(round(n ** 0.5))
    if (side, side) == tuple(grid_hw):
        return pos
    grid = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=grid_hw, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(-1, pos.shape[1])], dim=0)


def vit_tokens(model: open_clip.CLIP, images: torch.Tensor, stop_at: int | None = None,
               capture: int = 0, source: str = "attention", keep: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the image tower up to (not including) block `stop_at` at any patch-aligned size.

    Args:
        images: Bx3xHxW normalised, H and W multiples of the patch size.
        stop_at: index of the first block not to run (None = all blocks).
        capture: return the head-averaged self-attention of the last `capture` blocks run.
        source: what to capture, see :func:`block_attention`.
        keep: BxN booleans over the patch grid (row-major), the same number set in each
            row: only those patches enter the tower, with their own positional embeddings,
            a crop in token space that keeps the image's scale (``wsss_ray.tagger``).

    Returns:
        tokens: Bx(1+N)xD, the input of block `stop_at` (class token first, N = H/p * W/p,
            or the patches kept).
        attentions: list of Bx(1+N)x(1+N) maps, oldest block first.
    """
    _check_vit(model)
    v = model.visual
    p = patch_size(model)
    if images.shape[-1] % p or images.shape[-2] % p:
        raise ValueError(f"image size {tuple(images.shape[-2:])} is not a multiple of the patch size {p}; "
                         f"resize to a multiple first (see cam.gradcam.patch_aligned_size)")
    gh, gw = images.shape[-2] // p, images.shape[-1] // p
    x = v.conv1(images).flatten(2).transpose(1, 2)
    pos = interpolate_pos_embed(model, (gh, gw)).to(x.dtype)
    x = x + pos[1:]
    if keep is not None:
        x = x[keep].view(x.shape[0], -1, x.shape[-1])
    cls = (v.class_embedding.to(x.dtype) + pos[0]).expand(x.shape[0], 1, -1)
    x = v.ln_pre(torch.cat([cls, x], dim=1))
    blocks = v.transformer.resblocks
    stop = len(blocks) if stop_at is None else stop_at
    attentions = []
    for i, blk in enumerate(blocks[:stop]):
        if i >= stop - capture:
            x, attention = block_forward(blk, x, capture=source)
            attentions.append(attention)
        else:
            x = blk(x)
    return x, attentions


def block_forward(block: torch.nn.Module, x: torch.Tensor, capture: str | None = None,
                  qkv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An open_clip ResidualAttentionBlock's output for tokens `x` (BxLxD), attention computed once.

    The same sums as ``block(x)``, written out so the attention weights the block uses
    can also be kept (``capture``, see :func:`block_attention`, head-averaged) without
    running its projections a second time. `qkv`, when given, is taken as the block's
    input projection of ``block.ln_1(x)`` (BxLx3D), so gradients can be asked for there.
    Returns (output tokens, captured BxLxL map or None).
    """
    if capture is not None:
        _check_source(capture)
    q, k, v = split_heads(block, in_projection(block, block.ln_1(x)) if qkv is None else qkv)
    w = _attention_weights(q, k, "attention")
    x = x + block.ls_1(attend(block, w, v))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    if capture is None:
        return x, None
    return x, _head_mean(w if capture == "attention" else _attention_weights(q, k, capture))


def attend(block: torch.nn.Module, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A block's attention output for BxHxLxL (or Bx1xLxL) weights `w` and BxHxLxd values `v`:
    the heads' weighted values, concatenated, through the block's output projection (BxLxD)."""
    proj = block.attn.out_proj
    return F.linear((w @ v).transpose(1, 2).flatten(2), proj.weight, proj.bias)


def _check_source(source: str) -> None:
    if source not in ATTENTION_SOURCES:
        raise ValueError(f"attention source must be one of {ATTENTION_SOURCES}, got {source!r}")


def _attention_weights(q: torch.Tensor, k: torch.Tensor, source: str) -> torch.Tensor:
    """Per-head BxHxLxL weights: softmax(q kᵀ/√d) for ``attention``, softmax(k kᵀ/√d) for ``keys``."""
    q = k if source == "keys" else q
    return torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)  # scaled before: NxN fewer products


def _head_mean(w: torch.Tensor) -> torch.Tensor:
    """BxHxLxL -> BxLxL (a sum then a division: .mean is 5x slower on bf16 CPU tensors)."""
    return w.sum(1) / w.shape[1]


ATTENTION_SOURCES = CAA_SOURCES


def _heads(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of an open_clip ResidualAttentionBlock for tokens `x` (BxLxD), each BxHxLx(D/H)."""
    return split_heads(block, in_projection(block, block.ln_1(x)))


def in_projection(block: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """A block's attention input projection (BxLx3D: q, k, v) of its ``ln_1`` output `h`."""
    attn = block.attn
    if not isinstance(attn, torch.nn.MultiheadAttention):
        raise ClipLoadError(f"attention capture supports open_clip's nn.MultiheadAttention blocks, "
                            f"not {type(attn).__name__}")
    return F.linear(h, attn.in_proj_weight, attn.in_proj_bias)


def split_heads(block: torch.nn.Module, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BxLx3D projections -> q, k, v, each BxHxLx(D/H)."""
    b, n, d3 = qkv.shape
    heads = block.attn.num_heads
    return tuple(t.transpose(1, 2) for t in qkv.view(b, n, 3, heads, d3 // 3 // heads).unbind(2))


def block_attention(block: torch.nn.Module, x: torch.Tensor, average_heads: bool = True,
                    source: str = "attention") -> torch.Tensor:
    """Self-attention weights of an open_clip ResidualAttentionBlock for input tokens `x` (BxLxD).

    Recomputed from the block's own projections (open_clip asks nn.MultiheadAttention
    for no weights), so the result is on the autograd path. ``source="attention"`` is
    the block's attention softmax(q kᵀ/√d); ``"keys"`` is softmax(k kᵀ/√d), the patch
    self-similarity in key space. Returns BxLxL averaged over heads, or BxHxLxL.
    """
    _check_source(source)
    q, k, _ = _heads(block, x)
    w = _attention_weights(q, k, source)
    return _head_mean(w) if average_heads else w


def value_attention(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A block's attention branch with value-value similarity (CLIP Surgery), for tokens `x` (BxLxD).

    softmax(v vᵀ/√d) v per head, then the block's output projection and layer scale:
    what the block would add to its residual stream if its attention compared values
    instead of queries with keys. Query-key attention of CLIP's last blocks attends to
    semantically opposite regions; value-value attention keeps each patch on its own.
    """
    _, _, v = _heads(block, x)
    w = torch.softmax(v @ v.transpose(-2, -1) * v.shape[-1] ** -0.5, dim=-1)
    return block.ls_1(attend(block, w, v))


def surgery_tokens(model: open_clip.CLIP, images: torch.Tensor, layers: int) -> torch.Tensor:
    """Final tokens Bx(1+N)xD of CLIP Surgery's value-value path through the last `layers` blocks.

    The path starts from the input of the first of those blocks and adds each block's
    :func:`value_attention` of the original path's tokens (no MLP); the original path
    runs on unchanged. ``layers=0`` gives the ordinary final tokens.
    """
    blocks = model.visual.transformer.resblocks
    if not 0 <= layers <= len(blocks):
        raise ValueError(f"surgery_layers must lie in [0, {len(blocks)}] for this model, got {layers}")
    x, _ = vit_tokens(model, images, stop_at=len(blocks) - layers)
    path = x
    for blk in blocks[len(blocks) - layers:]:
        path = path + value_attention(blk, x)
        x = blk(x)
    return path if layers else x


def patch_embeddings(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Projected patch embeddings BxNxE (class token dropped, not normalised): ln_post, then proj."""
    v = model.visual
    x = v.ln_post(tokens)[:, 1:]
    return x @ v.proj if v.proj is not None else x


def image_embedding(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """The model's own image embedding from its final tokens (its pooling: class token or patch
    mean, ``ln_post`` before or after), as ``encode_image`` makes it. Not L2-normalised. BxD_embed."""
    v = model.visual
    if v.attn_pool is not None:
        raise ClipLoadError("attention-pooled image towers (CoCa) are not supported; use a CLIP ViT")
    pooled = v._pool(tokens)[0]
    return pooled @ v.proj if v.proj is not None else pooled


def pool_tokens(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """Image embedding from final-block tokens as CLIP-ES computes it: ln_post, mean of patch
    tokens (class token dropped), projection. Not L2-normalised. BxD_embed."""
    v = model.visual
    x = v.ln_post(tokens)[:, 1:].mean(dim=1)
    return x @ v.proj if v.proj is not None else x


def calibrated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ExCEL's static visual calibration attention: the mean of softmax(q qᵀ/√d), softmax(k kᵀ/√d)
    and softmax(v vᵀ/√d), summed over heads. q, k, v: BxHxLxd -> Bx1xLxL (it weighs every head's v)."""
    scale = q.shape[-1] ** -0.5
    w = sum(torch.softmax((t * scale) @ t.transpose(-2, -1), dim=-1) for t in (q, k, v)) / 3
    return w.sum(1, keepdim=True)


class Calibrated(NamedTuple):
    """What :func:`calibrated_tokens` returns for a batch of images."""

    tokens: torch.Tensor               # Bx(1+N)xD final tokens of the dense path (class token: the original path's)
    attention: list[torch.Tensor]      # the original path's Bx(1+N)x(1+N) attention of the last blocks, oldest first


def calibrated_tokens(model: open_clip.CLIP, images: torch.Tensor, dense_layers: int,
                      attention_layers: int = 0) -> Calibrated:
    """One pass of the image tower with ExCEL's dense path beside the original one in the last
    `dense_layers` blocks, as the authors' training-free code wires it.

    The dense path starts from the input of its first block; every block adds to it the
    calibrated attention (:func:`calibrated_attention`) of ``ln_1`` of the *original* path's
    tokens, through the block's output projection, and no MLP. The original path runs on
    unchanged and gives the final class token. Of the last `attention_layers` blocks the
    original path's attention is kept as the authors keep it: head-averaged before the dense
    blocks, head-summed in them (so a dense block's map weighs `heads` times as much).
    """
    blocks = model.visual.transformer.resblocks
    if not 1 <= dense_layers <= len(blocks):
        raise ValueError(f"excel.dense_layers must lie in [1, {len(blocks)}] for this model, got {dense_layers}")
    if not 0 <= attention_layers <= len(blocks):
        raise ValueError(f"excel.affinity_layers must lie in [0, {len(blocks)}] for this model, got {attention_layers}")
    first = len(blocks) - dense_layers
    x, attention = vit_tokens(model, images, stop_at=first, capture=max(attention_layers - dense_layers, 0))
    dense = x
    for i, blk in enumerate(blocks[first:], first + 1):
        q, k, v = _heads(blk, x)
        w = _attention_weights(q, k, "attention")
        attention.append(w.sum(1))
        dense = dense + blk.ls_1(attend(blk, calibrated_attention(q, k, v), v))
        if i == len(blocks):  # after the last block only the original path's class token is used
            x, w = x[:, :1], w[:, :, :1]
        x = x + blk.ls_1(attend(blk, w, v))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    dense = torch.cat([x[:, :1], dense[:, 1:]], dim=1)
    return Calibrated(dense, attention[len(attention) - attention_layers:] if attention_layers else [])
