"""Simulated fission-yeast cells in the LIN layout, with per-cell ground truth.

Clearly labelled as simulated: these are not the real LIN images (Dodgson et al. 2017), they
follow the biology the papers describe (Osokin et al. 2017, section 3.2). A cell is a bent
spherocylinder, 4 µm wide, born 7 µm long and growing to twice that:

    phase 0 .. NETO (~0.3)          monopolar growth at the old end
    NETO .. GROWTH_STOP (0.75)      bipolar growth, faster
    GROWTH_STOP .. SEPTUM_START     growth stops, mitosis (spindle), the medial ring assembles
    SEPTUM_START (0.85) .. 1        the septum closes centripetally, then the cell constricts

Red (Bgs4) is a dim membrane/cytoplasm signal plus bright growing tips, then ring and septum;
green is one of eight protein patterns. Everything is rendered as 2D projections of 3D
shapes on the pixel grid (membrane limb brightening, cytoplasm chord length, ring and septum
seen edge-on), point-like structures are splatted, then each channel gets one Gaussian blur
(the PSF), a per-cell intensity scale, shot and read noise, and the segmentation mask: every
pixel outside the cell is exactly 0 in both channels and every pixel inside has red >= 1, so
``images[:, 0] > 0`` is the cell mask, as in the released LIN images.

Each cell depends only on ``(seed, protein, index)`` and draws the same random numbers
whatever its phase, so forcing ``phase`` renders the same cell at another point of its cycle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from ..atomic import atomic_open, atomic_write

PROTEINS = ("Alp14", "Arp3", "Cki2", "Fim1", "Mkh1", "Sid2", "Tea1", "Tea4")
# 0.2 µm per pixel at 48 x 80: the longest cell (15 µm = 75 px) still fits the 80 px frame at
# the largest tilt, the 4 µm width spans 20 of 48 rows, and 96 x 160 is then 0.1 µm, the LIN
# microscope's native 100 nm pixel (Osokin et al. 2017, section 3.3).
PIXEL_SIZE_UM = 0.2
SIZES = ((48, 80), (96, 160))
GROWTH_MODES = ("monopolar", "bipolar", "septating")

NETO_PHASE = 0.3  # mean; each cell draws its own around it
GROWTH_STOP = 0.75
SEPTUM_START = 0.85
SEPTUM_CLOSED = 0.97
SEPARATION_START = 0.95
BIPOLAR_RATE = 1.6  # growth after NETO relative to monopolar growth
MAX_LENGTH_UM = 15.0
RING_START = 0.8  # Bgs4 reaches the medial ring (anaphase)
MAX_WAIST = 0.2  # depth of the division furrow at phase 1, as a fraction of the radius
FURROW_UM = 0.6  # half-width (sigma) of the furrow
RING_UM = 0.3  # radial thickness of the medial ring before the septum grows in


def pixel_size_um(size=(48, 80)) -> float:
    """µm per pixel for a frame size: the cell geometry is fixed in µm, the frame scales."""
    return PIXEL_SIZE_UM * SIZES[0][1] / size[1]


@dataclass
class SimulatedCells:
    """Simulated cells: ``images`` (N, 2, H, W) uint8 (red Bgs4, green protein), class-major."""

    images: np.ndarray
    class_index: np.ndarray
    class_names: list[str]
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    pixel_size_um: float = PIXEL_SIZE_UM


# --------------------------------------------------------------------------------------------
# Cell cycle (pure functions of phase and the cell's own landmarks)


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def cell_length(phase: float, birth_length: float, neto: float) -> float:
    """Length in µm: monopolar growth to NETO, faster bipolar growth to GROWTH_STOP, then flat."""
    mono = min(phase, neto)
    bi = min(max(phase - neto, 0.0), GROWTH_STOP - neto)
    total = neto + BIPOLAR_RATE * (GROWTH_STOP - neto)
    return birth_length * (1.0 + (mono + BIPOLAR_RATE * bi) / total)


def growth_mode(phase: float, neto: float) -> str:
    if phase >= GROWTH_STOP:
        return "septating"
    return "monopolar" if phase < neto else "bipolar"


def stage(phase: float) -> str:
    if phase < GROWTH_STOP:
        return "interphase"
    return "mitosis" if phase < SEPTUM_START else "cytokinesis"


def spindle_length(phase: float, length: float) -> float:
    """Spindle (pole-to-pole) length in µm: short in prophase/metaphase, anaphase B elongation."""
    if phase < GROWTH_STOP:
        return 0.0
    m = (phase - GROWTH_STOP) / (SEPTUM_START - GROWTH_STOP)
    return 1.5 + (0.5 * length - 1.5) * float(_smoothstep((m - 0.3) / 0.6))


def septum_closure(phase: float) -> float:
    return float(np.clip((phase - SEPTUM_START) / (SEPTUM_CLOSED - SEPTUM_START), 0.0, 1.0))


# --------------------------------------------------------------------------------------------
# Geometry on the pixel grid


@dataclass
class _Cell:
    """One cell's geometry: cell coordinates of every pixel and the fields built on them.

    ``u`` runs along the long axis (µm from the centre), ``v`` across it (µm, bend removed);
    ``n`` is the distance to the axis segment over the local radius, < 1 inside the cell.
    """

    phase: float
    length: float
    radius: float
    old_end: int
    neto: float
    u: np.ndarray
    v: np.ndarray
    n: np.ndarray
    mask: np.ndarray
    waist: float  # constriction depth at division, fraction of the radius
    bend: float
    cos: float
    sin: float
    centre: tuple[float, float]  # (row, col) of the cell centre
    px: float
    nuclei: np.ndarray  # (k, 2) nucleus centres (u, v)
    spbs: np.ndarray  # (2, 2) spindle-pole-body positions (u, v)
    spindle: float

    @property
    def half(self) -> float:
        return self.length / 2

    @property
    def straight(self) -> float:
        """Half-length of the cylindrical part."""
        return self.half - self.radius

    def local_radius(self, u):
        return _local_radius(u, self.radius, self.waist)

    def half_width(self, u):
        """Half-width of the cell outline at axial positions ``u`` (µm)."""
        u = np.asarray(u, dtype=float)
        over = np.maximum(np.abs(u) - self.straight, 0.0)
        return np.sqrt(np.maximum(self.local_radius(u) ** 2 - over**2, 0.0))

    def membrane(self):
        """Projected thin shell: limb-brightened outline, 1 on the axis, ~4 at the edge."""
        n = np.minimum(self.n, 0.97)
        return np.where(self.mask, 1.0 / np.sqrt(1.0 - n * n), 0.0)

    def rim(self, width: float = 0.2):
        """The in-focus plasma membrane: a thin band just inside the outline (``width`` µm)."""
        return np.where(self.mask, np.exp(-0.5 * ((1.0 - self.n) * self.radius / width) ** 2), 0.0)

    def chord(self):
        """Projected cytoplasm thickness, 1 on the axis, 0 at the edge."""
        return np.sqrt(np.maximum(1.0 - self.n * self.n, 0.0))

    def cap(self, end: int, sigma: float):
        """Weight falling off with the distance (µm) from the pole at ``end`` (+1 or -1)."""
        t = np.maximum(self.half - end * self.u, 0.0)
        return np.exp(-0.5 * (t / sigma) ** 2)

    def band(self, u0: float, sigma: float):
        return np.exp(-0.5 * ((self.u - u0) / sigma) ** 2)

    def annulus(self, inner: float):
        """Edge-on projection of a disc with a hole of radius ``inner`` (µm) across the cell:
        a ring shows as two bright edge spots, a closed septum as a full bar."""
        r2 = self.local_radius(0.0) ** 2
        v2 = self.v * self.v
        return (np.sqrt(np.maximum(r2 - v2, 0.0)) - np.sqrt(np.maximum(inner * inner - v2, 0.0))) * self.mask

    def division_ring(self, u0: float = 0.0, sigma: float = 0.15):
        """The medial ring at ``u0``, seen edge-on, closing into a full septum with the phase."""
        inner = (self.local_radius(0.0) - RING_UM) * (1.0 - septum_closure(self.phase))
        return self.annulus(inner) * self.band(u0, sigma)

    def nucleus(self, radius: float = 1.1):
        """Soft discs where the nuclei are (one, or two after anaphase)."""
        d2 = np.min([(self.u - a) ** 2 + (self.v - b) ** 2 for a, b in self.nuclei], axis=0)
        return np.exp(-0.5 * (d2 / radius**2) ** 2)

    def to_pixels(self, u, v):
        """Cell coordinates (µm) -> fractional (row, col)."""
        v = np.asarray(v) + self.bend * np.asarray(u) ** 2
        x = u * self.cos - v * self.sin
        y = u * self.sin + v * self.cos
        return self.centre[0] + y / self.px, self.centre[1] + x / self.px


def _local_radius(u, radius, waist):
    """Cell radius at axial position ``u``: constant but for the division furrow at u = 0."""
    return radius * (1.0 - waist * np.exp(-0.5 * (np.asarray(u) / FURROW_UM) ** 2))


def _grid(size):
    rows, cols = np.mgrid[0 : size[0], 0 : size[1]]
    return rows.astype(float), cols.astype(float)


_GRIDS = {s: _grid(s) for s in SIZES}


def _make_cell(phase, birth_length, width, neto, angle_deg, bend, old_end, offset, nucleus, spb_angle, size):
    px = pixel_size_um(size)
    length = cell_length(phase, birth_length, neto)
    radius = width / 2
    theta = np.deg2rad(angle_deg)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    # keep the whole cell in the frame: the centre may only move by the spare margin
    half_w = (size[1] / 2 - 0.5) * px - (length / 2 * abs(cos) + radius * abs(sin))
    sag = abs(bend) * length**2 / 4  # how far the bent axis leaves the straight line
    half_h = (size[0] / 2 - 0.5) * px - (length / 2 * abs(sin) + radius * abs(cos) + sag)
    dy = np.clip(offset[0], -max(half_h, 0.0), max(half_h, 0.0))
    dx = np.clip(offset[1], -max(half_w, 0.0), max(half_w, 0.0))
    centre = ((size[0] - 1) / 2 + dy / px, (size[1] - 1) / 2 + dx / px)
    rows, cols = _GRIDS[size]
    return _cell_on_grid(phase, birth_length, width, neto, angle_deg, bend, old_end, nucleus, spb_angle,
                         rows, cols, centre, px)


def _cell_on_grid(phase, birth_length, width, neto, angle_deg, bend, old_end, nucleus, spb_angle,
                  rows, cols, centre, px) -> _Cell:
    """The cell's geometry on any pixel grid (``rows``, ``cols``) with its centre at ``centre``."""
    length = cell_length(phase, birth_length, neto)
    radius = width / 2
    theta = np.deg2rad(angle_deg)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    x = (cols - centre[1]) * px
    y = (rows - centre[0]) * px
    u = x * cos + y * sin
    v = -x * sin + y * cos - bend * (x * cos + y * sin) ** 2
    straight = length / 2 - radius
    waist = MAX_WAIST * float(_smoothstep((phase - SEPARATION_START) / (1.0 - SEPARATION_START)))
    n = np.hypot(np.maximum(np.abs(u) - straight, 0.0), v) / _local_radius(u, radius, waist)

    spindle = spindle_length(phase, length)
    un, vn = nucleus
    if spindle > 0:
        spbs = np.array([[un - spindle / 2, vn], [un + spindle / 2, vn]])
        nuclei = np.array([[un - 0.4 * spindle, vn], [un + 0.4 * spindle, vn]])
    else:
        # interphase: the (duplicated, unresolved) SPB sits on the nuclear envelope
        pole = (un + 1.0 * np.cos(spb_angle), vn + 0.8 * np.sin(spb_angle))
        spbs = np.array([pole, pole])
        nuclei = np.array([[un, vn]])
    return _Cell(
        phase=phase, length=length, radius=radius, old_end=old_end, neto=neto, u=u, v=v, n=n,
        mask=n < 1.0, waist=waist, bend=bend, cos=cos, sin=sin, centre=centre, px=px,
        nuclei=nuclei, spbs=spbs, spindle=spindle,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Red channel: Bgs4


def _bgs4(cell: _Cell, weights) -> np.ndarray:
    """Membrane + growing tips (old tip first, both after NETO), then medial ring and septum."""
    p = cell.phase
    w_cyto, w_mem, w_tip, w_sept = weights
    growing = 1.0 - 0.8 * float(_smoothstep((p - GROWTH_STOP) / 0.05))
    old = growing
    new = growing * (0.12 + 0.7 * float(_smoothstep((p - cell.neto) / 0.06)))
    mem = cell.membrane()
    rim = cell.rim()
    red = w_cyto * 0.06 * cell.chord() + w_mem * (0.12 * mem + rim)
    tips = old * cell.cap(cell.old_end, 0.9) + new * cell.cap(-cell.old_end, 0.9)
    red += w_tip * (mem + 2.0 * rim) * tips
    ring = float(_smoothstep((p - RING_START) / 0.05))
    if ring > 0:
        # the closed septum splits into the two daughters' new ends as the cell constricts
        split = 0.15 * float(_smoothstep((p - SEPARATION_START) / (1.0 - SEPARATION_START)))
        septum = cell.division_ring(-split) + cell.division_ring(split)
        red += w_sept * 3.0 * ring * septum / np.sqrt(2 * cell.radius * RING_UM)  # ring edges ~1
    return red


# --------------------------------------------------------------------------------------------
# Green channel: one pattern per protein. Each returns (density on the grid, points (u, v, w)).
# Every pattern draws a fixed set of random numbers whatever the phase.


def _cortex(cell: _Cell, u, cosphi):
    """Points on the cortex seen in projection: v spread like cos(phi) across the local width."""
    return 0.9 * cell.half_width(u) * cosphi


def _segment(u0, v0, u1, v1, weight_per_um, step):
    k = max(int(np.hypot(u1 - u0, v1 - v0) / step), 1) + 1
    t = np.linspace(0.0, 1.0, k)
    w = np.full(k, weight_per_um * step)
    return u0 + t * (u1 - u0), v0 + t * (v1 - v0), w


def _points(*parts):
    if not parts:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate([np.atleast_1d(p[i]) for p in parts]) for i in range(3))


