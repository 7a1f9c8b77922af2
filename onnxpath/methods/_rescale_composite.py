"""DeepLIFT rules for Softmax and LayerNormalization, which take a whole axis at once: the
elementwise, product and quotient rules of `_rescale_rules` applied to each op's decomposition
into primitive ops, as SHAP's DeepExplainer (Lundberg & Lee 2017) applies them to a graph that
spells these ops out. Each step's multiplier satisfies Δout = Σ m Δin, so the composite does
too: summation-to-delta holds through them (up to EPS fallbacks).
"""

from __future__ import annotations

import math

from onnxpath.autodiff import GraphBuilder, Node
from onnxpath.autodiff.rules import RULES
from onnxpath.methods._rescale_rules import change, pair_shares, per_change, reference


def rescale_softmax(node: Node, dy, b: GraphBuilder):
    """softmax(x) = e / S with e = exp(x − c), S = Σ e over the axis.

    c = max(max x, max x') is one shift for both runs: softmax ignores it, exp cannot overflow,
    and Δ(x − c) = Δx, so the shift needs no rule of its own (DeepExplainer shifts each run by
    its own max and rescales afterwards). Backward: the quotient's Shapley shares for e and S,
    the sum's adjoint broadcast back to e, exp's rescale multiplier Δe/Δx."""
    x = node.inputs[0]
    if not b.needs(x):
        return RULES[node.op_type](node, dy, b)
    axes = [node.attr("axis", -1) % b.rank(x)]
    shift = b.op("Max", b.reduce("ReduceMax", x, axes), b.reduce("ReduceMax", reference(x), axes))
    e = b.op("Exp", b.op("Sub", x, shift))
    e_ref = b.op("Exp", b.op("Sub", reference(x), shift))
    total, total_ref = b.reduce_sum(e, axes), b.reduce_sum(e_ref, axes)
    share_e, share_total = pair_shares(b, "Div", e, e_ref, total, total_ref)
    delta_e, small_e, safe_e = change(b, e, e_ref)
    g_e = per_change(b, b.op("Mul", dy[0], share_e), safe_e, small_e, b.op("Div", dy[0], total))
    _, small_t, safe_t = change(b, total, total_ref)
    # The quotient's gradient with respect to S: −Σ dy · e / S².
    slope_t = b.op("Neg", b.reduce_sum(b.op("Div", b.op("Mul", dy[0], e),
                                            b.op("Mul", total, total)), axes))
    g_total = per_change(b, b.reduce_sum(b.op("Mul", dy[0], share_total), axes), safe_t,
                         small_t, slope_t)
    g_e = b.op("Add", g_e, g_total)  # the sum hands its multiplier to every e
    _, small_x, safe_x = change(b, x)
    return [per_change(b, b.op("Mul", g_e, delta_e), safe_x, small_x, b.op("Mul", g_e, e))]


def rescale_layer_norm(node: Node, dy, b: GraphBuilder):
    """y = u / σ · scale + B with u = x − mean(x), σ = sqrt(mean(u²) + ε), over the axes from
    `axis` on. Backward: the quotient's Shapley shares for u and σ, sqrt's rescale multiplier
    Δσ/Δv, the square's exact multiplier u + u' (u² − u'² = (u + u')(u − u')), the mean's
    adjoint, and centring's (linear) adjoint g − mean(g). The scale and bias must be fixed."""
    x, scale = node.inputs[0], node.inputs[1]
    gradient = RULES[node.op_type](node, dy, b)
    extra_outputs = any(g is not None for g in dy[1:])
    if not b.needs(x) or extra_outputs or any(b.needs(i) for i in node.inputs[1:] if i):
        return gradient
    rank = b.rank(x)
    axes = list(range(node.attr("axis", -1) % rank, rank))
    count = math.prod(b.static_shape(x, axes[0]))
    epsilon = b.scalar(node.attr("epsilon", 1e-5))

    def centred_and_sigma(t: str) -> tuple[str, str, str]:
        u = b.op("Sub", t, b.reduce("ReduceMean", t, axes))
        v = b.reduce("ReduceMean", b.op("Mul", u, u), axes)
        return u, v, b.op("Sqrt", b.op("Add", v, epsilon))

    u, v, sigma = centred_and_sigma(x)
    u_ref, v_ref, sigma_ref = centred_and_sigma(reference(x))
    g_r = b.op("Mul", dy[0], scale)
    share_u, share_sigma = pair_shares(b, "Div", u, u_ref, sigma, sigma_ref)
    _, small_u, safe_u = change(b, u, u_ref)
    g_u = per_change(b, b.op("Mul", g_r, share_u), safe_u, small_u, b.op("Div", g_r, sigma))
    delta_sigma, small_s, safe_s = change(b, sigma, sigma_ref)
    slope_s = b.op("Neg", b.reduce_sum(b.op("Div", b.op("Mul", g_r, u),
                                            b.op("Mul", sigma, sigma)), axes))
    g_sigma = per_change(b, b.reduce_sum(b.op("Mul", g_r, share_sigma), axes), safe_s, small_s,
                         slope_s)
    _, small_v, safe_v = change(b, v, v_ref)
    g_v = per_change(b, b.op("Mul", g_sigma, delta_sigma), safe_v, small_v,
                     b.op("Div", g_sigma, b.op("Mul", sigma, b.scalar(2.0))))
    squares = b.op("Mul", b.op("Add", u, u_ref), b.scalar(1.0 / count))
    g_u = b.op("Add", g_u, b.op("Mul", g_v, squares))
    g_x = b.op("Sub", g_u, b.reduce("ReduceMean", g_u, axes))
    return [g_x, *[None] * (len(node.inputs) - 1)]
