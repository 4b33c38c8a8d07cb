"""Mutants and other-style correct solutions for chapter 06 (OGM-GE and Gradient-Blending)."""

import itertools
import math

import torch
import torch.nn.functional as F


def _true_class_scores(logits_a, logits_v, labels):
    with torch.no_grad():
        probs_a, probs_v = logits_a.softmax(dim=1), logits_v.softmax(dim=1)
        index = labels.unsqueeze(1)
        return probs_a.gather(1, index).sum().item(), probs_v.gather(1, index).sum().item()


def _dominant_only(score_a, score_v, alpha, coefficient):
    if score_a > score_v:
        return coefficient(score_a / score_v, alpha), 1.0
    if score_v > score_a:
        return 1.0, coefficient(score_v / score_a, alpha)
    return 1.0, 1.0


def coeff_ratio_inverted(logits_a, logits_v, labels, alpha):
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    if score_a > score_v:
        return 1.0 - math.tanh(alpha * score_v / score_a), 1.0
    if score_v > score_a:
        return 1.0, 1.0 - math.tanh(alpha * score_a / score_v)
    return 1.0, 1.0


def coeff_no_alpha(logits_a, logits_v, labels, alpha):
    if alpha == 0:
        return 1.0, 1.0
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    return _dominant_only(score_a, score_v, alpha, lambda rho, _: 1.0 - math.tanh(rho))


def coeff_on_weak_modality(logits_a, logits_v, labels, alpha):
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    rho_a = score_a / score_v
    if rho_a > 1:
        return 1.0, 1.0 - math.tanh(alpha * rho_a)
    if rho_a < 1:
        return 1.0 - math.tanh(alpha / rho_a), 1.0
    return 1.0, 1.0


def coeff_logit_scores(logits_a, logits_v, labels, alpha):
    rows = torch.arange(labels.numel())
    score_a = logits_a.detach()[rows, labels].sum().item()
    score_v = logits_v.detach()[rows, labels].sum().item()
    return _dominant_only(score_a, score_v, alpha, lambda rho, a: 1.0 - math.tanh(a * rho))


def coeff_accuracy_scores(logits_a, logits_v, labels, alpha):
    score_a = (logits_a.argmax(dim=1) == labels).float().mean().item()
    score_v = (logits_v.argmax(dim=1) == labels).float().mean().item()
    return _dominant_only(score_a, score_v, alpha, lambda rho, a: 1.0 - math.tanh(a * rho))


def coeff_rho_minus_one(logits_a, logits_v, labels, alpha):
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    return _dominant_only(score_a, score_v, alpha, lambda rho, a: 1.0 - math.tanh(a * (rho - 1)))


def coeff_official_else_branch(logits_a, logits_v, labels, alpha):
    """A transliteration of main.py: a tie falls into the else branch and modulates A."""
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    ratio_v = score_v / score_a
    if ratio_v > 1:
        return 1.0, 1.0 - math.tanh(alpha * ratio_v)
    return 1.0 - math.tanh(alpha / ratio_v), 1.0


def coeff_both_modulated(logits_a, logits_v, labels, alpha):
    score_a, score_v = _true_class_scores(logits_a, logits_v, labels)
    if score_a == score_v:
        return 1.0, 1.0
    return 1.0 - math.tanh(alpha * score_a / score_v), 1.0 - math.tanh(alpha * score_v / score_a)


def coeff_returns_tensors(logits_a, logits_v, labels, alpha):
    with torch.no_grad():
        score_a = logits_a.softmax(-1)[torch.arange(len(labels)), labels].sum()
        score_v = logits_v.softmax(-1)[torch.arange(len(labels)), labels].sum()
        one = torch.ones((), dtype=score_a.dtype)
        if score_a > score_v:
            return 1 - torch.tanh(alpha * score_a / score_v), one
        if score_v > score_a:
            return one, 1 - torch.tanh(alpha * score_v / score_a)
        return one, one


def coeff_max_probability(logits_a, logits_v, labels, alpha):
    score_a = logits_a.detach().softmax(-1).max(dim=-1).values.sum().item()
    score_v = logits_v.detach().softmax(-1).max(dim=-1).values.sum().item()
    return _dominant_only(score_a, score_v, alpha, lambda rho, a: 1.0 - math.tanh(a * rho))


