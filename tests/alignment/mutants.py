"""Mutants and other-style correct solutions for chapter 04."""

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- dtw


def _frame_costs(x, y, squared=False):
    diff = x[:, None, :] - y[None, :, :]
    return (diff**2).sum(-1) if squared else diff.norm(dim=-1)


def _table(c, moves=((1, 0), (0, 1), (1, 1))):
    """numpy accumulated-cost table D (n, m) of a float cost matrix, with the given moves."""
    n, m = c.shape
    big = np.full((n + 1, m + 1), np.inf)
    big[0, 0] = 0.0
    for i in range(n):
        for j in range(m):
            if i == j == 0:
                big[1, 1] = c[0, 0]
            else:
                big[i + 1, j + 1] = c[i, j] + min(big[i + 1 - di, j + 1 - dj] for di, dj in moves)
    return big[1:, 1:]


def _walk_back(table, moves=((1, 1), (1, 0), (0, 1))):
    i, j = table.shape[0] - 1, table.shape[1] - 1
    path = [(i, j)]
    while (i, j) != (0, 0):
        options = [(i - di, j - dj) for di, dj in moves if i - di >= 0 and j - dj >= 0]
        i, j = min(options, key=lambda ij: table[ij])
        path.append((i, j))
    return path


def _sum_along(x, y, path):
    rows = [i for i, _ in path]
    cols = [j for _, j in path]
    return (x[rows] - y[cols]).norm(dim=-1).sum()


def dtw_squared_distance(x, y):
    c = _frame_costs(x, y, squared=True)
    path = _walk_back(_table(c.detach().double().numpy()))[::-1]
    rows, cols = zip(*path, strict=True)
    return c[list(rows), list(cols)].sum(), path


def dtw_no_diagonal(x, y):
    c = _frame_costs(x, y)
    table = _table(c.detach().double().numpy(), moves=((1, 0), (0, 1)))
    path = _walk_back(table, moves=((1, 0), (0, 1)))[::-1]
    return _sum_along(x, y, path), path


def dtw_border_not_accumulated(x, y):
    c = torch.cdist(x, y)
    n, m = c.shape
    table = [[None] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 or j == 0:
                table[i][j] = c[i, j]  # D(0, j) = c(0, j): the border is not accumulated
            else:
                table[i][j] = c[i, j] + torch.stack([table[i - 1][j], table[i][j - 1], table[i - 1][j - 1]]).min()
    values = np.array([[float(v) for v in row] for row in table])
    return table[-1][-1], _walk_back(values)[::-1]


def dtw_path_not_reversed(x, y):
    c = _frame_costs(x, y)
    path = _walk_back(_table(c.detach().double().numpy()))
    return _sum_along(x, y, path), path


def dtw_backtrack_stops_at_border(x, y):
    c = _frame_costs(x, y)
    table = _table(c.detach().double().numpy())
    i, j = len(x) - 1, len(y) - 1
    path = [(i, j)]
    while i > 0 and j > 0:
        i, j = min([(i - 1, j - 1), (i - 1, j), (i, j - 1)], key=lambda ij: table[ij])
        path.append((i, j))
    path.reverse()
    return torch.as_tensor(table[-1, -1], dtype=x.dtype) + 0 * c.sum(), path


def dtw_path_by_frame_cost(x, y):
    c = _frame_costs(x, y)
    cost = torch.as_tensor(_table(c.detach().double().numpy())[-1, -1], dtype=x.dtype)
    local = c.detach().numpy()
    i, j = len(x) - 1, len(y) - 1
    path = [(i, j)]
    while (i, j) != (0, 0):  # steps to the cheapest *frame*, not the cheapest accumulated cost
        options = [(a, b) for a, b in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if a >= 0 and b >= 0]
        i, j = min(options, key=lambda ij: local[ij])
        path.append((i, j))
    path.reverse()
    return cost + 0 * c.sum(), path


def dtw_cost_as_float(x, y):
    table = _table(_frame_costs(x, y).detach().double().numpy())
    return float(table[-1, -1]), _walk_back(table)[::-1]


def dtw_cost_from_table(x, y):
    table = _table(_frame_costs(x, y).detach().double().numpy())
    return torch.tensor(table[-1, -1], dtype=x.dtype), _walk_back(table)[::-1]


def dtw_numpy_table(x, y):
    c = torch.cdist(x.double(), y.double()).detach().numpy()
    n, m = c.shape
    table = np.zeros((n, m))
    table[:, 0] = np.cumsum(c[:, 0])
    table[0, :] = np.cumsum(c[0, :])
    for i in range(1, n):
        for j in range(1, m):
            table[i, j] = c[i, j] + min(table[i - 1, j - 1], table[i - 1, j], table[i, j - 1])
    path = [(n - 1, m - 1)]
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            step = int(np.argmin([table[i - 1, j - 1], table[i - 1, j], table[i, j - 1]]))
            i, j = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][step]
        path.append((i, j))
    path = path[::-1]
    idx = np.array(path)
    cost = torch.linalg.vector_norm(x[idx[:, 0]] - y[idx[:, 1]], dim=1).sum()
    return cost, path


