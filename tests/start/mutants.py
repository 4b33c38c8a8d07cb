"""Mutants and other-style correct solutions for chapter 00."""

import torch
import torch.nn.functional as F


def dot_products(a, b, eps=1e-8):
    return a @ b.T


def norm_without_eps(a, b, eps=1e-8):
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


def column_normalised(a, b, eps=1e-8):
    return F.normalize(a, dim=0) @ F.normalize(b, dim=0).T


def swapped(a, b, eps=1e-8):
    return F.normalize(b, dim=1) @ F.normalize(a, dim=1).T


def loop(a, b, eps=1e-8):
    out = torch.empty(a.shape[0], b.shape[0], dtype=a.dtype)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = (a[i] * b[j]).sum() / (max(a[i].norm(), eps) * max(b[j].norm(), eps))
    return out


def einsum_product_of_norms(a, b, eps=1e-8):
    dots = torch.einsum("nd,md->nm", a, b)
    norms = torch.einsum("n,m->nm", a.norm(dim=1), b.norm(dim=1))
    return dots / norms.clamp_min(eps)


def broadcast_builtin(a, b, eps=1e-8):
    return F.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1, eps=eps)


MUTANTS = {
    "start.cosine_similarity_matrix": [
        (dot_products, "not L2-normalised"),
        (norm_without_eps, "zero norm"),
        (column_normalised, "dim 0"),
        (swapped, "transposed"),
    ],
}
CORRECT = {"start.cosine_similarity_matrix": [loop, einsum_product_of_norms, broadcast_builtin]}
