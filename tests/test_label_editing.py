"""Label editing (METHODS F.8) on hand-made maps and on real VNC annotations."""

from pathlib import Path

import numpy as np

from napari_biogans.data import em
from napari_biogans.data.label_editing import (
    convex_mitochondria,
    remove_membrane_fragments,
    remove_small_mitochondria,
    separating_membrane,
)

FIXTURE = Path(__file__).parent / "fixtures" / "vnc" / "stack1"


def two_cells():
    """A 60x80 map: a 3-px wall at columns 39-41 splits it into two cells."""
    labels = np.zeros((60, 80), np.uint8)
    labels[:, 39:42] = em.MEMBRANE
    return labels


def test_spurs_fragments_and_gapped_walls_are_removed():
    labels = two_cells()
    labels[28:31, 42:70] = em.MEMBRANE  # a spur from the wall, ending inside the right cell
    labels[10:13, 5:25] = em.MEMBRANE  # a fragment floating in the left cell
    labels[45:55, 60:62] = em.MEMBRANE  # a short fragment in the right cell
    before = labels.copy()
    out = remove_membrane_fragments(labels, min_length=5)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2}
    assert (out[:, 39:42] == em.MEMBRANE).all()  # the separating wall stays
    assert not (out[10:13, 5:25] == em.MEMBRANE).any()
    assert not (out[45:55, 60:62] == em.MEMBRANE).any()
    spur = out[28:31, 42:70] == em.MEMBRANE
    assert spur[:, 4:].sum() == 0 and spur.sum() <= 3 * 3  # at most a stub of the wall's half-thickness

    gapped = two_cells()
    gapped[20:24, 39:42] = em.CYTOPLASM  # one cell now: the wall separates nothing
    assert not (remove_membrane_fragments(gapped) == em.MEMBRANE).any()


def test_thin_diagonal_walls_and_holes_do_not_matter():
    labels = np.zeros((50, 50), np.uint8)
    for i in range(50):  # a 1-px diagonal line still separates two 4-connected cells
        labels[i, i] = em.MEMBRANE
    np.testing.assert_array_equal(remove_membrane_fragments(labels), labels)
    thick = two_cells()
    thick[:, 36:45] = em.MEMBRANE
    thick[30, 40] = em.CYTOPLASM  # a one-pixel hole in the wall is no cell
    out = remove_membrane_fragments(thick)
    assert (out[:, 36:45] == em.MEMBRANE).sum() == (thick[:, 36:45] == em.MEMBRANE).sum()


def test_short_separating_pieces_go_with_min_length():
    labels = two_cells()
    labels[0:4, 70] = em.MEMBRANE  # cuts a 4x9 corner cell off
    labels[3, 70:80] = em.MEMBRANE
    assert separating_membrane(labels)[3, 75]
    assert (remove_membrane_fragments(labels, min_length=5)[3, 70:80] == em.MEMBRANE).all()
    out = remove_membrane_fragments(labels, min_length=16)
    assert not (out[0:4, 70:80] == em.MEMBRANE).any() and (out[:, 39:42] == em.MEMBRANE).all()


def test_real_annotations_keep_their_membranes():
    for index in (0, 1, 10):
        labels = em.read_section(FIXTURE, index).labels
        out = remove_membrane_fragments(labels)
        membrane = labels == em.MEMBRANE
        removed = membrane & (out != em.MEMBRANE)
        assert removed.sum() < 0.02 * membrane.sum()  # annotated membranes are closed
        assert ((out == em.MITOCHONDRIA) == (labels == em.MITOCHONDRIA)).all()
        # the edit is idempotent: what is left separates cells
        np.testing.assert_array_equal(remove_membrane_fragments(out), out)


def test_convex_mitochondria():
    labels = two_cells()
    labels[10:30, 5:25] = em.MITOCHONDRIA  # a C shape: a square with a notch
    labels[15:25, 15:25] = em.CYTOPLASM
    labels[40:50, 50:60] = em.MITOCHONDRIA  # a convex square
    labels[44:46, 38:46] = em.MITOCHONDRIA  # a bar across the wall ...
    labels[40:50, 41] = em.MITOCHONDRIA  # ... joined to a line: its hull covers wall pixels
    out = convex_mitochondria(labels)
    assert (out[10:30, 5:25] == em.MITOCHONDRIA).all()  # the notch is filled
    np.testing.assert_array_equal(out[38:52, 48:62], labels[38:52, 48:62])  # convex: unchanged
    assert (out[40:50, 41] == em.MITOCHONDRIA).all() and (out[42, 39:42] == em.MITOCHONDRIA).any()
    assert (out == em.MITOCHONDRIA).sum() > (labels == em.MITOCHONDRIA).sum()


def test_remove_small_mitochondria():
    labels = two_cells()
    labels[5:8, 5:8] = em.MITOCHONDRIA  # 9 px
    labels[20:30, 5:15] = em.MITOCHONDRIA  # 100 px
    out = remove_small_mitochondria(labels, min_area=20)
    assert (out[5:8, 5:8] == em.CYTOPLASM).all() and (out[20:30, 5:15] == em.MITOCHONDRIA).all()
    assert (out[:, 39:42] == em.MEMBRANE).all()
