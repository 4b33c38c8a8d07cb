"""Mutants and other-style correct solutions for chapter 01."""

import functools
import math
import string

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- tensor_fusion


def _append_one(z):
    return torch.cat([z, torch.ones(z.shape[0], 1, dtype=z.dtype)], dim=1)


def _chain(vectors):
    out = vectors[0]
    for v in vectors[1:]:
        out = torch.einsum("bi,bj->bij", out, v).reshape(out.shape[0], -1)
    return out


def tfn_no_one(features):
    return _chain(list(features))


def tfn_one_first(features):
    return _chain([torch.cat([torch.ones(z.shape[0], 1, dtype=z.dtype), z], dim=1) for z in features])


def tfn_reversed(features):
    out = None
    for z in features:
        z1 = _append_one(z)
        out = z1 if out is None else torch.einsum("bi,bj->bij", z1, out).flatten(1)  # new modality outermost
    return out


def tfn_concat(features):
    return _append_one(torch.cat(features, dim=1))


def tfn_first_two(features):
    a, b = _append_one(features[0]), _append_one(features[1])
    return torch.einsum("bi,bj->bij", a, b).flatten(1)


def tfn_kron_loop(features):
    rows = []
    for b in range(features[0].shape[0]):
        row = None
        for z in features:
            z1 = torch.cat([z[b], z.new_ones(1)])
            row = z1 if row is None else torch.kron(row, z1)
        rows.append(row)
    return torch.stack(rows)


def tfn_one_einsum(features):
    letters = string.ascii_lowercase[: len(features)]
    spec = ",".join(f"z{c}" for c in letters) + "->z" + letters
    padded = [F.pad(z, (0, 1), value=1.0) for z in features]
    return torch.einsum(spec, *padded).flatten(1)


def tfn_reduce_bmm(features):
    padded = [F.pad(z, (0, 1), value=1.0) for z in features]
    return functools.reduce(lambda a, b: torch.bmm(a[:, :, None], b[:, None, :]).flatten(1), padded)


# ----------------------------------------------------------------------------- LowRankFusion


class _LowRankBase(nn.Module):
    def __init__(self, input_dims, output_dim, rank):
        super().__init__()
        self.factors = nn.ParameterList(
            [nn.Parameter(torch.randn(rank, d + 1, output_dim) / math.sqrt(d + 1)) for d in input_dims]
        )
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def projections(self, features, first=False):
        out = []
        for z, factor in zip(features, self.factors, strict=True):
            one = torch.ones(z.shape[0], 1, dtype=z.dtype)
            z1 = torch.cat([one, z] if first else [z, one], dim=1)
            out.append(z1 @ factor)  # (R, B, O), broadcast over the rank
        return out


class LmfSummed(_LowRankBase):
    def forward(self, features):
        return sum(self.projections(features)).sum(dim=0) + self.bias


class LmfRankMean(_LowRankBase):
    def forward(self, features):
        return math.prod(self.projections(features)).mean(dim=0) + self.bias


class LmfOneFirst(_LowRankBase):
    def forward(self, features):
        return math.prod(self.projections(features, first=True)).sum(dim=0) + self.bias


class LmfNoBias(_LowRankBase):
    def forward(self, features):
        return math.prod(self.projections(features)).sum(dim=0)


class LmfPlainList(_LowRankBase):
    """The factors in a Python list: not registered, so not learned (and not in the state dict)."""

    def __init__(self, input_dims, output_dim, rank):
        super().__init__(input_dims, output_dim, rank)
        factors = list(self.factors)
        del self.factors
        self.factors = factors

    def forward(self, features):
        return math.prod(self.projections(features)).sum(dim=0) + self.bias


class LmfBiasBuffer(_LowRankBase):
    def __init__(self, input_dims, output_dim, rank):
        super().__init__(input_dims, output_dim, rank)
        del self.bias
        self.register_buffer("bias", torch.zeros(output_dim))

    def forward(self, features):
        return math.prod(self.projections(features)).sum(dim=0) + self.bias


