"""Chapter 08 recipe: frame averaging, TSM, audio and their fusion on direction × tone clips, three seeds."""

from __future__ import annotations

from xmodal_ref.video.recipe import MODELS, train_video_models

from . import print_table

SEEDS = (0, 1, 2)


def main() -> None:
    rows = []
    for seed in SEEDS:
        result = train_video_models(seed, progress=False)
        models = result["models"]
        rows.append(
            (
                seed,
                *(f"{models[model_id]['accuracy']:.3f}" for model_id in MODELS),
                *(f"{models[model_id]['seconds']:.1f}" for model_id in MODELS),
                f"{result['data_seconds']:.2f}",
                f"{result['seconds']:.1f}",
            )
        )
    names = [name for name, *_ in MODELS.values()]
    print_table(
        "Video recipe: test accuracy per model (chance 0.25; targets: frame-avg ≤ 0.35, TSM and audio alone in "
        "[0.40, 0.62], TSM + audio ≥ 0.95), then seconds per model, for the data and in all (one thread)",
        ("seed", *names, *(f"s {name}" for name in names), "s data", "s total"),
        rows,
    )
