"""SYNTHETIC protein classes: parameter variations of the simulator's patterns, for scale tests.

These are not real proteins and not LIN images. The LIN collection has 41 proteins; to train
and test conditional models at that number of classes without the (non-redistributable) data,
each synthetic class takes one of the simulator's eight green patterns and varies it: the
base's point emitters (patches, microtubule ends, spindle poles) are scaled, and one or two
structures are added on top: diffuse cytoplasm, caps at both cell ends, a nuclear signal, or
a medial ring from anaphase on. Classes are named ``synthetic-07 (Tea1 variant)`` and the
stack is marked simulated, with a description that says the classes are synthetic.

A class's variation is fixed by its index alone (not by the stack's seed or size), so
``synthetic-07`` is the same pattern in every stack. The red channel and the cell geometry
are the simulator's: a variant changes only the green.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .simulator import PATTERNS, PROTEINS, REFERENCE, RING_START, pixel_size_um, render_cell

__all__ = ["ADDED", "SyntheticClass", "synthetic_classes", "synthetic_stack"]

ADDED = {"cyto": (0.1, 0.4), "tips": (0.3, 0.8), "nucleus": (0.3, 0.8), "ring": (0.2, 0.5)}  # amount ranges
_VARIANTS_SEED = 41  # fixes the table of variants
_CELL_STREAM = 1000  # cell random streams apart from the simulator's per-protein ones
MAX_CLASSES = 99  # two-digit names keep sorted order = class order


@dataclass(frozen=True)
class SyntheticClass:
    """One synthetic class: ``base`` pattern, its point emitters times ``dots``, plus added structures.

    The added amounts are relative to the base protein's typical brightest density, so an
    addition shows up as much on a dim dotted pattern (Sid2) as on a bright diffuse one (Cki2).
    """

    name: str
    base: str
    dots: float
    cyto: float = 0.0
    tips: float = 0.0
    nucleus: float = 0.0
    ring: float = 0.0

    def pattern(self, cell, rng):
        """The green pattern ``(cell, rng) -> (density, points)`` that ``render_cell`` takes."""
        density, (u, v, w) = PATTERNS[self.base](cell, rng)
        chord = cell.chord()
        caps = (cell.cap(1, 0.8) + cell.cap(-1, 0.8)) * cell.mask
        ring = float(np.clip((cell.phase - RING_START) / 0.05, 0.0, 1.0)) * cell.division_ring()
        added = self.cyto * chord + self.tips * caps + self.nucleus * cell.nucleus() * chord + self.ring * ring
        return density + REFERENCE[self.base] * added, (u, v, self.dots * w)


def synthetic_classes(n_classes: int = 41) -> list[SyntheticClass]:
    """The first ``n_classes`` synthetic classes; class i varies ``PROTEINS[i % 8]``."""
    if not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must lie in 1..{MAX_CLASSES}, got {n_classes}")
    classes = []
    for i in range(n_classes):
        rng = np.random.default_rng([_VARIANTS_SEED, i])
        base = PROTEINS[i % len(PROTEINS)]
        names = list(ADDED)
        chosen = rng.choice(len(names), size=rng.integers(1, 3), replace=False)
        added = {names[j]: float(rng.uniform(*ADDED[names[j]])) for j in sorted(chosen)}
        classes.append(SyntheticClass(f"synthetic-{i:02d} ({base} variant)", base, float(rng.uniform(0.5, 2.0)),
                                      **added))
    return classes


def synthetic_stack(n_per_class: int, n_classes: int = 41, seed: int = 0, size=(48, 80)):
    """``n_per_class`` cells of each of ``n_classes`` synthetic classes, as a simulated
    :class:`~napari_biogans.data.lin.CellStack` (class-major; ground truth includes ``base_protein``)."""
    from .lin import CellStack

    if n_per_class < 0:
        raise ValueError(f"n_per_class must be >= 0, got {n_per_class}")
    classes = synthetic_classes(n_classes)
    size = tuple(int(s) for s in size)
    images = np.zeros((n_classes * n_per_class, 2) + size, dtype=np.uint8)
    rows = []
    for k, cls in enumerate(classes):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, _CELL_STREAM + k, i])
            images[k * n_per_class + i], truth = render_cell(cls.base, rng, size, pattern=cls.pattern)
            rows.append({**truth, "base_protein": cls.base})
    return CellStack(
        images=images,
        class_index=np.repeat(np.arange(n_classes), n_per_class),
        class_names=[c.name for c in classes],
        file_names=[f"{c.name}/cell{i}.png" for c in classes for i in range(n_per_class)],
        truth={key: np.array([r[key] for r in rows]) for key in (rows[0] if rows else ())},
        description=(f"SYNTHETIC classes, not real proteins: {n_classes} parameter variations of the "
                     f"napari-biogans simulator's protein patterns (simulated fission yeast, seed {seed})"),
        simulated=True,
        pixel_size_um=pixel_size_um(size),
    )
