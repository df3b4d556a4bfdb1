"""The dispatch centre's web dashboard: server-rendered pages (Jinja, Simplified Chinese) over the same
domain functions, permissions and area scope as the API, with a session login and a CSRF token."""
from pathlib import Path

from flask import Blueprint, abort, redirect, send_from_directory, url_for

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")

NODE_MODULES = Path(__file__).resolve().parent.parent.parent / "node_modules"
# The browser libraries served from node_modules (installed by `npm ci` in scripts/setup.sh; no CDN).
VENDOR_FILES = {
    "leaflet.js": "leaflet/dist/leaflet.js",
    "leaflet.css": "leaflet/dist/leaflet.css",
    "vectorgrid.js": "leaflet.vectorgrid/dist/Leaflet.VectorGrid.bundled.min.js",
}


@bp.route("/vendor/<path:name>")
def vendor(name):
    """Serve one of the allowed npm files (or Leaflet's images) from node_modules."""
    if name in VENDOR_FILES:
        path = NODE_MODULES / VENDOR_FILES[name]
    elif name.startswith("images/") and name.count("/") == 1:
        path = NODE_MODULES / "leaflet/dist" / name
    else:
        abort(404)
    return send_from_directory(path.parent, path.name, max_age=3600)


def init_app(app):
    """Register the dashboard, its template helpers and `/` → the dashboard."""
    from gridapp.dashboard import filters, views  # noqa: F401  (routes register on import)

    filters.init_app(app)
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("dashboard.queues_page")))
