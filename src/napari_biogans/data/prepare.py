"""Fields of view -> aligned LIN-style cells: segment, measure and filter, align and crop, normalise.

The LIN release went through this step before anyone saw it (Osokin et al. 2017: "each image
being centered on one cell; cell segmentation was performed separately ...; each pixel
corresponds to a physical size of 100 nm; ... we center crop and resize to 48 x 80").

Scale: a crop is a window of fixed physical size, 16 x 9.6 µm, resampled to 48 x 80 (0.2 µm per
pixel) or 96 x 160 (0.1 µm, the LIN microscope's own pixel): the released 48 x 80 cells are the
100 nm stacks resized by one half, and it is the scale of this project's simulator and models.

Orientation: each cell is rotated about its centroid so that its long axis is horizontal, then
turned by 180 degrees if needed so that its brighter red (Bgs4) half lies on the left: Bgs4 marks
the growing tip, so a monopolar cell's old end points left.

Normalisation (per channel, never a silent cut of 16-bit values to 8 bits): ``low`` is the
field's background (median of the pixels at least 1 µm from every cell), ``high`` the 99.5th
percentile of the pixels inside the accepted cells of the field ("field": brightness differences
between cells survive) or of each cell alone ("cell": every cell spans the range). [low, high]
maps linearly onto [0, 255]; the fraction of a cell's pixels above ``high`` (saturated at 255) is
recorded in its provenance row, and the un-normalised float crops are kept too.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..jobs import Job, Update
from .fields import Field, FieldError, safe_name
from .lin import CellStack, write_h5, write_lin_folder
from .simulator import pixel_size_um as crop_pixel_size

SIZES = ((48, 80), (96, 160))
NORMALISATIONS = ("field", "cell")
PREPARED_RELEASE = "LIN_Prepared_size-{h}-{w}_{role}"
PROVENANCE_FILE = "provenance.csv"
H5_FILE = "cells.h5"
FLOAT_FILE = "cells_float.tif"


@dataclass
class SegmentParams:
    """The built-in segmentation of the red (outline) channel; defaults for fission yeast."""

    smoothing_um: float = 0.1  # Gaussian sigma before thresholding
    threshold: str = "li"  # li, otsu or triangle (scikit-image); li suits a bright outline on a dark field
    threshold_factor: float = 1.0  # scales the automatic threshold
    core_um: float = 1.2  # deeper than this inside the outline is a cell's core: one core, one cell
    min_area_um2: float = 5.0  # smaller objects are debris, removed


@dataclass
class FilterParams:
    """Which measured cells are accepted; each rejected cell keeps the first reason that applies."""

    min_length_um: float = 5.0
    max_length_um: float | None = None  # None: the crop window's length less 0.4 µm
    min_width_um: float = 2.5
    max_width_um: float = 5.5
    min_solidity: float = 0.85  # merged or irregular objects are less convex
    reject_border: bool = True


@dataclass
class PrepareParams:
    size: tuple[int, int] = (48, 80)
    mask_outside: bool = True  # zero the pixels outside the cell, as in the LIN release
    normalise: str = "field"
    high_percentile: float = 99.5
    segment: SegmentParams = field(default_factory=SegmentParams)
    filters: FilterParams = field(default_factory=FilterParams)

    def __post_init__(self):
        self.size = tuple(int(s) for s in self.size)
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(f'{h}x{w}' for h, w in SIZES)}, got {self.size}")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")


@dataclass
class CellRecord:
    """One cell of a field: measured, then accepted or rejected with a reason (its provenance row)."""

    source: str
    label: int
    centroid_row: float
    centroid_col: float
    angle_deg: float  # of the long axis, towards +rows, in (-90, 90]; the crop turns it horizontal
    length_um: float
    width_um: float
    area_um2: float
    solidity: float
    reason: str = ""  # empty: accepted
    flipped: bool = False  # turned by 180 degrees so that the brighter red half is on the left
    normalisation: str = ""
    low_red: float = float("nan")
    high_red: float = float("nan")
    low_green: float = float("nan")
    high_green: float = float("nan")
    saturated_fraction: float = 0.0

    @property
    def accepted(self) -> bool:
        return not self.reason


@dataclass
class PreparedField:
    """The outcome for one field: every cell's record, and the accepted cells' crops in order."""

    source: str
    records: list[CellRecord]
    labels: np.ndarray  # the label image used (given or segmented)
    crops: np.ndarray  # (N, 2, H, W) uint8, normalised
    float_crops: np.ndarray  # (N, 2, H, W) float32, the field's own units
    pixel_size_um: float
    crop_pixel_size_um: float

    @property
    def accepted(self) -> list[CellRecord]:
        return [r for r in self.records if r.accepted]


# --------------------------------------------------------------------------------------------
# Segmentation


def segment(red: np.ndarray, pixel_size: float, params: SegmentParams | None = None) -> np.ndarray:
    """Labels of the cells in a red (outline) channel: smooth, threshold, fill the holes, seed one
    core per cell (the pixels far from the outline), grow the cores by a watershed of that distance
    (touching cells part at the neck between them), remove small objects."""
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology, segmentation

    params = params or SegmentParams()
    threshold = {"otsu": filters.threshold_otsu, "li": filters.threshold_li,
                 "triangle": filters.threshold_triangle}.get(params.threshold)
    if threshold is None:
        raise ValueError(f"threshold must be otsu, li or triangle, got {params.threshold!r}")
    smooth = ndi.gaussian_filter(red.astype(np.float32), params.smoothing_um / pixel_size)
    step = max(1, int(np.sqrt(smooth.size / 2**18)))  # the threshold from ~260,000 pixels: the same, faster
    foreground = ndi.binary_fill_holes(smooth > threshold(smooth[::step, ::step]) * params.threshold_factor)
    min_area = max(int(params.min_area_um2 / pixel_size**2), 1)
    foreground = morphology.remove_small_objects(foreground, max_size=min_area)
    distance = ndi.distance_transform_edt(foreground)
    # cores: the pixels deep inside a cell; two touching cells meet at a neck thinner than that.
    # (Seeding from the dark insides between bright membranes splits more touching pairs, but it
    # also cuts every septated cell in two: 84% of isolated cells found, against 99% this way.)
    cores = measure.label(distance > params.core_um / pixel_size)
    labels = segmentation.watershed(-distance, cores, mask=foreground)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < min_area] = 0
    return segmentation.relabel_sequential(labels)[0].astype(np.int32)


# --------------------------------------------------------------------------------------------
# Measurement and filtering


def measure_cells(labels: np.ndarray, pixel_size: float, source: str, params: PrepareParams) -> list[CellRecord]:
    """A record per labelled cell: centroid, long-axis angle, length and width along and across
    that axis, area, solidity; the filters fill ``reason`` for cells that are not taken."""
    from skimage.measure import regionprops

    filters = params.filters
    window_length = params.size[1] * crop_pixel_size(params.size)
    max_length = filters.max_length_um if filters.max_length_um is not None else window_length - 0.4
    h, w = labels.shape
    records = []
    for region in regionprops(labels):
        coords = region.coords.astype(np.float64)
        centre = coords.mean(axis=0)
        offsets = coords - centre
        if len(coords) > 2:
            eigenvalues, vectors = np.linalg.eigh(np.cov(offsets.T))
            axis = vectors[:, np.argmax(eigenvalues)]  # (row, col) of the long axis
        else:
            axis = np.array([0.0, 1.0])
        if axis[1] < 0 or (axis[1] == 0 and axis[0] < 0):
            axis = -axis
        along = offsets @ axis
        across = offsets @ np.array([-axis[1], axis[0]])
        top, left, bottom, right = region.bbox
        record = CellRecord(
            source=source, label=int(region.label), centroid_row=float(centre[0]), centroid_col=float(centre[1]),
            angle_deg=float(np.degrees(np.arctan2(axis[0], axis[1]))),
            length_um=float((np.ptp(along) + 1) * pixel_size), width_um=float((np.ptp(across) + 1) * pixel_size),
            area_um2=float(region.area * pixel_size**2), solidity=float(region.solidity),
        )  # fmt: skip
        touches = top == 0 or left == 0 or bottom == h or right == w
        checks = (
            (filters.reject_border and touches, "touches the border"),
            (record.length_um < filters.min_length_um, f"shorter than {filters.min_length_um:g} µm"),
            (record.length_um > max_length, f"longer than {max_length:g} µm (the crop window)"),
            (record.width_um < filters.min_width_um, f"narrower than {filters.min_width_um:g} µm"),
            (record.width_um > filters.max_width_um, f"wider than {filters.max_width_um:g} µm (merged cells?)"),
            (record.solidity < filters.min_solidity, f"solidity below {filters.min_solidity:g} (merged cells?)"),
        )
        record.reason = next((why for failed, why in checks if failed), "")
        records.append(record)
    return records


# --------------------------------------------------------------------------------------------
# Alignment and cropping


def _sample_grid(record: CellRecord, size, out_px: float, in_px: float, flipped: bool) -> np.ndarray:
    """Field coordinates (2, H, W) of each crop pixel: crop x along the cell's axis, y across it."""
    theta = np.radians(record.angle_deg) + (np.pi if flipped else 0.0)
    axis = np.array([np.sin(theta), np.cos(theta)])  # (row, col)
    normal = np.array([np.cos(theta), -np.sin(theta)])
    rows = (np.arange(size[0]) - (size[0] - 1) / 2) * out_px / in_px
    cols = (np.arange(size[1]) - (size[1] - 1) / 2) * out_px / in_px
    grid = cols[None, :, None] * axis + rows[:, None, None] * normal
    return np.moveaxis(grid + np.array([record.centroid_row, record.centroid_col]), -1, 0)


