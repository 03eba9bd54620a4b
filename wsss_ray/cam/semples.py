"""SemPLeS on a frozen CLIP: learned class background prompts that compete in softmax-GradCAM.

SemPLeS (Lin et al., arXiv 2401.11791) learns, for each class k, a background prompt
P_k: L token embeddings in ``a photo of P_k .``, read at the end-of-text token. With
CLIP frozen, the prompt is pulled toward the class's background (the image with
k's CAM region masked out) and pushed away from the class's own text:

    loss = -log s(E_I(X_b^k), E_T(P_k)) + lambda * log s(E_T(t_k), E_T(P_k))

with s the cosine similarity clamped to [1e-4, 0.9999] (:func:`prompt_loss`). The
official code trains a WeakTr CAM network with these prompts; this project has only
frozen CLIP, so the prompts act on CLIP-ES instead: when labelling, each present
class's background prompt joins the softmax as that class's own competitor, beside
the generic background words (:class:`SemPLeS`), so a region better explained by
"the background of a bird" than by "bird" loses its activation.

The learning itself (data-parallel on Ray Train) is ``wsss_ray.train.prompts``;
this module is pure torch.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss_ray.cam.clip_es import ClipES
from wsss_ray.clip import LoadedClip
from wsss_ray.config import SemplesConfig
from wsss_ray.labelset import Labelset

PREFIX, SUFFIX = "a photo of", "."   # the prompt is PREFIX + P_k + SUFFIX
PROMPTS_FILE = "prompts.safetensors"
SIM_RANGE = (1e-4, 0.9999)           # SemPLeS clamps its cosine similarities to this range


@dataclass(frozen=True)
class PromptSlots:
    """Token ids of ``a photo of P .`` with L placeholder slots, where they are, and the EOT position."""

    ids: torch.Tensor      # context_length token ids (placeholders are 0)
    start: int             # first slot
    length: int            # L
    eot: int               # position of the end-of-text token, read as the text feature


def prompt_slots(tokenizer, length: int) -> PromptSlots:
    """Lay out ``<sot> a photo of [L slots] . <eot>`` in the tokenizer's context.

    A `length` that does not fit the context is an error saying the most that fits.
    """
    ids = tokenizer([f"{PREFIX} {SUFFIX}"])[0]
    context = len(ids)
    fixed = int((ids != 0).sum())          # sot, prefix words, suffix, eot
    prefix = len(tokenizer.encode(PREFIX)) + 1
    if fixed + length > context:
        raise ValueError(f"a prompt of {length} tokens does not fit this model's text context of {context}; "
                         f"use --length {context - fixed} or less")
    out = torch.zeros(context, dtype=ids.dtype)
    out[:prefix] = ids[:prefix]
    out[prefix + length:fixed + length] = ids[prefix:fixed]
    return PromptSlots(out, prefix, length, fixed + length - 1)


def encode_prompted(model, slots: PromptSlots, embeddings: torch.Tensor) -> torch.Tensor:
    """Text features CxE (not normalised) of C prompts whose slots hold `embeddings` (CxLxD).

    open_clip's ``encode_text`` with the slot token embeddings replaced, read at the
    end-of-text position; differentiable in `embeddings`.
    """
    c = embeddings.shape[0]
    cast = model.transformer.get_cast_dtype()
    ids = slots.ids.to(embeddings.device).expand(c, -1)
    x = model.token_embedding(ids).to(cast)
    x = torch.cat([x[:, :slots.start], embeddings.to(cast), x[:, slots.start + slots.length:]], dim=1)
    x = x + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)[:, slots.eot]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def clamped_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity clamped to SemPLeS's [1e-4, 0.9999]."""
    return F.cosine_similarity(a, b, dim=-1).clamp(*SIM_RANGE)


