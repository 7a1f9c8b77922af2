"""Corrections to `onnx.reference` for the float64 oracle of test_conformance.py.

- AffineGrid: computed in float32 whatever the input type.
- Erf, Gelu: onnx 1.23's evaluator computes Erf in float32 whatever the input type, so central
  differences of Erf (and of Gelu, whose function body uses Erf) drown in rounding noise.
- MeanVarianceNormalization: its body's float32 constants stop a float64 run.
- GlobalLpPool: missing.
- GridSample: pixel coordinates in float32.
- LinearAttention: accumulated in float32.
- LpNormalization: with p = 1 it divides by the plain sum, not the sum of |x|.
- LRN: onnx 1.23's evaluator loops over the batch dim where the spec sums over channels, so only
  channel 0 of a batch of one is normalised. Written here from the spec's formula.
"""

from __future__ import annotations

import math

import numpy as np
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_grid_sample import GridSample as ReferenceGridSample


class Erf(OpRun):
    op_domain = ""

    def _run(self, x):
        return (np.vectorize(math.erf, otypes=[x.dtype])(x),)


class Gelu(OpRun):
    """Also its own: the evaluator expands Gelu's function body without the fixed Erf."""

    op_domain = ""

    def _run(self, x, approximate="none"):
        if approximate == "tanh":
            inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
            return (0.5 * x * (1 + np.tanh(inner)),)
        return (0.5 * x * (1 + Erf._run(self, x / math.sqrt(2))[0]),)


class GridSample(ReferenceGridSample):
    """onnx 1.23's evaluator turns grid coordinates into pixels in float32."""

    op_domain = ""

    def _gs_denormalize_coordinates(self, n, dims, align_corners: bool):
        return np.asarray([self._gs_denormalize(n=v, length=dim, align_corners=align_corners)
                           for v, dim in zip(n, dims, strict=False)], np.float64)


class LinearAttention(OpRun):
    """onnx 1.23's evaluator accumulates in float32. From the spec, per step t and KV head:
    S <- S * exp(g_t) (gated rules), v_t <- beta_t (v_t - S^T k_t) (delta rules),
    S <- S + k_t v_t^T, o_t = scale * q_t S (query heads share their group's state)."""

    op_domain = ""

    def _run(self, query, key, value, past_state=None, decay=None, beta=None, chunk_size=None,
             kv_num_heads=None, q_num_heads=None, scale=None, update_rule="gated_delta"):
        batch, steps, _ = query.shape
        d_k, d_v = query.shape[-1] // q_num_heads, value.shape[-1] // kv_num_heads

        def heads(x, count):  # (B, T, H*D) -> (B, H, T, D)
            return x.reshape(batch, steps, count, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(query, q_num_heads), heads(key, kv_num_heads), heads(value, kv_num_heads)
        state = np.zeros((batch, kv_num_heads, d_k, d_v)) if past_state is None else \
            past_state.astype(np.float64)
        scale = scale or 1.0 / math.sqrt(d_k)
        out = np.zeros((batch, q_num_heads, steps, d_v))
        group = q_num_heads // kv_num_heads
        for t in range(steps):
            v_t = v[:, :, t]
            if update_rule in ("gated", "gated_delta"):
                state = state * np.exp(heads(decay, kv_num_heads)[:, :, t])[..., None]
            if update_rule in ("delta", "gated_delta"):
                recalled = np.einsum("bhkv,bhk->bhv", state, k[:, :, t])
                v_t = heads(beta, kv_num_heads)[:, :, t] * (v_t - recalled)
            state = state + k[:, :, t, :, None] * v_t[:, :, None, :]
            out[:, :, t] = scale * np.einsum("bhk,bhkv->bhv", q[:, :, t],
                                             np.repeat(state, group, axis=1))
        return out.transpose(0, 2, 1, 3).reshape(batch, steps, -1), state


class LRN(OpRun):
    op_domain = ""

    def _run(self, x, alpha=None, beta=None, bias=None, size=None):
        # square_sum[n, c] = sum of x[n, i]^2 for i in
        # [max(0, c - floor((size - 1) / 2)), min(C - 1, c + ceil((size - 1) / 2))]
        channels = x.shape[1]
        square_sum = np.zeros_like(x)
        for c in range(channels):
            low = max(0, c - math.floor((size - 1) / 2))
            high = min(channels - 1, c + math.ceil((size - 1) / 2))
            square_sum[:, c] = np.sum(x[:, low:high + 1] ** 2, axis=1)
        return (x / (bias + alpha / size * square_sum) ** beta,)


class MeanVarianceNormalization(OpRun):
    """Its function body's float32 constants stop the evaluator in float64."""

    op_domain = ""

    def _run(self, x, axes=None):
        axes = tuple(axes if axes is not None else (0, 2, 3))
        mean = np.mean(x, axis=axes, keepdims=True)
        variance = np.mean(x * x, axis=axes, keepdims=True) - mean * mean
        return ((x - mean) / (np.sqrt(variance) + 1e-9),)


class LpNormalization(OpRun):
    """onnx 1.23's evaluator divides by the plain sum for p = 1, not the sum of |x|."""

    op_domain = ""

    def _run(self, x, axis=-1, p=2):
        norm = np.sum(np.abs(x) ** p, axis=axis, keepdims=True) ** (1.0 / p)
        return (x / norm,)


class GlobalLpPool(OpRun):
    """Missing from onnx 1.23's evaluator."""

    op_domain = ""

    def _run(self, x, p=2):
        axes = tuple(range(2, x.ndim))
        return (np.sum(np.abs(x) ** p, axis=axes, keepdims=True) ** (1.0 / p),)


class AffineGrid(OpRun):
    """onnx 1.23's evaluator computes in float32 whatever theta's type. From the spec: pixel
    centres in [-1, 1] (the corner centres at +-1 with align_corners), x along the last dim,
    each mapped by theta[n] @ (x, y[, z], 1)."""

    op_domain = ""

    def _run(self, theta, size, align_corners=0):
        spatial = [int(s) for s in size[2:]]

        def centres(n: int) -> np.ndarray:
            if align_corners:
                return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
            return np.array([(2.0 * i + 1.0) / n - 1.0 for i in range(n)])

        grid = np.zeros((theta.shape[0], *spatial, len(spatial)))
        for index in np.ndindex(*spatial):
            point = [centres(spatial[d])[index[d]] for d in reversed(range(len(spatial)))]
            for n in range(theta.shape[0]):
                grid[(n, *index)] = theta[n] @ np.array([*point, 1.0])
        return (grid,)


FLOAT64_FIXES = [AffineGrid, Erf, Gelu, GlobalLpPool, GridSample, LRN, LinearAttention,
                 LpNormalization, MeanVarianceNormalization]
