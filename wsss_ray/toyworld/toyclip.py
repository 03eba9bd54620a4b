"""Making a toyclip: the architecture of ``model_configs/toyclip.json``, saved as an
open_clip ``local-dir:`` folder (what ``wsss_ray.toyworld.train_clip`` writes and the
package bundles)."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
from safetensors.torch import save_file

from wsss_ray.clip import TOYCLIP_CONFIG
from wsss_ray.config import TOYCLIP


def create_toyclip() -> open_clip.CLIP:
    """A randomly initialised toyclip (the architecture in model_configs/toyclip.json)."""
    return open_clip.create_model(TOYCLIP)


def save_local_dir(model: open_clip.CLIP, path: str | Path, model_cfg: dict | None = None,
                   half: bool = True) -> Path:
    """Write `model` as an open_clip ``local-dir:`` folder (config JSON + safetensors).

    Weights are stored in float16 by default (half the size); they load back into float32.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(path / "open_clip_model.safetensors"))
    config = {
        "model_cfg": model_cfg or TOYCLIP_CONFIG,
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)},
    }
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return path
