"""Mutants and other-style correct solutions for chapter 03."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------- clip_loss


def clip_one_direction(image_features, text_features, logit_scale):
    logits = logit_scale * image_features @ text_features.T
    return F.cross_entropy(logits, torch.arange(len(logits)))


def clip_divides(image_features, text_features, logit_scale):
    logits = image_features @ text_features.T / logit_scale
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_exp_twice(image_features, text_features, logit_scale):
    logits = torch.exp(torch.as_tensor(logit_scale)) * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_summed(image_features, text_features, logit_scale):
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def clip_naive_softmax(image_features, text_features, logit_scale):
    e = torch.exp(logit_scale * image_features @ text_features.T)
    p_i2t = e / e.sum(dim=1, keepdim=True)
    p_t2i = e / e.sum(dim=0, keepdim=True)
    return -(torch.log(p_i2t.diagonal()).mean() + torch.log(p_t2i.diagonal()).mean()) / 2


def clip_item_scale(image_features, text_features, logit_scale):
    logits = float(logit_scale) * image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_scales_in_place(image_features, text_features, logit_scale):
    image_features.mul_(logit_scale)
    logits = image_features @ text_features.T
    labels = torch.arange(len(logits))
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def clip_loop_logsumexp(image_features, text_features, logit_scale):
    n = image_features.shape[0]
    total = 0.0
    for i in range(n):
        row = logit_scale * (text_features @ image_features[i])  # image i against every text
        col = logit_scale * (image_features @ text_features[i])  # text i against every image
        total = total + (torch.logsumexp(row, 0) - row[i]) + (torch.logsumexp(col, 0) - col[i])
    return total / (2 * n)


def clip_einsum_log_softmax(image_features, text_features, logit_scale):
    logits = logit_scale * torch.einsum("id,jd->ij", image_features, text_features)
    i2t = -F.log_softmax(logits, dim=1).diagonal().mean()
    t2i = -F.log_softmax(logits, dim=0).diagonal().mean()
    return 0.5 * (i2t + t2i)


def clip_renormalising(image_features, text_features, logit_scale):
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return torch.stack([F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)]).mean()


# ----------------------------------------------------------------------------- siglip_loss


def _sig_logits(image_features, text_features, logit_scale, logit_bias):
    return logit_scale * image_features @ text_features.T + logit_bias


def siglip_mean(image_features, text_features, logit_scale, logit_bias):
    logits = _sig_logits(image_features, text_features, logit_scale, logit_bias)
    z = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(z * logits).mean()


def siglip_no_bias(image_features, text_features, logit_scale, logit_bias):
    logits = logit_scale * image_features @ text_features.T
    z = 2 * torch.eye(len(logits)) - 1
    return -F.logsigmoid(z * logits).sum() / len(logits)


def siglip_log_sigmoid_naive(image_features, text_features, logit_scale, logit_bias):
    logits = _sig_logits(image_features, text_features, logit_scale, logit_bias)
    z = 2 * torch.eye(len(logits), dtype=logits.dtype) - 1
    return -torch.log(torch.sigmoid(z * logits)).sum() / len(logits)


def siglip_zero_one_signs(image_features, text_features, logit_scale, logit_bias):
    logits = _sig_logits(image_features, text_features, logit_scale, logit_bias)
    return -F.logsigmoid(torch.eye(len(logits)) * logits).sum() / len(logits)


def siglip_bce(image_features, text_features, logit_scale, logit_bias):
    logits = _sig_logits(image_features, text_features, logit_scale, logit_bias)
    targets = torch.eye(len(logits), dtype=logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(logits)


def siglip_softplus(image_features, text_features, logit_scale, logit_bias):
    logits = _sig_logits(image_features, text_features, logit_scale, logit_bias)
    n = logits.shape[0]
    z = torch.full((n, n), -1.0, dtype=logits.dtype)
    z.fill_diagonal_(1.0)
    return F.softplus(-z * logits).sum() / n


def siglip_loop(image_features, text_features, logit_scale, logit_bias):
    n = image_features.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            logit = logit_scale * torch.dot(image_features[i], text_features[j]) + logit_bias
            total = total - F.logsigmoid(logit if i == j else -logit)
    return total / n


# ----------------------------------------------------------------------------- recall_at_k


def recall_argsort(similarity, positives, k):
    order = similarity.argsort(dim=1, descending=True)
    hits = positives.gather(1, order[:, :k]).any(dim=1)
    return hits.float().mean().item()


def recall_inclusive(similarity, positives, k):
    best = similarity.masked_fill(~positives, -math.inf).max(dim=1).values
    rank = (similarity > best[:, None]).sum(dim=1)
    return (rank <= k).float().mean().item()


def recall_first_positive(similarity, positives, k):
    target = positives.int().argmax(dim=1)
    target_score = similarity.gather(1, target[:, None])
    rank = (similarity > target_score).sum(dim=1)
    return (rank < k).float().mean().item()


def recall_tensor(similarity, positives, k):
    best = similarity.masked_fill(~positives, -math.inf).max(dim=1).values
    return ((similarity > best[:, None]).sum(dim=1) < k).float().mean()


def recall_percent(similarity, positives, k):
    best = similarity.masked_fill(~positives, -math.inf).max(dim=1).values
    return 100.0 * ((similarity > best[:, None]).sum(dim=1) < k).float().mean().item()


def recall_loop(similarity, positives, k):
    hits = 0
    for q in range(similarity.shape[0]):
        best = max(similarity[q, g].item() for g in range(similarity.shape[1]) if positives[q, g])
        rank = sum(1 for g in range(similarity.shape[1]) if similarity[q, g].item() > best)
        hits += rank < k
    return hits / similarity.shape[0]


def recall_numpy(similarity, positives, k):
    s, p = similarity.numpy(), positives.numpy()
    ranks = (s[:, None, :] > s[:, :, None]).sum(axis=2)  # rank of every item
    best = np.where(p, ranks, np.iinfo(np.int64).max).min(axis=1)
    return np.mean(best < k)


# ----------------------------------------------------------------------------- LearnableLogitScale


class ScaleNotLog(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(init_scale))
        self.max_scale = max_scale

    def forward(self):
        return self.log_scale.clamp(max=self.max_scale)


class NoClamp(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))

    def forward(self):
        return self.log_scale.exp()


class TemperatureInit(nn.Module):
    def __init__(self, init_scale=0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.max_log = math.log(max_scale)

    def forward(self):
        return self.log_scale.clamp(max=self.max_log).exp()


class ClampsInPlace(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.max_log = math.log(max_scale)

    def forward(self):
        self.log_scale.data.clamp_(max=self.max_log)
        return self.log_scale.exp()


class PlainTensor(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = torch.tensor(math.log(init_scale), requires_grad=True)
        self.max_log = math.log(max_scale)

    def forward(self):
        return self.log_scale.clamp(max=self.max_log).exp()


class MinimumInScaleSpace(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.register_buffer("max_scale", torch.tensor(max_scale))

    def forward(self):
        return torch.minimum(self.log_scale.exp(), self.max_scale)


class WhereClamp(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.log(torch.tensor(init_scale)))
        self.limit = math.log(max_scale)

    def forward(self):
        capped = torch.where(self.log_scale > self.limit, torch.tensor(self.limit), self.log_scale)
        return torch.exp(capped)


class Float64Parameter(nn.Module):
    def __init__(self, init_scale=1 / 0.07, max_scale=100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(np.log(init_scale)))  # float64, like np.log
        self.max_log = np.log(max_scale)

    def forward(self):
        return torch.clamp(self.log_scale, max=self.max_log).exp()


# ----------------------------------------------------------------------------- zero_shot_logits


def zs_unnormalised_prompts(image_features, prompt_embeddings, logit_scale=100.0):
    classes = F.normalize(prompt_embeddings.mean(dim=1), dim=-1)
    return logit_scale * F.normalize(image_features, dim=-1) @ classes.T


def zs_mean_of_logits(image_features, prompt_embeddings, logit_scale=100.0):
    images = F.normalize(image_features, dim=-1)
    prompts = F.normalize(prompt_embeddings, dim=-1)
    per_prompt = logit_scale * torch.einsum("nd,cpd->ncp", images, prompts)
    return per_prompt.mean(dim=-1)


def zs_raw_images(image_features, prompt_embeddings, logit_scale=100.0):
    classes = F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(dim=1), dim=-1)
    return logit_scale * image_features @ classes.T


def zs_wrong_axis(image_features, prompt_embeddings, logit_scale=100.0):
    classes = F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(dim=0), dim=-1)
    return logit_scale * F.normalize(image_features, dim=-1) @ classes.T


def zs_loop(image_features, prompt_embeddings, logit_scale=100.0):
    images = image_features / image_features.norm(dim=-1, keepdim=True)
    columns = []
    for prompts in prompt_embeddings:  # (P, D) per class
        prompts = prompts / prompts.norm(dim=-1, keepdim=True)
        centre = prompts.mean(dim=0)
        columns.append(images @ (centre / centre.norm()))
    return logit_scale * torch.stack(columns, dim=1)


def zs_einsum(image_features, prompt_embeddings, logit_scale=100.0):
    unit_prompts = prompt_embeddings * prompt_embeddings.pow(2).sum(-1, keepdim=True).rsqrt()
    classes = unit_prompts.sum(dim=1)  # the sum points the same way as the mean
    classes = classes / classes.norm(dim=-1, keepdim=True)
    images = image_features / image_features.norm(dim=-1, keepdim=True)
    return torch.einsum("nd,cd->nc", images, classes) * logit_scale


# ----------------------------------------------------------------------------- modality_gap


def gap_raw(image_features, text_features):
    return (image_features.mean(0) - text_features.mean(0)).norm()


def gap_squared(image_features, text_features):
    diff = F.normalize(image_features, dim=1).mean(0) - F.normalize(text_features, dim=1).mean(0)
    return (diff**2).sum()


def gap_paired(image_features, text_features):
    return (F.normalize(image_features, dim=1) - F.normalize(text_features, dim=1)).norm(dim=1).mean()


def gap_vector(image_features, text_features):
    return F.normalize(image_features, dim=1).mean(0) - F.normalize(text_features, dim=1).mean(0)


def gap_dist(image_features, text_features):
    x = image_features / image_features.norm(dim=1, keepdim=True)
    y = text_features / text_features.norm(dim=1, keepdim=True)
    return torch.dist(x.mean(dim=0), y.mean(dim=0))


def gap_loop(image_features, text_features):
    centre_x = sum(v / v.norm() for v in image_features) / len(image_features)
    centre_y = sum(v / v.norm() for v in text_features) / len(text_features)
    return torch.sqrt(((centre_x - centre_y) ** 2).sum())


MUTANTS = {
    "contrastive.clip_loss": [
        (clip_one_direction, "only the image→text direction"),
        (clip_divides, "divided the similarities by the scale"),
        (clip_exp_twice, "exp() applied to logit_scale"),
        (clip_summed, "summed, not averaged"),
        (clip_naive_softmax, "exp() of large logits overflows"),
        (clip_item_scale, "no gradient reached `logit_scale`"),
        (clip_scales_in_place, "modified its input `image_features` in place"),
    ],
    "contrastive.siglip_loss": [
        (siglip_mean, "averaged over all N² pairs"),
        (siglip_no_bias, "logit_bias is left out"),
        (siglip_log_sigmoid_naive, "F.logsigmoid"),
        (siglip_zero_one_signs, "wrong value"),
    ],
    "contrastive.recall_at_k": [
        (recall_argsort, "ties are broken by position"),
        (recall_inclusive, "rank ≤ k"),
        (recall_first_positive, "only the first positive"),
        (recall_tensor, "not a Python float"),
        (recall_percent, "a percentage"),
    ],
    "contrastive.LearnableLogitScale": [
        (ScaleNotLog, "holds the scale itself"),
        (NoClamp, "no clamp"),
        (TemperatureInit, "log(0.07)"),
        (ClampsInPlace, "forward() changed the parameter"),
        (PlainTensor, "wrap it in nn.Parameter"),
    ],
    "contrastive.zero_shot_logits": [
        (zs_unnormalised_prompts, "averaged before each is L2-normalised"),
        (zs_mean_of_logits, "not renormalised"),
        (zs_raw_images, "image features are not L2-normalised"),
        (zs_wrong_axis, "wrong shape"),
    ],
    "contrastive.modality_gap": [
        (gap_raw, "not L2-normalised"),
        (gap_squared, "squared distance"),
        (gap_paired, "mean distance between paired embeddings"),
        (gap_vector, "return its L2 norm"),
    ],
}

CORRECT = {
    "contrastive.clip_loss": [clip_loop_logsumexp, clip_einsum_log_softmax, clip_renormalising],
    "contrastive.siglip_loss": [siglip_bce, siglip_softplus, siglip_loop],
    "contrastive.recall_at_k": [recall_loop, recall_numpy],
    "contrastive.LearnableLogitScale": [MinimumInScaleSpace, WhereClamp, Float64Parameter],
    "contrastive.zero_shot_logits": [zs_loop, zs_einsum],
    "contrastive.modality_gap": [gap_dist, gap_loop],
}