def _tea(cell: _Cell, rng, sigma, n_dots, dot_weight, cyto):
    """Tea1/Tea4: crescents at both cell ends with puncta in them, a few microtubule-borne dots."""
    amount = rng.uniform(0.6, 1.0, 2)
    depth = rng.exponential(0.8 * sigma, n_dots)
    end = np.where(rng.random(n_dots) < 0.5, 1, -1)
    cosphi = np.cos(rng.uniform(0, np.pi, n_dots))
    w = dot_weight * rng.lognormal(0.0, 0.4, n_dots)
    travelling = rng.uniform(-0.8, 0.8, (3, 2))
    # the cap of cortex seen face-on (the pole) plus its limb, as a blob filling the tip
    tip = 0.6 + 0.4 * cell.membrane()
    density = cyto * cell.chord()
    for k, e in enumerate((1, -1)):
        density = density + amount[k] * tip * cell.cap(e, sigma)
    u = end * (cell.half - depth)
    tu = travelling[:, 0] * cell.straight
    tv = travelling[:, 1] * cell.radius * 0.6
    return density, _points((u, _cortex(cell, u, cosphi), w), (tu, tv, np.full(3, 0.15)))


def _tea1(cell, rng):
    return _tea(cell, rng, sigma=0.55, n_dots=5, dot_weight=0.6, cyto=0.06)