class LmfRankLoop(nn.Module):
    def __init__(self, input_dims, output_dim, rank):
        super().__init__()
        self.factors = nn.ParameterList()
        for d in input_dims:
            self.factors.append(nn.Parameter(torch.empty(rank, d + 1, output_dim).normal_(0, (d + 1) ** -0.5)))
        self.bias = nn.Parameter(torch.zeros(output_dim))
        self.rank = rank

    def forward(self, features):
        total = 0
        for r in range(self.rank):
            term = 1
            for z, factor in zip(features, self.factors, strict=True):
                term = term * (z @ factor[r, :-1] + factor[r, -1])  # [z ; 1] @ W = z @ W[:-1] + W[-1]
            total = total + term
        return total + self.bias


class LmfViaFullWeight(nn.Module):
    """Builds the full TFN weight: exponential in M, but the same map."""

    def __init__(self, input_dims, output_dim, rank):
        super().__init__()
        self.factors = nn.ParameterList(nn.Parameter(torch.randn(rank, d + 1, output_dim) * 0.3) for d in input_dims)
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(self, features):
        weight = self.factors[0]
        fused = F.pad(features[0], (0, 1), value=1.0)
        for z, factor in zip(features[1:], self.factors[1:], strict=True):
            weight = torch.einsum("rio,rjo->rijo", weight, factor).flatten(1, 2)
            fused = torch.einsum("bi,bj->bij", fused, F.pad(z, (0, 1), value=1.0)).flatten(1)
        return fused @ weight.sum(dim=0) + self.bias


class LmfStackedEinsum(nn.Module):
    """One einsum per modality keeps the rank as an axis; the modalities are stacked and multiplied by prod."""

    def __init__(self, input_dims, output_dim, rank):
        super().__init__()
        self.factors = nn.ParameterList(nn.Parameter(torch.randn(rank, d + 1, output_dim)) for d in input_dims)
        self.bias = nn.Parameter(torch.zeros(output_dim))

    def forward(self, features):
        fused = torch.stack(
            [
                torch.einsum("bd,rdo->bro", F.pad(z, (0, 1), value=1.0), f)
                for z, f in zip(features, self.factors, strict=True)
            ]
        )  # (M, B, R, O)
        return fused.prod(dim=0).sum(dim=1) + self.bias


# ----------------------------------------------------------------------------- GatedMultimodalUnit


class _GmuBase(nn.Module):
    def __init__(self, input_dims, hidden_dim):
        super().__init__()
        self.projections = nn.ModuleList([nn.Linear(d, hidden_dim, bias=False) for d in input_dims])
        m = len(input_dims)
        self.gate = nn.Linear(sum(input_dims), (1 if m == 2 else m) * hidden_dim, bias=False)
        self.hidden_dim = hidden_dim


class GmuNoTanh(_GmuBase):
    def forward(self, features):
        h = [p(x) for p, x in zip(self.projections, features, strict=True)]
        logits = self.gate(torch.cat(features, dim=1))
        if len(h) == 2:
            z = torch.sigmoid(logits)
            return z * h[0] + (1 - z) * h[1]
        z = logits.view(-1, len(h), self.hidden_dim).softmax(dim=1)
        return (z * torch.stack(h, 1)).sum(1)


class GmuSwapped(_GmuBase):
    def forward(self, features):
        h = [torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)]
        logits = self.gate(torch.cat(features, dim=1))
        if len(h) == 2:
            z = torch.sigmoid(logits)
            return (1 - z) * h[0] + z * h[1]
        z = logits.view(-1, len(h), self.hidden_dim).softmax(dim=1)
        return (z * torch.stack(h, 1)).sum(1)


class GmuNoSigmoid(_GmuBase):
    def forward(self, features):
        h = [torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)]
        logits = self.gate(torch.cat(features, dim=1))
        if len(h) == 2:
            return logits * h[0] + (1 - logits) * h[1]
        z = logits.view(-1, len(h), self.hidden_dim).softmax(dim=1)
        return (z * torch.stack(h, 1)).sum(1)