def coeff_official_loop(logits_a, logits_v, labels, alpha):
    """The official score loop, with the tie handled by the contract."""
    score_a = score_v = 0.0
    prob_a, prob_v = F.softmax(logits_a.detach(), dim=1), F.softmax(logits_v.detach(), dim=1)
    for i in range(labels.shape[0]):
        score_a += float(prob_a[i][labels[i]])
        score_v += float(prob_v[i][labels[i]])
    ratio_v, ratio_a = score_v / score_a, score_a / score_v
    coeff_a = coeff_v = 1.0
    if ratio_v > 1:
        coeff_v = 1 - math.tanh(alpha * ratio_v)
    elif ratio_a > 1:
        coeff_a = 1 - math.tanh(alpha * ratio_a)
    return coeff_a, coeff_v


def coeff_from_cross_entropy(logits_a, logits_v, labels, alpha):
    """p(true class) = exp(−CE); batch means and a small ε as in BalanceBenchmark."""
    with torch.no_grad():
        mean_a = torch.exp(-F.cross_entropy(logits_a.double(), labels, reduction="none")).mean()
        mean_v = torch.exp(-F.cross_entropy(logits_v.double(), labels, reduction="none")).mean()
    rho_a, rho_v = float(mean_a / (mean_v + 1e-7)), float(mean_v / (mean_a + 1e-7))
    k = [1.0, 1.0]
    for u, rho in enumerate((rho_a, rho_v)):
        if rho > 1:
            k[u] = 1.0 - math.tanh(alpha * rho)
    return k[0], k[1]


def mod_std_of_scaled(grads, coeff, enhance=True, generator=None):
    out = []
    for g in grads:
        scaled = g * coeff
        if enhance:
            scaled = scaled + torch.zeros_like(g).normal_(0, scaled.std().item() + 1e-8, generator=generator)
        out.append(scaled)
    return out


def mod_variance(grads, coeff, enhance=True, generator=None):
    out = []
    for g in grads:
        noise = torch.randn(g.shape, generator=generator, dtype=g.dtype) * g.var() if enhance else 0
        out.append(coeff * g + noise)
    return out


def mod_noise_only_when_scaled_down(grads, coeff, enhance=True, generator=None):
    """GE noise only on the down-scaled (dominant) encoder."""
    out = []
    for g in grads:
        new = g * coeff
        if enhance and coeff < 1:
            new = new + torch.zeros_like(g).normal_(0, g.std().item() + 1e-8, generator=generator)
        out.append(new)
    return out


def mod_global_rng(grads, coeff, enhance=True, generator=None):
    if not enhance:
        return [g * coeff for g in grads]
    return [g * coeff + torch.randn_like(g) * (g.std() + 1e-8) for g in grads]


def mod_ignores_enhance(grads, coeff, enhance=True, generator=None):
    return [g * coeff + torch.zeros_like(g).normal_(0, g.std().item() + 1e-8, generator=generator) for g in grads]


def mod_in_place(grads, coeff, enhance=True, generator=None):
    for g in grads:
        std = g.std().item() + 1e-8
        g.mul_(coeff)
        if enhance:
            g.add_(torch.zeros_like(g).normal_(0, std, generator=generator))
    return grads


def mod_pooled_std(grads, coeff, enhance=True, generator=None):
    std = torch.cat([g.flatten().double() for g in grads]).std().item() + 1e-8
    return [g * coeff + (torch.zeros_like(g).normal_(0, std, generator=generator) if enhance else 0) for g in grads]


def mod_unit_noise(grads, coeff, enhance=True, generator=None):
    return [g * coeff + torch.zeros_like(g).normal_(generator=generator) if enhance else g * coeff for g in grads]


def mod_one_draw_per_tensor(grads, coeff, enhance=True, generator=None):
    out = []
    for g in grads:
        eps = torch.randn((), generator=generator, dtype=g.dtype) * (g.std() + 1e-8) if enhance else 0.0
        out.append(g * coeff + eps)
    return out


def mod_noise_at_gradient_mean(grads, coeff, enhance=True, generator=None):
    out = []
    for g in grads:
        if enhance:
            noise = torch.zeros_like(g).normal_(g.mean().item(), g.std().item() + 1e-8, generator=generator)
            out.append(g * coeff + noise)
        else:
            out.append(g * coeff)
    return out


def mod_noise_then_scale(grads, coeff, enhance=True, generator=None):
    """Adds the noise first, so the noise is scaled by coeff as well."""
    out = []
    for g in grads:
        noisy = g + torch.zeros_like(g).normal_(0, g.std().item() + 1e-8, generator=generator) if enhance else g
        out.append(noisy * coeff)
    return out


