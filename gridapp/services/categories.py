"""The event/component catalogue: listing and importing a county's 立结案标准 (CSV, UTF-8)."""
import csv
import io
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gridapp.errors import CatalogueInvalid, CategoryNotFound
from gridapp.extensions import db
from gridapp.models import CATEGORY_KINDS, TIME_UNITS, Category, CategoryCondition

# One row per 立案条件; a 小类 with several conditions has several rows with the same code.
CATALOGUE_COLUMNS = (
    "standard", "kind", "code", "name", "major_code", "major_name",
    "register_condition", "close_condition", "time_limit", "time_unit", "is_local_extension", "auto_register",
)
OPTIONAL_COLUMNS = ("is_local_extension", "auto_register")  # yes/no flags; absent or empty means no
_YES, _NO = ("1", "true", "yes", "是"), ("", "0", "false", "no", "否")
# Chinese spellings accepted for kind and time_unit, since counties edit these files in Excel.
_KIND_ALIASES = {**{v: k for k, v in CATEGORY_KINDS.items()}, "事件": "event"}
_UNIT_ALIASES = {v: k for k, v in TIME_UNITS.items()}


@dataclass
class CatalogueRow:
    standard: str
    kind: str
    code: str
    name: str
    major_code: str
    major_name: str
    register_condition: str
    close_condition: str
    time_limit: int
    time_unit: str
    is_local_extension: bool
    auto_register: bool = False


def parse_catalogue_csv(text: str) -> list[CatalogueRow]:
    """Parse and check catalogue CSV text (see parse_catalogue)."""
    return parse_catalogue([{k: v for k, v in row.items() if k} for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff")))])


def parse_catalogue(table: list[dict[str, str]]) -> list[CatalogueRow]:
    """Check catalogue rows (from services.tables.read_table); every bad row is reported, none is skipped.

    :raises CatalogueInvalid: missing columns or bad rows (details.rows: line → problems).
    """
    columns = set(table[0]) if table else set()
    missing = [c for c in CATALOGUE_COLUMNS if c not in columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise CatalogueInvalid("The catalogue lacks columns.", missing_columns=missing)
    rows, problems = [], {}
    for line, raw in enumerate(table, start=2):
        raw = {k: (v or "").strip() for k, v in raw.items()}
        errors = []
        kind = _KIND_ALIASES.get(raw["kind"], raw["kind"])
        unit = _UNIT_ALIASES.get(raw["time_unit"], raw["time_unit"])
        if kind not in CATEGORY_KINDS:
            errors.append(f"kind must be one of {sorted(CATEGORY_KINDS)}")
        if unit not in TIME_UNITS:
            errors.append(f"time_unit must be one of {sorted(TIME_UNITS)}")
        if not (raw["code"].isdigit() and len(raw["code"]) == 5):
            errors.append("code must be 5 digits (2-digit 大类 + 3-digit 小类)")
        elif raw["major_code"] != raw["code"][:2]:
            errors.append("major_code must be the first 2 digits of code")
        if not raw["time_limit"].isdigit() or int(raw["time_limit"]) <= 0:
            errors.append("time_limit must be a positive whole number")
        for column in OPTIONAL_COLUMNS:
            if raw.get(column, "").lower() not in _YES + _NO:
                errors.append(f"{column} must be yes or no (true/false, 1/0, 是/否)")
        for column in ("standard", "name", "major_name", "register_condition", "close_condition"):
            if not raw[column]:
                errors.append(f"{column} is required")
        if errors:
            problems[str(line)] = errors
            continue
        rows.append(CatalogueRow(
            standard=raw["standard"], kind=kind, code=raw["code"], name=raw["name"],
            major_code=raw["major_code"], major_name=raw["major_name"],
            register_condition=raw["register_condition"], close_condition=raw["close_condition"],
            time_limit=int(raw["time_limit"]), time_unit=unit,
            is_local_extension=_yes(raw.get("is_local_extension")), auto_register=_yes(raw.get("auto_register")),
        ))
    if problems:
        raise CatalogueInvalid(rows=problems)
    if not rows:
        raise CatalogueInvalid("The catalogue has no rows.")
    return rows


def _yes(value: str | None) -> bool:
    return (value or "").lower() in _YES


def import_catalogue(rows: list[CatalogueRow]) -> dict:
    """Upsert categories by (standard, kind, code); their conditions are replaced by the file's."""
    grouped: dict[tuple, list[CatalogueRow]] = {}
    for row in rows:
        grouped.setdefault((row.standard, row.kind, row.code), []).append(row)
    existing = {
        (c.standard, c.kind, c.code): c
        for c in db.session.scalars(select(Category).options(selectinload(Category.conditions)))
    }
    counts = {"created": 0, "updated": 0, "conditions": 0}
    for key, group in grouped.items():
        first = group[0]
        category = existing.get(key)
        if category is None:
            category = Category(standard=first.standard, kind=first.kind, code=first.code)
            db.session.add(category)
            counts["created"] += 1
        else:
            counts["updated"] += 1
        category.name, category.major_code, category.major_name = first.name, first.major_code, first.major_name
        category.is_local_extension, category.auto_register = first.is_local_extension, first.auto_register
        wanted = [(r.register_condition, r.close_condition, r.time_limit, r.time_unit) for r in group]
        have = [(c.register_condition, c.close_condition, c.time_limit, c.time_unit) for c in category.conditions]
        if wanted != have:  # only rewrite conditions that changed, so a re-import is a no-op
            category.conditions.clear()
            db.session.flush()
            category.conditions.extend(
                CategoryCondition(seq=i, register_condition=r[0], close_condition=r[1], time_limit=r[2], time_unit=r[3])
                for i, r in enumerate(wanted, start=1)
            )
        counts["conditions"] += len(group)
    db.session.flush()
    return counts


def list_categories(standard: str | None = None, kind: str | None = None) -> list[Category]:
    """List active categories with their conditions, by standard, kind and code."""
    query = (select(Category).options(selectinload(Category.conditions)).where(Category.is_active)
             .order_by(Category.standard, Category.kind, Category.code))
    if standard:
        query = query.where(Category.standard == standard)
    if kind:
        query = query.where(Category.kind == kind)
    return list(db.session.scalars(query))


def category_by_key(standard: str, kind: str, code: str) -> Category:
    """Return one category.

    :raises CategoryNotFound: no such category.
    """
    category = db.session.scalar(
        select(Category).where(Category.standard == standard, Category.kind == kind, Category.code == code)
    )
    if category is None:
        raise CategoryNotFound(standard=standard, kind=kind, code=code)
    return category