def align_crop(channels, labels, record: CellRecord, pixel_size: float, size, background):
    """The cell's ``(2, H, W)`` float crop and its mask, long axis horizontal, brighter red half
    on the left; ``channels`` should already be smoothed against aliasing."""
    from scipy.ndimage import map_coordinates

    out_px = crop_pixel_size(size)
    for flipped in (False, True):
        grid = _sample_grid(record, size, out_px, pixel_size, flipped)
        mask = map_coordinates((labels == record.label).astype(np.float32), grid, order=1) > 0.5
        crop = np.stack([map_coordinates(c, grid, order=1, mode="constant", cval=b)
                         for c, b in zip(channels, background)])
        red = np.where(mask, crop[0] - background[0], 0.0)
        half = size[1] // 2
        if flipped or red[:, :half].sum() >= red[:, half:].sum():
            break
    record.flipped = flipped
    return crop.astype(np.float32), mask


def _background(channel: np.ndarray, labels: np.ndarray, pixel_size: float) -> float:
    """Median of the pixels at least 1 µm from every labelled cell (the whole field when none)."""
    from scipy.ndimage import binary_dilation

    cells = labels > 0
    if cells.any():
        step = max(int(round(1.0 / pixel_size)), 1)
        far = ~binary_dilation(cells[::step, ::step])  # coarse grid: fast on large fields
        sample = channel[::step, ::step][far]
        if sample.size:
            return float(np.median(sample))
    return float(np.median(channel))


