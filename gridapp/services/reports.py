"""The monthly 通报 as XLSX and PDF: ranked townships, squads, grid workers and dispatchers, and the
worst overdue cases, from services/evaluation.py."""
from zoneinfo import ZoneInfo

from openpyxl import Workbook

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _pct(value) -> str:
    return "—" if value is None else f"{value:.2f}%"


# (sheet/section title, result key, columns as (header, key, is_rate))
SECTIONS = (
    ("乡镇（街道）排名", "townships", (("排名", "rank", False), ("乡镇代码", "code", False), ("乡镇", "name", False),
                               ("上报数", "reported", False), ("立案数", "registered", False), ("应结案数", "due", False),
                               ("缓办数", "parked", False), ("结案数", "closed", False),
                               ("按期结案数", "closed_on_time", False), ("结案率", "closure_rate", True),
                               ("按期结案率", "on_time_closure_rate", True), ("返工率", "rework_rate", True),
                               ("平均处置时长(小时)", "avg_handling_hours", False))),
    ("中队排名", "squads", (("排名", "rank", False), ("中队", "name", False), ("立案数", "registered", False),
                        ("应结案数", "due", False), ("缓办数", "parked", False), ("结案数", "closed", False),
                        ("按期结案数", "closed_on_time", False), ("结案率", "closure_rate", True),
                        ("按期结案率", "on_time_closure_rate", True), ("返工率", "rework_rate", True),
                        ("平均处置时长(小时)", "avg_handling_hours", False))),
    ("网格员排名", "grid_workers", (("排名", "rank", False), ("网格员", "username", False), ("上报数", "reported", False),
                              ("有效上报数", "valid_reports", False), ("应核查数", "checks_due", False),
                              ("按时核查数", "checks_on_time", False), ("有效上报率", "valid_report_rate", True),
                              ("按时核查率", "on_time_check_rate", True))),
    ("派遣员排名", "dispatchers", (("排名", "rank", False), ("派遣员", "username", False), ("派遣数", "dispatched", False),
                             ("按时派遣数", "dispatched_on_time", False), ("错误派遣数", "returned", False),
                             ("准确派遣率", "accurate_dispatch_rate", True), ("按时派遣率", "on_time_dispatch_rate", True))),
    ("超期未结案件", "overdue_cases", (("案卷号", "case_number", False), ("乡镇", "township", False),
                                  ("中队", "squad", False), ("类别", "category_code", False),
                                  ("描述", "description", False), ("超期(小时)", "overdue_hours", False))),
)


def title(result: dict, area_name: str) -> str:
    start = result["period"]["start"].astimezone(SHANGHAI)
    return f"{area_name} {start:%Y年%m月} 网格化管理运行情况通报"


def write_xlsx(result: dict, area_name: str, path: str) -> None:
    """One sheet per ranking; rates as numbers (percent), case numbers as text."""
    book = Workbook(write_only=True)
    for sheet_title, key, columns in SECTIONS:
        sheet = book.create_sheet(sheet_title)
        sheet.append([title(result, area_name)])
        sheet.append([h for h, _, _ in columns])
        for row in result[key]:
            sheet.append([row.get(k) for _, k, _ in columns])
    book.save(path)


def write_pdf(result: dict, area_name: str, path: str) -> None:
    """A4 pages: the title and period, then each ranking as a table (CJK font embedded, TrueType)."""
    # matplotlib loads only when a PDF is drawn (it costs every web and worker process a second to import).
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    from geo.writers.mapplot import cjk_font
    font = cjk_font()
    plt.rcParams["pdf.fonttype"] = 42
    plt.rcParams["font.family"] = font.get_name()
    period = result["period"]
    period_text = (f"统计期：{period['start'].astimezone(SHANGHAI):%Y-%m-%d} 至 "
                   f"{period['end'].astimezone(SHANGHAI):%Y-%m-%d}（截至 {period['as_of'].astimezone(SHANGHAI):%Y-%m-%d %H:%M}）")
    total = result["total"]
    summary = (f"全域：立案 {total['registered']}，应结案 {total['due']}，缓办 {total['parked']}，结案 {total['closed']}，"
               f"结案率 {_pct(total['closure_rate'])}，按期结案率 {_pct(total['on_time_closure_rate'])}，"
               f"返工率 {_pct(total['rework_rate'])}")
    with PdfPages(path) as pdf:
        for index, (section, key, columns) in enumerate(SECTIONS):
            figure = plt.figure(figsize=(11.69, 8.27))
            if index == 0:
                figure.text(0.5, 0.95, title(result, area_name), ha="center", fontsize=16)
                figure.text(0.5, 0.91, period_text, ha="center", fontsize=9)
                figure.text(0.5, 0.88, summary, ha="center", fontsize=9)
            figure.text(0.05, 0.84, section, fontsize=13)
            rows = [[_pct(r.get(k)) if is_rate else ("" if r.get(k) is None else str(r.get(k))[:30])
                     for _, k, is_rate in columns] for r in result[key][:30]] or [["（无）"] + [""] * (len(columns) - 1)]
            axes = figure.add_axes((0.05, 0.05, 0.9, 0.77))
            axes.axis("off")
            table = axes.table(cellText=rows, colLabels=[h for h, _, _ in columns], loc="upper center",
                               cellLoc="center")
            table.auto_set_font_size(False)
            table.set_fontsize(8)
            pdf.savefig(figure)
            plt.close(figure)
