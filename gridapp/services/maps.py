"""The printed incident map of an area and period (PNG/PDF): data from PostGIS, drawing in geo/writers/mapplot."""
from datetime import timedelta
from zoneinfo import ZoneInfo

import shapely

from gridapp.models import INCIDENT_STATUSES
from gridapp.services.filters import IncidentFilter, cell_where, incident_where
from gridapp.services.rawsql import cursor

SHANGHAI = ZoneInfo("Asia/Shanghai")
STATUS_NAMES = dict(zip(INCIDENT_STATUSES, ("上报", "核实中", "已立案", "作废", "重复", "已派遣", "已回退", "处置中",
                                             "挂账", "待核查", "核查中", "结案")))
MAX_POINTS = 200_000  # a printed map cannot show more dots than this legibly; the density view has no limit


def _rows(sql: str, params: dict):
    with cursor() as cur:
        cur.execute(sql, params)
        yield from cur


def _period_text(flt: IncidentFilter) -> str:
    def local(value):
        return value.astimezone(SHANGHAI).strftime("%Y-%m-%d")
    if flt.start and flt.end:
        return f"统计期：{local(flt.start)} 至 {local(flt.end - timedelta(seconds=1))}"
    if flt.start:
        return f"统计期：{local(flt.start)} 起"
    if flt.end:
        return f"统计期：截至 {local(flt.end - timedelta(seconds=1))}"
    return "统计期：全部"


def incident_map(flt: IncidentFilter, prefix: str, path: str, fmt: str, *, by: str = "status",
                 density: bool = False, title: str | None = None) -> None:
    """Draw the map of the filtered incidents over the cells of the area (the scope, or the filter's area)."""
    from geo.writers.mapplot import MapSpec, render  # matplotlib loads only when a map is drawn

    cell_filter, cell_params = cell_where(IncidentFilter(area=flt.area, cell=flt.cell), prefix)
    cells = [(code, shapely.from_wkb(bytes(wkb))) for code, wkb in _rows(
        f"SELECT c.code, ST_AsBinary(c.geom) FROM grid_cells c WHERE {cell_filter}", cell_params)]
    villages = [(name, shapely.from_wkb(bytes(wkb))) for name, wkb in _rows(
        f"""SELECT v.name, ST_AsBinary(ST_Union(c.geom)) FROM grid_cells c JOIN admin_areas v ON v.id = c.village_id
            WHERE {cell_filter} GROUP BY v.id, v.name""", cell_params)]
    where, params = incident_where(flt, prefix)
    base = ("FROM incidents i JOIN admin_areas t ON t.id = i.township_id LEFT JOIN grid_cells c ON c.id = i.cell_id "
            "LEFT JOIN categories cat ON cat.id = i.category_id")
    spec = MapSpec(title=title or "事件分布图", period=_period_text(flt), cells=cells, villages=villages,
                   legend_title="状态" if by == "status" else "类别")
    if density:
        spec.density = dict(_rows(f"SELECT c.code, count(*) {base} WHERE {where} AND c.code IS NOT NULL "
                                  "GROUP BY c.code", params))
    else:
        label = "i.status" if by == "status" else "coalesce(cat.name, i.category_code_raw)"
        rows = _rows(f"SELECT ST_X(i.location), ST_Y(i.location), {label} {base} WHERE {where} LIMIT {MAX_POINTS}",
                     params)
        spec.points = [(x, y, STATUS_NAMES.get(k, k) if by == "status" else k) for x, y, k in rows]
    render(spec, path, fmt)
