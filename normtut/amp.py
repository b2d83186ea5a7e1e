r"""Loss scaling from scratch: :class:`GradScaler`, a drop-in for ``torch.amp.GradScaler``.

In float16 a gradient below :math:`2^{-24} \approx 6\times10^{-8}` rounds to zero. Loss scaling
(Micikevicius et al., 2018, "Mixed Precision Training") multiplies the loss by a scale
:math:`s` before ``backward()``, so every gradient is :math:`s` times larger and stays
representable, then divides the gradients by :math:`s` before the optimizer step. The scale is
*dynamic*:

* if any gradient is ``inf`` or ``NaN`` (the scale was too large and something overflowed),
  the step is **skipped** and :math:`s \leftarrow s \cdot \text{backoff\_factor}`;
* after ``growth_interval`` steps in a row without overflow,
  :math:`s \leftarrow s \cdot \text{growth\_factor}` (kept only if it is finite).

One iteration is ``scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()``;
``scaler.unscale_(optimizer)`` in between gives the true gradients (to clip them).

**Drop-in.** The same constructor, methods, errors and ``state_dict`` as ``torch.amp.GradScaler``
(device ``"cpu"`` or ``"cuda"``), and the same decisions step by step: which steps are skipped,
and the scale (a float32 tensor) and growth tracker after every ``update``. torch does the
check-and-unscale and the update in two fused kernels
(``_amp_foreach_non_finite_check_and_unscale_``, ``_amp_update_scale_``); here they are
written out with ordinary tensor operations.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from enum import Enum
from typing import Any

import torch
from torch import Tensor

__all__ = ["GradScaler", "OptState"]


class OptState(Enum):
    """Where an optimizer is in the iteration: nothing done, gradients unscaled, stepped."""

    READY = 0
    UNSCALED = 1
    STEPPED = 2


def _fresh_optimizer_state() -> dict[str, Any]:
    return {"stage": OptState.READY, "found_inf_per_device": {}}


class GradScaler:
    """Dynamic loss scaling (see the module docstring for the rule)."""

    def __init__(
        self,
        device: str = "cuda",
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        enabled: bool = True,
    ) -> None:
        self._device = device
        self._enabled = enabled
        if device == "cuda" and enabled and not torch.cuda.is_available():
            warnings.warn(
                "torch.cuda.amp.GradScaler is enabled, but CUDA is not available.  Disabling.",
                stacklevel=2,
            )
            self._enabled = False
        if self._enabled:
            if growth_factor <= 1.0:
                raise AssertionError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise AssertionError("The backoff factor must be < 1.0.")
            self._init_scale = init_scale
            self._scale: Tensor | None = None  # created on the loss's device at first scale()
            self._growth_factor = growth_factor
            self._backoff_factor = backoff_factor
            self._growth_interval = growth_interval
            self._init_growth_tracker = 0
            self._growth_tracker: Tensor | None = None  # steps in a row without overflow
            self._per_optimizer_states: dict[int, dict[str, Any]] = defaultdict(
                _fresh_optimizer_state
            )

    # --- scale ------------------------------------------------------------------------------

    def _check_initialized(self, funcname: str) -> tuple[Tensor, Tensor]:
        fix = (
            "This may indicate your script did not use scaler.scale(loss or outputs) earlier "
            "in the iteration."
        )
        if self._scale is None:
            raise AssertionError(f"Attempted {funcname} but _scale is None.  " + fix)
        if self._growth_tracker is None:
            raise AssertionError(f"Attempted {funcname} but _growth_tracker is None.  " + fix)
        return self._scale, self._growth_tracker

    def _lazy_init(self, device: torch.device) -> None:
        self._scale = torch.full((), self._init_scale, dtype=torch.float32, device=device)
        self._growth_tracker = torch.full(
            (), self._init_growth_tracker, dtype=torch.int32, device=device
        )

    def scale(self, outputs: Tensor | Iterable[Tensor]) -> Any:
        """Multiply ``outputs`` (a loss, or nested lists/tuples of them) by the scale."""
        if not self._enabled:
            return outputs
        copies: dict[torch.device, Tensor] = {}

        def apply(value: Any) -> Any:
            if isinstance(value, Tensor):
                if self._scale is None:
                    self._lazy_init(value.device)
                if value.device not in copies:
                    copies[value.device] = self._scale.to(value.device, non_blocking=True)
                return value * copies[value.device]
            if isinstance(value, Iterable):
                mapped = map(apply, value)
                return type(value)(mapped) if isinstance(value, (list, tuple)) else mapped
            raise ValueError("outputs must be a Tensor or an iterable of Tensors")

        return apply(outputs)

    # --- unscale ----------------------------------------------------------------------------

    @torch.no_grad()
    def _unscale_grads_(
        self, optimizer: torch.optim.Optimizer, inv_scale: Tensor, allow_fp16: bool
    ) -> dict[torch.device, Tensor]:
        """``g *= 1/s`` for every gradient; per device, 1.0 if any gradient was not finite."""
        found: dict[torch.device, Tensor] = {}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if not allow_fp16 and param.grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                if param.grad.is_sparse:
                    if param.grad.dtype is torch.float16:
                        param.grad = param.grad.coalesce()
                    grad = param.grad._values()
                else:
                    grad = param.grad
                device = grad.device
                if device not in found:
                    found[device] = torch.zeros((), dtype=torch.float32, device=device)
                bad = ~torch.isfinite(grad).all()
                found[device] = torch.where(bad, torch.ones_like(found[device]), found[device])
                inv = inv_scale.to(device)
                if grad.dtype in (torch.float16, torch.bfloat16):  # the product in float32
                    grad.copy_(grad.float() * inv)
                else:
                    grad.mul_(inv)
        return found

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, in place, once per iteration."""
        if not self._enabled:
            return
        self._check_initialized("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.UNSCALED:
            raise RuntimeError(
                "unscale_() has already been called on this optimizer since the last update()."
            )
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        # 1/s computed in double and rounded once, as torch does
        inv_scale = self._scale.double().reciprocal().float()
        state["found_inf_per_device"] = self._unscale_grads_(optimizer, inv_scale, False)
        state["stage"] = OptState.UNSCALED

    # --- step and update ----------------------------------------------------------------------

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """Unscale (if not done yet), then ``optimizer.step()`` unless a gradient overflowed."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_initialized("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] is OptState.STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            return self._fused_step(optimizer, state, *args, **kwargs)
        if state["stage"] is OptState.READY:
            self.unscale_(optimizer)
        if len(state["found_inf_per_device"]) == 0:
            raise AssertionError("No inf checks were recorded for this optimizer.")
        result = None
        if not sum(v.item() for v in state["found_inf_per_device"].values()):
            result = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        return result

    def _fused_step(self, optimizer: Any, state: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """A fused torch optimizer unscales and skips by itself: hand it the scale and the flag."""
        if state["stage"] is OptState.READY:
            one = torch.ones((), dtype=torch.float32, device=self._scale.device)
            state["found_inf_per_device"] = self._unscale_grads_(optimizer, one, True)
        found_inf = sum(t.to(self._scale.device) for t in state["found_inf_per_device"].values())
        optimizer.grad_scale = (
            getattr(optimizer, "grad_scale", None)
            if state["stage"] == OptState.UNSCALED
            else self._scale * getattr(optimizer, "grad_scale", 1)
        )
        optimizer.found_inf = found_inf
        result = optimizer.step(*args, **kwargs)
        state["stage"] = OptState.STEPPED
        del optimizer.grad_scale
        del optimizer.found_inf
        return result

    @torch.no_grad()
    def update(self, new_scale: float | Tensor | None = None) -> None:
        """Back off after an overflow, grow after ``growth_interval`` clean steps (or set
        ``new_scale``); then start a new iteration."""
        if not self._enabled:
            return
        scale, tracker = self._check_initialized("update")
        if new_scale is not None:
            if isinstance(new_scale, float):
                scale.fill_(new_scale)
            else:
                reason = (
                    "new_scale should be a float or a 1-element torch.cuda.FloatTensor or "
                    "torch.FloatTensor with requires_grad=False."
                )
                if new_scale.device.type != self._device:
                    raise AssertionError(reason)
                if new_scale.numel() != 1:
                    raise AssertionError(reason)
                if new_scale.requires_grad is True:
                    raise AssertionError(reason)
                scale.copy_(new_scale)
        else:
            found = [
                inf.to(scale.device)
                for state in self._per_optimizer_states.values()
                for inf in state["found_inf_per_device"].values()
            ]
            if len(found) == 0:
                raise AssertionError("No inf checks were recorded prior to update.")
            overflow = bool(sum(found).item())
            if overflow:  # s <- s * backoff (the product in double, rounded to float32)
                scale.fill_(float(scale.double() * self._backoff_factor))
                tracker.fill_(0)
            elif int(tracker) + 1 == self._growth_interval:
                grown = torch.tensor(float(scale.double() * self._growth_factor)).float()
                if torch.isfinite(grown):
                    scale.fill_(grown.item())
                tracker.fill_(0)
            else:
                tracker.add_(1)
        self._per_optimizer_states = defaultdict(_fresh_optimizer_state)

    # --- getters, setters, checkpoints ------------------------------------------------------------

    def get_scale(self) -> float:
        if self._enabled:
            return self._init_scale if self._scale is None else float(self._scale.item())
        return 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = new_factor

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = new_factor

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = new_interval

    def _get_growth_tracker(self) -> int:
        if self._enabled:
            if self._growth_tracker is None:
                return self._init_growth_tracker
            return int(self._growth_tracker.item())
        return 0

    def is_enabled(self) -> bool:
        return self._enabled

    def state_dict(self) -> dict[str, Any]:
        """``scale``, ``growth_factor``, ``backoff_factor``, ``growth_interval`` and
        ``_growth_tracker``, as torch's (empty when disabled)."""
        if not self._enabled:
            return {}
        return {
            "scale": self.get_scale(),
            "growth_factor": self._growth_factor,
            "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval,
            "_growth_tracker": self._get_growth_tracker(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError(
                "The source state dict is empty, possibly because it was saved from a disabled "
                "instance of GradScaler."
            )
        self._init_scale = state_dict["scale"]
        if self._scale is not None:
            self._scale.fill_(state_dict["scale"])
        self._growth_factor = state_dict["growth_factor"]
        self._backoff_factor = state_dict["backoff_factor"]
        self._growth_interval = state_dict["growth_interval"]
        self._init_growth_tracker = state_dict["_growth_tracker"]
        if self._growth_tracker is not None:
            self._growth_tracker.fill_(state_dict["_growth_tracker"])

    def __getstate__(self) -> dict[str, Any]:
        """Picklable between iterations: the tensors are saved as numbers (torch's rule)."""
        state = self.__dict__.copy()
        if self._enabled:
            if len(self._per_optimizer_states) != 0:
                raise AssertionError(
                    "A GradScaler instance may only be pickled at the beginning of an iteration, "
                    "or at the end after scaler.update()."
                )
            state["_init_scale"] = self.get_scale()
            state["_init_growth_tracker"] = self._get_growth_tracker()
            state["_scale"] = None
            state["_growth_tracker"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