def _tea4(cell, rng):
    # Tea4 is more punctate and more tightly packed at the very tip than Tea1
    return _tea(cell, rng, sigma=0.4, n_dots=7, dot_weight=0.9, cyto=0.04)


def _actin(cell: _Cell, rng, mean_patches, ring_weight):
    """Arp3/Fim1: cortical actin patches at the growing tips, moving to the division site."""
    n_max = 48
    count = min(rng.poisson(mean_patches), n_max)
    pick, side, scatter = rng.random((3, n_max))
    depth = rng.exponential(0.9, n_max)
    along = rng.uniform(-1.0, 1.0, n_max)
    medial_u = rng.normal(0.0, 0.8, n_max)
    cosphi = np.cos(rng.uniform(0, np.pi, n_max))
    w = rng.lognormal(0.0, 0.35, n_max)

    p = cell.phase
    to_middle = float(_smoothstep((p - GROWTH_STOP - 0.03) / 0.07))  # leaving the tips in mitosis
    growing_new = float(_smoothstep((p - cell.neto) / 0.06))
    p_old = 0.88 - 0.38 * growing_new  # monopolar: mostly old end; bipolar: both
    medial = pick < to_middle
    scattered = ~medial & (scatter < 0.05)
    end = np.where(side < p_old, cell.old_end, -cell.old_end)
    u = end * (cell.half - np.minimum(depth, 0.45 * cell.length))
    u = np.where(scattered, along * cell.straight, u)
    u = np.where(medial, medial_u, u)
    w = np.where(np.arange(n_max) < count, w, 0.0)
    density = 0.03 * cell.chord()
    ring = ring_weight * float(_smoothstep((p - GROWTH_STOP - 0.03) / 0.05))  # before Bgs4 arrives
    if ring > 0:
        density = density + ring * cell.division_ring()
    return density, (u, _cortex(cell, u, cosphi), w)