class GmuSoftmaxOverHidden(_GmuBase):
    def forward(self, features):
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)], 1)
        logits = self.gate(torch.cat(features, dim=1))
        if len(features) == 2:
            z = torch.sigmoid(logits)
            return z * h[:, 0] + (1 - z) * h[:, 1]
        z = logits.view(h.shape).softmax(dim=-1)
        return (z * h).sum(1)


class GmuHiddenFirstView(_GmuBase):
    def forward(self, features):
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)], 1)
        logits = self.gate(torch.cat(features, dim=1))
        if len(features) == 2:
            z = torch.sigmoid(logits)
            return z * h[:, 0] + (1 - z) * h[:, 1]
        z = logits.view(h.shape[0], self.hidden_dim, len(features)).softmax(dim=-1)  # (B, H, M)
        return (z.transpose(1, 2) * h).sum(1)


class GmuIndependentSigmoids(_GmuBase):
    """Generalises the two-modality sigmoid by giving every modality its own sigmoid gate."""

    def forward(self, features):
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)], 1)
        logits = self.gate(torch.cat(features, dim=1))
        if len(features) == 2:
            z = torch.sigmoid(logits)
            return z * h[:, 0] + (1 - z) * h[:, 1]
        return (torch.sigmoid(logits.view(h.shape)) * h).sum(1)


class GmuWithBias(nn.Module):
    def __init__(self, input_dims, hidden_dim):
        super().__init__()
        self.projections = nn.ModuleList([nn.Linear(d, hidden_dim) for d in input_dims])
        m = len(input_dims)
        self.gate = nn.Linear(sum(input_dims), (1 if m == 2 else m) * hidden_dim)

    def forward(self, features):
        h = torch.stack([torch.tanh(p(x)) for p, x in zip(self.projections, features, strict=True)], 1)
        logits = self.gate(torch.cat(features, dim=1))
        if len(features) == 2:
            z = torch.sigmoid(logits)
            return z * h[:, 0] + (1 - z) * h[:, 1]
        return (logits.view(h.shape).softmax(1) * h).sum(1)


class GmuLerpFunctional(_GmuBase):
    """torch.lerp for two modalities; weights used through F.linear; log-softmax for more."""

    def forward(self, features):
        h = [torch.tanh(F.linear(x, p.weight)) for p, x in zip(self.projections, features, strict=True)]
        logits = F.linear(torch.cat(features, dim=-1), self.gate.weight)
        if len(h) == 2:
            return torch.lerp(h[1], h[0], torch.sigmoid(logits))  # h2 + z (h1 − h2)
        z = logits.unflatten(-1, (len(h), -1)).log_softmax(dim=1).exp()
        return sum(z[:, i] * h[i] for i in range(len(h)))


class GmuEinsum(_GmuBase):
    def forward(self, features):
        h = torch.tanh(torch.stack([x @ p.weight.T for p, x in zip(self.projections, features, strict=True)], 1))
        logits = self.gate(torch.cat(features, dim=1))
        m = len(features)
        if m == 2:
            # sigmoid(a) = softmax([a, 0])[0]: the two-modality case is a softmax over two logits
            z = torch.softmax(torch.stack([logits, torch.zeros_like(logits)], 1), dim=1)
        else:
            scores = logits.reshape(len(logits), m, self.hidden_dim)
            scores = scores - scores.max(dim=1, keepdim=True).values
            z = scores.exp() / scores.exp().sum(dim=1, keepdim=True)
        return torch.einsum("bmh,bmh->bh", z, h)


# ----------------------------------------------------------------------------- modality_dropout


def _mask_shape(x):
    return (-1,) + (1,) * (x.dim() - 1)


def _rescued(features, p):
    m, batch = len(features), features[0].shape[0]
    keep = torch.rand(batch, m) >= p
    nothing = ~keep.any(dim=1)
    keep[nothing, torch.randint(m, (batch,))[nothing]] = True
    return keep


