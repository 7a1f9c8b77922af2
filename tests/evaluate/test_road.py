"""ROAD's noisy linear imputation against scipy's sparse direct solve, and the protocol on a
model where only one pixel matters."""

import numpy as np
import pytest
from eval_models import model_forward, one_pixel_model
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from onnxpath.evaluate.multigrid import (
    CoarseGrids,
    ImageLevel,
    StencilLevel,
    coarse_size,
    galerkin,
    mask_cycle,
    neighbour_sum,
    prolong,
    restrict,
)
from onnxpath.evaluate.perturbation import softmax
from onnxpath.evaluate.road import impute, road

NEIGHBOURS = [((dy, dx), 1 / 12 if dy and dx else 1 / 6)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def spsolve_imputation(image, removed):
    """ROAD's own construction: one equation per removed pixel, solved by spsolve."""
    c, h, w = image.shape
    unknown = np.flatnonzero(removed.ravel())
    index = {p: k for k, p in enumerate(unknown)}
    a = lil_matrix((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for k, p in enumerate(unknown):
        r, col = divmod(p, w)
        for (dy, dx), weight in NEIGHBOURS:
            rr, cc = r + dy, col + dx
            if 0 <= rr < h and 0 <= cc < w:
                a[k, k] += weight
                q = rr * w + cc
                if q in index:
                    a[k, index[q]] -= weight
                else:
                    b[k] += weight * image[:, rr, cc]
    out = image.reshape(c, -1).copy()
    out[:, unknown] = spsolve(a.tocsc(), b).reshape(len(unknown), c).T
    return out.reshape(c, h, w)


@pytest.mark.parametrize("pattern", ["random", "blob", "border"])
def test_imputation_matches_spsolve(pattern):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 20, 24))
    rows, cols = np.mgrid[0:20, 0:24]
    removed = {"random": rng.random((20, 24)) < 0.6,
               "blob": (rows - 9) ** 2 + (cols - 12) ** 2 < 60,
               "border": (rows < 3) | (cols > 20)}[pattern]
    exact = spsolve_imputation(image, removed)
    tight = impute(image[None].astype(np.float64), removed[None], noise=0.0, tolerance=1e-9)[0]
    np.testing.assert_allclose(tight, exact, atol=1e-5)
    # The default tolerance stays far below the imputation noise (std 0.01).
    default = impute(image[None], removed[None], noise=0.0)[0]
    np.testing.assert_allclose(default, exact, atol=1e-3)


def test_noise_is_added_to_removed_pixels_only():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 3, 32, 32))
    removed = rng.random((2, 32, 32)) < 0.5
    clean = impute(image, removed, noise=0.0)
    noisy = impute(image, removed, noise=0.01, rng=np.random.default_rng(5))
    diff = (noisy - clean).transpose(0, 2, 3, 1)
    assert np.abs(diff[~removed]).max() == 0
    assert diff[removed].std() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("finite", [True, False])
def test_keep_known_is_np_where(finite):
    """impute's last step (perturbation.blend, in place) takes known pixels from the image
    and removed ones from the solution exactly as np.where does, non-finite values
    included."""
    from onnxpath.evaluate.perturbation import blend
    rng = np.random.default_rng(15)
    v, x = (rng.standard_normal((4, 3, 9, 11)).astype(np.float32) for _ in range(2))
    unknown = rng.random((4, 1, 9, 11)) < 0.5
    if not finite:
        x[0, 1, :3] = np.inf  # on known and removed pixels alike
        x[2, 0, 5:] = np.nan
    expected = np.where(unknown, v, x)
    solution = v.copy()
    assert np.array_equal(blend(unknown, solution, x, out=solution), expected, equal_nan=True)