def _arp3(cell, rng):
    return _actin(cell, rng, mean_patches=25, ring_weight=0.0)


def _fim1(cell, rng):
    # fimbrin also decorates the actomyosin ring (Wu et al. 2001); Arp2/3 does not
    return _actin(cell, rng, mean_patches=30, ring_weight=0.35)


def _alp14(cell: _Cell, rng):
    """Alp14: plus-end dots of 3-5 antiparallel microtubule bundles along the long axis; in
    mitosis a bright spindle bar; in cytokinesis a post-anaphase array at the division site."""
    n_max = 5
    count = rng.integers(3, n_max + 1)
    centre = rng.normal(0.0, 0.8, n_max)
    across = rng.uniform(-0.55, 0.55, n_max)
    tilt = rng.normal(0.0, 0.05, n_max)
    reach = rng.uniform(0.35, 1.0, (n_max, 2))
    w = rng.lognormal(0.0, 0.3, (n_max, 2))
    paa = rng.uniform(-0.7, 0.7, 3)

    p, step = cell.phase, cell.px / 2
    parts = []
    if GROWTH_STOP <= p < SEPTUM_START:
        (u0, v0), (u1, v1) = cell.spbs
        parts.append(_segment(u0, v0, u1, v1, 2.0, step))
        parts.append(([u0, u1], [v0, v1], [0.6, 0.6]))
    else:
        if p < GROWTH_STOP:
            intervals = [(-cell.half, cell.half)] * n_max
            centres = cell.nuclei[0][0] + centre
        else:  # interphase arrays re-forming in each daughter half
            intervals = [(0.0, cell.half) if k % 2 else (-cell.half, 0.0) for k in range(n_max)]
            centres = np.array([(lo + hi) / 2 for lo, hi in intervals]) + 0.4 * centre
            parts.append((0.3 * paa, paa * cell.radius, np.full(3, 0.8)))
        for k in range(count):
            lo, hi = intervals[k][0] + 0.5, intervals[k][1] - 0.5
            c = np.clip(centres[k], lo + 0.3, hi - 0.3)
            ua, ub = c - reach[k, 0] * (c - lo), c + reach[k, 1] * (hi - c)
            va = (across[k] + tilt[k] * (ua - c)) * cell.radius
            vb = (across[k] + tilt[k] * (ub - c)) * cell.radius
            parts.append(_segment(ua, va, ub, vb, 0.25, step))
            parts.append(([ua, ub], [va, vb], w[k]))
    return 0.08 * cell.chord(), _points(*parts)


def _sid2(cell: _Cell, rng):
    """Sid2: the spindle pole body (one dot, two in mitosis), plus the medial ring at division."""
    w = rng.lognormal(0.0, 0.25, 2)
    p = cell.phase
    ring = float(_smoothstep((p - RING_START - 0.03) / 0.04))  # joins the ring late in anaphase
    density = 0.05 * cell.chord()
    if ring > 0:
        density = density + 0.45 * ring * cell.division_ring()
    u, v = cell.spbs[:, 0], cell.spbs[:, 1]
    return density, (u, v, w * 1.2)  # coincident in interphase: one dot of twice the weight


def _mkh1(cell: _Cell, rng):
    """Mkh1: broad, weak tip caps and the division site over a strong diffuse cytoplasm."""
    amount = rng.uniform(0.4, 0.8, 2)
    granules_u = rng.uniform(-1.0, 1.0, 10)
    granules_v = rng.uniform(-0.7, 0.7, 10)
    w = rng.lognormal(-0.5, 0.4, 10)
    p = cell.phase
    mem = cell.membrane()
    density = 0.5 * cell.chord() * (1.0 - 0.2 * cell.nucleus())
    density = density + mem * (amount[0] * cell.cap(1, 1.3) + amount[1] * cell.cap(-1, 1.3)) * 0.8
    division = float(_smoothstep((p - RING_START) / 0.06))
    if division > 0:
        density = density + 0.6 * division * cell.band(0.0, 0.45) * cell.chord()
    u = granules_u * (cell.half - 0.5)
    return density, (u, granules_v * cell.half_width(u), w)


def _cki2(cell: _Cell, rng):
    """Cki2: diffuse cytoplasm, mottled, dimmer over the nucleus."""
    mottle = gaussian_filter(rng.standard_normal(cell.u.shape), 0.5 / cell.px)
    mottle *= 2.0 * np.sqrt(np.pi) * 0.5 / cell.px  # back to unit variance
    density = cell.chord() * (1.0 + 0.15 * mottle) * (1.0 - 0.3 * cell.nucleus())
    return np.maximum(density, 0.0), _points()


PATTERNS = {
    "Alp14": _alp14, "Arp3": _arp3, "Cki2": _cki2, "Fim1": _fim1,
    "Mkh1": _mkh1, "Sid2": _sid2, "Tea1": _tea1, "Tea4": _tea4,
}  # fmt: skip
# per-protein range of the brightest (noise-free) green pixel, in 8-bit counts
GREEN_PEAK = {
    "Alp14": (150, 230), "Arp3": (170, 245), "Cki2": (110, 180), "Fim1": (170, 245),
    "Mkh1": (90, 150), "Sid2": (170, 245), "Tea1": (170, 245), "Tea4": (140, 220),
}  # fmt: skip