def md_elementwise(features, p, training):
    if not training or p == 0:
        return list(features)
    return [F.dropout(x, p, training=True) for x in features]


def md_no_rescale(features, p, training):
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p)
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) for i, x in enumerate(features)]


def md_inverse_keep_rate(features, p, training):
    """The usual dropout rescaling 1/(1 − p), although rescues raise the keep rate."""
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p)
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) / (1 - p) for i, x in enumerate(features)]


def md_rescue_counted_whole(features, p, training):
    """Counts each rescue as keeping every modality: 1 / ((1 − p) + p^M)."""
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p)
    scale = 1 / ((1 - p) + p ** len(features))
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) * scale for i, x in enumerate(features)]


def md_drops_everything(features, p, training):
    if not training or p == 0:
        return list(features)
    keep = torch.rand(features[0].shape[0], len(features)) >= p
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) / (1 - p) for i, x in enumerate(features)]


def md_in_eval(features, p, training):
    keep = _rescued(features, p)
    scale = 1.0 / ((1 - p) + p ** len(features) / len(features))
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) * scale for i, x in enumerate(features)]


def md_batch_mask(features, p, training):
    """One coin per modality for the whole batch."""
    if not training or p == 0:
        return list(features)
    m = len(features)
    keep = torch.rand(m) >= p
    if not keep.any():
        keep[torch.randint(m, ())] = True
    scale = 1.0 / ((1 - p) + p**m / m)
    return [x * scale if keep[i] else torch.zeros_like(x) for i, x in enumerate(features)]


def md_keep_prob_as_drop(features, p, training):
    if not training or p == 0:
        return list(features)
    m, batch = len(features), features[0].shape[0]
    keep = torch.rand(batch, m) < p  # p read as the keep probability
    nothing = ~keep.any(dim=1)
    keep[nothing, torch.randint(m, (batch,))[nothing]] = True
    scale = 1.0 / (p + (1 - p) ** m / m)
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) * scale for i, x in enumerate(features)]


def md_per_sample_renormalise(features, p, training):
    """Scales each sample by M / (number kept), as if averaging over the kept modalities."""
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p).to(features[0].dtype)
    scale = len(features) / keep.sum(dim=1)
    return [x * (keep[:, i] * scale).view(_mask_shape(x)) for i, x in enumerate(features)]


def md_in_place(features, p, training):
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p)
    scale = 1.0 / ((1 - p) + p ** len(features) / len(features))
    for i, x in enumerate(features):
        x[~keep[:, i]] = 0
        x *= scale
    return features


def md_rescue_first(features, p, training):
    """An all-dropped sample always gets modality 0 back."""
    if not training or p == 0:
        return list(features)
    m = len(features)
    keep = torch.rand(features[0].shape[0], m) >= p
    keep[:, 0] |= ~keep.any(dim=1)
    scale = 1.0 / ((1 - p) + p**m / m)
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype) * scale for i, x in enumerate(features)]


def md_two_dim_mask(features, p, training):
    """A (B, 1) mask, which broadcasts only against (B, d) features."""
    if not training or p == 0:
        return list(features)
    keep = _rescued(features, p).to(features[0].dtype)
    scale = 1.0 / ((1 - p) + p ** len(features) / len(features))
    return [x * keep[:, i : i + 1] * scale for i, x in enumerate(features)]


def md_resample_until_valid(features, p, training):
    """Redraw the mask of any sample that lost everything; keep rate becomes (1 − p) / (1 − p^M)."""
    if not training or p == 0:
        return list(features)
    m, batch = len(features), features[0].shape[0]
    keep = torch.rand(batch, m) >= p
    while True:
        empty = ~keep.any(dim=1)
        if not empty.any():
            break
        keep[empty] = torch.rand(int(empty.sum()), m) >= p
    scale = (1 - p**m) / (1 - p)
    return [
        torch.where(keep[:, i].view(_mask_shape(x)), x * scale, torch.zeros_like(x)) for i, x in enumerate(features)
    ]