def test_road_lerf_keeps_the_only_pixel_that_matters():
    x = np.random.default_rng(2).uniform(0.5, 1.5, (3, 3, 8, 8)).astype(np.float32)
    heat = np.zeros((3, 8, 8))
    heat[:, 2, 5] = 1.0
    forward = model_forward(one_pixel_model(pixel=(2, 5)))
    targets = softmax(forward(x)).argmax(1)
    p = softmax(forward(x))[np.arange(3), targets]
    probs, acc = road(forward, x, heat, targets, order="lerf")
    np.testing.assert_allclose(probs, np.repeat(p[:, None], 7, axis=1), rtol=1e-6)
    assert (acc == 1).all()
    probs, _ = road(forward, x, heat, targets, order="morf", fractions=(0.1,))
    assert (np.abs(probs[:, 0] - p) > 1e-4).all()  # the pixel was imputed, the output moved


def test_systems_leaving_the_batch_keep_their_solution():
    """Converged systems leave the conjugate-gradient batch (neighbour_mean.solve): each system of a
    batch of fractions and channels must come out exactly as it does when solved alone."""
    from onnxpath.evaluate.neighbour_mean import solve
    rng = np.random.default_rng(3)
    images = rng.standard_normal((4, 3, 24, 20)).astype(np.float32)
    rows, cols = np.mgrid[0:24, 0:20]
    removed = np.stack([rng.random((24, 20)) < 0.1, rng.random((24, 20)) < 0.8,
                        (rows - 12) ** 2 + (cols - 9) ** 2 < 50, (rows < 4) | (cols > 15)])
    together = solve(images, removed[:, None])
    alone = np.stack([solve(images[i:i + 1, c:c + 1], removed[i:i + 1, None])[0, 0]
                      for i in range(4) for c in range(3)]).reshape(together.shape)
    print(f"largest difference batched vs alone: {np.abs(together - alone).max():.3g}")
    assert np.array_equal(together, alone)


# The solver's two paths (neighbour_mean.solve_counted): Jacobi-PCG for shallow holes,
# multigrid-PCG for deep ones, and the switch from the first to the second.

def odd_masks(h=37, w=50):
    """Removed-pixel masks on an odd, non-square grid: one deep blob reaching the border, and
    scattered pixels (no removed pixel farther than a few pixels from a known one)."""
    rng = np.random.default_rng(4)
    rows, cols = np.mgrid[0:h, 0:w]
    blob = ((rows - 20) / 14) ** 2 + ((cols - 38) / 20) ** 2 < 1
    return {"blob": blob, "scattered": rng.random((h, w)) < 0.7}


def counted(image, removed, tolerance, **routing):
    from onnxpath.evaluate.neighbour_mean import solve_counted
    solution, jacobi, multigrid = solve_counted(image[None], removed[None, None], tolerance,
                                                **routing)
    return np.where(removed, solution[0], image), jacobi, multigrid


ALL_MULTIGRID = {"deep_hole": 0}  # every mask with a removed pixel counts as deep
ALL_JACOBI = {"deep_hole": 10_000, "jacobi_iterations": 2000}


@pytest.fixture(params=["compiled", "numpy"])
def products(request, monkeypatch):
    """The solver's operator products: compiled (numba, a test dependency) or numpy's."""
    from onnxpath.evaluate import jit_kernels
    if request.param == "numpy":
        monkeypatch.setattr(jit_kernels.KERNELS, "compiled", {})
    else:
        assert jit_kernels.kernels(), "numba is missing: the compiled products go untested"
    return request.param


@pytest.mark.parametrize("pattern", ["blob", "scattered"])
@pytest.mark.parametrize("route", ["multigrid", "jacobi"])
def test_each_path_matches_spsolve_on_an_odd_grid(pattern, route, products):
    rng = np.random.default_rng(5)
    image = rng.standard_normal((3, 37, 50))
    removed = odd_masks()[pattern]
    routing = ALL_MULTIGRID if route == "multigrid" else ALL_JACOBI
    exact = spsolve_imputation(image, removed)
    tight, jacobi, multigrid = counted(image, removed, 1e-9, **routing)
    took = multigrid if route == "multigrid" else jacobi
    idle = jacobi if route == "multigrid" else multigrid
    assert (took > 0).all() and (idle == 0).all()
    np.testing.assert_allclose(tight, exact, atol=1e-5)
    default, _, _ = counted(image.astype(np.float32), removed, 1e-5, **routing)
    np.testing.assert_allclose(default, exact, atol=1e-3)


