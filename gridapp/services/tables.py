"""Read the tables counties keep in Excel: CSV (UTF-8, or GBK as Excel saves it) or XLSX, as row dicts."""
import csv
import io
from pathlib import Path

from openpyxl import load_workbook

from gridapp.errors import ValidationFailed


def read_table(path: Path) -> list[dict[str, str]]:
    """Return the rows of the first sheet (or the CSV) keyed by the header row, values as stripped text.

    :raises ValidationFailed: unknown suffix or no header.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("gb18030")  # Excel on Chinese Windows saves CSV as GBK
        rows = list(csv.reader(io.StringIO(text)))
    elif suffix == ".xlsx":
        sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
        rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    else:
        raise ValidationFailed("Expected a .csv or .xlsx file.", path=str(path))
    if not rows:
        raise ValidationFailed("The table is empty.", path=str(path))
    header = [h.strip() for h in rows[0]]
    return [{h: (v or "").strip() for h, v in zip(header, row)} for row in rows[1:] if any((v or "").strip() for v in row)]