def dtw_antidiagonal(x, y):
    c = torch.cdist(x[None], y[None])[0]
    n, m = c.shape
    local = c.detach()
    table = torch.full((n + 1, m + 1), math.inf, dtype=local.dtype)
    table[0, 0] = 0.0
    for k in range(2, n + m + 1):  # padded indices i + j = k, every cell of an anti-diagonal at once
        i = torch.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        best = torch.minimum(torch.minimum(table[i - 1, j], table[i, j - 1]), table[i - 1, j - 1])
        table[i, j] = local[i - 1, j - 1] + best
    path, i, j = [], n, m
    while True:
        path.append((i - 1, j - 1))
        if (i, j) == (1, 1):
            break
        # ties go to the straight moves first (the reference prefers the diagonal)
        options = [(i, j - 1), (i - 1, j), (i - 1, j - 1)]
        values = [float(table[a, b]) for a, b in options]
        i, j = options[values.index(min(values))]
    path.reverse()
    index = torch.tensor(path)
    return c[index[:, 0], index[:, 1]].sum(), path


def dtw_differentiable_table(x, y):
    c = torch.cdist(x.double(), y.double())  # a float64 table: the cost comes back in float64
    n, m = c.shape
    table = {}
    for i in range(n):
        for j in range(m):
            previous = [table[p] for p in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if p in table]
            table[i, j] = c[i, j] + (torch.stack(previous).min() if previous else 0)
    path = [(n - 1, m - 1)]
    while path[-1] != (0, 0):
        i, j = path[-1]
        options = [p for p in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if p in table]
        path.append(min(options, key=lambda p: table[p].item()))
    return table[n - 1, m - 1], path[::-1]


# ----------------------------------------------------------------------------- ctc_loss


def _extend(targets, blank):
    extended = [blank]
    for label in targets.tolist():
        extended += [label, blank]
    return extended


def _ctc_log_space(log_probs, targets, blank=0, *, skip_repeats=False, skips=True, end_in_blank_only=False):
    """A learner's log-space α recursion, with −inf for unreachable states, and switches for mistakes."""
    ext = torch.tensor(_extend(targets, blank))
    s = len(ext)
    skip = torch.zeros(s, dtype=torch.bool)
    if skips:
        skip[2:] = ext[2:] != blank
        if not skip_repeats:
            skip[2:] &= ext[2:] != ext[:-2]
    never = -1e30
    alpha = torch.full((s,), never, dtype=log_probs.dtype)
    alpha = torch.cat([log_probs[0, ext[:2]], alpha[2:]])[:s]
    for t in range(1, log_probs.shape[0]):
        one = torch.cat([alpha.new_full((1,), never), alpha[:-1]])
        two = torch.cat([alpha.new_full((2,), never), alpha[:-2]])[:s]
        two = torch.where(skip, two, torch.full_like(two, never))
        alpha = torch.logsumexp(torch.stack([alpha, one, two]), 0) + log_probs[t, ext]
    ends = alpha[-1:] if end_in_blank_only else alpha[-2:]
    loss = -torch.logsumexp(ends, 0)
    return loss if loss < 1e29 else torch.full_like(loss, math.inf)


def ctc_skips_repeats(log_probs, targets, blank=0):
    return _ctc_log_space(log_probs, targets, blank, skip_repeats=True)


def ctc_no_skips(log_probs, targets, blank=0):
    return _ctc_log_space(log_probs, targets, blank, skips=False)