def test_default_routing_sends_deep_holes_to_multigrid_and_scattered_ones_to_jacobi():
    image = np.random.default_rng(6).standard_normal((3, 37, 50)).astype(np.float32)
    masks = odd_masks()
    _, jacobi, multigrid = counted(image, masks["blob"], 1e-5)
    assert (jacobi == 0).all() and (multigrid > 0).all() and (multigrid < 15).all()
    _, jacobi, multigrid = counted(image, masks["scattered"], 1e-5)
    assert (jacobi > 0).all() and (multigrid == 0).all()


def test_jacobi_systems_not_converged_in_time_switch_to_multigrid():
    rng = np.random.default_rng(7)
    image = rng.standard_normal((3, 37, 50))
    removed = odd_masks()["scattered"]
    exact = spsolve_imputation(image, removed)
    values, jacobi, multigrid = counted(image, removed, 1e-9, deep_hole=10_000,
                                        jacobi_iterations=3)
    assert (jacobi == -1).all() and (multigrid > 0).all()  # all three switched after 3 steps
    np.testing.assert_allclose(values, exact, atol=1e-5)


def test_fully_known_and_nearly_all_removed_images():
    rng = np.random.default_rng(8)
    image = rng.standard_normal((3, 37, 50))
    nothing = np.zeros((37, 50), dtype=bool)
    values, jacobi, multigrid = counted(image, nothing, 1e-5)
    assert np.array_equal(values, image) and (jacobi == 0).all() and (multigrid == 0).all()
    all_but_one = ~nothing
    all_but_one[30, 4] = False  # every removed pixel must take this one's value
    values, jacobi, _ = counted(image, all_but_one, 1e-9)
    assert (jacobi == 0).all()  # multigrid's (the push-pull guess is exact already)
    np.testing.assert_allclose(values, np.broadcast_to(image[:, 30:31, 4:5], image.shape),
                               atol=1e-5)
    all_but_three = all_but_one.copy()
    all_but_three[[2, 36], [45, 0]] = False
    values, _, multigrid = counted(image, all_but_three, 1e-9)
    assert (multigrid > 0).all()
    np.testing.assert_allclose(values, spsolve_imputation(image, all_but_three), atol=1e-5)


def dense_operator(removed):
    """The system's matrix over all pixels, rows and columns of known pixels zeroed."""
    h, w = removed.shape
    a = np.zeros((h * w, h * w))
    for p in np.flatnonzero(removed.ravel()):
        r, col = divmod(p, w)
        for (dy, dx), weight in NEIGHBOURS:
            if 0 <= r + dy < h and 0 <= col + dx < w:
                a[p, p] += weight
                q = (r + dy) * w + col + dx
                if removed.ravel()[q]:
                    a[p, q] -= weight
    return a


def test_coarse_operators_are_galerkin_products_of_the_fine_one():
    """The probed 9-point stencils equal Pᵀ A P built from dense matrices, two levels down,
    and restriction is prolongation's transpose on vectors that vanish off the unknowns."""
    removed = np.random.default_rng(9).random((9, 12)) < 0.6
    a = dense_operator(removed)
    level, shape = ImageLevel(removed[None].astype(np.float64)), removed.shape
    for _ in range(2):
        h, w = coarse_size(shape[0]), coarse_size(shape[1])
        units = np.eye(h * w).reshape(h * w, h, w)
        lead = (None,) * (level.inside.ndim - 2)  # (systems) or (masks, systems)
        p = np.stack([prolong(u[lead], shape, level.inside).ravel() for u in units], 1)
        # (residuals are zero off the unknown points, which is all that restrict relies on)
        fine = np.random.default_rng(10).standard_normal(shape) * level.inside
        np.testing.assert_allclose(restrict(fine).ravel(), p.T @ fine.ravel(), atol=1e-12)
        a = p.T @ a @ p
        level = StencilLevel(galerkin(level, shape))
        probed = np.stack([level.apply(u[None, None]).ravel() for u in units], 1)
        np.testing.assert_allclose(probed, a, atol=1e-12)
        shape = (h, w)


