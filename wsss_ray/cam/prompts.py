"""Text features for a labelset: templates, synonym fusion, background words, prompt selection.

CLIP-ES encodes every class with one template (``a clean origami {}.``), fuses a
class's synonyms by writing them into the one prompt (``bird avian``,
``person with clothes,people,human``), and adds background words (ground, sky,
water, ...) as extra non-target classes of the softmax. Template embeddings are
L2-normalised, averaged and normalised again (``zeroshot_classifier``).

Sharpness-based prompt selection scores each candidate template by how peaked
CLIP's class distribution is on labelled images: for each image, the softmax over
all classes + background words, and its score is the summed probability of the
image's true classes divided by the entropy of the distribution (sharp and right
wins). CLIP-ES's own selection code was not released (their Eq. 9 is not
reproduced here); this is the same idea with a stated formula.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from wsss_ray.config import SYNONYM_FUSIONS
from wsss_ray.labelset import Labelset



@dataclass(frozen=True)
class TextFeatures:
    """L2-normalised text embeddings: `classes` KxD in labelset order, `background` MxD."""

    classes: torch.Tensor
    background: torch.Tensor
    templates: tuple[str, ...]
    synonym_fusion: str

    def for_image(self, class_ids: list[int], softmax_over: str = "present") -> tuple[torch.Tensor, list[int]]:
        """The text rows an image's softmax runs over and the row of each of its classes.

        ``present`` (CLIP-ES): the image's K classes then the M background words;
        ``all``: every labelset class then the background words.
        """
        if softmax_over == "present":
            rows = torch.cat([self.classes[class_ids], self.background])
            return rows, list(range(len(class_ids)))
        if softmax_over == "all":
            return torch.cat([self.classes, self.background]), list(class_ids)
        raise ValueError(f"softmax_over must be 'present' or 'all', got {softmax_over!r}")


def class_texts(labelset: Labelset, synonym_fusion: str = "concat") -> list[list[str]]:
    """The class text(s) of each class: one fused string (concat, name) or one per synonym (mean)."""
    if synonym_fusion == "concat":
        return [[", ".join(c.words)] for c in labelset.classes]
    if synonym_fusion == "mean":
        return [list(c.words) for c in labelset.classes]
    if synonym_fusion == "name":
        return [[c.name] for c in labelset.classes]
    raise ValueError(f"synonym_fusion must be one of {SYNONYM_FUSIONS}, got {synonym_fusion!r}")


@torch.no_grad()
def encode_texts(model, tokenizer, groups: list[list[str]], templates: tuple[str, ...]) -> torch.Tensor:
    """One embedding per group: every (text, template) encoded, normalised, averaged, normalised."""
    flat = [t.format(text) for group in groups for text in group for t in templates]
    device = next(model.parameters()).device
    emb = F.normalize(model.encode_text(tokenizer(flat).to(device)).float(), dim=-1)
    out, i = [], 0
    for group in groups:
        n = len(group) * len(templates)
        out.append(F.normalize(emb[i:i + n].mean(0), dim=-1))
        i += n
    return torch.stack(out)


def text_features(model, tokenizer, labelset: Labelset, templates: tuple[str, ...] | None = None,
                  synonym_fusion: str = "concat", background: bool = True) -> TextFeatures:
    """Encode a labelset's classes and background words once (cache the result per model)."""
    templates = tuple(templates or labelset.templates)
    classes = encode_texts(model, tokenizer, class_texts(labelset, synonym_fusion), templates)
    words = list(labelset.background) if background else []
    bg = (encode_texts(model, tokenizer, [[w] for w in words], templates) if words
          else classes.new_zeros((0, classes.shape[1])))
    return TextFeatures(classes, bg, templates, synonym_fusion)


