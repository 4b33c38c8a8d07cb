"""Chapter 00 · start: the warm-up exercise and the environment check."""

from __future__ import annotations

import importlib
import platform

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """All-pairs cosine similarity between the rows of ``a`` (N, D) and ``b`` (M, D).

    Returns an (N, M) tensor whose entry (i, j) is a_i·b_j / (max(‖a_i‖, eps) · max(‖b_j‖, eps)),
    so a zero row gives similarities of 0, never NaN. Same dtype and device as the inputs.
    """
    a_unit = F.normalize(a, dim=-1, eps=eps)  # (N, D)
    b_unit = F.normalize(b, dim=-1, eps=eps)  # (M, D)
    return a_unit @ b_unit.T  # (N, M)


REQUIRED_PACKAGES = ("torch", "numpy", "matplotlib", "jupyterlab", "nbformat", "nbval", "pytest", "tqdm")


def environment_report() -> list[tuple[str, bool, str]]:
    """One (name, ok, detail) row per required package, then the Python version and the device."""
    rows = [("python", True, platform.python_version())]
    for name in REQUIRED_PACKAGES:
        try:
            module = importlib.import_module(name)
            rows.append((name, True, getattr(module, "__version__", "installed")))
        except ImportError as err:
            rows.append((name, False, f"missing ({err}); run `make lab` or `make test` to install"))
    if torch.cuda.is_available():
        rows.append(("device", True, f"CUDA: {torch.cuda.get_device_name(0)}"))
    else:
        rows.append(("device", True, f"CPU only ({torch.get_num_threads()} threads); that is enough"))
    return rows


def print_environment_report() -> bool:
    """Print ``[OK]``/``[FAIL]`` per row of :func:`environment_report`; return True if all are OK."""
    rows = environment_report()
    for name, ok, detail in rows:
        print(f"[{'OK' if ok else 'FAIL'}] {name:<11} {detail}")
    return all(ok for _, ok, _ in rows)
