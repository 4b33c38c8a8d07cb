"""Chapter 00 · start: the environment check that notebook 00 runs first."""

from __future__ import annotations

import importlib
import platform

import torch

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