def normalise(float_crops, masks, records, backgrounds, params: PrepareParams) -> np.ndarray:
    """uint8 crops: per channel [low, high] -> [0, 255] (see the module's notes); fills records."""
    n = len(float_crops)
    out = np.zeros(float_crops.shape, dtype=np.uint8)
    if n == 0:
        return out
    q = params.high_percentile
    if params.normalise == "field":
        inside = [float_crops[:, k][masks] for k in range(2)]
        highs = np.array([[np.percentile(v, q) if v.size else 1.0 for v in inside]] * n)
    else:
        highs = np.array([[np.percentile(c[k][m], q) if m.any() else 1.0 for k in range(2)]
                          for c, m in zip(float_crops, masks)])
    for i in range(n):
        saturated = 0
        for k in range(2):
            low, high = backgrounds[k], max(highs[i, k], backgrounds[k] + 1e-6)
            scaled = (float_crops[i, k] - low) / (high - low) * 255.0
            saturated += int((scaled[masks[i]] > 255.5).sum())
            channel = np.clip(np.rint(scaled), 0, 255)
            if params.mask_outside:
                channel = np.where(masks[i], channel, 0)
            out[i, k] = channel
        if params.mask_outside:
            out[i, 0][masks[i]] = np.maximum(out[i, 0][masks[i]], 1)  # red >= 1 marks the cell, as in LIN
        r = records[i]
        r.normalisation = f"{params.normalise} p{q:g}"
        r.low_red, r.low_green = backgrounds
        r.high_red, r.high_green = (float(h) for h in highs[i])
        r.saturated_fraction = saturated / max(2 * int(masks[i].sum()), 1)
    return out