# Typical brightest blurred density per channel (about the 25th percentile over cells)
REFERENCE = {
    "Bgs4": 3.0, "Alp14": 0.26, "Arp3": 0.39, "Cki2": 1.1, "Fim1": 0.42,
    "Mkh1": 1.2, "Sid2": 0.29, "Tea1": 1.08, "Tea4": 1.09,
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Rendering


def _splat(points, cell: _Cell, shape) -> np.ndarray:
    """Bilinear deposit of point emitters (u, v, weight) onto the pixel grid."""
    u, v, w = points
    out = np.zeros(shape[0] * shape[1])
    if len(u) == 0:
        return out.reshape(shape)
    r, c = cell.to_pixels(np.asarray(u, float), np.asarray(v, float))
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    fr, fc = r - r0, c - c0
    corners = ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc))
    for dr, dc, wt in corners:
        rr, cc = r0 + dr, c0 + dc
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        out += np.bincount(rr[ok] * shape[1] + cc[ok], weights=(w * wt)[ok], minlength=out.size)
    # weights are per µm², so that a dot's blurred peak does not depend on the pixel size
    return out.reshape(shape) * (PIXEL_SIZE_UM / cell.px) ** 2


def render_cell(protein: str, rng: np.random.Generator, size=(48, 80), phase: float | None = None,
                pattern=None):
    """One cell: ``((2, H, W) uint8 image, truth dict)``; ``phase`` overrides the drawn phase.

    ``pattern`` ``(cell, rng) -> (density, points)`` replaces the protein's green pattern (the
    synthetic classes vary them); the protein still sets the green brightness.
    """
    if protein not in PATTERNS:
        raise ValueError(f"unknown protein {protein!r}; known: {', '.join(PROTEINS)}")
    size = _check_size(size)
    drawn = rng.random()  # always drawn, so a forced phase leaves the rest of the cell unchanged
    phase = drawn if phase is None else float(phase)
    if not 0.0 <= phase <= 1.0:
        raise ValueError(f"phase must lie in [0, 1], got {phase}")
    birth_length = float(np.clip(rng.normal(7.0, 0.25), 6.5, MAX_LENGTH_UM / 2))
    width = float(np.clip(rng.normal(4.0, 0.12), 3.7, 4.3))
    neto = float(np.clip(rng.normal(NETO_PHASE, 0.03), 0.22, 0.38))
    angle = float(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0))
    bend = float(rng.normal(0.0, 0.004))
    old_end = 1 if rng.random() < 0.5 else -1
    offset = rng.normal(0.0, 0.15, 2)
    nucleus = (rng.normal(0.0, 0.3), rng.normal(0.0, 0.15))
    spb_angle = rng.uniform(0, 2 * np.pi)
    psf = rng.uniform(0.17, 0.24)  # µm, Gaussian sigma: widefield PSF plus the z projection
    red_weights = rng.lognormal(0.0, 0.15, 4)
    red_peak = rng.uniform(205, 250)
    green_peak = rng.uniform(*GREEN_PEAK[protein])
    background = rng.uniform((4, 2), (10, 6))
    gain = rng.uniform(0.6, 1.2)  # counts per photo-electron: shot-noise variance = gain * signal
    read = rng.uniform(1.5, 3.0)
    noise = rng.standard_normal((2,) + tuple(size))

    cell = _make_cell(
        phase, birth_length, width, neto, angle, bend, old_end, offset, nucleus, spb_angle, size
    )
    red = gaussian_filter(_bgs4(cell, red_weights), 1.1 * psf / cell.px)  # longer wavelength, wider PSF
    density, points = (pattern or PATTERNS[protein])(cell, rng)
    green = gaussian_filter(density + _splat(points, cell, size), psf / cell.px)

    image = np.zeros((2,) + tuple(size), dtype=np.uint8)
    channels = ((red, red_peak, REFERENCE["Bgs4"], 1), (green, green_peak, REFERENCE[protein], 0))
    for k, (signal, peak, reference, floor) in enumerate(channels):
        # the brightest pixel maps to ``peak`` unless the cell has no structure as bright as a
        # typical one (e.g. Bgs4 between tip growth and septum): then it stays dimmer
        top = signal[cell.mask].max(initial=0.0)
        counts = signal * (peak / max(top, reference)) + background[k]
        counts = counts + np.sqrt(gain * counts + read * read) * noise[k]
        image[k] = np.where(cell.mask, np.clip(np.rint(counts), floor, 255), 0)

    truth = {
        "phase": phase,
        "length_um": cell.length,
        "width_um": width,
        "growth_mode": growth_mode(phase, neto),
        "stage": stage(phase),
        "angle_deg": angle,
        "birth_length_um": birth_length,
        "neto_phase": neto,
        "old_end": old_end,  # +1: the old (first-growing) end is on the right
        "spindle_um": cell.spindle,
        "septum_closure": septum_closure(phase),
        "centre_row": cell.centre[0],
        "centre_col": cell.centre[1],
    }
    return image, truth


def _check_proteins(proteins) -> list[str]:
    if proteins is None:
        proteins = PROTEINS
    names = sorted({proteins} if isinstance(proteins, str) else set(proteins))
    unknown = [p for p in names if p not in PROTEINS]
    if unknown or not names:
        raise ValueError(f"unknown proteins {unknown}; known: {', '.join(PROTEINS)}")
    return names


def _check_size(size) -> tuple[int, int]:
    size = tuple(int(s) for s in size)
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    return size


def _cell_rng(seed: int, protein: str, index: int) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and cell index must be >= 0, got {seed}, {index}")
    return np.random.default_rng([seed, PROTEINS.index(protein), index])


def _collect(images, class_index, names, rows, size) -> SimulatedCells:
    keys = rows[0].keys() if rows else ()
    return SimulatedCells(
        images=images,
        class_index=np.asarray(class_index, dtype=np.int64),
        class_names=names,
        truth={key: np.array([r[key] for r in rows]) for key in keys},
        pixel_size_um=pixel_size_um(size),
    )