@pytest.mark.parametrize("shape", [(9, 12), (8, 13), (70, 65)])
def test_matrix_and_strided_transfers_agree(monkeypatch, shape):
    """Grids up to multigrid.MATRIX_TRANSFER points transfer by matrix products, larger ones
    by strided adds: both are the same P and Pᵀ, on even and odd sides (numpy's transfers;
    the compiled ones are checked against them in test_compiled_products_equal_numpys)."""
    from onnxpath.evaluate import jit_kernels, multigrid
    monkeypatch.setattr(jit_kernels.KERNELS, "compiled", {})
    rng = np.random.default_rng(15)
    inside = (rng.random(shape) < 0.7).astype(np.float32)[None]
    fine = rng.standard_normal((2, 3, *shape)).astype(np.float32) * inside
    coarse = rng.standard_normal((2, 3, coarse_size(shape[0]), coarse_size(shape[1])))
    coarse = coarse.astype(np.float32)
    results = []
    for limit in (0, 10**9):  # strided, then matrices
        monkeypatch.setattr(multigrid, "MATRIX_TRANSFER", limit)
        results.append((restrict(fine), prolong(coarse, shape, inside)))
    for strided, matrices in zip(*results, strict=True):
        assert strided.dtype == matrices.dtype == np.float32
        np.testing.assert_allclose(matrices, strided, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (6, 1), (2, 2), (37, 50)])