# --------------------------------------------------------------------------------------------
# The job


def prepare_field(fov: Field, params: PrepareParams | None = None, pixel_size_um: float | None = None) -> Job:
    """Job: one field of view -> :class:`PreparedField` (segments when the field has no labels)."""
    from scipy.ndimage import gaussian_filter

    params = params or PrepareParams()
    pixel_size = pixel_size_um or fov.pixel_size_um
    if pixel_size is None:
        raise FieldError(f"{fov.source}: no pixel size in the metadata; give it (µm per pixel)")
    yield Update(0, 0, "segmenting" if fov.labels is None else "reading labels")  # total known once measured
    labels = fov.labels if fov.labels is not None else segment(fov.red, pixel_size, params.segment)
    yield Update(1, 0, "measuring")
    records = measure_cells(labels, pixel_size, fov.source, params)
    accepted = [r for r in records if r.accepted]
    total = len(accepted) + 3
    yield Update(2, total, "aligning cells")
    out_px = crop_pixel_size(params.size)
    factor = out_px / pixel_size
    channels = [fov.red, fov.green]
    if factor > 1:  # anti-aliasing before downsampling, as skimage.transform.rescale does
        channels = [gaussian_filter(c, (factor - 1) / 2) for c in channels]
    backgrounds = [_background(c, labels, pixel_size) for c in (fov.red, fov.green)]
    crops, masks = [], []
    for i, record in enumerate(accepted):
        crop, mask = align_crop(channels, labels, record, pixel_size, params.size, backgrounds)
        crops.append(crop)
        masks.append(mask)
        if i % 8 == 7:  # a chance to cancel, a few times a second
            yield Update(3 + i, total, "aligning cells")
    float_crops = np.stack(crops) if crops else np.zeros((0, 2) + params.size, np.float32)
    masks = np.stack(masks) if masks else np.zeros((0,) + params.size, bool)
    yield Update(total - 1, total, "normalising")
    images = normalise(float_crops, masks, accepted, backgrounds, params)
    if params.mask_outside:
        float_crops = float_crops * masks[:, None]
    yield Update(total, total, "done")
    return PreparedField(source=fov.source, records=records, labels=labels, crops=images,
                         float_crops=float_crops.astype(np.float32), pixel_size_um=pixel_size,
                         crop_pixel_size_um=out_px)


def prepare_fields(loaders, params: PrepareParams | None = None, pixel_size_um: float | None = None) -> Job:
    """Job: several fields, each from ``loader()`` (read lazily, one at a time) -> list of
    :class:`PreparedField`; progress counts fields."""
    results = []
    for k, load in enumerate(loaders):
        yield Update(k, len(loaders), "preparing fields")
        job = prepare_field(load(), params, pixel_size_um)
        while True:
            try:
                next(job)
            except StopIteration as stop:
                results.append(stop.value)
                break
            yield Update(k, len(loaders), "preparing fields")  # each inner step: a chance to cancel
    yield Update(len(loaders), len(loaders), "preparing fields")
    return results