def simulate_cells(
    n_per_class: int, proteins=PROTEINS, seed: int = 0, size=(48, 80), phase=None
) -> SimulatedCells:
    """``n_per_class`` cells of each protein, class-major in sorted protein order.

    ``phase``: None (uniform in [0, 1] per cell), a scalar, or ``n_per_class`` values; cell ``i``
    of every class gets ``phase[i]``. Cell ``i`` of protein ``p`` depends only on
    ``(seed, PROTEINS.index(p), i)``.
    """
    names = _check_proteins(proteins)
    size = _check_size(size)
    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    phases = [None] * n_per_class
    if phase is not None:
        phases = np.asarray(phase, dtype=float)
        if phases.ndim > 1 or phases.size not in (1, n_per_class):
            raise ValueError(f"phase must be a scalar or {n_per_class} values, got shape {phases.shape}")
        phases = np.broadcast_to(phases.ravel(), (n_per_class,))

    images = np.zeros((len(names) * n_per_class, 2) + size, dtype=np.uint8)
    rows = []
    for k, name in enumerate(names):
        for i in range(n_per_class):
            images[k * n_per_class + i], truth = render_cell(name, _cell_rng(seed, name, i), size, phases[i])
            rows.append(truth)
    return _collect(images, np.repeat(np.arange(len(names)), n_per_class), names, rows, size)


def simulate_lineage(protein: str, phases, seed: int = 0, index: int = 0, size=(48, 80)) -> SimulatedCells:
    """Cell ``index`` of ``protein`` (as :func:`simulate_cells` would make it for ``seed``)
    rendered at each of ``phases``: same shape, tilt and optics, moving through its cycle."""
    _check_proteins([protein])
    renders = [render_cell(protein, _cell_rng(seed, protein, index), size, p) for p in np.atleast_1d(phases)]
    images = np.stack([image for image, _ in renders])
    return _collect(images, np.zeros(len(renders)), [protein], [t for _, t in renders], size)


def simulate_stack(n_per_class: int, proteins=None, seed: int = 0, size=(48, 80), phase=None):
    """:func:`simulate_cells` as a :class:`~napari_biogans.data.lin.CellStack`, marked simulated,
    with the file names the released layout would give (``<protein>/cell<i>.png``)."""
    from .lin import CellStack

    cells = simulate_cells(n_per_class, proteins, seed, size, phase)
    files = [f"{name}/cell{i}.png" for name in cells.class_names for i in range(n_per_class)]
    return CellStack(
        images=cells.images,
        class_index=cells.class_index,
        class_names=cells.class_names,
        file_names=files,
        truth=cells.truth,
        description=f"simulated fission yeast (napari-biogans simulator, seed {seed})",
        simulated=True,
        pixel_size_um=cells.pixel_size_um,
    )


# --------------------------------------------------------------------------------------------
# Fields of view: many cells at any position and orientation, with ground-truth labels


FIELD_PIXEL_SIZE_UM = 0.1  # the LIN microscope's pixel (Osokin et al. 2017, section 3.3)
FIELD_Z_STEP_UM = 0.3  # the LIN stacks' plane spacing
FIELD_BACKGROUND = 5.0  # autofluorescence outside cells, in the cells' 8-bit count scale
FIELD_ELECTRONS_PER_COUNT = 4.0  # shot noise: one 8-bit count is this many photo-electrons
FIELD_OFFSET = {8: 2, 12: 100, 16: 500}  # camera offset in ADU
FIELD_ADU_PER_COUNT = {8: 0.9, 12: 12.0, 16: 150.0}  # full scale: ~255 counts fill the dtype


@dataclass(frozen=True)
class FieldCell:
    """One field cell's drawn parameters: enough to render it on any grid, at any angle."""

    protein: str
    phase: float
    birth_length: float
    width: float
    neto: float
    bend: float
    old_end: int
    nucleus: tuple[float, float]
    spb_angle: float
    psf: float
    red_weights: tuple[float, ...]
    red_peak: float
    green_peak: float
    pattern_seed: tuple[int, ...]

    @property
    def length(self) -> float:
        return cell_length(self.phase, self.birth_length, self.neto)


def draw_field_cell(protein: str, rng: np.random.Generator, pattern_seed, phase: float | None = None) -> FieldCell:
    """Draw a cell as :func:`render_cell` would (same distributions); its green pattern draws from
    ``pattern_seed`` so that re-rendering it on another grid gives the same structures."""
    _check_proteins([protein])
    drawn = rng.random()
    return FieldCell(
        protein=protein, phase=drawn if phase is None else float(phase),
        birth_length=float(np.clip(rng.normal(7.0, 0.25), 6.5, MAX_LENGTH_UM / 2)),
        width=float(np.clip(rng.normal(4.0, 0.12), 3.7, 4.3)),
        neto=float(np.clip(rng.normal(NETO_PHASE, 0.03), 0.22, 0.38)),
        bend=float(rng.normal(0.0, 0.004)), old_end=1 if rng.random() < 0.5 else -1,
        nucleus=(float(rng.normal(0.0, 0.3)), float(rng.normal(0.0, 0.15))),
        spb_angle=float(rng.uniform(0, 2 * np.pi)), psf=float(rng.uniform(0.17, 0.24)),
        red_weights=tuple(float(w) for w in rng.lognormal(0.0, 0.15, 4)),
        red_peak=float(rng.uniform(205, 250)), green_peak=float(rng.uniform(*GREEN_PEAK[protein])),
        pattern_seed=tuple(int(k) for k in pattern_seed),
    )  # fmt: skip