def mod_no_coeff_without_noise(grads, coeff, enhance=True, generator=None):
    if not enhance:
        return [g.clone() for g in grads]
    return [g * coeff + torch.zeros_like(g).normal_(0, g.std().item() + 1e-8, generator=generator) for g in grads]


def mod_torch_normal(grads, coeff, enhance=True, generator=None):
    out = []
    for g in grads:
        if enhance:
            sigma = float(g.std()) + 1e-8
            noise = torch.normal(0.0, sigma, size=g.shape, generator=generator, dtype=g.dtype, device=g.device)
            out.append(torch.add(noise, g, alpha=coeff))
        else:
            out.append(torch.mul(g, coeff))
    return out


def mod_manual_std(grads, coeff, enhance=True, generator=None):
    """σ by hand (unbiased), noise as a standard normal times σ via addcmul."""
    result = []
    for grad in grads:
        flat = grad.reshape(-1)
        sigma = torch.sqrt(((flat - flat.mean()) ** 2).sum() / (flat.numel() - 1)) + 1e-8
        base = grad.mul(coeff)
        if enhance:
            unit = torch.randn(grad.shape, generator=generator, dtype=grad.dtype, device=grad.device)
            base = torch.addcmul(base, unit, sigma.expand_as(unit))
        result.append(base)
    return result


