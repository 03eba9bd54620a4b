"""ExCEL's text semantic enrichment: class texts plus a bank of attribute centres.

Class descriptions (a JSON object mapping each class name to a list of sentences, the
layout of the ExCEL authors' files; the project ships no such text) are embedded with the
labelling CLIP's own text encoder, L2-normalised and clustered with k-means (scikit-learn,
``random_state=0``, ten starts, as the authors). Each class then attends to the centres:
the softmax of its text feature's dot products with them (no temperature), the least
similar `drop_share` of the centres left out, and the weighted sum of the centres is added
to the class feature, which is L2-normalised again. A bank fits only the CLIP that embedded
it, so it is built from the descriptions each time a labeller starts. Pure torch (and
scikit-learn's k-means).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from wsss_ray.clip import LoadedClip
from wsss_ray.labelset import Labelset


def read_descriptors(path: str, labelset: Labelset) -> dict[str, list[str]]:
    """The class descriptions in the JSON file at `path` (local or URI), one list per class."""
    from wsss_ray.store import read_bytes

    try:
        data = json.loads(read_bytes(path))
    except (OSError, ValueError) as e:
        raise ValueError(f"excel.descriptors {path} could not be read as JSON ({e}); give a JSON object "
                         f"mapping each class name to a list of sentences") from e
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                                             for v in data.values()):
        raise ValueError(f"excel.descriptors {path} is not a JSON object mapping class names to lists of sentences")
    missing = [c.name for c in labelset.classes if not data.get(c.name)]
    if missing:
        raise ValueError(f"excel.descriptors {path} has no sentences for {missing} of labelset {labelset.name!r}; "
                         f"give each class a list of sentences")
    return data


@torch.no_grad()
def attribute_bank(clip: LoadedClip, descriptors: dict[str, list[str]], clusters: int) -> torch.Tensor:
    """The k-means centres (clusters x E, not re-normalised) of every description's normalised text feature."""
    from sklearn.cluster import KMeans

    sentences = [s.lower() for group in descriptors.values() for s in group]
    if len(sentences) < clusters:
        raise ValueError(f"excel.clusters ({clusters}) must be at most the number of descriptions ({len(sentences)})")
    device = next(clip.model.parameters()).device
    features = torch.cat([F.normalize(clip.model.encode_text(clip.tokenizer(sentences[i:i + 256]).to(device)).float(),
                                      dim=-1) for i in range(0, len(sentences), 256)])
    kmeans = KMeans(n_clusters=clusters, random_state=0, n_init=10).fit(features.cpu().numpy())
    return torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32, device=device)


def aggregate(classes: torch.Tensor, bank: torch.Tensor, drop_share: float = 0.1) -> torch.Tensor:
    """KxE class features enriched with the clusters x E `bank`, L2-normalised (see the module)."""
    logits = classes.float() @ bank.T                                        # K x clusters
    drop = int(drop_share * bank.shape[0] + 1e-9)  # the authors truncate: 11 of 112 at 0.1
    if drop:
        lowest = logits.topk(drop, dim=-1, largest=False).indices
        logits = logits.scatter(-1, lowest, float("-inf"))
    return F.normalize(logits.softmax(-1) @ bank + classes.float(), dim=-1)


def enrich(classes: torch.Tensor, clip: LoadedClip, descriptors: dict[str, list[str]], clusters: int,
           drop_share: float) -> torch.Tensor:
    """The labelset's KxE class features with their attribute centres (text semantic enrichment)."""
    return aggregate(classes, attribute_bank(clip, descriptors, clusters), drop_share)
