"""Mutants and other-style correct solutions for chapter 10: zero_memory_bytes and DynamicLossScaler.

Each is written the way a learner would write it, independently of the checks' own models of known mistakes.
"""

import math

import torch

# ----------------------------------------------------------------------------- zero_memory_bytes: mutants


def _validate(stage, world_size):
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"unknown ZeRO stage {stage}")
    if world_size < 1:
        raise ValueError("world_size must be >= 1")


def zero_in_gb(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = num_params, optimizer_multiplier, world_size
    per_stage = [4 * psi + k * psi, 4 * psi + k * psi / n, 2 * psi + (2 + k) * psi / n, (4 + k) * psi / n]
    return per_stage[stage] / 1e9  # "the paper quotes GB"


def zero_in_gib(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    per_stage = [4 * psi + k * psi, 4 * psi + k * psi / n, 2 * psi + (2 + k) * psi / n, (4 + k) * psi / n]
    return per_stage[stage] / 1024**3


def zero_stage1_shards_gradients(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    if stage == 0:
        return (2 + 2 + k) * psi
    if stage in (1, 2):  # "ZeRO-1 and ZeRO-2 both shard gradients and optimizer states"
        return 2 * psi + (2 + k) * psi / n
    return (2 + 2 + k) * psi / n


def zero_stage2_shards_parameters(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    if stage == 0:
        return (2 + 2 + k) * psi
    if stage == 1:
        return 4 * psi + k * psi / n
    return (2 + 2 + k) * psi / n  # stages 2 and 3 "shard everything"


def zero_stage3_keeps_parameters(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    params = 2 * psi  # the fp16 weights are needed for forward, so they stay on every device
    grads = 2 * psi if stage < 2 else 2 * psi / n
    states = k * psi if stage < 1 else k * psi / n
    return params + grads + states


def zero_fixed_adam_states(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, n = float(num_params), world_size
    states = 4 * psi + 4 * psi + 4 * psi  # fp32 master weights, momentum, variance
    fp16 = [2 * psi, 2 * psi]
    if stage >= 1:
        states /= n
    if stage >= 2:
        fp16[1] /= n
    if stage >= 3:
        fp16[0] /= n
    return fp16[0] + fp16[1] + states


def zero_deepspeed_estimator(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    if stage == 2:  # DeepSpeed's estimate_zero2_model_states_mem_needs(cpu_offload=False)
        return 4 * psi + 16 * psi / n
    return [4 * psi + k * psi, 4 * psi + k * psi / n, None, (4 + k) * psi / n][stage]


def zero_integer_division(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = int(num_params), optimizer_multiplier, world_size
    sharded = {0: 0, 1: k * psi, 2: (2 + k) * psi, 3: (4 + k) * psi}[stage]
    return float((4 + k) * psi - sharded + sharded // n)


def zero_total_over_devices(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    shards = {0: (1, 1, 1), 1: (1, 1, n), 2: (1, n, n), 3: (n, n, n)}[stage]
    per_device = 2 * psi / shards[0] + 2 * psi / shards[1] + k * psi / shards[2]
    return per_device * n  # "memory of the whole cluster"


def zero_without_validation(num_params, stage, world_size, optimizer_multiplier=12):
    psi, k, n = float(num_params), optimizer_multiplier, max(world_size, 1)
    if stage == 0:
        return 16 * psi if k == 12 else (4 + k) * psi
    if stage == 1:
        return 4 * psi + k * psi / n
    if stage == 2:
        return 2 * psi + (2 + k) * psi / n
    return (4 + k) * psi / n  # any other stage: "full sharding"


def zero_int_result(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = num_params, optimizer_multiplier, world_size
    if stage == 0:
        return 2 * psi + 2 * psi + k * psi  # an int for an int num_params
    if stage == 1:
        return 2 * psi + 2 * psi + k * psi / n
    if stage == 2:
        return 2 * psi + (2 + k) * psi / n
    return (2 + 2 + k) * psi / n


def zero_rounded(num_params, stage, world_size, optimizer_multiplier=12):
    _validate(stage, world_size)
    psi, k, n = float(num_params), optimizer_multiplier, world_size
    per_stage = [4 * psi + k * psi, 4 * psi + k * psi / n, 2 * psi + (2 + k) * psi / n, (4 + k) * psi / n]
    return float(round(per_stage[stage]))  # "whole bytes"


# ----------------------------------------------------------------------------- zero_memory_bytes: correct


def zero_table_of_flags(num_params, stage, world_size, optimizer_multiplier=12):
    """A table of (parameters, gradients, optimizer states) partition flags per stage."""
    partitioned = {
        0: (False, False, False),
        1: (False, False, True),
        2: (False, True, True),
        3: (True, True, True),
    }
    if stage not in partitioned or world_size < 1:
        raise ValueError("stage must be 0-3 and world_size >= 1")
    bytes_per_param = (2, 2, optimizer_multiplier)
    total = 0.0
    for per_param, split in zip(bytes_per_param, partitioned[stage], strict=True):
        total += per_param * num_params / (world_size if split else 1)
    return total


def zero_loop_over_components(num_params, stage, world_size, optimizer_multiplier=12):
    """A loop over the three components, each with the first stage that partitions it."""
    if not 0 <= stage <= 3:
        raise ValueError(stage)
    if world_size <= 0:
        raise ValueError(world_size)
    components = [("optimizer states", optimizer_multiplier, 1), ("fp16 gradients", 2, 2), ("fp16 parameters", 2, 3)]
    memory = 0.0
    for _name, bytes_per_param, first_stage in components:
        share = 1 / world_size if stage >= first_stage else 1.0
        memory += bytes_per_param * float(num_params) * share
    return memory


def zero_paper_formulas(num_params, stage, world_size, optimizer_multiplier=12):
    """The four formulas of the paper, written out (Ψ as an int stays exact until the division)."""
    if stage not in range(4) or world_size < 1:
        raise ValueError("bad arguments")
    psi, k, nd = num_params, optimizer_multiplier, world_size
    formulas = {
        0: lambda: (2 + 2 + k) * psi,
        1: lambda: 2 * psi + 2 * psi + k * psi / nd,
        2: lambda: 2 * psi + (2 + k) * psi / nd,
        3: lambda: (2 + 2 + k) * psi / nd,
    }
    return float(formulas[stage]())


# ----------------------------------------------------------------------------- DynamicLossScaler: a correct base


class _Scaler:
    """A correct scaler whose pieces the mutants override one at a time."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = init_scale
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.growth_tracker = 0

    def scale_loss(self, loss):
        return loss * self.scale

    def _grads(self, optimizer):
        return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def _unscale(self, grads):
        for g in grads:
            g.div_(self.scale)

    def _overflow(self, grads):
        return any(not torch.isfinite(g).all() for g in grads)

    def _update(self, overflow):
        if overflow:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0

    def step(self, optimizer):
        grads = self._grads(optimizer)
        with torch.no_grad():
            self._unscale(grads)
        overflow = self._overflow(grads)
        if not overflow:
            optimizer.step()
        self._update(overflow)
        return not overflow


# ----------------------------------------------------------------------------- DynamicLossScaler: mutants


class ScalerNeverUnscales(_Scaler):
    def _unscale(self, grads):
        pass  # "the optimizer sees the scaled gradients; the overflow test is what matters"


class ScalerUnscalesTwice(_Scaler):
    def step(self, optimizer):
        grads = self._grads(optimizer)
        with torch.no_grad():
            self._unscale(grads)  # unscale_() ...
        if self._overflow(grads):
            self._update(True)
            return False
        for g in grads:
            g /= self.scale  # ... and again "before the optimizer step"
        optimizer.step()
        self._update(False)
        return True


class ScalerStepsOnOverflow(_Scaler):
    def step(self, optimizer):
        grads = self._grads(optimizer)
        with torch.no_grad():
            self._unscale(grads)
        overflow = self._overflow(grads)
        optimizer.step()  # always step; only the scale reacts to the overflow
        self._update(overflow)
        return not overflow


class ScalerIsinfOnly(_Scaler):
    def _overflow(self, grads):
        return any(torch.isinf(g).any() for g in grads)


class ScalerTrackerKeptAfterOverflow(_Scaler):
    def _update(self, overflow):
        if overflow:
            self.scale *= self.backoff_factor  # the tracker is left as it was
            return
        super()._update(overflow)


class ScalerTrackerKeptAfterGrowth(_Scaler):
    def _update(self, overflow):
        if overflow:
            super()._update(overflow)
            return
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor


class ScalerGrowsAboveInterval(_Scaler):
    def _update(self, overflow):
        if overflow:
            super()._update(overflow)
            return
        self.growth_tracker += 1
        if self.growth_tracker > self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0


class ScalerChecksBeforeCounting(_Scaler):
    def _update(self, overflow):
        if overflow:
            super()._update(overflow)
            return
        if self.growth_tracker == self.growth_interval:
            self.scale *= self.growth_factor
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1


class ScalerBacksOffWithGrowthFactor(_Scaler):
    def _update(self, overflow):
        if overflow:
            self.scale *= self.growth_factor  # the wrong factor
            self.growth_tracker = 0
            return
        super()._update(overflow)


class ScalerForgetsScale(_Scaler):
    def scale_loss(self, loss):
        self.last_loss = loss
        return loss  # "backward() applies the scale"


class ScalerScalesTwice(_Scaler):
    def scale_loss(self, loss):
        scaled = loss * self.scale
        return scaled * self.scale


class ScalerPrivateNames:
    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self._scale = init_scale
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval = growth_interval
        self._growth_tracker = 0

    def scale_loss(self, loss):
        return loss * self._scale

    def step(self, optimizer):
        raise AssertionError("never reached: the attributes are read first")


class ScalerOtherKeywords(_Scaler):
    def __init__(self, scale=2.0**16, growth=2.0, backoff=0.5, interval=2000):
        super().__init__(scale, growth, backoff, interval)


class ScalerReturnsOverflowFlag(_Scaler):
    def step(self, optimizer):
        stepped = super().step(optimizer)
        return not stepped  # "found_inf"


# ----------------------------------------------------------------------------- DynamicLossScaler: correct


class ScalerForeachKernel:
    """torch's own unscale-and-check kernel (it runs on CPU), the scale kept as a tensor internally."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self._scale = torch.full((), init_scale, dtype=torch.float32)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.growth_tracker = 0

    @property
    def scale(self):
        return self._scale.item()

    def scale_loss(self, loss):
        return loss * self._scale.to(loss.dtype)

    def step(self, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        found_inf = torch.zeros((), dtype=torch.float32)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self._scale.double().reciprocal().float())
        if found_inf.item():
            self._scale *= self.backoff_factor
            self.growth_tracker = 0
            return False
        optimizer.step()
        self.growth_tracker += 1
        if self.growth_tracker == self.growth_interval:
            self._scale *= self.growth_factor
            self.growth_tracker = 0
        return True


class ScalerUnskippedProperty:
    """Keeps the count as `_unskipped` (apex's name) and exposes growth_tracker as a property."""

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = float(init_scale)
        self._factors = {"up": growth_factor, "down": backoff_factor}
        self._window = growth_interval
        self._unskipped = 0

    @property
    def growth_tracker(self):
        return self._unskipped

    def scale_loss(self, loss):
        return self.scale * loss

    def step(self, optimizer):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(1.0 / self.scale)
        finite = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        if finite:
            optimizer.step()
            self._unskipped += 1
            if self._unskipped >= self._window:
                self.scale, self._unskipped = self.scale * self._factors["up"], 0
        else:
            self.scale, self._unskipped = self.scale * self._factors["down"], 0
        return bool(finite)


class ScalerGradSums:
    """An overflow test with math.isfinite on each gradient's sum (inf and NaN both propagate into a sum)."""

    def __init__(self, init_scale=65536.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = init_scale
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.growth_tracker = 0

    def scale_loss(self, loss):
        return loss.mul(self.scale)

    def step(self, optimizer):
        overflow = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.grad.data /= self.scale
                if not math.isfinite(p.grad.sum().item()):
                    overflow = True
        if overflow:
            self.scale = self.scale * self.backoff_factor
            self.growth_tracker = 0
            return False
        optimizer.step()
        self.growth_tracker = self.growth_tracker + 1
        if self.growth_tracker == self.growth_interval:
            self.scale = self.scale * self.growth_factor
            self.growth_tracker = 0
        return True


MUTANTS = {
    "scaling.zero_memory_bytes": [
        (zero_in_gb, "bytes converted to GB"),
        (zero_in_gib, "bytes converted to GiB"),
        (zero_stage1_shards_gradients, "stage 1 partitions the gradients too"),
        (zero_stage2_shards_parameters, "stage 2 partitions the fp16 parameters too"),
        (zero_stage3_keeps_parameters, "stage 3 leaves the fp16 parameters unpartitioned"),
        (zero_fixed_adam_states, "optimizer_multiplier is ignored"),
        (zero_deepspeed_estimator, "DeepSpeed's estimate_zero2_model_states_mem_needs"),
        (zero_integer_division, "integer division"),
        (zero_total_over_devices, "the total over all N_d devices"),
        (zero_without_validation, "where the contract raises ValueError"),
        (zero_int_result, "returned int, not a Python float"),
        (zero_rounded, "the result was rounded"),
    ],
    "scaling.DynamicLossScaler": [
        (ScalerNeverUnscales, "the gradients were never unscaled"),
        (ScalerUnscalesTwice, "the unscale divides twice"),
        (ScalerStepsOnOverflow, "stepping on overflow"),
        (ScalerIsinfOnly, "NaN is not treated as an overflow"),
        (ScalerTrackerKeptAfterOverflow, "growth_tracker was not reset to 0 after an overflow"),
        (ScalerTrackerKeptAfterGrowth, "growth_tracker was not reset to 0 after the scale grew"),
        (ScalerGrowsAboveInterval, "the scale grows one step late"),
        (ScalerChecksBeforeCounting, "the scale grows one step late"),
        (ScalerBacksOffWithGrowthFactor, "the scale grew on an overflow"),
        (ScalerForgetsScale, "without the scale"),
        (ScalerScalesTwice, "applied the scale twice"),
        (ScalerPrivateNames, "no attribute `scale`"),
        (ScalerOtherKeywords, "the constructor takes the contract's keywords"),
        (ScalerReturnsOverflowFlag, "not the overflow flag itself"),
    ],
}

CORRECT = {
    "scaling.zero_memory_bytes": [zero_table_of_flags, zero_loop_over_components, zero_paper_formulas],
    "scaling.DynamicLossScaler": [ScalerForeachKernel, ScalerUnskippedProperty, ScalerGradSums],
}
