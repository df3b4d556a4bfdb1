"""Printed incident maps (PNG, PDF) drawn offline with matplotlib: the cells and village outlines are
the basemap; incidents by status or category, or a per-cell density; legend, title, period, scale bar,
north arrow. The CJK font is embedded in the PDF as TrueType (fonttype 42)."""
import math
import os
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")  # no display: servers and workers draw to files
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.collections import PatchCollection  # noqa: E402
from matplotlib.patches import Polygon as PolygonPatch  # noqa: E402

# Debian's fonts-wqy-microhei (scripts/setup.sh), then Noto CJK if a machine has that instead.
CJK_FONTS = ("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
             "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")
PALETTE = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
METRES_PER_DEGREE = 111_320.0


def cjk_font() -> font_manager.FontProperties:
    """The first CJK font installed; without one Chinese text would print as boxes, so refuse."""
    for path in CJK_FONTS:
        if os.path.exists(path):
            font_manager.fontManager.addfont(path)
            return font_manager.FontProperties(fname=path)
    raise RuntimeError("No CJK font installed (scripts/setup.sh installs fonts-wqy-microhei).")


@dataclass
class MapSpec:
    title: str
    period: str
    cells: list = field(default_factory=list)  # (code, shapely polygon)
    villages: list = field(default_factory=list)  # (name, shapely polygon or multipolygon)
    points: list = field(default_factory=list)  # (lon, lat, class label)
    density: dict | None = None  # cell code → incident count (the heat view)
    legend_title: str = "状态"


def _patches(geometry):
    for polygon in getattr(geometry, "geoms", [geometry]):
        yield PolygonPatch(list(polygon.exterior.coords), closed=True)


def _nice_length(metres: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10^n metres) close to `metres`."""
    power = 10 ** math.floor(math.log10(metres))
    return max(m * power for m in (1, 2, 5) if m * power <= metres)


def render(spec: MapSpec, path: str, fmt: str, dpi: int = 150) -> None:
    """Draw the map to `path` as png or pdf."""
    font = cjk_font()
    plt.rcParams["pdf.fonttype"] = 42  # TrueType, embedded (pdffonts shows it "emb yes")
    plt.rcParams["font.family"] = font.get_name()
    plt.rcParams["axes.unicode_minus"] = False
    figure, axes = plt.subplots(figsize=(11.69, 8.27))  # A4 landscape
    try:
        _draw(spec, figure, axes)
        figure.savefig(path, format=fmt, dpi=dpi)
    finally:
        plt.close(figure)


def _draw(spec: MapSpec, figure, axes) -> None:
    cell_patches, values = [], []
    for code, geometry in spec.cells:
        for patch in _patches(geometry):
            cell_patches.append(patch)
            values.append((spec.density or {}).get(code, 0))
    cells = PatchCollection(cell_patches, edgecolor="#bbbbbb", linewidth=0.3)
    if spec.density is not None:
        cells.set_array(values)
        cells.set_cmap("YlOrRd")
        colorbar = figure.colorbar(cells, ax=axes, shrink=0.6)
        colorbar.set_label("事件数（每网格）")
    else:
        cells.set_facecolor("#f4f4f0")
    axes.add_collection(cells)
    outlines = PatchCollection([p for _, g in spec.villages for p in _patches(g)], facecolor="none",
                               edgecolor="#555555", linewidth=1.0)
    axes.add_collection(outlines)
    for name, geometry in spec.villages:
        point = geometry.representative_point()
        axes.annotate(name, (point.x, point.y), fontsize=8, color="#333333", ha="center")
    if spec.density is None and spec.points:
        labels = sorted({label for _, _, label in spec.points})
        for index, label in enumerate(labels):
            xs = [x for x, _, k in spec.points if k == label]
            ys = [y for _, y, k in spec.points if k == label]
            axes.scatter(xs, ys, s=12, color=PALETTE[index % len(PALETTE)], label=f"{label}（{len(xs)}）",
                         edgecolors="white", linewidths=0.3, zorder=3)
        axes.legend(title=spec.legend_title, loc="lower left", fontsize=8, title_fontsize=9, framealpha=0.9)
    axes.autoscale_view()
    _, max_y = axes.get_ylim()
    min_y, _ = axes.get_ylim()
    axes.set_aspect(1 / math.cos(math.radians((min_y + max_y) / 2)))  # equal metres on both axes
    figure.suptitle(spec.title, fontsize=16)
    axes.set_title(spec.period, fontsize=10, color="#444444")
    axes.set_xticks([])
    axes.set_yticks([])
    _scale_bar(axes)
    _north_arrow(axes)


def _scale_bar(axes) -> None:
    x0, x1 = axes.get_xlim()
    y0, y1 = axes.get_ylim()
    latitude = (y0 + y1) / 2
    metres_per_degree = METRES_PER_DEGREE * math.cos(math.radians(latitude))
    length_m = _nice_length((x1 - x0) * metres_per_degree / 5)
    length_deg = length_m / metres_per_degree
    x, y = x1 - (x1 - x0) * 0.05 - length_deg, y0 + (y1 - y0) * 0.04
    axes.plot([x, x + length_deg], [y, y], color="black", linewidth=3, solid_capstyle="butt", zorder=4)
    label = f"{length_m / 1000:g} 千米" if length_m >= 1000 else f"{length_m:g} 米"
    axes.text(x + length_deg / 2, y + (y1 - y0) * 0.012, label, ha="center", fontsize=8, zorder=4)


def _north_arrow(axes) -> None:
    axes.annotate("北", xy=(0.95, 0.95), xytext=(0.95, 0.86), xycoords="axes fraction", ha="center",
                  fontsize=11, arrowprops={"facecolor": "black", "width": 3, "headwidth": 9})
