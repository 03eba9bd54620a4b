"""Dense-CRF mean-field inference in torch: Gaussian filtering on a permutohedral lattice.

The model is the fully connected CRF of Krähenbühl & Koltun (NeurIPS 2011), as
pydensecrf runs it: Potts compatibilities, a Gaussian kernel over positions and a
bilateral kernel over positions and colours, each symmetrically normalised
(K Q = n * filter(n * Q), n = 1 / sqrt(filter(1))), and mean-field updates
Q <- softmax(-unary + sum_k w_k K_k Q).

The bilateral filter is the permutohedral lattice of Adams, Baek & Davis
(Eurographics 2010): every pixel's 5-d feature (x/sxy, y/sxy, r/srgb, g/srgb,
b/srgb) is splatted onto the d+1 vertices of its enclosing simplex, the lattice is
blurred with a [1/2, 1, 1/2] kernel along each of its d+1 axes, and values are
sliced back with the same barycentric weights. The lattice is built once per
image and reused by every iteration, so an iteration is two sparse-dense products
and a few gathers, on whatever device the tensors are on. The small Gaussian
(position-only) kernel is an exact separable convolution instead.

:func:`dense_crf_marginals` runs the mean field on a grid up to `downsample` times
coarser (:func:`grid_factor`) and brings the marginals back to full size by joint
bilateral upsampling: that, not the lattice, is what makes it faster than
pydensecrf on a CPU (docs/RESULTS.md, "Dense-CRF backends").

Pure torch; :func:`wsss_ray.crf.dense_crf` is the public entry point.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F


class PermutohedralLattice:
    """Gaussian filtering of values at N points with d-dimensional features (already divided by
    the kernel widths), through a permutohedral lattice built once.

    Splatting and slicing are sparse NxM matrices (d+1 entries a row), the blur a
    gather along each lattice axis, so a filter costs a few sparse-dense products.
    """

    def __init__(self, features: torch.Tensor):
        n, d = features.shape
        self.d = d
        dev = features.device
        f = features.float()
        # Scale so the lattice blur approximates a unit-variance Gaussian (Adams et al., §3).
        steps = torch.arange(1, d + 1, dtype=f.dtype, device=dev)
        cf = f * (math.sqrt(2 / 3) * (d + 1) / torch.sqrt(steps * (steps + 1)))
        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1).
        suffix = cf.flip(1).cumsum(1).flip(1)                               # suffix[:, k] = sum_{j>=k} cf[:, j]
        elevated = torch.cat([suffix[:, :1], F.pad(suffix[:, 1:], (0, 1)) - steps * cf], 1)
        # The nearest remainder-0 lattice point, and the rank of each coordinate's offset from it.
        rem0 = torch.round(elevated / (d + 1)) * (d + 1)
        total = (rem0.sum(1) / (d + 1)).round().int()
        diff = elevated - rem0
        before = torch.ones(d + 1, d + 1, dtype=torch.bool, device=dev).tril(-1)
        rank = ((diff[:, None, :] > diff[:, :, None])
                | ((diff[:, None, :] == diff[:, :, None]) & before)).sum(2, dtype=torch.int32) + total[:, None]
        wrap = (rank < 0).int() - (rank > d).int()
        rank += (d + 1) * wrap
        rem0 += (d + 1) * wrap
        # Barycentric weights of the d+1 simplex vertices.
        v = (elevated - rem0) / (d + 1)
        bary = torch.zeros(n, d + 2, dtype=f.dtype, device=dev)
        bary.scatter_add_(1, (d - rank).long(), v)
        bary.scatter_add_(1, (d + 1 - rank).long(), -v)
        bary[:, 0] += 1 + bary[:, d + 1]
        weights = bary[:, :d + 1]                                           # N x (d+1)
        # Vertex keys (the first d coordinates; the last is implied by sum = 0), one int64 code each.
        r = torch.arange(d + 1, device=dev, dtype=torch.int32)
        keys = rem0[:, None, :d].int() + r[None, :, None] \
            - (d + 1) * (rank[:, None, :d] > d - r[None, :, None]).int()     # N x (d+1) x d
        low = keys.amin((0, 1)).long() - (d + 2)
        span = keys.amax((0, 1)).long() - low + (d + 3)
        strides = torch.cumprod(F.pad(span[:-1], (1, 0), value=1), 0)
        codes = ((keys.long() - low) * strides).sum(2)                       # N x (d+1)
        ordered, order = codes.flatten().sort()
        vertices, inverse_ordered, counts = torch.unique_consecutive(ordered, return_inverse=True,
                                                                     return_counts=True)
        inverse = torch.empty_like(inverse_ordered).scatter_(0, order, inverse_ordered)
        m = len(vertices)
        # Neighbours along each lattice axis j: key -/+ 1 on every coordinate, -/+ (d+1) more on j.
        self.neighbours = []
        for j in range(d + 1):
            shift = strides.sum() - ((d + 1) * strides[j] if j < d else 0)
            pair = []
            for code in (vertices - shift, vertices + shift):
                pos = torch.searchsorted(vertices, code).clamp_(max=m - 1)
                pair.append(torch.where(vertices[pos] == code, pos, m))          # m: a row of zeros
            self.neighbours.append(pair)
        self.size = m
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            rows = torch.arange(0, n * (d + 1) + 1, d + 1, device=dev)
            self.slice_matrix = torch.sparse_csr_tensor(rows, inverse, weights.flatten(), (n, m))
            vertex_rows = F.pad(counts.cumsum(0), (1, 0))
            self.splat_matrix = torch.sparse_csr_tensor(vertex_rows, order // (d + 1), weights.flatten()[order], (m, n))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """Approximately sum_j exp(-|f_i - f_j|^2 / 2) values_j for every point i; values: NxC."""
        lattice = torch.cat([self.splat_matrix @ values, values.new_zeros(1, values.shape[1])])
        for before, after in self.neighbours:
            blurred = lattice[:-1] + 0.5 * (lattice.index_select(0, before) + lattice.index_select(0, after))
            lattice = torch.cat([blurred, lattice[-1:]])
        return (self.slice_matrix @ lattice[:-1]) / (1 + 2.0 ** -self.d)


def gaussian_filter(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact 2-d Gaussian filtering (unnormalised, centre weight 1) of CxHxW values, zero outside."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    c = values.shape[0]
    out = F.conv2d(values[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))[:, 0].view(c, *values.shape[1:])


def mean_field(image: torch.Tensor, unary: torch.Tensor, iters: int, gauss_sxy: float, gauss_compat: float,
               bilateral_sxy: float, bilateral_srgb: float, bilateral_compat: float,
               messages: bool = False) -> torch.Tensor:
    """Mean-field marginals CxHxW of a dense CRF.

    Args:
        image: HxWx3 colours 0..255 (any real dtype) on the device to run on.
        unary: CxHxW energies (-log p).
        messages: return instead the pairwise term the next iteration would add to ``-unary``
            (CxHxW), computed from the marginals after `iters` iterations.
    """
    c, h, w = unary.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=unary.device, dtype=torch.float32),
                            torch.arange(w, device=unary.device, dtype=torch.float32), indexing="ij")
    features = torch.cat([torch.stack([xs, ys], -1) / bilateral_sxy, image.float() / bilateral_srgb], -1)
    lattice = PermutohedralLattice(features.reshape(-1, 5))
    bilateral_norm = lattice.filter(unary.new_ones(h * w, 1)).clamp_min(1e-20).rsqrt()   # N x 1
    gauss_norm = gaussian_filter(unary.new_ones(1, h, w), gauss_sxy).clamp_min(1e-20).rsqrt()
    q = torch.softmax(-unary, 0)

    def pairwise(q: torch.Tensor) -> torch.Tensor:
        gauss = gauss_norm * gaussian_filter(gauss_norm * q, gauss_sxy)
        flat = q.reshape(c, -1).T * bilateral_norm
        bilateral = (lattice.filter(flat) * bilateral_norm).T.reshape(c, h, w)
        return gauss_compat * gauss + bilateral_compat * bilateral

    for _ in range(iters):
        q = torch.softmax(-unary + pairwise(q), 0)
    return pairwise(q) if messages else q


def joint_bilateral_upsample(low: torch.Tensor, low_image: torch.Tensor, image: torch.Tensor,
                             sigma_range: float, support: int = 3) -> torch.Tensor:
    """Upsample Cxhxw values to the HxW of `image` (HxWx3), each pixel a weighted mean of the
    `support` x `support` nearest low-resolution cells: a spatial Gaussian one cell wide times a
    Gaussian of the colour difference between the pixel and the cell (joint bilateral upsampling,
    Kopf et al. 2007). With 2x2 cells the real-photo mIoU moved 1 point from pydensecrf's at
    320x213, so the default is 3x3."""
    c, hl, wl = low.shape
    h, w = image.shape[:2]
    dev = low.device
    # each pixel's position in cell units; per offset, the row/column of the cell it reads
    fy = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * hl / h - 0.5
    fx = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * wl / w - 0.5
    base = torch.round if support % 2 else torch.floor
    cy, cx = base(fy).long(), base(fx).long()
    planes = torch.cat([low, low_image.permute(2, 0, 1).float()])                # (C+3) x h x w
    colour = image.permute(2, 0, 1).float()
    total = torch.zeros(c, h, w, device=dev)
    norm = torch.zeros(h, w, device=dev)
    for dy in range(support):
        ny = cy + dy - (support - 1) // 2
        wy = torch.exp(-(ny - fy) ** 2 / 2) * ((ny >= 0) & (ny < hl))             # H
        rows = planes.index_select(1, ny.clamp(0, hl - 1))                        # (C+3) x H x w
        for dx in range(support):
            nx = cx + dx - (support - 1) // 2
            wx = torch.exp(-(nx - fx) ** 2 / 2) * ((nx >= 0) & (nx < wl))         # W
            near = rows.index_select(2, nx.clamp(0, wl - 1))                      # (C+3) x H x W
            diff = (near[c:] - colour).square_().sum(0)
            weight = torch.exp_(diff.mul_(-0.5 / sigma_range ** 2)).mul_(wy[:, None] * wx[None, :])
            total.addcmul_(near[:c], weight)
            norm += weight
    return total / norm.clamp_min(1e-20)


MIN_GRID_SIDE = 64  # the coarse grid keeps at least this many cells on the image's short side


def grid_factor(height: int, width: int, downsample: int) -> int:
    """How many times coarser than the image the mean field runs: `downsample`, reduced so the
    grid keeps at least MIN_GRID_SIDE cells on the short side (small images run at full size)."""
    return max(1, min(downsample, min(height, width) // MIN_GRID_SIDE))


def dense_crf_marginals(image: torch.Tensor, probs: torch.Tensor, iters: int, gauss_sxy: float,
                        gauss_compat: float, bilateral_sxy: float, bilateral_srgb: float,
                        bilateral_compat: float, downsample: int = 1, final_step: str = "marginals") -> torch.Tensor:
    """CxHxW marginals of the dense CRF over an HxWx3 image (0..255) and CxHxW probabilities.

    With ``downsample`` > 1 (see :func:`grid_factor`), the mean field runs on a grid that many
    times coarser: pixels subsampled, probabilities averaged, every length in the kernels
    divided by the factor. Its marginals come back to full size by joint bilateral
    upsampling with a colour width of twice the bilateral kernel's, so labels follow the
    colour edges of the full-size image.
    """
    h, w = image.shape[:2]
    factor = grid_factor(h, w, downsample)
    grid_image, grid_probs = image, probs
    if factor > 1:
        size = (round(h / factor), round(w / factor))
        grid_image = F.interpolate(image.permute(2, 0, 1)[None].float(), size=size,
                                   mode="nearest-exact")[0].permute(1, 2, 0)
        grid_probs = F.interpolate(probs[None], size=size, mode="area")[0]
    unary = -torch.log(grid_probs.clamp(1e-5, 1))
    kernels = (gauss_sxy / factor, gauss_compat, bilateral_sxy / factor, bilateral_srgb, bilateral_compat)
    if factor == 1:
        return mean_field(grid_image, unary, iters, *kernels)
    if final_step == "marginals":
        return joint_bilateral_upsample(mean_field(grid_image, unary, iters, *kernels), grid_image, image,
                                        2 * bilateral_srgb)
    pair = mean_field(grid_image, unary, iters - 1, *kernels, messages=True)
    pair = joint_bilateral_upsample(pair, grid_image, image, 2 * bilateral_srgb)
    return torch.softmax(torch.log(probs.clamp(1e-5, 1)) + pair, 0)