def render_cell_signals(cell: FieldCell, shape, centre, angle_deg: float, px: float):
    """Noise-free ``(red, green, mask)`` of ``cell`` on a ``shape`` grid of ``px`` µm pixels, its
    centre at ``centre`` (row, col), its long axis at ``angle_deg`` (towards +rows, old end at
    +axis); intensities in the 8-bit count scale of :func:`render_cell`, no background."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    geometry = _cell_on_grid(cell.phase, cell.birth_length, cell.width, cell.neto, angle_deg, cell.bend,
                             cell.old_end, cell.nucleus, cell.spb_angle, rows, cols, centre, px)
    # light comes from inside the cell only; the PSF then spreads it over the outline
    inside = geometry.mask
    red = gaussian_filter(_bgs4(geometry, cell.red_weights) * inside, 1.1 * cell.psf / px)
    density, points = PATTERNS[cell.protein](geometry, np.random.default_rng(list(cell.pattern_seed)))
    green = gaussian_filter((density + _splat(points, geometry, tuple(shape))) * inside, cell.psf / px)
    out = []
    for signal, peak, reference in ((red, cell.red_peak, REFERENCE["Bgs4"]),
                                    (green, cell.green_peak, REFERENCE[cell.protein])):
        top = signal[geometry.mask].max(initial=0.0)
        out.append(signal * (peak / max(top, reference)))
    return out[0], out[1], geometry.mask


def render_aligned(cell: FieldCell, size=(48, 80)) -> np.ndarray:
    """The simulator's own single-cell rendering of a field cell: horizontal, old end on the right,
    its mask's centroid in the middle of the frame (a bent cell's centroid is off its centre, and a
    crop is centred on the centroid), noise-free, masked, ``(2, H, W)`` float at
    :func:`pixel_size_um` of ``size``."""
    size = _check_size(size)
    middle = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    _, _, mask = render_cell_signals(cell, size, tuple(middle), 0.0, pixel_size_um(size))
    centre = 2 * middle - np.argwhere(mask).mean(axis=0)
    red, green, mask = render_cell_signals(cell, size, tuple(centre), 0.0, pixel_size_um(size))
    return np.stack([red, green]) * mask


@dataclass
class SimulatedField:
    """A field of view: ``image`` (C=2, H, W) or (Z, 2, H, W) in ``dtype`` counts, ``labels`` (H, W)
    with cell ``k`` as label ``k + 1``, ``truth`` one value per cell, ``cells`` their parameters."""

    image: np.ndarray
    labels: np.ndarray
    truth: dict[str, np.ndarray]
    cells: list[FieldCell]
    pixel_size_um: float = FIELD_PIXEL_SIZE_UM
    channel_names: tuple[str, str] = ("Bgs4", "protein")


def _place(rng, shape, px, cell: FieldCell, placed, touching: float):
    """A centre (row, col) and angle for ``cell``: touching a placed cell (side by side or end to end,
    as just-divided cells lie) with probability ``touching``, else anywhere, border included."""
    if placed and rng.random() < touching:
        other, (row, col), angle = placed[rng.integers(len(placed))]
        theta = np.deg2rad(angle)
        axis, normal = np.array([np.sin(theta), np.cos(theta)]), np.array([np.cos(theta), -np.sin(theta)])
        gap = 0.3 * px  # the outlines a third of a pixel apart: touching, not overlapping
        if rng.random() < 0.5:
            offset = axis * (other.length + cell.length) / 2 * rng.choice([-1, 1])
        else:
            offset = normal * (other.width + cell.width) / 2 * rng.choice([-1, 1]) + axis * rng.uniform(-2, 2)
        offset = offset + np.sign(offset) * gap
        return (row + offset[0] / px, col + offset[1] / px), angle + rng.normal(0.0, 3.0)
    return tuple(rng.uniform(-0.03, 1.03, 2) * np.asarray(shape)), rng.uniform(-90.0, 90.0)


def simulate_field(seed: int = 0, shape=(512, 512), n_cells: int = 12, proteins=("Tea1",), touching: float = 0.3,
                   z_planes: int = 0, bit_depth: int = 16, pixel_size: float = FIELD_PIXEL_SIZE_UM) -> SimulatedField:
    """Cells of the simulator at random positions and orientations on one field of view.

    Some touch (``touching``: the chance that a cell is put against an earlier one), some are cut
    by the border; cells never overlap. Each channel gets autofluorescence, shot and read noise,
    a camera offset and the range of ``bit_depth`` (8, 12 or 16 bits, stored in uint8 / uint16).
    With ``z_planes`` > 0 the field is a z-stack (0.3 µm steps) that defocuses away from the middle.
    """
    if bit_depth not in FIELD_OFFSET:
        raise ValueError(f"bit_depth must be one of {sorted(FIELD_OFFSET)}, got {bit_depth}")
    names = _check_proteins(proteins)
    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng([seed, 7919])
    counts = np.zeros((2,) + shape)
    labels = np.zeros(shape, dtype=np.int32)
    cells, placed, rows = [], [], []
    for index in range(n_cells):
        protein = names[index % len(names)]
        cell = draw_field_cell(protein, np.random.default_rng([seed, 7919, index]), (seed, 7919, index, 1))
        for _attempt in range(30):
            centre, angle = _place(rng, shape, pixel_size, cell, placed, touching)
            half = int(np.ceil((cell.length / 2 + 1.0) / pixel_size))
            top, left = int(round(centre[0])) - half, int(round(centre[1])) - half
            local = (centre[0] - top, centre[1] - left)
            red, green, mask = render_cell_signals(cell, (2 * half + 1, 2 * half + 1), local, angle, pixel_size)
            window = (slice(max(top, 0), min(top + 2 * half + 1, shape[0])),
                      slice(max(left, 0), min(left + 2 * half + 1, shape[1])))
            inner = (slice(window[0].start - top, window[0].stop - top),
                     slice(window[1].start - left, window[1].stop - left))
            if any(w.stop <= w.start for w in window):
                continue
            mask = mask[inner]
            if mask.sum() < 0.3 * np.pi * (cell.width / 2 / pixel_size) ** 2 or (labels[window][mask] > 0).any():
                continue  # mostly outside the field, or overlapping a cell: draw another place
            label = len(cells) + 1
            labels[window][mask] = label
            counts[0][window] += red[inner]
            counts[1][window] += green[inner]
            cells.append(cell)
            placed.append((cell, centre, angle))
            rows.append({"label": label, "protein": protein, "phase": cell.phase, "length_um": cell.length,
                         "width_um": cell.width, "angle_deg": float(angle), "centre_row": float(centre[0]),
                         "centre_col": float(centre[1]), "old_end": cell.old_end})
            break
    truth = {key: np.array([r[key] for r in rows]) for key in (rows[0] if rows else ())}
    truth.update(_neighbourhood(labels, len(cells), pixel_size))
    image = _camera(counts, rng, z_planes, bit_depth, pixel_size)
    return SimulatedField(image=image, labels=labels, truth=truth, cells=cells, pixel_size_um=pixel_size,
                          channel_names=("Bgs4", names[0] if len(names) == 1 else "protein"))


def _neighbourhood(labels, n, px) -> dict[str, np.ndarray]:
    """Per cell: does it touch the field's border, and how far (µm) is the nearest other cell."""
    from scipy.ndimage import distance_transform_edt, find_objects

    border = np.zeros(n, dtype=bool)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border[edge[edge > 0] - 1] = True
    gap = np.full(n, np.inf)
    pad = int(np.ceil(2.0 / px))  # look 2 µm around each cell; farther counts as isolated
    for k, box in enumerate(find_objects(labels, n)):
        if box is None:
            continue
        box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
        local = labels[box]
        others = (local > 0) & (local != k + 1)
        if others.any():
            gap[k] = distance_transform_edt(~others)[local == k + 1].min() * px - px
    return {"touches_border": border, "gap_um": gap}


