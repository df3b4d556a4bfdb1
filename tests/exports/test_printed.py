"""Printed map (PNG, PDF) and the monthly PDF report: fonts embedded (pdffonts), first page renders (pdftoppm)."""
import subprocess

from PIL import Image


def _pdf_checks(path, tmp_path):
    fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = fonts.splitlines()[2:]
    assert rows, fonts
    assert any("WenQuanYi" in row or "CJK" in row for row in rows), fonts
    assert all(row.split()[-5] == "yes" for row in rows), fonts  # the "emb" column: every font embedded
    subprocess.run(["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(path), str(tmp_path / "page")],
                   check=True, timeout=60)
    page = next(tmp_path.glob("page*.png"))
    with Image.open(page) as image:
        assert image.width > 300 and len(image.convert("L").getcolors(maxcolors=256) or ()) > 10  # drawn, not blank


def test_map_pdf_embeds_the_cjk_font_and_renders(client, data, tmp_path):
    response = client.get("/api/v1/exports/map.pdf?by=category&title=乾元镇事件分布",
                          headers=data["headers"]["supervisor"])
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    path = tmp_path / "map.pdf"
    path.write_bytes(response.get_data())
    _pdf_checks(path, tmp_path)


def test_map_png_by_status_and_density(client, data, tmp_path):
    for query in ("by=status", "density=true"):
        response = client.get(f"/api/v1/exports/map.png?{query}", headers=data["headers"]["dispatcher"])
        assert response.status_code == 200 and response.mimetype == "image/png"
        path = tmp_path / "map.png"
        path.write_bytes(response.get_data())
        with Image.open(path) as image:
            assert image.size[0] > 1000
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert len(colours) > 20
    assert client.get("/api/v1/exports/map.svg", headers=data["headers"]["dispatcher"]).status_code == 404


def test_monthly_report_pdf_embeds_fonts_and_renders(client, data, tmp_path):
    response = client.get("/api/v1/evaluation/report.pdf?month=2026-11", headers=data["headers"]["supervisor"])
    assert response.status_code == 200
    path = tmp_path / "report.pdf"
    path.write_bytes(response.get_data())
    _pdf_checks(path, tmp_path)
