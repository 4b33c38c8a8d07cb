"""Chapter 01 recipe: five fusions × with/without modality dropout on the sentiment corpus, over three seeds."""

from __future__ import annotations

import statistics

from xmodal_ref.fusion.experiment import format_fusion_table, run_fusion_comparison

from . import print_table

SEEDS = (0, 1, 2)
METRICS = {
    "Acc-2": "acc2",
    "conflict": "conflict_acc2",
    "text missing": "text_missing_acc2",
    "audio missing": "audio_missing_acc2",
}


def _mean_std(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    results = [run_fusion_comparison(seed=seed, progress=False) for seed in SEEDS]
    for result in results:
        print(f"\nFusion recipe, seed {result['seed']}: {result['seconds']:.1f} s in all (target ≤ 40 s)\n")
        print(format_fusion_table(result))

    rows = []
    for index, first in enumerate(results[0]["rows"]):
        runs = [result["rows"][index] for result in results]
        regime = f"p = {first['dropout_p']:g}" if first["dropout_p"] else "none"
        accuracies = [_mean_std([run[key] for run in runs]) for key in METRICS.values()]
        mae = statistics.mean(run["mae"] for run in runs)
        seconds = statistics.mean(run["epoch_seconds"] for run in runs)
        rows.append((first["fusion"], regime, *accuracies, f"{mae:.3f}", f"{first['parameters']:,}", f"{seconds:.3f}"))
    references = [result["references"] for result in results]
    print_table(
        f"Fusion recipe, mean ± std over seeds {SEEDS} (test Acc-2 in %; unimodal labels as predictions: "
        f"audio {_mean_std([r['audio'] for r in references])}, text {_mean_std([r['text'] for r in references])})",
        ("fusion", "dropout", *METRICS, "MAE", "params", "s/epoch"),
        rows,
    )