def sharpness(probs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image sharpness: probability mass on true classes / entropy of the distribution.

    probs: BxC softmax over classes (+ background words); truth: BxC bool (background False).
    """
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    return (probs * truth).sum(1) / entropy.clamp_min(1e-6)


@torch.no_grad()
def rank_templates(model, tokenizer, image_features: torch.Tensor, class_ids: list[list[int]],
                   labelset: Labelset, candidates: list[str], synonym_fusion: str = "concat") -> list[tuple[str, float]]:
    """Score each candidate template by mean sharpness on labelled images; best first.

    image_features: BxD L2-normalised image embeddings; class_ids: each image's labels.
    """
    scale = model.logit_scale.exp().float()
    truth = torch.zeros(len(class_ids), len(labelset) + len(labelset.background), dtype=torch.bool,
                        device=image_features.device)
    for i, ids in enumerate(class_ids):
        truth[i, ids] = True
    ranking = []
    for template in candidates:
        tf = text_features(model, tokenizer, labelset, (template,), synonym_fusion)
        text = torch.cat([tf.classes, tf.background])
        probs = (scale * image_features @ text.T).softmax(-1)
        ranking.append((template, float(sharpness(probs, truth).mean())))
    return sorted(ranking, key=lambda r: -r[1])


@torch.no_grad()
def select_templates(clip, images: list, class_ids: list[list[int]], labelset: Labelset,
                     candidates: tuple[str, ...] | list[str] | None = None,
                     synonym_fusion: str = "concat") -> list[tuple[str, float]]:
    """Rank candidate templates on labelled uint8 HxWx3 images with a LoadedClip; best first.

    Images are embedded as CLIP-ES embeds them (own patch-aligned size, mean of patch tokens).
    """
    from wsss_ray.cam.gradcam import patch_aligned_size, to_model_input
    from wsss_ray.vit import pool_tokens, vit_tokens

    device = next(clip.model.parameters()).device
    feats = []
    for img in images:
        size = patch_aligned_size(*img.shape[:2], clip.patch_size)
        tokens, _ = vit_tokens(clip.model, to_model_input(img, size, clip.mean, clip.std)[None].to(device))
        feats.append(F.normalize(pool_tokens(clip.model, tokens), dim=-1))
    return rank_templates(clip.model, clip.tokenizer, torch.cat(feats), class_ids, labelset,
                          list(candidates or CANDIDATE_TEMPLATES), synonym_fusion)


# Candidate templates for selection: CLIP-ES's two plus common CLIP prompts.
CANDIDATE_TEMPLATES = (
    "a clean origami {}.",
    "a rendering of a weird {}.",
    "a photo of a {}.",
    "a picture of a {}.",
    "a photo of the {}.",
    "an image of a {}.",
    "a rendering of a {}.",
    "{}.",
)


def _select_main(argv: list[str] | None = None) -> int:
    """``python -m wsss_ray.cam.prompts select``: rank templates on labelled images."""
    import argparse
    import json
    from pathlib import Path

    from wsss_ray.clip import load_clip
    from wsss_ray.labelset import load_labelset
    from wsss_ray.store import load_image, read_source

    parser = argparse.ArgumentParser(prog="python -m wsss_ray.cam.prompts select",
                                     description="Rank prompt templates by sharpness on labelled images.")
    parser.add_argument("command", choices=["select"])
    parser.add_argument("--input", required=True,
                        help="labelled images: PATH.jsonl | DIR | voc:ROOT[:SPLIT] | coco:ROOT:ANN.json (local or URI)")
    parser.add_argument("--labelset", required=True, help="voc | coco | toyworld | PATH.yaml")
    parser.add_argument("--model", default="toyclip")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--synonym-fusion", default="concat", choices=SYNONYM_FUSIONS)
    parser.add_argument("--limit", type=int, default=200, help="images to score")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATE_TEMPLATES),
                        help="templates to rank (each with one {})")
    parser.add_argument("--output", default="outputs/prompt_selection.json", help="where the choice is written")
    args = parser.parse_args(argv)

    clip = load_clip(args.model, args.pretrained)
    labelset = load_labelset(args.labelset)
    items = read_source(args.input)[:args.limit]
    ranking = select_templates(clip, [load_image(i.image) for i in items],
                               [[labelset.index(l) for l in i.labels] for i in items],
                               labelset, args.candidates, args.synonym_fusion)
    for template, score in ranking:
        print(f"{score:8.4f}  {template}")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"templates": [ranking[0][0]], "ranking": ranking, "model": args.model,
                               "labelset": labelset.name, "images": len(items)}, indent=2))
    print(json.dumps({"selected": ranking[0][0], "output": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(_select_main())
