"""Every model module, imported so Alembic and the shell see all tables."""
from gridapp.models.area import AREA_LEVELS, AdminArea
from gridapp.models.base import Base, utcnow
from gridapp.models.category import CATEGORY_KINDS, TIME_UNITS, Category, CategoryCondition
from gridapp.models.export import EXPORT_STATES, ExportJob, PersonalDataAccess
from gridapp.models.grid import GridCell, GridImport, grid_cell_workers
from gridapp.models.incident import (
    DISPATCH_FIELDS,
    INCIDENT_STATUSES,
    OPEN_STATUSES,
    WORKER_FIELDS,
    CaseNumberCounter,
    Incident,
    IncidentNote,
    IncidentRevision,
)
from gridapp.models.maptiles import (
    BUCKET_LEVELS,
    BUCKET_ZOOM,
    STATUS_CLASSES,
    IncidentBucketCount,
    IncidentBucketDelta,
)
from gridapp.models.photo import PHOTO_TYPES, IncidentPhoto, PhotoBlob, PhotoUpload
from gridapp.models.squad import EnforcementTeam, Squad, squad_areas
from gridapp.models.sync import (
    DEVICE_STATES,
    AuditEvent,
    Device,
    DeviceRefreshToken,
    QuarantineItem,
    ScopeExit,
    SyncConflict,
    SyncCounter,
    SyncDeferral,
    SyncReceipt,
    WorkerScope,
)
from gridapp.models.user import ROLES, SQUAD_ROLES, ApiToken, User
from gridapp.models.workflow import (
    CalendarDay,
    CaseRequest,
    IncidentEvent,
    Notification,
    OutboxMessage,
    ResponsibilityRule,
)

__all__ = [
    "AREA_LEVELS", "AdminArea", "ApiToken", "AuditEvent", "Base", "CATEGORY_KINDS", "CaseNumberCounter", "Category",
    "CategoryCondition", "DEVICE_STATES", "DISPATCH_FIELDS", "Device", "DeviceRefreshToken", "EnforcementTeam",
    "GridCell", "GridImport", "INCIDENT_STATUSES", "Incident", "IncidentNote", "IncidentRevision", "QuarantineItem",
    "ROLES", "SQUAD_ROLES", "ScopeExit", "Squad", "SyncConflict", "SyncCounter", "SyncDeferral", "SyncReceipt", "TIME_UNITS", "User",
    "WORKER_FIELDS", "WorkerScope", "grid_cell_workers", "squad_areas", "utcnow", "OPEN_STATUSES", "CalendarDay",
    "CaseRequest", "IncidentEvent", "Notification", "OutboxMessage", "ResponsibilityRule",
    "PHOTO_TYPES", "IncidentPhoto", "PhotoBlob", "PhotoUpload",
    "BUCKET_LEVELS", "BUCKET_ZOOM", "STATUS_CLASSES", "IncidentBucketCount", "IncidentBucketDelta",
    "EXPORT_STATES", "ExportJob", "PersonalDataAccess",
]
