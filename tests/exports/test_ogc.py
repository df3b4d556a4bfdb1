"""OGC API – Features read by GDAL's OAPIF driver over real HTTP (paging across pages), and by hand."""
import threading

import pytest
from werkzeug.serving import make_server

from tests.exports.helpers import PARTY, ogrinfo


@pytest.fixture
def live(app, data):
    """The app on a loopback port, recording the item-page requests GDAL makes."""
    pages = []

    def recording(environ, start_response):
        if environ["PATH_INFO"].endswith("/items"):
            pages.append(environ.get("QUERY_STRING", ""))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, recording, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", pages
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _gdal(base, data, user, *args):
    token = data["headers"][user]["Authorization"]
    return ogrinfo("--config", "GDAL_HTTP_HEADERS", f"Authorization: {token}", *args)


def test_gdal_reads_incidents_across_several_pages(live, data):
    base, pages = live
    output = _gdal(base, data, "dispatcher", "-oo", "PAGE_SIZE=2", f"OAPIF:{base}/api/v1/ogc", "incidents")
    assert output.count("OGRFeature(incidents)") == 6
    assert len([p for p in pages if "after=" in p]) >= 2  # GDAL followed the next links
    assert "138****5678" in output and PARTY["phone"] not in output and PARTY["id_number"] not in output
    assert "乙镇的事件" not in output  # the other township
    cells = _gdal(base, data, "dispatcher", "-so", "-oo", "PAGE_SIZE=4", f"OAPIF:{base}/api/v1/ogc", "cells")
    assert "Feature Count: 6" in cells and "code: String" in cells, cells
    listing = _gdal(base, data, "dispatcher", f"OAPIF:{base}/api/v1/ogc")
    assert "incidents" in listing and "cells" in listing


def test_landing_conformance_and_collections(client, data):
    headers = data["headers"]["dispatcher"]
    landing = client.get("/api/v1/ogc", headers=headers).get_json()
    rels = {link["rel"]: link["href"] for link in landing["links"]}
    assert rels["service-desc"].endswith("/api/v1/openapi.json") and rels["conformance"].endswith("/ogc/conformance")
    conformance = client.get("/api/v1/ogc/conformance", headers=headers).get_json()
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conformance["conformsTo"]
    collections = client.get("/api/v1/ogc/collections", headers=headers).get_json()["collections"]
    assert {c["id"] for c in collections} == {"cells", "incidents"}
    west, south, east, north = next(c for c in collections if c["id"] == "cells")["extent"]["spatial"]["bbox"][0]
    assert (round(west, 3), round(north, 3)) == (120.0, 30.5)  # township A only


def test_items_bbox_datetime_limit_and_single_items(client, data):
    headers = data["headers"]["dispatcher"]
    url = "/api/v1/ogc/collections/incidents/items"
    first = client.get(f"{url}?limit=4", headers=headers)
    assert first.mimetype == "application/geo+json"
    page = first.get_json()
    assert page["numberReturned"] == 4
    following = next(link["href"] for link in page["links"] if link["rel"] == "next")
    rest = client.get(following.replace("http://localhost", ""), headers=headers).get_json()
    assert rest["numberReturned"] == 2 and not [link for link in rest["links"] if link["rel"] == "next"]
    ids = [f["id"] for f in page["features"] + rest["features"]]
    assert len(set(ids)) == 6
    # bbox: only the first cell (0.001° square at 120.000–120.001, 30.499–30.500)
    boxed = client.get(f"{url}?bbox=120.0,30.499,120.001,30.5", headers=headers).get_json()
    assert boxed["numberReturned"] == 2
    assert client.get(f"{url}?datetime=2000-01-01T00:00:00Z/2001-01-01T00:00:00Z",
                      headers=headers).get_json()["numberReturned"] == 0
    assert client.get(f"{url}?datetime=2000-01-01T00:00:00Z/..", headers=headers).get_json()["numberReturned"] == 6
    bad = client.get(f"{url}?datetime=yesterday", headers=headers)
    assert bad.status_code == 422 and "datetime" in bad.get_json()["details"]["fields"]
    assert client.get(f"{url}?bbox=1,2,3", headers=headers).status_code == 422
    assert client.get(f"{url}?limit=0", headers=headers).status_code == 422

    one = client.get(f"{url}/{ids[0]}", headers=headers).get_json()
    assert one["type"] == "Feature" and one["id"] == ids[0]
    other = str(data["incidents"][6].id)
    missing = client.get(f"{url}/{other}", headers=headers)
    assert missing.status_code == 404 and missing.get_json()["code"] == "incident.not_found"
    cell = data["cells_a"][0].code
    assert client.get(f"/api/v1/ogc/collections/cells/items/{cell}", headers=headers).get_json()["id"] == cell
    assert client.get("/api/v1/ogc/collections/cells/items/330521102001001", headers=headers).status_code == 404
    assert client.get("/api/v1/ogc", headers=data["headers"]["reporter"]).status_code == 403
    assert client.get("/api/v1/ogc").status_code == 401