def test_compiled_products_equal_numpys(monkeypatch, shape, dtype):
    """jit_kernels' products and transfers against multigrid's numpy ones: the image's
    stencil (one mask for every system, or one per system), a coarse grid's 9-point stencils,
    restriction, and prolongation kept on one mask, one per system or one per mask of several
    systems; edges and one-pixel grids included. Only the order of the sums differs."""
    from onnxpath.evaluate import jit_kernels
    assert jit_kernels.kernels(), "numba is missing: the compiled products go untested"
    rng = np.random.default_rng(16)
    v = rng.standard_normal((3, *shape)).astype(dtype)
    cases = [(ImageLevel((rng.random((1, *shape)) < 0.6).astype(dtype)), v),
             (ImageLevel((rng.random((3, *shape)) < 0.6).astype(dtype)), v),
             (StencilLevel(rng.standard_normal((2, 9, *shape)).astype(dtype)),
              rng.standard_normal((2, 3, *shape)).astype(dtype))]
    coarse_shape = (coarse_size(shape[0]), coarse_size(shape[1]))
    coarse = rng.standard_normal((2, 3, *coarse_shape)).astype(dtype)
    masks = [(rng.random(s) < 0.6).astype(dtype) for s in ((1, *shape), (2, 3, *shape),
                                                              (2, 1, *shape))]
    runs = [(level.apply, (vector,)) for level, vector in cases]
    runs += [(restrict, (v,)), (restrict, (coarse,))]
    runs += [(prolong, (coarse, shape, mask)) for mask in masks]
    tolerance = 1e-13 if dtype == np.float64 else 2e-6
    for run, arguments in runs:
        compiled = run(*arguments)
        with monkeypatch.context() as numpy_only:
            numpy_only.setattr(jit_kernels.KERNELS, "compiled", {})
            expected = run(*arguments)
        assert compiled.dtype == expected.dtype == dtype
        scale = np.abs(expected).max() + 1.0
        np.testing.assert_allclose(compiled, expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_jacobi_pcg_follows_numpys(monkeypatch, dtype):
    """jit_kernels.jacobi_pcg runs neighbour_mean.jacobi_pcg's iteration: per system the same
    step count (±1 where float32 sums in another order cross the stopping test) and values
    within the stopping test's reach; an unconverged system says -1 on both."""
    from onnxpath.evaluate import jit_kernels
    from onnxpath.evaluate.neighbour_mean import jacobi_pcg
    assert jit_kernels.kernels(), "numba is missing: the compiled products go untested"
    rng = np.random.default_rng(18)
    inside = (rng.random((30, 41)) < 0.5).astype(dtype)
    diagonal = neighbour_sum(np.ones((30, 41), dtype=dtype))
    b = (rng.standard_normal((3, 30, 41)) * inside).astype(dtype)
    v = (rng.standard_normal((3, 30, 41)) * inside).astype(dtype)
    b_norm = np.sqrt((b.astype(np.float64) ** 2).sum(axis=(1, 2)))
    for tolerance, steps in ((1e-5, 200), (1e-5, 3)):
        target = tolerance * b_norm
        compiled, compiled_steps = jacobi_pcg(b, v, inside, diagonal, target, steps)
        with monkeypatch.context() as numpy_only:
            numpy_only.setattr(jit_kernels.KERNELS, "compiled", {})
            expected, expected_steps = jacobi_pcg(b, v, inside, diagonal, target, steps)
        assert compiled.dtype == expected.dtype == dtype
        assert np.abs(compiled_steps - expected_steps).max() <= 1
        if steps == 3:
            assert (compiled_steps == -1).all() and (expected_steps == -1).all()
        else:
            assert (compiled_steps > 3).all()
            np.testing.assert_allclose(compiled, expected, atol=1e-4 * np.abs(expected).max())


def test_a_failing_kernel_leaves_numpys_products_with_one_warning(monkeypatch):
    from onnxpath.evaluate import jit_kernels

    def broken(*arrays):
        raise RuntimeError("no such instruction\nsecond line")

    monkeypatch.setattr(jit_kernels.KERNELS, "compiled", {"image": broken, "stencil": broken})
    image = np.random.default_rng(17).standard_normal((3, 20, 24))
    removed = odd_masks()["blob"][:20, :24]
    with pytest.warns(RuntimeWarning, match="compiled solver kernels are off.*no such "
                      "instruction$"):
        values, _, multigrid = counted(image, removed, 1e-9, **ALL_MULTIGRID)
    assert (multigrid > 0).all() and jit_kernels.kernels() == {}
    np.testing.assert_allclose(values, spsolve_imputation(image, removed), atol=1e-5)


def test_no_jit_environment_variable_turns_the_kernels_off(monkeypatch):
    from onnxpath.evaluate import jit_kernels
    monkeypatch.setattr(jit_kernels.KERNELS, "compiled", None)
    monkeypatch.setenv("ONNXPATH_NO_JIT", "1")
    assert jit_kernels.kernels() == {}
    assert jit_kernels.stencil_product(np.ones((1, 9, 2, 2)), np.ones((1, 1, 2, 2))) is None
    monkeypatch.setattr(jit_kernels.KERNELS, "compiled", None)
    monkeypatch.delenv("ONNXPATH_NO_JIT")
    assert set(jit_kernels.kernels()) == {"image", "stencil", "restriction", "prolongation",
                                          "jacobi"}


def precondition(fine, coarse, r):
    """One mask's V-cycle (multigrid.mask_cycle with multigrid.CoarseGrids below it), run alone."""
    cycle = mask_cycle([fine], r)
    restricted = next(cycle)
    try:
        cycle.send(coarse.cycle(restricted[None])[0])
    except StopIteration as finished:
        return finished.value
    raise AssertionError("the V-cycle asked for a second coarse correction")


def test_multigrid_preconditioner_is_symmetric_positive():
    """Conjugate gradients needs a symmetric positive definite preconditioner: check that the
    V-cycle M gives ⟨M a, c⟩ = ⟨a, M c⟩ and ⟨M a, a⟩ > 0 on a mask deep enough for 3 levels."""
    removed = odd_masks()["blob"]
    fine = ImageLevel(removed[None].astype(np.float64))
    coarse = CoarseGrids.build(galerkin(fine, removed.shape))
    assert len(coarse.levels) >= 1
    rng = np.random.default_rng(11)
    a, c = (np.where(removed, rng.standard_normal(removed.shape), 0.0)[None] for _ in range(2))
    ma, mc = precondition(fine, coarse, a), precondition(fine, coarse, c)
    assert np.vdot(ma, c) == pytest.approx(np.vdot(a, mc), rel=1e-10)
    assert np.vdot(ma, a) > 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (2, 7), (5, 3), (1, 130), (130, 2)])