def md_bernoulli_argmax(features, p, training):
    """torch.bernoulli for the mask, the largest uniform draw picks the rescued modality."""
    if not training or p == 0:
        return [x.clone() for x in features]
    m, batch = len(features), features[0].shape[0]
    keep = torch.bernoulli(torch.full((batch, m), 1 - p)).bool()
    rescue = F.one_hot(torch.rand(batch, m).argmax(dim=1), m).bool()
    keep = torch.where(keep.any(dim=1, keepdim=True), keep, rescue)
    q = 1 - p + p**m / m
    return [x * keep[:, i].view(_mask_shape(x)).to(x.dtype).div(q) for i, x in enumerate(features)]


def md_loop_rows(features, p, training):
    """Per-modality loop, rescue only among the samples that need it, 0-dim scale from the formula."""
    if not training or p == 0:
        return list(features)
    m = len(features)
    dropped = torch.stack([torch.rand(x.shape[0]) < p for x in features], dim=1)
    for b in torch.nonzero(dropped.all(dim=1)).flatten().tolist():
        dropped[b, int(torch.randint(m, ()))] = False
    out = []
    for i, x in enumerate(features):
        factor = (~dropped[:, i]).to(x.dtype) / (1 - p + p**m / m)
        out.append(x * factor.reshape(_mask_shape(x)))
    return out


MUTANTS = {
    "fusion.tensor_fusion": [
        (tfn_no_one, "no 1 appended"),
        (tfn_one_first, "the 1 is prepended"),
        (tfn_reversed, "the last modality varies slowest"),
        (tfn_concat, "that is early fusion"),
        (tfn_first_two, "only the first two modalities are fused"),
    ],
    "fusion.LowRankFusion": [
        (LmfSummed, "the modalities' projections are summed"),
        (LmfRankMean, "the rank terms are averaged"),
        (LmfOneFirst, "the 1 is prepended"),
        (LmfNoBias, "the bias is not added"),
        (LmfPlainList, "missing: factors.0"),
        (LmfBiasBuffer, "must be learned parameters (nn.Parameter), not buffers or plain tensors: bias"),
    ],
    "fusion.GatedMultimodalUnit": [
        (GmuNoTanh, "no tanh on the modality projections"),
        (GmuSwapped, "z weights the second modality"),
        (GmuNoSigmoid, "the gate has no sigmoid"),
        (GmuSoftmaxOverHidden, "the softmax runs over the hidden units"),
        (GmuHiddenFirstView, "viewed as (B, H, M)"),
        (GmuIndependentSigmoids, "independent sigmoid gates"),
        (GmuWithBias, "unexpected: projections.0.bias"),
    ],
    "fusion.modality_dropout": [
        (md_elementwise, "element-wise dropout"),
        (md_no_rescale, "no rescaling"),
        (md_inverse_keep_rate, "1/(1 − p) although rescuing"),
        (md_rescue_counted_whole, "the expectation changed"),
        (md_drops_everything, "some samples lost every modality"),
        (md_in_eval, "dropout applies only in training"),
        (md_batch_mask, "one mask for the whole batch"),
        (md_keep_prob_as_drop, "a keep probability used as the drop probability"),
        (md_per_sample_renormalise, "kept samples are rescaled by different factors"),
        (md_in_place, "modified its input features[0] in place"),
        (md_rescue_first, "the expectation changed"),
        (md_two_dim_mask, "raised RuntimeError"),
    ],
}

CORRECT = {
    "fusion.tensor_fusion": [tfn_kron_loop, tfn_one_einsum, tfn_reduce_bmm],
    "fusion.LowRankFusion": [LmfRankLoop, LmfViaFullWeight, LmfStackedEinsum],
    "fusion.GatedMultimodalUnit": [GmuLerpFunctional, GmuEinsum],
    "fusion.modality_dropout": [md_resample_until_valid, md_bernoulli_argmax, md_loop_rows],
}