def _camera(counts, rng, z_planes, bit_depth, px) -> np.ndarray:
    """Counts (8-bit scale) -> a noisy image in the camera's ADU, optionally as a defocused z-stack."""
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    planes = [0.0] if z_planes <= 0 else (np.arange(z_planes) - (z_planes - 1) / 2) * FIELD_Z_STEP_UM
    stack = []
    for depth in planes:
        signal = counts + FIELD_BACKGROUND
        if depth:
            sigma = abs(depth) * 0.5 / px  # out of focus: wider, dimmer peaks, the same total light
            signal = np.stack([gaussian_filter(c, sigma) for c in counts]) + FIELD_BACKGROUND
        electrons = rng.poisson(signal * FIELD_ELECTRONS_PER_COUNT) / FIELD_ELECTRONS_PER_COUNT
        adu = FIELD_OFFSET[bit_depth] + electrons * FIELD_ADU_PER_COUNT[bit_depth]
        adu = adu + rng.normal(0.0, 1.5 * FIELD_ADU_PER_COUNT[bit_depth] / 4, adu.shape)
        stack.append(np.clip(np.rint(adu), 0, 2**bit_depth - 1).astype(dtype))
    return stack[0] if z_planes <= 0 else np.stack(stack)


def write_simulated_fields(out, n_fields: int, seed: int = 0, shape=(512, 512), n_cells: int = 12, proteins=("Tea1",),
                           z_planes: int = 0, bit_depth: int = 16, touching: float = 0.3) -> list:
    """``field_<k>.tif`` (OME-TIFF, pixel size and channel names), ``field_<k>_labels.tif`` (ground
    truth) and ``field_<k>_truth.csv`` (one row per label) for k < ``n_fields``; field k uses seed + k."""
    import csv
    from pathlib import Path

    from .fields import write_field_tiff

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(n_fields):
        sim = simulate_field(seed + k, shape, n_cells, proteins, touching, z_planes, bit_depth)
        flag = {"simulated": True, "source": f"napari-biogans simulator, seed {seed + k}"}
        path = write_field_tiff(out / f"field_{k}.tif", sim.image, sim.pixel_size_um, sim.channel_names,
                                FIELD_Z_STEP_UM if z_planes else None, flag)
        write_field_tiff(out / f"field_{k}_labels.tif", sim.labels[None], sim.pixel_size_um, ["cell labels"],
                         metadata=flag)
        with atomic_open(out / f"field_{k}_truth.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(sim.truth))
            writer.writerows(zip(*(np.asarray(v).tolist() for v in sim.truth.values())))
        written.append(path)
    return written


def _write_montages(folder, seed: int = 0) -> None:
    """The documentation pictures: every protein through the cycle, and one cell's lineage."""
    import imageio.v3 as iio

    from .montage import make_montage

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    # one row per protein, phases 0.05 .. 0.95 left to right
    cells = simulate_cells(10, seed=seed, phase=(np.arange(10) + 0.5) / 10)
    # Arp3 patches: old tip, both tips, then the division site (Osokin et al. 2017, Fig. 7)
    lineage = simulate_lineage("Arp3", np.linspace(0.0, 1.0, 16), seed=seed, index=1)
    pictures = {"simulator_montage.png": make_montage(cells.images, 10),
                "simulator_lineage.png": make_montage(lineage.images, 8)}  # fmt: skip
    for name, picture in pictures.items():
        atomic_write(os.path.join(folder, name),
                     lambda tmp: iio.imwrite(tmp, picture.repeat(2, axis=0).repeat(2, axis=1)))  # noqa: B023 (legible)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write the simulator's documentation montages")
    parser.add_argument("--out", default="docs", help="output folder (default: docs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _write_montages(args.out, args.seed)