def test_multigrid_on_thin_and_tiny_grids(shape):
    """Coarsening stops on grids of one or two rows or columns too (they shrink along the
    other axis only), and a lone removed pixel is solved in one step."""
    rng = np.random.default_rng(12)
    image = rng.standard_normal((3, *shape))
    removed = rng.random(shape) < 0.8
    removed.flat[0] = shape == (1, 1)  # one known pixel, except on the 1×1 grid
    if shape == (1, 1):
        values, _, _ = counted(image, removed, 1e-9, **ALL_MULTIGRID)
        assert (values == 0).all()  # nothing known: the system is singular, left at zero
        return
    values, jacobi, multigrid = counted(image, removed, 1e-9, **ALL_MULTIGRID)
    assert (jacobi == 0).all() and (multigrid >= 0).all()
    np.testing.assert_allclose(values, spsolve_imputation(image, removed), atol=1e-5)


@pytest.mark.parametrize("route", ["multigrid", "jacobi"])
def test_nested_masks_on_one_image_match_spsolve(route):
    """ROAD's fractions remove nested sets of one image: each mask after the first starts from
    the previous one's solution (neighbour_mean.solve_counted), and each is solved on its
    bounding box, here one away from the image border."""
    rng = np.random.default_rng(13)
    image = rng.standard_normal((3, 30, 34))
    rows, cols = np.mgrid[0:30, 0:34]
    distance = np.hypot(rows - 14, (cols - 18) * 0.8) + 3 * rng.random((30, 34))
    masks = np.stack([distance < radius for radius in (4, 7, 11)])  # nested, interior
    assert (masks[:-1] <= masks[1:]).all() and not masks[-1][[0, -1]].any()
    routing = ALL_MULTIGRID if route == "multigrid" else ALL_JACOBI
    from onnxpath.evaluate.neighbour_mean import solve_counted
    solution, jacobi, multigrid = solve_counted(np.repeat(image[None], 3, axis=0),
                                                masks[:, None], 1e-9, **routing)
    assert ((multigrid if route == "multigrid" else jacobi) > 0).all()
    for k in range(3):
        values = np.where(masks[k], solution[k], image)
        np.testing.assert_allclose(values, spsolve_imputation(image, masks[k]), atol=1e-5)


@pytest.mark.parametrize("shared_grid, pixels_in_step", [(1024, 100_000), (30, 100_000),
                                                         (30, 1)])
def test_per_mask_and_shared_coarse_grids_match_spsolve(monkeypatch, shared_grid,
                                                        pixels_in_step):
    """Coarse grids finer than neighbour_mean.SHARED_GRID run per mask on its box, the others
    for all masks in step on the image's grids: the boxes' grids must sit where the image's are
    (boxes aligned to 2^depth), here with 1 and 3 levels per mask and 1 or 3 masks in
    step. Within a few iterations at a tight tolerance (a misplaced grid still converges,
    slowly)."""
    from onnxpath.evaluate import neighbour_mean as solver
    monkeypatch.setattr(solver, "SHARED_GRID", shared_grid)
    monkeypatch.setattr(solver, "PIXELS_IN_STEP", pixels_in_step)
    rng = np.random.default_rng(14)
    image = rng.standard_normal((3, 30, 34))
    rows, cols = np.mgrid[0:30, 0:34]
    distance = np.hypot(rows - 17, (cols - 21) * 0.8) + 3 * rng.random((30, 34))
    masks = np.stack([distance < radius for radius in (4, 7, 11)])  # boxes off the origin
    solution, _, multigrid = solver.solve_counted(np.repeat(image[None], 3, axis=0),
                                                       masks[:, None], 1e-9, **ALL_MULTIGRID)
    assert solver.shared_depth((30, 34)) == (1 if shared_grid == 1024 else 3)
    assert (multigrid > 0).all() and (multigrid <= 9).all()
    for k in range(3):
        values = np.where(masks[k], solution[k], image)
        np.testing.assert_allclose(values, spsolve_imputation(image, masks[k]), atol=1e-5)
