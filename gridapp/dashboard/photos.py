"""The case page's photos: derived images only (display and thumbnail, EXIF-free), never the originals
with their GPS tags; served through the dashboard's session (gridapp/dashboard/views.py: photo)."""
from flask import url_for

from gridapp.models import Incident
from gridapp.services import photos

DASHBOARD_VARIANTS = ("display", "thumbnail")
TYPE_LABELS = {"report": "上报", "before_handling": "处置前", "after_handling": "处置后", "check": "核查"}
PENDING_LABELS = {"missing": "待上传", "refused": "图片无效", "present": "生成缩略图中"}


def case_photos(incident: Incident) -> list[dict]:
    """The photos to show on the case page, in the order declared: those whose derived images exist, and
    for the others a caption that says what is still missing."""
    out = []
    for photo in photos.incident_photos(incident):
        caption = f"{TYPE_LABELS.get(photo['type'], photo['type'])} · {photo['declared_by']}"
        derived = photo["urls"]["display"] is not None
        out.append({
            "url": url_for("dashboard.photo", sha256=photo["sha256"], variant="thumbnail") if derived else None,
            "full_url": url_for("dashboard.photo", sha256=photo["sha256"], variant="display") if derived else None,
            "caption": caption if derived else f"{caption}（{PENDING_LABELS.get(photo['state'], '处理中')}）",
        })
    return out

