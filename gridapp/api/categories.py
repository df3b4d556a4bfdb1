from flask import current_app
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME
from gridapp.schemas.categories import CategoryListArgs, CategorySchema
from gridapp.schemas.common import ProblemSchema
from gridapp.services.categories import category_by_key, list_categories

blp = Blueprint("categories", __name__, url_prefix="/api/v1/categories", description="Event/component catalogue")


@blp.route("")
@require("category.read")
@blp.arguments(CategoryListArgs, location="query")
@blp.response(200, CategorySchema(many=True))
def list_(args):
    """List the catalogue: categories with their 立案/结案 conditions and time limits."""
    return list_categories(standard=args.get("standard"), kind=args.get("kind"))


@blp.route("/<string:kind>/<string:code>")
@require("category.read")
@blp.arguments(CategoryListArgs(only=["standard"]), location="query")
@blp.response(200, CategorySchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="category.not_found")
def get(args, kind, code):
    """Return one category by kind and code (in the default standard unless `standard` is given)."""
    return category_by_key(args.get("standard", current_app.config["DEFAULT_CATEGORY_STANDARD"]), kind, code)
