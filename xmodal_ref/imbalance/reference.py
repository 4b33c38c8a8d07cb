"""Chapter 06 · imbalance: diagnosing modality imbalance and fixing it with OGM-GE and Gradient-Blending.

Every public function here is the reference for one graded exercise. Each is self-contained
(it needs only ``math``, ``torch`` and ``torch.nn.functional``), because its source is copied
verbatim into the worked-solution notebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def ogm_ge_coefficients(
    logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor, alpha: float
) -> tuple[float, float]:
    """On-the-fly gradient modulation coefficients of OGM-GE (Peng et al. 2022, arXiv:2203.15332, Eq. 10).

    logits_a, logits_v: (B, C) unimodal logits of the two modalities (any float dtype); labels: (B,) int64
    in [0, C); alpha ≥ 0. The score of a modality is s_u = Σ_i softmax(logits_u)[i, labels[i]], the summed
    probability of the true class (a batch mean gives the same ratios). The discrepancy ratios are
    ρ_a = s_a / s_v and ρ_v = s_v / s_a. The dominant modality (ratio > 1) gets k_u = 1 − tanh(α·ρ_u); the
    other gets 1.0. When s_a == s_v exactly, both are 1.0.
    Returns (k_a, k_v) as Python floats; nothing is differentiated (compute under no_grad or on detached
    logits); inputs are not modified.
    """
    with torch.no_grad():
        true_class = labels[:, None]  # (B, 1)
        score_a = logits_a.double().softmax(dim=-1).gather(1, true_class).sum().item()
        score_v = logits_v.double().softmax(dim=-1).gather(1, true_class).sum().item()
    if score_a > score_v:  # A dominates: slow it down
        return 1.0 - math.tanh(alpha * score_a / score_v), 1.0
    if score_v > score_a:
        return 1.0, 1.0 - math.tanh(alpha * score_v / score_a)
    return 1.0, 1.0  # an exact tie: no modality dominates


def ogm_ge_modulate(
    grads: list[torch.Tensor], coeff: float, enhance: bool = True, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """OGM-GE's gradient update for one modality's parameters (Peng et al. 2022, arXiv:2203.15332).

    grads: the .grad tensors of one encoder (any shapes, each with ≥ 2 elements; float32 or float64).
    Returns a NEW list of tensors (same shapes, dtypes, devices; the inputs are not modified):
        g̃ = coeff · g                                  when enhance is False,
        g̃ = coeff · g + ε,  ε ~ N(0, σ²) i.i.d. per element, σ = g.std() + 1e-8,   when enhance is True,
    where g.std() is torch's default (unbiased) standard deviation of the ORIGINAL, unscaled gradient,
    computed per tensor. Noise is drawn from `generator` when one is given (the global RNG otherwise), so
    two calls with identically seeded generators return identical tensors.
    """
    modulated = []
    for grad in grads:
        update = grad * coeff
        if enhance:  # generalisation enhancement: noise as large as the unscaled gradient's spread
            noise = torch.zeros_like(grad).normal_(0.0, grad.std().item() + 1e-8, generator=generator)
            update = update + noise
        modulated.append(update)
    return modulated


def gradient_blending_weights(
    train_loss_start: torch.Tensor,
    val_loss_start: torch.Tensor,
    train_loss_end: torch.Tensor,
    val_loss_end: torch.Tensor,
) -> torch.Tensor:
    """Gradient-Blending loss weights (Wang, Tran, Feiszli, CVPR 2020, arXiv:1905.12681, Eq. 3, Alg. 1).

    Each argument: (K,) float tensor, the average train / held-out-validation loss of K heads (one per
    modality plus the fused head, any order) at checkpoints N (start) and N + n (end).
    Overfitting O = L_val − L_train;  ΔO_k = O_k,end − O_k,start;  ΔG_k = L_val,k,start − L_val,k,end.
    Returns w (K,), same dtype: w_k = (ΔG_k / ΔO_k²) / Σ_j (ΔG_j / ΔO_j²), so Σ w = 1.
    Inputs satisfy ΔG_k > 0 and ΔO_k ≠ 0 (no guard is needed; ΔO_k < 0 is allowed and enters squared).
    """
    overfit_start = val_loss_start - train_loss_start  # (K,)
    overfit_end = val_loss_end - train_loss_end  # (K,)
    generalisation = val_loss_start - val_loss_end  # ΔG: how much the held-out loss fell
    raw = generalisation / (overfit_end - overfit_start) ** 2  # (K,) ∝ ΔG / ΔO²
    return raw / raw.sum()


def perceptual_score(
    model, inputs: list[torch.Tensor], labels: torch.Tensor, modality: int, permutations: torch.Tensor
) -> float:
    """Normalised perceptual score of one modality (Gat, Schwartz, Schwing, NeurIPS 2021, arXiv:2110.14375).

    model: callable, model(*inputs) → (B, C) logits; prediction = argmax over the last axis.
    inputs: M tensors (B, …) sharing the batch axis; labels: (B,) int64; 0 ≤ modality < M;
    permutations: (P, B) int64, P ≥ 1, each row a permutation of 0..B−1.
    acc = accuracy on the intact inputs. For each row p, replace inputs[modality] by inputs[modality][p]
    (sample i receives sample p[i]'s features; other modalities and labels unchanged) and measure acc_p.
    Returns (acc − mean_p acc_p) / acc as a Python float; 0.0 when acc == 0. Runs without autograd; the
    inputs and the model are not modified.
    Dividing by acc is this package's convention: the paper's own normalisation (its Eq. 2) could not be
    checked in the stored copies, and the authors' code prints an unnormalised difference of two risks.
    """
    with torch.no_grad():
        intact = (model(*inputs).argmax(dim=-1) == labels).double().mean().item()
        if intact == 0:
            return 0.0
        permuted = 0.0
        for order in permutations:  # (B,) sample i receives sample order[i]'s features
            shuffled = [x[order] if m == modality else x for m, x in enumerate(inputs)]
            permuted += (model(*shuffled).argmax(dim=-1) == labels).double().mean().item()
    return (intact - permuted / len(permutations)) / intact


def subset_accuracies(
    model, inputs: list[torch.Tensor], labels: torch.Tensor, fill: list[torch.Tensor]
) -> torch.Tensor:
    """Accuracy with every pattern of present / missing modalities.

    model: model(*inputs) → (B, C) logits. inputs: M ≥ 1 tensors (B, *S_m). fill: M tensors of shape S_m
    (one sample's shape: zeros, the training mean, a learned "missing" token …) that stand in for a missing
    modality, broadcast over the batch. labels: (B,) int64.
    Returns a float64 tensor (2**M,): entry s is the accuracy when modality m is present iff bit m of s is
    set ((s >> m) & 1, modality 0 = least-significant bit) and every missing modality is replaced by its
    fill. Entry 2**M − 1 is the full-input accuracy; entry 0 is the accuracy with every modality missing
    (the model still predicts; it is NOT forced to 0). No autograd; inputs not modified.
    """
    accuracies = []
    with torch.no_grad():
        for pattern in range(2 ** len(inputs)):
            shown = [  # modality m is present iff bit m of the pattern is set
                x if (pattern >> m) & 1 else stand_in.to(x).expand_as(x)
                for m, (x, stand_in) in enumerate(zip(inputs, fill, strict=True))
            ]
            hits = model(*shown).argmax(dim=-1) == labels  # (B,)
            accuracies.append(hits.double().mean())
    return torch.stack(accuracies)  # (2**M,) float64


def shapley_values(subset_values: torch.Tensor) -> torch.Tensor:
    """Exact Shapley values of M players from a table of coalition values.

    subset_values: (2**M,) float, M ≥ 1, v(S) indexed as in subset_accuracies (bit m set ⇔ m ∈ S).
    Returns φ (M,), same dtype: φ_m = Σ_{S ⊆ N∖{m}} |S|! (M − |S| − 1)! / M! · (v(S ∪ {m}) − v(S)).
    Efficiency holds: Σ_m φ_m = v(N) − v(∅).
    """
    players = subset_values.numel().bit_length() - 1
    coalitions = torch.arange(subset_values.numel(), device=subset_values.device)  # (2**M,) bit patterns
    sizes = sum((coalitions >> m) & 1 for m in range(players))  # (2**M,) |S|
    weights = torch.tensor(  # (M,) the weight of a coalition of k players, k = 0 … M − 1
        [math.factorial(k) * math.factorial(players - k - 1) / math.factorial(players) for k in range(players)],
        dtype=subset_values.dtype,
        device=subset_values.device,
    )
    phi = []
    for m in range(players):
        without = (coalitions >> m) & 1 == 0  # the coalitions S ⊆ N∖{m}
        weight = weights[sizes[without]]
        gain = subset_values[coalitions[without] | (1 << m)] - subset_values[without]  # v(S ∪ {m}) − v(S)
        phi.append((weight * gain).sum())
    return torch.stack(phi)  # (M,)


def ridge_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    l2: float = 1.0,
) -> float:
    """Test accuracy of a ridge-regression probe on one-hot targets (the unimodal probe of a jointly trained
    encoder, cf. the linear-probing evaluation in OGM-GE, arXiv:2203.15332).

    train_features: (N, D), test_features: (N', D) float; labels int64 in [0, num_classes); l2 > 0.
    In float64: centre X by its train mean μ_x and the one-hot targets Y by their mean μ_y;
    W = (X_cᵀ X_c + l2·I)⁻¹ X_cᵀ Y_c  (D, C); b = μ_y − μ_x W (the intercept is NOT penalised);
    scores = test_features @ W + b; prediction = argmax (first index on ties).
    Returns the test accuracy as a Python float.
    """
    x = train_features.detach().double()  # (N, D)
    y = F.one_hot(train_labels, num_classes).double()  # (N, C)
    mean_x, mean_y = x.mean(dim=0), y.mean(dim=0)  # (D,), (C,)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc + l2 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)  # (D, D)
    weight = torch.linalg.solve(gram, xc.T @ yc)  # (D, C)
    bias = mean_y - mean_x @ weight  # (C,)
    scores = test_features.detach().double() @ weight + bias  # (N', C)
    return (scores.argmax(dim=-1) == test_labels).double().mean().item()
