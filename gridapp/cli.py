"""Command-line tools: `flask user|area|grid|category|demo|worker|scheduler ...`.

Each command is one unit of work: it calls services and commits once at the end.
"""
import json
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from geo.errors import GeometryError
from geo.io import read_features
from gridapp.errors import AppError
from gridapp.extensions import db
from gridapp.jobs.worker import run_scheduler, run_worker
from gridapp.models import AREA_LEVELS, ROLES, GridCell, Squad, User
from gridapp.services.areas import area_by_code, ensure_area
from gridapp.services.calendar import import_days
from gridapp.services.categories import import_catalogue, parse_catalogue
from gridapp.services.demo import load_demo
from gridapp.services.grids import FieldMap, import_cells
from gridapp.services.responsibility import import_rules
from gridapp.services.tables import read_table
from gridapp.services.users import assign_cells, create_user

user_cli = AppGroup("user", help="Manage user accounts.")
area_cli = AppGroup("area", help="Manage administrative areas.")
grid_cli = AppGroup("grid", help="Manage the grid registry.")
category_cli = AppGroup("category", help="Manage the event catalogue.")
demo_cli = AppGroup("demo", help="Demo data.")
rules_cli = AppGroup("rules", help="The responsibility list (权责清单).")
calendar_cli = AppGroup("calendar", help="Local working days and holidays.")


def init_app(app):
    """Register the command groups."""
    for group in (user_cli, area_cli, grid_cli, category_cli, demo_cli, rules_cli, calendar_cli):
        app.cli.add_command(group)
    app.cli.add_command(worker_command)
    app.cli.add_command(scheduler_command)
    app.cli.add_command(sync_cli)


def _fail(exc: AppError | GeometryError):
    db.session.rollback()
    details = f"\n{json.dumps(exc.details, ensure_ascii=False, indent=2)}" if exc.details else ""
    raise click.ClickException(f"{exc.code}: {exc.message}{details}")


# --- users -----------------------------------------------------------------------------------------
@user_cli.command("create")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(list(ROLES)))
@click.option("--area", "area_code", required=True, help="Code of the county or township the user works in.")
@click.option("--squad", "squad_code", help="Squad code (squad members and leaders), within the area's team.")
@click.option("--display-name")
@click.option("--phone")
def create_user_command(username, role, area_code, squad_code, display_name, phone):
    """Create a user; the password is read from standard input (one line)."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        area = area_by_code(area_code)
        squad = None
        if squad_code:
            squad = next((s for s in db.session.scalars(select(Squad).where(Squad.code == squad_code))
                          if s.team.township.code.startswith(area.code)), None)
            if squad is None:
                raise click.ClickException(f"No squad {squad_code} in area {area_code}.")
        user = create_user(username, role, area, password, display_name=display_name, squad=squad, phone=phone)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"created {user.username} ({role}) in {area.name} {area.code}")


@user_cli.command("assign-cells")
@click.argument("username")
@click.argument("codes", nargs=-1, required=True)
def assign_cells_command(username, codes):
    """Make the listed cells the grid worker's cells (replacing the previous ones)."""
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.ClickException(f"No user {username}.")
    cells = list(db.session.scalars(select(GridCell).where(GridCell.code.in_(codes), GridCell.valid_to.is_(None))))
    unknown = sorted(set(codes) - {c.code for c in cells})
    if unknown:
        raise click.ClickException(f"No current cells {', '.join(unknown)}.")
    try:
        assign_cells(user, cells)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"{username} now has {len(cells)} cells")


# --- areas -----------------------------------------------------------------------------------------
@area_cli.command("create")
@click.argument("code")
@click.argument("name")
@click.option("--level", required=True, type=click.Choice(AREA_LEVELS))
@click.option("--parent", "parent_code", help="Code of the parent area (required below county).")
def create_area_command(code, name, level, parent_code):
    """Create an area (or rename it if the code exists)."""
    try:
        parent = area_by_code(parent_code) if parent_code else None
        area = ensure_area(code, name, level, parent)
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"{area.level} {area.code} {area.name}")