# --------------------------------------------------------------------------------------------
# Results: a cell stack, the provenance table, the files


def cell_id(record: CellRecord) -> str:
    return f"{Path(record.source).name}#{record.label}"


def to_cell_stack(results: list[PreparedField], protein: str) -> CellStack:
    """The accepted cells of all fields as one class, file names ``<field>#<label>``."""
    images = [r.crops for r in results if len(r.crops)]
    accepted = [rec for r in results for rec in r.accepted]
    size = results[0].crops.shape[2:] if results else (48, 80)
    images = np.concatenate(images) if images else np.zeros((0, 2) + tuple(size), np.uint8)
    return CellStack(images=images, class_index=np.zeros(len(images), dtype=np.int64), class_names=[protein],
                     file_names=[cell_id(rec) for rec in accepted],
                     description=f"prepared from {len(results)} field(s) of view: "
                                 + ", ".join(Path(r.source).name for r in results[:3])
                                 + (" ..." if len(results) > 3 else ""),
                     pixel_size_um=results[0].crop_pixel_size_um if results else None)


def provenance_rows(results: list[PreparedField]) -> list[dict]:
    rows = []
    for result in results:
        for record in result.records:
            row = {"cell": cell_id(record), **asdict(record), "accepted": record.accepted}
            rows.append(row)
    return rows


def rejection_summary(results: list[PreparedField]) -> dict[str, int]:
    """``{'accepted': n, <reason>: n, ...}`` over all fields."""
    counts: dict[str, int] = {"accepted": 0}
    for result in results:
        for record in result.records:
            key = record.reason or "accepted"
            counts[key] = counts.get(key, 0) + 1
    return counts


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split of ``n`` cells: ``(train indices, test indices)``, both sorted."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"the test fraction must lie in [0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def write_prepared(results: list[PreparedField], out, protein: str, test_fraction: float = 0.2,
                   seed: int = 0) -> dict[str, Path]:
    """The LIN layout (``LIN_Prepared_size-H-W_train/<protein>/cell<k>.png`` and ``_test``, or
    ``_all`` without a split), ``cells.h5`` (all accepted cells), ``cells_float.tif`` (their
    un-normalised crops, OME-TIFF) and ``provenance.csv`` (every cell, accepted or with its reason)."""
    from .. import ome

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: folder exists and is not empty; choose a new output folder")
    protein = safe_name(protein)
    stack = to_cell_stack(results, protein)
    if len(stack) == 0:
        raise FieldError("no cell was accepted in " + ", ".join(r.source for r in results) + "; nothing written")
    out.mkdir(parents=True, exist_ok=True)
    h, w = stack.image_size
    px = stack.pixel_size_um
    written, where = {}, {}
    train, test = split_indices(len(stack), test_fraction, seed)
    roles = {"train": train, "test": test} if test_fraction > 0 else {"all": train}
    for role, indices in roles.items():
        folder = write_lin_folder(stack.subset(indices), out / PREPARED_RELEASE.format(h=h, w=w, role=role))
        written[role] = folder
        for k, i in enumerate(indices):
            where[stack.file_names[i]] = f"{folder.name}/{protein}/cell{k}.png"
    written["h5"] = write_h5(stack, out / H5_FILE, scale=(px, px))
    floats = np.concatenate([r.float_crops for r in results])
    written["float"] = ome.write(out / FLOAT_FILE, floats, "TCYX", list(stack.channel_names), px,
                                 {"stack_axis": "cell", "file_names": stack.file_names, "pixel_size_um": px,
                                  "description": stack.description})
    rows = provenance_rows(results)
    for row in rows:
        row["lin_file"] = where.get(row["cell"], "")
        row["h5_index"] = stack.file_names.index(row["cell"]) if row["accepted"] else ""
    with atomic_open(out / PROVENANCE_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    written["provenance"] = out / PROVENANCE_FILE
    return written