def ctc_ends_in_blank(log_probs, targets, blank=0):
    return _ctc_log_space(log_probs, targets, blank, end_in_blank_only=True)


def ctc_per_label(log_probs, targets, blank=0):
    return _ctc_log_space(log_probs, targets, blank) / max(len(targets), 1)


def ctc_hard_coded_blank(log_probs, targets, blank=0):
    return _ctc_log_space(log_probs, targets, 0)


def ctc_probability_space(log_probs, targets, blank=0):
    probs = log_probs.exp()
    ext = _extend(targets, blank)
    s = len(ext)
    alpha = [probs[0, ext[k]] if k < 2 else probs.new_zeros(()) for k in range(s)]
    for t in range(1, probs.shape[0]):
        new = []
        for k in range(s):
            total = alpha[k] + (alpha[k - 1] if k >= 1 else 0)
            if k >= 2 and ext[k] != blank and ext[k] != ext[k - 2]:
                total = total + alpha[k - 2]
            new.append(total * probs[t, ext[k]])
        alpha = new
    return -torch.log(sum(alpha[-2:]))


def ctc_minus_inf(log_probs, targets, blank=0):
    ext = torch.tensor(_extend(targets, blank))
    s = len(ext)
    skip = torch.zeros(s, dtype=torch.bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    alpha = torch.full((s,), -math.inf, dtype=log_probs.dtype)
    alpha = torch.cat([log_probs[0, ext[:2]], alpha[2:]])[:s]
    for t in range(1, log_probs.shape[0]):
        one = torch.cat([alpha.new_full((1,), -math.inf), alpha[:-1]])
        two = torch.cat([alpha.new_full((2,), -math.inf), alpha[:-2]])[:s]
        two = two.masked_fill(~skip, -math.inf)
        alpha = torch.logsumexp(torch.stack([alpha, one, two]), 0) + log_probs[t, ext]
    return -torch.logsumexp(alpha[-2:], 0)


def ctc_zero_when_infeasible(log_probs, targets, blank=0):
    repeats = sum(a == b for a, b in itertools.pairwise(targets.tolist()))
    if log_probs.shape[0] < len(targets) + repeats:
        return log_probs.new_zeros(())
    return _ctc_log_space(log_probs, targets, blank)


def ctc_floor_leaks(log_probs, targets, blank=0):
    """A finite floor for unreachable states and no feasibility test: a huge finite loss when nothing fits."""
    ext = torch.tensor(_extend(targets, blank))
    s = len(ext)
    skip = torch.zeros(s, dtype=torch.bool)
    skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
    floor = torch.finfo(log_probs.dtype).min
    alpha = F.pad(log_probs[0, ext[:2]], (0, max(s - 2, 0)), value=floor)
    for t in range(1, log_probs.shape[0]):
        one = F.pad(alpha[:-1], (1, 0), value=floor)
        two = F.pad(alpha[:-2], (2, 0), value=floor)[:s].masked_fill(~skip, floor)
        alpha = torch.logsumexp(torch.stack([alpha, one, two]), 0) + log_probs[t, ext]
    return -torch.logsumexp(alpha[-2:], 0)


def ctc_scaled_alpha(log_probs, targets, blank=0):
    """Graves' scaled α: probability space, renormalised every frame; the loss sums the log scales."""
    probs = log_probs.exp()
    ext = torch.tensor(_extend(targets, blank))
    s = len(ext)
    skip = torch.zeros(s, dtype=probs.dtype)
    if s > 2:
        skip[2:] = ((ext[2:] != blank) & (ext[2:] != ext[:-2])).to(probs.dtype)
    alpha = torch.zeros(s, dtype=probs.dtype)
    alpha = alpha + F.pad(probs[0, ext[:2]], (0, s - min(s, 2)))
    scale = alpha.sum()
    log_scale = torch.log(scale)
    alpha = alpha / scale
    for t in range(1, probs.shape[0]):
        alpha = (alpha + F.pad(alpha[:-1], (1, 0)) + skip * F.pad(alpha[:-2], (2, 0))[:s]) * probs[t, ext]
        scale = alpha.sum()
        log_scale = log_scale + torch.log(scale)
        alpha = alpha / scale
    return -(log_scale + torch.log(alpha[-2:].sum()))


def ctc_state_loop(log_probs, targets, blank=0):
    """One state at a time, with a finite floor and a two-term log-add-exp."""
    floor = -1e30

    def log_add(*terms):
        top = max(terms, key=lambda term: term.item())
        return top + torch.log(sum(torch.exp(term - top) for term in terms))

    labels = [blank]
    for label in targets.tolist():
        labels += [label, blank]
    size = len(labels)
    zero = log_probs.new_full((), floor)
    alpha = [log_probs[0, labels[k]] if k < 2 else zero for k in range(size)]
    for t in range(1, log_probs.shape[0]):
        new = []
        for k in range(size):
            terms = [alpha[k]]
            if k >= 1:
                terms.append(alpha[k - 1])
            if k >= 2 and labels[k] != blank and labels[k] != labels[k - 2]:
                terms.append(alpha[k - 2])
            new.append(log_add(*terms) + log_probs[t, labels[k]])
        alpha = new
    ll = log_add(*alpha[-2:]) if size > 1 else alpha[0]
    if ll.item() < floor / 2:  # only the floor reached the end: no labelling fits
        return torch.full((), math.inf, dtype=log_probs.dtype)
    return -ll


def ctc_torch_builtin(log_probs, targets, blank=0):
    loss = F.ctc_loss(
        log_probs.unsqueeze(1),
        targets.unsqueeze(0),
        input_lengths=[log_probs.shape[0]],
        target_lengths=[len(targets)],
        blank=blank,
        reduction="sum",
    )
    return loss


# ----------------------------------------------------------------------------- cca


def _centre(x, y):
    return x - x.mean(0), y - y.mean(0)


def _inverse_root(cov, eps):
    values, vectors = torch.linalg.eigh(cov + eps * torch.eye(len(cov), dtype=cov.dtype))
    return vectors @ torch.diag(values**-0.5) @ vectors.T


def _cca_learner(x, y, k, eps=1e-6, *, centre=True, whiten=True, ddof=1, transposed_v=False, whiten_w=True):
    xc, yc = _centre(x, y) if centre else (x, y)
    n = x.shape[0] - ddof
    sxx, syy, sxy = xc.T @ xc / n, yc.T @ yc / n, xc.T @ yc / n
    wx = _inverse_root(sxx, eps) if whiten else torch.eye(x.shape[1], dtype=x.dtype)
    wy = _inverse_root(syy, eps) if whiten else torch.eye(y.shape[1], dtype=y.dtype)
    u, s, vh = torch.linalg.svd(wx @ sxy @ wy)
    v = vh[:, :k] if transposed_v else vh.T[:, :k]
    if not whiten_w:
        return s[:k], u[:, :k], v
    return s[:k], wx @ u[:, :k], wy @ v


def cca_not_centred(x, y, k, eps=1e-6):
    return _cca_learner(x, y, k, eps, centre=False)


def cca_not_whitened(x, y, k, eps=1e-6):
    return _cca_learner(x, y, k, eps, whiten=False)


def cca_squared(x, y, k, eps=1e-6):
    xc, yc = _centre(x, y)
    n = len(x) - 1
    sxx = xc.T @ xc / n + eps * torch.eye(x.shape[1], dtype=x.dtype)
    syy = yc.T @ yc / n + eps * torch.eye(y.shape[1], dtype=y.dtype)
    sxy = xc.T @ yc / n
    root = _inverse_root(sxx, 0.0)
    values, vectors = torch.linalg.eigh(root @ sxy @ torch.linalg.solve(syy, sxy.T) @ root)
    values, vectors = values.flip(0)[:k], vectors.flip(1)[:, :k]
    w_x = root @ vectors
    w_y = torch.linalg.solve(syy, sxy.T) @ w_x / values.sqrt()
    return values, w_x, w_y  # eigenvalues are ρ², not ρ


def cca_ascending(x, y, k, eps=1e-6):
    xc, yc = _centre(x, y)
    n = len(x) - 1
    rx, ry = _inverse_root(xc.T @ xc / n, eps), _inverse_root(yc.T @ yc / n, eps)
    m = rx @ (xc.T @ yc / n) @ ry
    values, vectors = torch.linalg.eigh(m @ m.T)  # ascending, and [:k] keeps the weakest
    rho = values[:k].clamp(min=0).sqrt()
    w_x = rx @ vectors[:, :k]
    w_y = ry @ m.T @ vectors[:, :k] / rho
    return rho, w_x, w_y


def cca_ascending_y_side(x, y, k, eps=1e-6):
    xc, yc = _centre(x, y)
    n = len(x) - 1
    syy = yc.T @ yc / n + eps * torch.eye(y.shape[1], dtype=y.dtype)
    sxx = xc.T @ xc / n + eps * torch.eye(x.shape[1], dtype=x.dtype)
    sxy = xc.T @ yc / n
    values, vectors = torch.linalg.eigh(
        torch.linalg.inv(torch.linalg.cholesky(syy))
        @ sxy.T
        @ torch.linalg.solve(sxx, sxy)
        @ torch.linalg.inv(torch.linalg.cholesky(syy)).T
    )
    rho = values[:k].clamp(min=0).sqrt()  # eigh: ascending
    w_y = torch.linalg.inv(torch.linalg.cholesky(syy)).T @ vectors[:, :k]
    w_x = torch.linalg.solve(sxx, sxy @ w_y) / rho
    return rho, w_x, w_y


def cca_biased_covariance(x, y, k, eps=1e-6):
    return _cca_learner(x, y, k, eps, ddof=0)


def cca_unwhitened_weights(x, y, k, eps=1e-6):
    return _cca_learner(x, y, k, eps, whiten_w=False)


def cca_forgot_vh_is_transposed(x, y, k, eps=1e-6):
    return _cca_learner(x, y, k, eps, transposed_v=True)


def cca_separate_eigenproblems(x, y, k, eps=1e-6):
    xc, yc = _centre(x, y)
    n = len(x) - 1
    rx, ry = _inverse_root(xc.T @ xc / n, eps), _inverse_root(yc.T @ yc / n, eps)
    m = rx @ (xc.T @ yc / n) @ ry
    ex, vx = torch.linalg.eigh(m @ m.T)
    _, vy = torch.linalg.eigh(m.T @ m)  # its own eigenvectors: nothing ties their signs to vx's
    vx, vy = vx * torch.sign(vx.sum(0)), vy * torch.sign(vy.sum(0))  # "reproducible" signs, side by side
    rho = ex.flip(0)[:k].clamp(min=0).sqrt()
    return rho, rx @ vx.flip(1)[:, :k], ry @ vy.flip(1)[:, :k]


def cca_sign_flip_each(x, y, k, eps=1e-6):
    rho, w_x, w_y = _cca_learner(x, y, k, eps)
    # a deterministic sign, but chosen for each matrix on its own: pairs can end up anti-correlated
    w_x = w_x * torch.sign(w_x[0])
    w_y = w_y * torch.sign(w_y[0])
    return rho, w_x, w_y


def cca_all_correlations(x, y, k, eps=1e-6):
    rho, w_x, w_y = _cca_learner(x, y, min(x.shape[1], y.shape[1]), eps)
    return rho, w_x[:, :k], w_y[:, :k]


def cca_cholesky(x, y, k, eps=1e-6):
    n = x.shape[0]
    xc = x - x.mean(dim=0, keepdim=True)
    yc = y - y.mean(dim=0, keepdim=True)
    lx = torch.linalg.cholesky(xc.T @ xc / (n - 1) + eps * torch.eye(x.shape[1], dtype=x.dtype))
    ly = torch.linalg.cholesky(yc.T @ yc / (n - 1) + eps * torch.eye(y.shape[1], dtype=y.dtype))
    # Lx⁻¹ Σxy Ly⁻ᵀ is Σxy whitened by the Cholesky factors; w = L⁻ᵀ times its singular vectors
    core = torch.linalg.solve_triangular(lx, xc.T @ yc / (n - 1), upper=False)
    core = torch.linalg.solve_triangular(ly, core.T, upper=False).T
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    w_x = torch.linalg.solve_triangular(lx.T, u[:, :k], upper=True)
    w_y = torch.linalg.solve_triangular(ly.T, vh[:k].T, upper=True)
    return s[:k], w_x, w_y


def cca_general_eigenproblem(x, y, k, eps=1e-6):
    xd, yd = x.double(), y.double()
    xc, yc = xd - xd.mean(0), yd - yd.mean(0)
    n = len(x) - 1
    sxx = torch.cov(xd.T) + eps * torch.eye(x.shape[1], dtype=torch.float64)
    syy = torch.cov(yd.T) + eps * torch.eye(y.shape[1], dtype=torch.float64)
    sxy = xc.T @ yc / n
    # Σxx⁻¹ Σxy Σyy⁻¹ Σyx w = ρ² w, not symmetric: a general eigensolver
    values, vectors = torch.linalg.eig(torch.linalg.solve(sxx, sxy @ torch.linalg.solve(syy, sxy.T)))
    values, vectors = values.real, vectors.real
    order = values.argsort(descending=True)[:k]
    rho = values[order].clamp(min=0).sqrt()
    w_x = vectors[:, order]
    w_x = w_x / torch.sqrt((w_x * (sxx @ w_x)).sum(0))  # unit variance: wᵀ Σxx w = 1
    w_y = torch.linalg.solve(syy, sxy.T @ w_x) / rho  # the partner of each w_x, correlated by +ρ
    return rho.to(x.dtype), w_x.to(x.dtype), w_y.to(x.dtype)


def cca_numpy_signed(x, y, k, eps=1e-6):
    a, b = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    p = a.shape[1]
    joint = np.cov(np.hstack([a, b]), rowvar=False)  # unbiased by default
    sxx, syy, sxy = joint[:p, :p], joint[p:, p:], joint[:p, p:]

    def inv_sqrt(c):
        values, vectors = np.linalg.eigh(c + eps * np.eye(len(c)))
        return (vectors / np.sqrt(values)) @ vectors.T

    rx, ry = inv_sqrt(sxx), inv_sqrt(syy)
    u, s, vt = np.linalg.svd(rx @ sxy @ ry)
    w_x, w_y = rx @ u[:, :k], ry @ vt[:k].T
    signs = np.sign(w_x[np.abs(w_x).argmax(0), np.arange(k)])  # largest entry of each w_x positive
    w_x, w_y = w_x * signs, w_y * signs  # the same flip for both halves of a pair
    return tuple(torch.from_numpy(v).to(x.dtype) for v in (s[:k], w_x, w_y))


# ----------------------------------------------------------------------------- gradient_reversal


def _reverse_with(scale):
    class Flip(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return scale * grad

    return Flip.apply


def grl_plus_lambda(x, lambd):
    return _reverse_with(lambd)(x)


def grl_minus_one(x, lambd):
    return _reverse_with(-1.0)(x)


def grl_no_reversal(x, lambd):
    return x.clone()


def grl_scales_forward(x, lambd):
    return -lambd * x


def grl_detached(x, lambd):
    return x.detach()


def grl_new_leaf(x, lambd):
    out = x.detach().clone().requires_grad_(True)
    out.register_hook(lambda grad: -lambd * grad)
    return out


def grl_hook_on_input(x, lambd):
    if x.requires_grad:
        x.register_hook(lambda grad: -lambd * grad)  # reverses every gradient that reaches x
    return x


class _OneGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad  # forward took two inputs: backward must return two values


def grl_one_gradient(x, lambd):
    return _OneGradient.apply(x, lambd)


class _SavedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lambd):
        ctx.save_for_backward(torch.as_tensor(lambd, dtype=x.dtype))
        return x.clone()

    @staticmethod
    def backward(ctx, grad_output):
        (lambd,) = ctx.saved_tensors
        return grad_output.neg() * lambd, None


def grl_saved_tensor(x, lambd):
    return _SavedScale.apply(x, lambd)


def grl_clone_hook(x, lambd):
    out = x.clone()
    if out.requires_grad:
        out.register_hook(lambda g: -lambd * g)
    return out


def grl_detach_trick(x, lambd):
    frozen = x.detach()
    return frozen - lambd * (x - frozen)  # value: x exactly; gradient: −λ


# ----------------------------------------------------------------------------- vsepp_loss


def _hinges(image_features, text_features, margin):
    s = image_features @ text_features.T
    d = s.diag()
    mask = torch.eye(len(s), dtype=torch.bool)
    cost_s = (margin + s - d.view(-1, 1)).clamp(min=0).masked_fill(mask, 0)
    cost_im = (margin + s - d.view(1, -1)).clamp(min=0).masked_fill(mask, 0)
    return cost_s, cost_im


def vsepp_image_to_caption_only(image_features, text_features, margin=0.2, max_violation=True):
    cost_s, _ = _hinges(image_features, text_features, margin)
    return cost_s.max(1)[0].sum() if max_violation else cost_s.sum()


def vsepp_caption_to_image_only(image_features, text_features, margin=0.2, max_violation=True):
    _, cost_im = _hinges(image_features, text_features, margin)
    return cost_im.max(0)[0].sum() if max_violation else cost_im.sum()


def vsepp_positives_counted(image_features, text_features, margin=0.2, max_violation=True):
    s = image_features @ text_features.T
    d = s.diag()
    cost_s = (margin + s - d.view(-1, 1)).clamp(min=0)
    cost_im = (margin + s - d.view(1, -1)).clamp(min=0)
    if max_violation:
        return cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()
    return cost_s.sum() + cost_im.sum()


def vsepp_mean(image_features, text_features, margin=0.2, max_violation=True):
    cost_s, cost_im = _hinges(image_features, text_features, margin)
    if max_violation:
        return cost_s.max(1)[0].mean() + cost_im.max(0)[0].mean()
    return (cost_s.sum() + cost_im.sum()) / len(cost_s)


def vsepp_always_every_negative(image_features, text_features, margin=0.2, max_violation=True):
    cost_s, cost_im = _hinges(image_features, text_features, margin)
    return cost_s.sum() + cost_im.sum()


def vsepp_hardest_wrong_axis(image_features, text_features, margin=0.2, max_violation=True):
    cost_s, cost_im = _hinges(image_features, text_features, margin)
    if max_violation:
        return cost_s.max(0)[0].sum() + cost_im.max(1)[0].sum()
    return cost_s.sum() + cost_im.sum()


def vsepp_row_positive_both_ways(image_features, text_features, margin=0.2, max_violation=True):
    s = image_features @ text_features.T
    d = s.diag().view(-1, 1).expand_as(s)  # image i's positive, used for the caption direction too
    mask = torch.eye(len(s), dtype=torch.bool)
    cost_s = (margin + s - d).clamp(min=0).masked_fill(mask, 0)
    cost_im = (margin + s - d).clamp(min=0).masked_fill(mask, 0)
    if max_violation:
        return cost_s.max(1)[0].sum() + cost_im.max(0)[0].sum()
    return cost_s.sum() + cost_im.sum()


def vsepp_transposed_scores(image_features, text_features, margin=0.2, max_violation=True):
    s = image_features @ text_features.T
    d = s.diag().view(-1, 1).expand_as(s)  # row i: the positive of pair i, for both directions
    mask = torch.eye(len(s), dtype=torch.bool)
    cost_s = (margin + s - d).clamp(min=0).masked_fill(mask, 0)
    cost_im = (margin + s.T - d).clamp(min=0).masked_fill(mask, 0)
    if max_violation:
        return cost_s.max(1)[0].sum() + cost_im.max(1)[0].sum()
    return cost_s.sum() + cost_im.sum()


def vsepp_loops(image_features, text_features, margin=0.2, max_violation=True):
    n = image_features.shape[0]
    total = image_features.new_zeros(())
    for i in range(n):
        positive = image_features[i] @ text_features[i]
        to_captions = [F.relu(margin - positive + image_features[i] @ text_features[j]) for j in range(n) if j != i]
        to_images = [F.relu(margin - positive + image_features[j] @ text_features[i]) for j in range(n) if j != i]
        for hinges in (to_captions, to_images):
            if not hinges:
                continue
            total = total + (torch.stack(hinges).max() if max_violation else torch.stack(hinges).sum())
    return total


def vsepp_where(image_features, text_features, margin=0.2, max_violation=True):
    scores = torch.einsum("id,jd->ij", image_features, text_features)
    positive = torch.diagonal(scores)
    same = torch.eye(scores.shape[0], dtype=torch.bool)
    zero = torch.zeros((), dtype=scores.dtype)
    i2t = torch.where(same, zero, F.relu(margin + scores - positive.unsqueeze(1)))
    t2i = torch.where(same, zero, F.relu(margin + scores - positive.unsqueeze(0)))
    if max_violation:
        i2t, t2i = i2t.max(dim=1).values, t2i.max(dim=0).values
    return i2t.sum() + t2i.sum()


def vsepp_minus_inf_diagonal(image_features, text_features, margin=0.2, max_violation=True):
    scores = image_features @ text_features.T
    positive = scores.diagonal()
    negatives = scores.masked_fill(torch.eye(len(scores), dtype=torch.bool), -math.inf)
    i2t = (margin - positive[:, None] + negatives).clamp(min=0)
    t2i = (margin - positive[None, :] + negatives).clamp(min=0)
    if max_violation:
        return i2t.amax(1).sum() + t2i.amax(0).sum()
    return i2t.sum() + t2i.sum()


MUTANTS = {
    "alignment.dtw": [
        (dtw_squared_distance, "squared Euclidean distance"),
        (dtw_no_diagonal, "the diagonal move (i−1, j−1) is missing"),
        (dtw_border_not_accumulated, "not accumulated"),
        (dtw_path_not_reversed, "the path must run from (0, 0)"),
        (dtw_backtrack_stops_at_border, "the path must run from (0, 0)"),
        (dtw_path_by_frame_cost, "the path is not optimal"),
        (dtw_cost_as_float, "not a torch.Tensor"),
        (dtw_cost_from_table, "not connected to the autograd graph"),
    ],
    "alignment.ctc_loss": [
        (ctc_skips_repeats, "skips allowed between equal labels"),
        (ctc_no_skips, "no skip transitions at all"),
        (ctc_ends_in_blank, "may end only in the final blank"),
        (ctc_per_label, "divided by the target length"),
        (ctc_hard_coded_blank, "the blank argument is ignored"),
        (ctc_probability_space, "products of probabilities underflow"),
        (ctc_minus_inf, "the gradient contains NaN"),
        (ctc_zero_when_infeasible, "zero_infinity"),
        (ctc_floor_leaks, "check feasibility"),
    ],
    "alignment.cca": [
        (cca_not_centred, "not centred"),
        (cca_not_whitened, "the SVD of Σxy itself"),
        (cca_squared, "squared correlations"),
        (cca_ascending, "ascending order"),
        (cca_ascending_y_side, "ascending order"),
        (cca_biased_covariance, "a 1/N covariance"),
        (cca_unwhitened_weights, "lacks unit variance"),
        (cca_forgot_vh_is_transposed, "does not correlate by correlations[i]"),
        (cca_separate_eigenproblems, "does not correlate by correlations[i]"),
        (cca_sign_flip_each, "flip a pair's signs together"),
        (cca_all_correlations, "wrong shape"),
    ],
    "alignment.gradient_reversal": [
        (grl_plus_lambda, "scaled by +λ"),
        (grl_minus_one, "negated but not scaled by λ"),
        (grl_no_reversal, "passes through unchanged"),
        (grl_scales_forward, "the forward pass is multiplied by −λ"),
        (grl_detached, "not connected to the autograd graph"),
        (grl_new_leaf, "detached the input"),
        (grl_hook_on_input, "every gradient"),
        (grl_one_gradient, "incorrect number of gradients"),
    ],
    "alignment.vsepp_loss": [
        (vsepp_image_to_caption_only, "only the image→caption direction"),
        (vsepp_caption_to_image_only, "only the caption→image direction"),
        (vsepp_positives_counted, "the positive pair is not excluded"),
        (vsepp_mean, "a mean over the batch"),
        (vsepp_always_every_negative, "max_violation is ignored"),
        (vsepp_hardest_wrong_axis, "wrong axis"),
        (vsepp_row_positive_both_ways, "subtracts the image's positive"),
    ],
}

CORRECT = {
    "alignment.dtw": [dtw_numpy_table, dtw_antidiagonal, dtw_differentiable_table],
    "alignment.ctc_loss": [ctc_scaled_alpha, ctc_state_loop, ctc_torch_builtin],
    "alignment.cca": [cca_cholesky, cca_general_eigenproblem, cca_numpy_signed],
    "alignment.gradient_reversal": [grl_saved_tensor, grl_clone_hook, grl_detach_trick],
    "alignment.vsepp_loss": [vsepp_loops, vsepp_where, vsepp_minus_inf_diagonal, vsepp_transposed_scores],
}
