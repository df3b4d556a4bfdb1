import json

from sqlalchemy import func, select

from gridapp.extensions import db
from gridapp.models import Category, CategoryCondition
from gridapp.services.demo import DEFAULT_CATALOGUE
from tests.factories import make_user, make_world, token_for

HEADER = "standard,kind,code,name,major_code,major_name,register_condition,close_condition,time_limit,time_unit\n"


def counts():
    return (db.session.scalar(select(func.count()).select_from(Category)),
            db.session.scalar(select(func.count()).select_from(CategoryCondition)))


def test_default_catalogue_imports_idempotently_and_is_served(runner, client):
    result = runner.invoke(args=["category", "import", str(DEFAULT_CATALOGUE)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["created"] == 97
    first = counts()
    assert first[0] == 97 and first[1] >= 97
    again = json.loads(runner.invoke(args=["category", "import", str(DEFAULT_CATALOGUE)]).output)
    assert again["created"] == 0 and counts() == first

    world = make_world()
    headers = token_for(make_user("worker", "grid_worker", world["township_a"]))
    listed = client.get("/api/v1/categories?kind=event", headers=headers).get_json()
    assert len(listed) == 97
    garbage = client.get("/api/v1/categories/event/06010", headers=headers).get_json()
    assert garbage["name"] == "暴露垃圾" and garbage["major_name"] == "市容环境类"
    assert garbage["conditions"][0]["time_limit"] == 4 and garbage["conditions"][0]["time_unit_name"] == "工作时"
    # 私搭乱建 has two 立案条件 with their own limits: the limit lives on the condition.
    illegal = client.get("/api/v1/categories/event/06001", headers=headers).get_json()
    assert [(c["time_limit"], c["time_unit"]) for c in illegal["conditions"]] == [(4, "work_hours"), (20, "work_days")]
    missing = client.get("/api/v1/categories/event/06031", headers=headers)
    assert missing.status_code == 404 and missing.get_json()["code"] == "category.not_found"
    bad_kind = client.get("/api/v1/categories?kind=thing", headers=headers)
    assert bad_kind.status_code == 422


def test_county_catalogue_in_gbk_with_chinese_units_updates_in_place(runner, tmp_path):
    runner.invoke(args=["category", "import", str(DEFAULT_CATALOGUE)])
    local = tmp_path / "local.csv"
    local.write_bytes((HEADER + "GB/T 47678.5-2026,事项,06010,暴露垃圾,06,市容环境类,主干道暴露垃圾,清理完毕,2,工作时\n"
                       "330521-local,事项,99001,秸秆焚烧,99,县级扩展,田间焚烧秸秆,火已扑灭,1,紧急工作时\n").encode("gbk"))
    result = runner.invoke(args=["category", "import", str(local)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"created": 1, "updated": 1, "conditions": 2}
    garbage = db.session.scalar(select(Category).where(Category.code == "06010"))
    assert [(c.register_condition, c.time_limit) for c in garbage.conditions] == [("主干道暴露垃圾", 2)]
    straw = db.session.scalar(select(Category).where(Category.code == "99001"))
    assert straw.standard == "330521-local" and straw.conditions[0].time_unit == "urgent_hours"


def test_bad_catalogue_rows_are_all_reported_and_nothing_changes(runner, tmp_path):
    runner.invoke(args=["category", "import", str(DEFAULT_CATALOGUE)])
    before = counts()
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER
                   + "GB/T 47678.5-2026,event,06010,暴露垃圾,06,市容环境类,changed,ok,2,work_hours\n"
                   + "X,thing,0601,名,06,类,条件,结案,0,hours\n"
                   + "X,event,07001,名,06,类,,结案,3,work_days\n", encoding="utf-8")
    result = runner.invoke(args=["category", "import", str(bad)])
    assert result.exit_code != 0
    assert "category.invalid_catalogue" in result.output
    assert '"3"' in result.output and '"4"' in result.output  # the bad lines, by number
    assert counts() == before
    unchanged = db.session.scalar(select(Category).where(Category.code == "06010"))
    assert unchanged.conditions[0].register_condition != "changed"

    missing_columns = tmp_path / "cols.csv"
    missing_columns.write_text("code,name\n06010,x\n", encoding="utf-8")
    result = runner.invoke(args=["category", "import", str(missing_columns)])
    assert result.exit_code != 0 and "missing_columns" in result.output


def test_a_yes_no_flag_that_is_neither_is_a_row_error_and_nothing_changes(runner, tmp_path):
    runner.invoke(args=["category", "import", str(DEFAULT_CATALOGUE)])
    before = counts()
    bad = tmp_path / "flags.csv"
    bad.write_text(HEADER.replace("\n", ",auto_register\n")
                   + "GB/T 47678.5-2026,event,06010,暴露垃圾,06,市容环境类,changed,ok,2,work_hours,是\n"
                   + "GB/T 47678.5-2026,event,06002,店面无证装修,06,市容环境类,发现,恢复,2,work_days,maybe\n",
                   encoding="utf-8")
    result = runner.invoke(args=["category", "import", str(bad)])
    assert result.exit_code != 0 and "category.invalid_catalogue" in result.output
    assert '"3"' in result.output and "auto_register must be yes or no" in result.output
    assert '"2"' not in result.output  # 是 is yes
    assert counts() == before
    garbage = db.session.scalar(select(Category).where(Category.code == "06010"))
    assert garbage.auto_register is False and garbage.conditions[0].register_condition != "changed"