def prompt_loss(background: torch.Tensor, prompts: torch.Tensor, class_text: torch.Tensor,
                text_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SemPLeS's contrastive prompt loss over P (image, class) pairs; returns (loss, pull, push).

    background: PxE image features of the class-masked images X_b^k; prompts: PxE text
    features of each pair's class prompt P_k; class_text: PxE features of its class
    text t_k. ``pull`` = mean -log s(X_b, P), ``push`` = mean log s(t, P), loss =
    pull + text_weight * push.
    """
    pull = -clamped_similarity(background, prompts).log().mean()
    push = clamped_similarity(class_text, prompts).log().mean()
    return pull + text_weight * push, pull, push


def masked_background(x: torch.Tensor, cams: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """(1 - M_k) * x for each of K CAMs: x 3xHxW normalised input, cams KxHxW -> Kx3xHxW.

    M_k is the CAM min-max normalised with `eps` added to the range, as SemPLeS does
    (so a flat CAM masks nothing).
    """
    flat = cams.flatten(1)
    lo = flat.min(1).values[:, None, None]
    hi = flat.max(1).values[:, None, None]
    m = (cams - lo) / (hi - lo + eps)
    return (1 - m)[:, None] * x[None]


# ------------------------------------------------------------------ the learned prompts


@dataclass(frozen=True)
class LearnedPrompts:
    """One learned background prompt per class: `embeddings` CxLxD in labelset order."""

    embeddings: torch.Tensor
    classes: tuple[str, ...]
    model: str

    def to_bytes(self) -> bytes:
        from safetensors.torch import save

        meta = {"classes": json.dumps(list(self.classes)), "model": self.model, "prefix": PREFIX, "suffix": SUFFIX}
        return save({"embeddings": self.embeddings.detach().float().cpu().contiguous()}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> "LearnedPrompts":
        from safetensors.torch import load

        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])  # the safetensors header
        meta = header.get("__metadata__", {})
        return cls(load(data)["embeddings"], tuple(json.loads(meta.get("classes", "[]"))), meta.get("model", ""))


def prompts_file(path: str) -> str:
    """The prompts file of `path`: the file itself, or ``prompts.safetensors`` in a folder/URI prefix."""
    from wsss_ray.store import is_file

    return path if is_file(path) else posixpath.join(path.rstrip("/"), PROMPTS_FILE)


def load_prompts(path: str, labelset: Labelset | None = None, width: int | None = None) -> LearnedPrompts:
    """Read learned prompts (a file, or the folder ``jobs/learn_prompts.py`` wrote; local or URI).

    With `labelset` and `width` the prompts are checked against them: a mismatch is an
    error saying which labelset and model the prompts were learned for.
    """
    from wsss_ray.store import read_bytes

    file = prompts_file(path)
    try:
        prompts = LearnedPrompts.from_bytes(read_bytes(file))
    except OSError:
        raise ValueError(f"no learned prompts at {file}; run jobs/learn_prompts.py --output {path} first") from None
    if labelset is not None and prompts.classes != tuple(labelset.names):
        raise ValueError(f"the prompts in {file} were learned for classes {list(prompts.classes)}, not "
                         f"{labelset.name}'s {list(labelset.names)}; learn prompts for this labelset")
    if width is not None and prompts.embeddings.shape[-1] != width:
        raise ValueError(f"the prompts in {file} have width {prompts.embeddings.shape[-1]} (model "
                         f"{prompts.model!r}); this model's token width is {width}: learn prompts for it")
    return prompts


@torch.no_grad()
def nearest_tokens(model, tokenizer, embeddings: torch.Tensor, k: int = 1) -> list[list[str]]:
    """Per prompt (CxLxD), the `k` nearest vocabulary tokens (cosine) of each slot, decoded."""
    vocab = F.normalize(model.token_embedding.weight.float(), dim=-1)
    sims = F.normalize(embeddings.float().to(vocab.device), dim=-1) @ vocab.T       # C x L x V
    top = sims.topk(k, dim=-1).indices
    return [[tokenizer.decode([int(t)]).strip() for t in row.flatten()] for row in top]


# ------------------------------------------------------------------ the CAM method


class SemPLeS(ClipES):
    """CLIP-ES whose softmax also holds each present class's learned background prompt."""

    config_class = SemplesConfig

    def __init__(self, config: SemplesConfig, clip: LoadedClip, labelset: Labelset):
        config.check_complete()
        super().__init__(config, clip, labelset)
        prompts = load_prompts(config.prompts, labelset, clip.model.token_embedding.weight.shape[1])
        slots = prompt_slots(clip.tokenizer, prompts.embeddings.shape[1])
        with torch.no_grad():
            emb = prompts.embeddings.to(self.device)
            self.background_prompts = F.normalize(encode_prompted(clip.model, slots, emb).float(), dim=-1)

    def softmax_rows(self, class_ids: list[int]) -> tuple[torch.Tensor, list[int]]:
        rows, targets = super().softmax_rows(class_ids)
        return torch.cat([rows, self.background_prompts[class_ids]]), targets