# --- grid ------------------------------------------------------------------------------------------
@grid_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--township", "township_code", required=True, help="9-digit code of the township the file covers.")
@click.option("--crs", help="CRS of the file when it has none (e.g. EPSG:4490); overrides the file's.")
@click.option("--layer", help="Layer name, for a GeoPackage with several layers.")
@click.option("--code-field", help="Attribute holding the 15-digit cell code (detected when omitted).")
@click.option("--name-field", help="Attribute holding the cell name.")
@click.option("--village-field", help="Attribute holding the village name (for villages not yet known).")
@click.option("--repair", is_flag=True, help="Repair invalid polygons (make_valid) instead of rejecting them.")
@click.option("--allow-warnings", is_flag=True, help="Import despite gaps and slivers (errors still block).")
@click.option("--dry-run", is_flag=True, help="Check and report; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_grid_command(path, township_code, crs, layer, code_field, name_field, village_field, repair,
                        allow_warnings, dry_run, as_json):
    """Import a township's complete grid from GeoJSON, zipped Shapefile, GeoPackage or KML."""
    try:
        township = area_by_code(township_code, level="township")
        source = read_features(path, crs=crs, layer=layer)
        result = import_cells(
            source, township, filename=path.name, imported_by="cli",
            fields=FieldMap(code_field, name_field, village_field),
            repair=repair, allow_warnings=allow_warnings, dry_run=dry_run,
        )
    except (AppError, GeometryError) as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "code": exc.code, "message": exc.message, "details": exc.details},
                                  ensure_ascii=False, indent=2))
        _fail(exc)
    db.session.commit()
    if as_json:
        click.echo(json.dumps({"ok": True, "dry_run": dry_run, "summary": result.summary, "report": result.report,
                               "villages_created": result.villages_created}, ensure_ascii=False, indent=2))
    else:
        click.echo(f"read {len(source.features)} features ({source.driver}, {source.source_crs}"
                   + (f", encoding {source.encoding}" if source.encoding else "") + ")")
        for fault in result.report.get("faults", []):
            click.echo(f"  {fault['severity']}: {fault['kind']} {' '.join(fault['codes'])} {fault['message']}")
        click.echo(("dry run, nothing written: " if dry_run else "imported: ") + json.dumps(result.summary, ensure_ascii=False))


# --- categories ------------------------------------------------------------------------------------
@category_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_categories_command(path):
    """Import (upsert) a catalogue, CSV or XLSX: one row per 立案条件 (see docs/categories.md)."""
    try:
        counts = import_catalogue(parse_catalogue(read_table(path)))
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(json.dumps(counts))


# --- responsibility list and calendar -------------------------------------------------------------------
@rules_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--township", "township_code", required=True, help="9-digit code of the township the rules are for.")
def import_rules_command(path, township_code):
    """Replace a township's responsibility rules with a CSV/XLSX table (see docs/workflow.md)."""
    try:
        counts = import_rules(area_by_code(township_code, level="township"), read_table(path))
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(json.dumps(counts))


@calendar_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_calendar_command(path):
    """Import local working days and days off (columns date, is_workday, note), CSV or XLSX."""
    try:
        counts = import_days(read_table(path))
    except AppError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(json.dumps(counts))


# --- demo ------------------------------------------------------------------------------------------
@demo_cli.command("load")
def load_demo_command():
    """Load the demo county, townships, cells, users, squads and catalogue (idempotent)."""
    counts = load_demo()
    db.session.commit()
    click.echo(f"demo data ready: {counts['cells']} cells, {counts['users']} users")


# --- worker and scheduler --------------------------------------------------------------------------
@click.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", help="Worker name (default: RQ's).")
def worker_command(burst, name):
    """Run an RQ worker on the app's queues."""
    run_worker(current_app._get_current_object(), current_app.config["RQ_QUEUES"], burst=burst, name=name)


@click.command("scheduler")
@click.option("--once", is_flag=True, help="Enqueue what is due and exit.")
def scheduler_command(once):
    """Run the scheduler that enqueues periodic jobs."""
    run_scheduler(current_app.config["SCHEDULER_INTERVAL_SECONDS"], once=once)


# --- offline sync ----------------------------------------------------------------------------------
sync_cli = AppGroup("sync", help="Offline sync tools.")
DEMO_WORKERS = [f"{prefix}_worker{number}" for prefix in ("qy", "xs") for number in range(1, 5)]


@sync_cli.command("simulate")
@click.option("--url", default="http://127.0.0.1:5000", show_default=True, help="Base URL of a running server.")
@click.option("--phones", default=5, show_default=True, type=click.IntRange(1, 500), help="Simulated phones.")
@click.option("--reports", default=10, show_default=True, type=click.IntRange(0, 10_000), help="Reports per phone.")
@click.option("--password", help="Password of the demo grid workers (default: the demo password).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random reports.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the phones' SQLite stores (default: a new temporary folder).")
def simulate_command(url, phones, reports, password, seed, workdir):
    """Run phones of the demo grid workers (qy_worker1..4, xs_worker1..4 in turn) against a running server:
    each registers, reports inside its cells, pushes, pulls and verifies; print what arrived."""
    import tempfile

    from gridapp.services.demo import DEMO_PASSWORD
    from sync.simulate import format_table, simulate

    users = [(DEMO_WORKERS[i % len(DEMO_WORKERS)], password or DEMO_PASSWORD) for i in range(phones)]
    summary = simulate(url, users, reports, workdir or tempfile.mkdtemp(prefix="gridapp_phones_"), seed)
    click.echo(format_table(summary))
    if not summary["ok"]:
        raise click.ClickException("Some phones did not end in sync; see the table.")