def _delta_o(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    return (val_loss_end - train_loss_end) - (val_loss_start - train_loss_start)


def blend_unnormalised(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    gain = val_loss_start - val_loss_end
    return gain / _delta_o(train_loss_start, val_loss_start, train_loss_end, val_loss_end) ** 2


def blend_inverted(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    """Weights ∝ ΔO² / ΔG: the overfitting-to-generalisation ratio itself, not its inverse."""
    raw = _delta_o(train_loss_start, val_loss_start, train_loss_end, val_loss_end) ** 2
    raw = raw / (val_loss_start - val_loss_end)
    return raw / raw.sum()


def blend_not_squared(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    raw = (val_loss_start - val_loss_end) / _delta_o(train_loss_start, val_loss_start, train_loss_end, val_loss_end)
    return raw / raw.sum()


def blend_train_loss_as_overfitting(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    overfit = train_loss_end - train_loss_start
    raw = (val_loss_start - val_loss_end) / overfit**2
    return raw / raw.sum()


def blend_end_gap(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    """MultiBench's default (delta = False) gap at N + n."""
    overfit = val_loss_end - train_loss_end
    raw = (val_loss_start - val_loss_end) / overfit**2
    return raw / raw.sum()


def blend_train_gain(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    raw = (train_loss_start - train_loss_end) / _delta_o(
        train_loss_start, val_loss_start, train_loss_end, val_loss_end
    ).pow(2)
    return raw / raw.sum()


def blend_softmax(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    return torch.softmax(blend_unnormalised(train_loss_start, val_loss_start, train_loss_end, val_loss_end), dim=0)


def blend_float32(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    weights = [
        (vs - ve) / ((ve - te) - (vs - ts)) ** 2
        for ts, vs, te, ve in zip(
            train_loss_start.tolist(),
            val_loss_start.tolist(),
            train_loss_end.tolist(),
            val_loss_end.tolist(),
            strict=True,
        )
    ]
    return torch.tensor(weights) / sum(weights)


def blend_loop(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    weights = []
    for k in range(train_loss_start.shape[0]):
        overfit_n = val_loss_start[k] - train_loss_start[k]
        overfit_nn = val_loss_end[k] - train_loss_end[k]
        weights.append((val_loss_start[k] - val_loss_end[k]) / (overfit_nn - overfit_n) ** 2)
    weights = torch.stack(weights)
    return weights / weights.sum()


def blend_via_ogr(train_loss_start, val_loss_start, train_loss_end, val_loss_end):
    """Through the overfitting-to-generalisation ratio OGR = |ΔO / ΔG|: ΔG / ΔO² = 1 / (OGR² · ΔG)."""
    losses = torch.stack([train_loss_start, val_loss_start, train_loss_end, val_loss_end])  # (4, K)
    gaps = losses[[1, 3]] - losses[[0, 2]]  # (2, K): O at N and at N + n
    gain = -torch.diff(losses[[1, 3]], dim=0)[0]
    ogr = (torch.diff(gaps, dim=0)[0] / gain).abs()
    inverse = 1 / (ogr**2 * gain)
    return inverse / inverse.sum()


def _hit_rate(model, inputs, labels):
    with torch.no_grad():
        return (model(*inputs).argmax(-1) == labels).float().mean().item()


def _swap_in(inputs, modality, replacement):
    return [replacement if m == modality else x for m, x in enumerate(inputs)]


def ps_unnormalised(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    drops = [_hit_rate(model, _swap_in(inputs, modality, inputs[modality][p]), labels) for p in permutations]
    return acc - sum(drops) / len(drops)


def ps_kept_fraction(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    permuted = [_hit_rate(model, _swap_in(inputs, modality, inputs[modality][p]), labels) for p in permutations]
    return sum(permuted) / len(permuted) / acc


def ps_wrong_modality(model, inputs, labels, modality, permutations):
    """Permutes the modality before the one asked for (the index is off by one)."""
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    other = (modality - 1) % len(inputs)
    permuted = [_hit_rate(model, _swap_in(inputs, other, inputs[other][p]), labels) for p in permutations]
    return (acc - sum(permuted) / len(permuted)) / acc


def ps_global_rng(model, inputs, labels, modality, permutations):
    """Draws its own permutations (as the authors' code does), as many as given."""
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    batch = labels.shape[0]
    permuted = []
    for _ in range(permutations.shape[0]):
        p = torch.randperm(batch)
        permuted.append(_hit_rate(model, _swap_in(inputs, modality, inputs[modality][p]), labels))
    return (acc - sum(permuted) / len(permuted)) / acc


def ps_scatter(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    permuted = []
    for p in permutations:
        moved = torch.empty_like(inputs[modality])
        moved[p] = inputs[modality]  # sample p[i] receives sample i's features
        permuted.append(_hit_rate(model, _swap_in(inputs, modality, moved), labels))
    return (acc - sum(permuted) / len(permuted)) / acc


def ps_labels_follow(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    permuted = [_hit_rate(model, _swap_in(inputs, modality, inputs[modality][p]), labels[p]) for p in permutations]
    return (acc - sum(permuted) / len(permuted)) / acc


def ps_confidence(model, inputs, labels, modality, permutations):
    def confidence(xs):
        with torch.no_grad():
            return model(*xs).softmax(-1)[torch.arange(labels.shape[0]), labels].mean().item()

    base = confidence(inputs)
    permuted = [confidence(_swap_in(inputs, modality, inputs[modality][p])) for p in permutations]
    return (base - sum(permuted) / len(permuted)) / base


def ps_first_permutation(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    if acc == 0:
        return 0.0
    return (acc - _hit_rate(model, _swap_in(inputs, modality, inputs[modality][permutations[0]]), labels)) / acc


def ps_tensor(model, inputs, labels, modality, permutations):
    with torch.no_grad():
        acc = (model(*inputs).argmax(-1) == labels).double().mean()
        permuted = torch.stack(
            [
                (model(*_swap_in(inputs, modality, inputs[modality][p])).argmax(-1) == labels).double().mean()
                for p in permutations
            ]
        )
    return torch.where(acc > 0, (acc - permuted.mean()) / acc, torch.zeros_like(acc))


def ps_no_zero_guard(model, inputs, labels, modality, permutations):
    acc = _hit_rate(model, inputs, labels)
    permuted = [_hit_rate(model, _swap_in(inputs, modality, inputs[modality][p]), labels) for p in permutations]
    return (acc - sum(permuted) / len(permuted)) / acc


def ps_one_big_batch(model, inputs, labels, modality, permutations):
    """All P permuted copies in one forward pass of P·B samples; 1 − E[acc_p] / acc."""
    count = permutations.shape[0]
    with torch.no_grad():
        correct = model(*inputs).argmax(-1) == labels
        stacked = [
            x[permutations.reshape(-1)] if m == modality else x.repeat(count, *[1] * (x.dim() - 1))
            for m, x in enumerate(inputs)
        ]
        permuted_correct = model(*stacked).argmax(-1) == labels.repeat(count)  # (P·B,)
    hits, permuted_hits = int(correct.sum()), int(permuted_correct.sum())
    return 0.0 if hits == 0 else 1.0 - permuted_hits / (count * hits)


def ps_index_select_loop(model, inputs, labels, modality, permutations):
    """A loop over permutations with index_select, counting right answers one sample at a time."""
    with torch.inference_mode():
        predictions = model(*inputs).argmax(dim=1).tolist()
        truth = labels.tolist()
        acc = sum(int(a == b) for a, b in zip(predictions, truth, strict=True)) / len(truth)
        if acc == 0:
            return 0.0
        total = 0.0
        for row in range(permutations.shape[0]):
            shuffled = list(inputs)
            shuffled[modality] = torch.index_select(inputs[modality], 0, permutations[row])
            guesses = model(*shuffled).argmax(dim=1).tolist()
            total += sum(int(a == b) for a, b in zip(guesses, truth, strict=True)) / len(truth)
        return float((acc - total / permutations.shape[0]) / acc)


def _accuracy_of(model, shown, labels):
    with torch.no_grad():
        return (model(*shown).argmax(-1) == labels).double().mean()


def sa_msb_first(model, inputs, labels, fill):
    count = len(inputs)
    out = []
    for s in range(2**count):
        bits = format(s, f"0{count}b")  # most significant bit first: bits[0] is read as modality 0
        shown = [x if bits[m] == "1" else fill[m].expand_as(x) for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_zero_fill(model, inputs, labels, fill):
    out = []
    for s in range(2 ** len(inputs)):
        shown = [x if s >> m & 1 else torch.zeros_like(x) for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_batch_mean_fill(model, inputs, labels, fill):
    out = []
    for s in range(2 ** len(inputs)):
        shown = [x if s >> m & 1 else x.mean(0, keepdim=True).expand_as(x) for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_adds_fill(model, inputs, labels, fill):
    out = []
    for s in range(2 ** len(inputs)):
        shown = [x if s >> m & 1 else x + fill[m] for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_drops_empty(model, inputs, labels, fill):
    """Starts at pattern 1: "with no modality there is nothing to evaluate"."""
    out = []
    for s in range(1, 2 ** len(inputs)):
        shown = [x if s >> m & 1 else fill[m].expand_as(x) for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_empty_is_zero(model, inputs, labels, fill):
    out = torch.zeros(2 ** len(inputs), dtype=torch.float64)
    for s in range(1, 2 ** len(inputs)):
        shown = [x if s >> m & 1 else fill[m].expand_as(x) for m, x in enumerate(inputs)]
        out[s] = _accuracy_of(model, shown, labels)
    return out


def sa_by_size(model, inputs, labels, fill):
    out = []
    for size in range(len(inputs) + 1):
        for present in itertools.combinations(range(len(inputs)), size):
            shown = [x if m in present else fill[m].expand_as(x) for m, x in enumerate(inputs)]
            out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_float32(model, inputs, labels, fill):
    out = torch.zeros(2 ** len(inputs))
    for s in range(2 ** len(inputs)):
        shown = [x if s >> m & 1 else fill[m].expand_as(x) for m, x in enumerate(inputs)]
        out[s] = _accuracy_of(model, shown, labels)
    return out


def sa_bit_means_missing(model, inputs, labels, fill):
    out = []
    for s in range(2 ** len(inputs)):
        shown = [fill[m].expand_as(x) if s >> m & 1 else x for m, x in enumerate(inputs)]
        out.append(_accuracy_of(model, shown, labels))
    return torch.stack(out)


def sa_product_of_flags(model, inputs, labels, fill):
    """itertools.product over present/missing flags, each result written to the index its flags spell."""
    out = torch.empty(2 ** len(inputs), dtype=torch.float64)
    for flags in itertools.product((False, True), repeat=len(inputs)):
        index = sum(1 << m for m, present in enumerate(flags) if present)
        shown = [
            x if present else fill[m].expand(x.shape) for m, (x, present) in enumerate(zip(inputs, flags, strict=True))
        ]
        with torch.no_grad():
            out[index] = (model(*shown).argmax(1) == labels).sum().item() / labels.numel()
    return out


def sa_one_forward(model, inputs, labels, fill):
    """Every pattern at once: a batch of 2**M · B samples built with torch.where, one forward pass."""
    count, batch = len(inputs), labels.shape[0]
    patterns = torch.arange(2**count)
    stacked = []
    for m, x in enumerate(inputs):
        present = ((patterns >> m) & 1).bool().view(-1, 1, *[1] * (x.dim() - 1))  # (2**M, 1, 1…)
        stacked.append(torch.where(present, x.unsqueeze(0), fill[m].to(x.dtype)).reshape(-1, *x.shape[1:]))
    with torch.no_grad():
        right = model(*stacked).argmax(-1).view(2**count, batch) == labels
    return right.float().mean(dim=1).double()  # averaged in float32, returned as float64


def _players(values):
    return int(math.log2(values.numel()))


def sh_banzhaf(subset_values):
    count = _players(subset_values)
    phi = torch.zeros(count, dtype=subset_values.dtype)
    for m in range(count):
        for s in range(2**count):
            if not s >> m & 1:
                phi[m] += (subset_values[s | 1 << m] - subset_values[s]) / 2 ** (count - 1)
    return phi


def _shapley_loop(subset_values, *, start=0, marginal=lambda with_m, without_m: with_m - without_m, scale=True):
    count = _players(subset_values)
    phi = torch.zeros(count, dtype=subset_values.dtype)
    for m in range(count):
        for s in range(start, 2**count):
            if s >> m & 1:
                continue
            size = bin(s).count("1")
            weight = math.factorial(size) * math.factorial(count - size - 1)
            if scale:
                weight /= math.factorial(count)
            phi[m] += weight * marginal(subset_values[s | 1 << m], subset_values[s])
    return phi


def sh_skips_empty(subset_values):
    return _shapley_loop(subset_values, start=1)


def sh_reversed_marginals(subset_values):
    return _shapley_loop(subset_values, marginal=lambda with_m, without_m: without_m - with_m)


def sh_no_factorial_division(subset_values):
    return _shapley_loop(subset_values, scale=False)


def sh_empty_as_zero(subset_values):
    values = subset_values.clone()
    values[0] = 0  # "no modality, no accuracy"
    return _shapley_loop(values)


def sh_msb(subset_values):
    count = _players(subset_values)
    phi = _shapley_loop(subset_values)
    return phi.flip(0) if count > 1 else phi


def sh_leave_one_out(subset_values):
    count = _players(subset_values)
    everyone = 2**count - 1
    return torch.stack([subset_values[everyone] - subset_values[everyone & ~(1 << m)] for m in range(count)])


def sh_float64(subset_values):
    return _shapley_loop(subset_values.double())


def sh_normalised(subset_values):
    phi = _shapley_loop(subset_values)
    return phi / phi.sum()


def sh_orderings(subset_values):
    """The average marginal contribution over all M! orders in which the players can arrive."""
    count = _players(subset_values)
    values = subset_values.tolist()
    totals = [0.0] * count
    orders = list(itertools.permutations(range(count)))
    for order in orders:
        coalition = 0
        for player in order:
            totals[player] += values[coalition | 1 << player] - values[coalition]
            coalition |= 1 << player
    return torch.tensor([t / len(orders) for t in totals], dtype=subset_values.dtype)


def sh_weight_matrix(subset_values):
    """φ = A v with A[m, S ∪ {m}] = +w(|S|) and A[m, S] = −w(|S|), built in float64, applied with einsum."""
    count = _players(subset_values)
    coalitions = torch.arange(2**count)
    sizes = torch.stack([(coalitions >> m) & 1 for m in range(count)]).sum(0)  # (2**M,)
    member = torch.stack([(coalitions >> m) & 1 for m in range(count)]).bool()  # (M, 2**M)
    w_in = torch.exp(torch.lgamma(sizes.double()) + torch.lgamma(count - sizes + 1.0) - math.lgamma(count + 1))
    w_out = torch.exp(torch.lgamma(sizes + 1.0) + torch.lgamma(count - sizes.double()) - math.lgamma(count + 1))
    matrix = torch.where(member, w_in, -torch.where(member, 0.0, w_out))  # (M, 2**M): |S∪m| − 1 and |S| players
    return torch.einsum("ms,s->m", matrix, subset_values.double()).to(subset_values.dtype)


def _score(weight, bias, test_features, test_labels):
    return ((test_features.double() @ weight + bias).argmax(1) == test_labels).double().mean().item()


def rp_bias_penalised(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x = torch.cat([train_features.double(), torch.ones(len(train_features), 1, dtype=torch.float64)], dim=1)
    y = F.one_hot(train_labels, num_classes).double()
    w = torch.linalg.solve(x.T @ x + l2 * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    return _score(w[:-1], w[-1], test_features, test_labels)


def rp_no_intercept(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x, y = train_features.double(), F.one_hot(train_labels, num_classes).double()
    w = torch.linalg.solve(x.T @ x + l2 * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    return _score(w, 0.0, test_features, test_labels)


def _centred_fit(x, y, penalty):
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    w = torch.linalg.solve(xc.T @ xc + penalty * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ yc)
    return w, my - mx @ w


def rp_lambda_times_n(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    """Minimises the mean squared error plus l2·‖W‖², i.e. (XᵀX/N + l2·I) W = XᵀY/N."""
    x, y = train_features.double(), F.one_hot(train_labels, num_classes).double()
    n = x.shape[0]
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    w = torch.linalg.solve(xc.T @ xc / n + l2 * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ yc / n)
    return _score(w, my - mx @ w, test_features, test_labels)


def rp_standardised(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x = train_features.double()
    std = x.std(0)
    w, b = _centred_fit(x / std, F.one_hot(train_labels, num_classes).double(), l2)
    return _score(w, b, test_features.double() / std, test_labels)


def rp_integer_targets(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    w, b = _centred_fit(train_features.double(), train_labels.double()[:, None], l2)
    guess = (test_features.double() @ w + b)[:, 0].round().clamp(0, num_classes - 1).long()
    return (guess == test_labels).double().mean().item()


def rp_train_accuracy(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    w, b = _centred_fit(train_features.double(), F.one_hot(train_labels, num_classes).double(), l2)
    return _score(w, b, train_features, train_labels)


def rp_fit_on_everything(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x = torch.cat([train_features, test_features]).double()
    y = F.one_hot(torch.cat([train_labels, test_labels]), num_classes).double()
    w, b = _centred_fit(x, y, l2)
    return _score(w, b, test_features, test_labels)


def rp_least_squares(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x, y = train_features.double(), F.one_hot(train_labels, num_classes).double()
    mx, my = x.mean(0), y.mean(0)
    w = torch.linalg.pinv(x - mx) @ (y - my)
    return _score(w, my - mx @ w, test_features, test_labels)


def rp_float32_ones_column(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    x = F.pad(train_features.float(), (0, 1), value=1.0)
    y = F.one_hot(train_labels, num_classes).float()
    w = torch.linalg.solve(x.T @ x + l2 * torch.eye(x.shape[1]), x.T @ y)
    scores = F.pad(test_features.float(), (0, 1), value=1.0) @ w
    return (scores.argmax(1) == test_labels).float().mean().item()


def rp_tensor(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    w, b = _centred_fit(train_features.double(), F.one_hot(train_labels, num_classes).double(), l2)
    return ((test_features.double() @ w + b).argmax(1) == test_labels).double().mean()


def rp_augmented_plus_minus_one(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    """±1 targets; the bias is a column of ones whose entry of the penalty matrix is 0 (lstsq on the stacked system)."""
    x = torch.cat([train_features.double(), torch.ones(len(train_features), 1, dtype=torch.float64)], dim=1)
    y = 2 * F.one_hot(train_labels, num_classes).double() - 1
    penalty = torch.diag(torch.tensor([l2] * train_features.shape[1] + [0.0], dtype=torch.float64))
    w = torch.linalg.lstsq(x.T @ x + penalty, x.T @ y).solution
    scores = torch.cat([test_features.double(), torch.ones(len(test_features), 1, dtype=torch.float64)], 1) @ w
    return float((scores.argmax(1) == test_labels).sum()) / len(test_labels)


def rp_dual_form(train_features, train_labels, test_features, test_labels, num_classes, l2=1.0):
    """The kernel (dual) form W = X_cᵀ (X_c X_cᵀ + l2·I)⁻¹ Y_c, with an (N, N) system."""
    x, y = train_features.double(), F.one_hot(train_labels, num_classes).double()
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    alpha = torch.linalg.solve(xc @ xc.T + l2 * torch.eye(x.shape[0], dtype=torch.float64), y - my)  # (N, C)
    scores = (test_features.double() - mx) @ (xc.T @ alpha) + my
    return (scores.argmax(1) == test_labels).float().mean().item()  # counted in float32: k/N' to about 1e-8


MUTANTS = {
    "imbalance.ogm_ge_coefficients": [
        (coeff_ratio_inverted, "the ratio is inverted"),
        (coeff_no_alpha, "α is missing"),
        (coeff_on_weak_modality, "applied to the weak modality"),
        (coeff_logit_scores, "raw logits"),
        (coeff_accuracy_scores, "accuracy"),
        (coeff_rho_minus_one, "ρ − 1"),
        (coeff_official_else_branch, "an exact tie"),
        (coeff_both_modulated, "both modalities are modulated"),
        (coeff_returns_tensors, "not a Python float"),
        (coeff_max_probability, "maximum probability"),
    ],
    "imbalance.ogm_ge_modulate": [
        (mod_std_of_scaled, "not from coeff·g"),
        (mod_variance, "the variance"),
        (mod_noise_only_when_scaled_down, "adds GE noise to both modalities"),
        (mod_global_rng, "ignores `generator`"),
        (mod_ignores_enhance, "noise is added although enhance is False"),
        (mod_in_place, "modified its input grads[0] in place"),
        (mod_pooled_std, "compute it per tensor"),
        (mod_unit_noise, "unit-variance noise"),
        (mod_one_draw_per_tensor, "one noise value for the whole tensor"),
        (mod_noise_at_gradient_mean, "centred on the gradient's mean"),
        (mod_noise_then_scale, "do not scale the noise by coeff"),
        (mod_no_coeff_without_noise, "coeff is not applied"),
    ],
    "imbalance.gradient_blending_weights": [
        (blend_unnormalised, "not normalised"),
        (blend_inverted, "the ratio is inverted"),
        (blend_not_squared, "ΔO is not squared"),
        (blend_train_loss_as_overfitting, "change of the train loss"),
        (blend_end_gap, "the gap at N + n only"),
        (blend_train_gain, "ΔG comes from the train loss"),
        (blend_softmax, "softmax"),
        (blend_float32, "wrong dtype"),
    ],
    "imbalance.perceptual_score": [
        (ps_unnormalised, "not divided by the intact accuracy"),
        (ps_kept_fraction, "the fraction of the accuracy that survives"),
        (ps_wrong_modality, "another modality is permuted"),
        (ps_global_rng, "the given permutations are not used"),
        (ps_scatter, "a scatter"),
        (ps_labels_follow, "the labels are permuted together with the modality"),
        (ps_confidence, "probability of the true class"),
        (ps_first_permutation, "only the first permutation is used"),
        (ps_tensor, "not a Python float"),
        (ps_no_zero_guard, "returns 0.0 when acc == 0"),
    ],
    "imbalance.subset_accuracies": [
        (sa_msb_first, "the bit order is reversed"),
        (sa_zero_fill, "missing modalities are zeroed"),
        (sa_batch_mean_fill, "replaced by the batch mean"),
        (sa_adds_fill, "the fill is added"),
        (sa_drops_empty, "the empty set"),
        (sa_empty_is_zero, "entry 0 (every modality missing) is set to 0"),
        (sa_by_size, "in order of size"),
        (sa_float32, "float64"),
        (sa_bit_means_missing, "a set bit is read as missing"),
    ],
    "imbalance.shapley_values": [
        (sh_banzhaf, "the Banzhaf value"),
        (sh_skips_empty, "the empty coalition S = ∅ is skipped"),
        (sh_reversed_marginals, "the marginals are reversed"),
        (sh_empty_as_zero, "v(∅) is treated as 0"),
        (sh_no_factorial_division, "not divided by M!"),
        (sh_msb, "the bit order is reversed"),
        (sh_leave_one_out, "leave-one-out"),
        (sh_float64, "wrong dtype"),
        (sh_normalised, "normalised to sum to 1"),
    ],
    "imbalance.ridge_probe_accuracy": [
        (rp_bias_penalised, "the intercept is penalised"),
        (rp_no_intercept, "no intercept"),
        (rp_lambda_times_n, "the penalty is scaled by N"),
        (rp_standardised, "the features are standardised"),
        (rp_integer_targets, "one regression on the class index"),
        (rp_train_accuracy, "the accuracy on the training split"),
        (rp_fit_on_everything, "the test split leaks into the fit"),
        (rp_least_squares, "no penalty"),
        (rp_float32_ones_column, "float32 arithmetic"),
        (rp_tensor, "not a Python float"),
    ],
}

CORRECT = {
    "imbalance.ogm_ge_coefficients": [coeff_official_loop, coeff_from_cross_entropy],
    "imbalance.ogm_ge_modulate": [mod_torch_normal, mod_manual_std],
    "imbalance.gradient_blending_weights": [blend_loop, blend_via_ogr],
    "imbalance.perceptual_score": [ps_one_big_batch, ps_index_select_loop],
    "imbalance.subset_accuracies": [sa_product_of_flags, sa_one_forward],
    "imbalance.shapley_values": [sh_orderings, sh_weight_matrix],
    "imbalance.ridge_probe_accuracy": [rp_augmented_plus_minus_one, rp_dual_form],
}
