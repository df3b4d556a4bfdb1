"""Unit-grid (单元网格) codes and regular cell layouts (GB/T 30428, Beijing DB11).

A unit-grid code has 15 digits: 6-digit county (GB/T 2260) + 3-digit township + 3-digit village
+ 3-digit sequence, numbered west to east, then north to south, inside the village.
"""

import re

import shapely

CELL_CODE_LENGTH = 15
AREA_CODE_LENGTHS = {"county": 6, "township": 9, "village": 12}
MAX_CELLS_PER_VILLAGE = 999

_LEVEL_BY_LENGTH = {length: level for level, length in AREA_CODE_LENGTHS.items()}
# ASCII only: str.isdigit() also accepts full-width and other Unicode digits.
_DIGITS = re.compile(r"[0-9]+")


def _is_digits(s, length):
    return isinstance(s, str) and len(s) == length and _DIGITS.fullmatch(s) is not None


def is_cell_code(s):
    """Return whether ``s`` is a 15-digit unit-grid code."""
    return _is_digits(s, CELL_CODE_LENGTH)


def split_cell_code(code):
    """Split a unit-grid code into its county, township and village prefixes and sequence.

    :returns: (county6, township9, village12, seq3), all strings.
    :raises ValueError: if ``code`` is not 15 ASCII digits.
    """
    if not is_cell_code(code):
        raise ValueError(f"Not a 15-digit unit-grid code: {code!r}")
    return code[:6], code[:9], code[:12], code[12:]


def area_level_for_code(code):
    """Return "county", "township" or "village" for a 6-, 9- or 12-digit area code.

    :raises ValueError: if ``code`` is not 6, 9 or 12 ASCII digits.
    """
    level = _LEVEL_BY_LENGTH.get(len(code)) if isinstance(code, str) else None
    if level is None or not _is_digits(code, len(code)):
        raise ValueError(f"Not a 6-, 9- or 12-digit area code: {code!r}")
    return level


def square_cells(west, north, cell_width_deg, cell_height_deg, cols, rows, village_code):
    """Lay out cols x rows rectangular cells from a north-west corner, coded 001.. west to east, then north to south.

    Neighbouring cells share identical edge coordinates, so the layout is an exact coverage.

    :param west: longitude of the west edge, degrees (EPSG:4326).
    :param north: latitude of the north edge, degrees (EPSG:4326).
    :param cell_width_deg: cell width in degrees of longitude.
    :param cell_height_deg: cell height in degrees of latitude.
    :param village_code: 12-digit village code, the prefix of every cell code.
    :returns: list of (code, Polygon) in sequence order; polygons are counter-clockwise.
    :raises ValueError: for a bad village code, non-positive sizes, or more than 999 cells.
    """
    if not _is_digits(village_code, AREA_CODE_LENGTHS["village"]):
        raise ValueError(f"Not a 12-digit village code: {village_code!r}")
    if cell_width_deg <= 0 or cell_height_deg <= 0 or cols < 1 or rows < 1:
        raise ValueError("Cell sizes and counts must be positive.")
    if cols * rows > MAX_CELLS_PER_VILLAGE:
        raise ValueError(f"{cols * rows} cells do not fit the 3-digit sequence (max {MAX_CELLS_PER_VILLAGE}).")
    # Each edge is computed once (multiplying, not accumulating) and shared by both neighbours,
    # so adjacent cells have bit-identical vertices and no slivers or overlaps.
    xs = [west + i * cell_width_deg for i in range(cols + 1)]
    ys = [north - j * cell_height_deg for j in range(rows + 1)]
    return [
        (f"{village_code}{row * cols + col + 1:03d}", shapely.box(xs[col], ys[row + 1], xs[col + 1], ys[row]))
        for row in range(rows)
        for col in range(cols)
    ]
