"""`webui migrate-db`: read an Open WebUI SQLite database and a Postgres target, or copy
the one into the other.

webui runs this in a one-shot container of the very Open WebUI image that wrote the
database (it has python3, sqlite3 and psycopg 3), with the data volume mounted
read-only. It decides nothing: webui reads `inspect`'s answer, makes the plan (which
tables, in which order, each column's conversion; src/commands/migrate.rs, unit-tested)
and hands it to `copy`.

    python3 -c "$SCRIPT" inspect|copy

Environment:
    WEBUI_MIGRATE_PG      postgresql://user:password@host:5432/db (libpq form); inspect
                          without it reads the SQLite side only
    WEBUI_MIGRATE_SQLITE  the SQLite file, e.g. /app/backend/data/webui.db
    WEBUI_MIGRATE_PLAN    copy only: the plan, JSON

Output: one line `WEBUI-RESULT <json>` on success; `WEBUI-ERROR <message>` and exit 1.

The SQLite file is never opened in place: it (with its -wal/-journal) is copied to
/tmp first, so nothing is written to the volume, and an unfinished WAL is applied to
the copy only.

`copy` runs in ONE Postgres transaction: the target tables are emptied (they hold only
what the schema creation put there; webui refuses a target with data before that),
every table is filled with COPY in the plan's order (foreign keys first), serial
sequences are moved past the copied ids, and each table's row count is checked against
the SQLite count before COMMIT. Any failure rolls everything back.
"""

import datetime
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time


def fail(message):
    print("WEBUI-ERROR " + " ".join(str(message).split()), flush=True)
    sys.exit(1)


def result(value):
    print("WEBUI-RESULT " + json.dumps(value, separators=(",", ":")), flush=True)


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def pg_connect(timeout=90):
    try:
        import psycopg
    except ImportError:
        fail("this Open WebUI image has no psycopg (3); it cannot use Postgres")
    url = os.environ["WEBUI_MIGRATE_PG"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(url, connect_timeout=5)
        except psycopg.OperationalError as e:
            if "authentication failed" in str(e) or time.monotonic() > deadline:
                fail("cannot connect to Postgres: %s" % e)
            time.sleep(1)


def sqlite_open():
    src = os.environ["WEBUI_MIGRATE_SQLITE"]
    if not os.path.isfile(src):
        return None
    tmp = tempfile.mkdtemp(prefix="webui-migrate-")
    dst = os.path.join(tmp, "webui.db")
    shutil.copyfile(src, dst)
    for suffix in ("-wal", "-journal"):
        if os.path.isfile(src + suffix):
            shutil.copyfile(src + suffix, dst + suffix)
    con = sqlite3.connect(dst)
    check = con.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        fail("the SQLite database fails its integrity check: %s" % check)
    return con


def sqlite_side(con):
    if con is None:
        return None
    tables = {}
    names = [
        r[0]
        for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    for name in names:
        cols = [
            {"name": r[1], "type": (r[2] or "").lower()}
            for r in con.execute("PRAGMA table_info(%s)" % qident(name))
        ]
        rows = con.execute("SELECT count(*) FROM %s" % qident(name)).fetchone()[0]
        tables[name] = {"columns": cols, "rows": rows, "refs": []}
    alembic = []
    if "alembic_version" in tables:
        alembic = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    return {"tables": tables, "alembic": sorted(alembic)}


def pg_side(conn):
    tables = {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        )
        for table, col, typ in cur.fetchall():
            tables.setdefault(table, {"columns": [], "rows": 0, "refs": []})
            tables[table]["columns"].append({"name": col, "type": typ.lower()})
        cur.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE c.contype = 'f' AND n.nspname = current_schema()"
        )
        for child, parent in cur.fetchall():
            child, parent = child.strip('"'), parent.strip('"')
            if child in tables and parent not in tables[child]["refs"]:
                tables[child]["refs"].append(parent)
        for name in tables:
            cur.execute("SELECT count(*) FROM %s" % qident(name))
            tables[name]["rows"] = cur.fetchone()[0]
        alembic = []
        if "alembic_version" in tables:
            cur.execute("SELECT version_num FROM alembic_version")
            alembic = [r[0] for r in cur.fetchall()]
    conn.rollback()
    return {"tables": tables, "alembic": sorted(alembic)}


# --- conversions: SQLite's loose values to what each Postgres column takes ----------


class Repairs:
    def __init__(self):
        self.counts = {}

    def note(self, where, what):
        key = "%s: %s" % (where, what)
        self.counts[key] = self.counts.get(key, 0) + 1


def strip_nul(obj):
    """JSON values without U+0000 (Postgres text and jsonb refuse it)."""
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, list):
        return [strip_nul(v) for v in obj]
    if isinstance(obj, dict):
        return {strip_nul(k): strip_nul(v) for k, v in obj.items()}
    return obj


def as_text(v):
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v if isinstance(v, str) else str(v)


def converter(kind, where, repairs):
    def boolean(v):
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            return v != 0
        s = as_text(v).strip().lower()
        if s in ("1", "true", "t", "yes", "y", "on"):
            return True
        if s in ("0", "false", "f", "no", "n", "off", ""):
            return False
        fail("%s: %r is not a boolean" % (where, v))

    def integer(v):
        if v is None or isinstance(v, int):
            return v
        if isinstance(v, float):
            if v.is_integer():
                return int(v)
            repairs.note(where, "fraction rounded")
            return round(v)
        try:
            return int(float(as_text(v).strip()))
        except ValueError:
            fail("%s: %r is not a number" % (where, v))

    def real(v):
        if v is None or isinstance(v, float):
            return v
        try:
            return float(as_text(v).strip())
        except ValueError:
            fail("%s: %r is not a number" % (where, v))

    def text(v):
        if v is None:
            return v
        s = as_text(v)
        if "\x00" in s:
            repairs.note(where, "NUL characters removed")
            s = s.replace("\x00", "")
        return s

    def js(v):
        if v is None:
            return v
        if isinstance(v, (int, float)):
            return json.dumps(v)
        s = as_text(v)
        try:
            obj = json.loads(s)
        except ValueError:
            repairs.note(where, "not JSON, stored as a JSON string")
            return json.dumps(s.replace("\x00", ""))
        if "\\u0000" in s or "\x00" in s:
            cleaned = strip_nul(obj)
            if cleaned != obj:
                repairs.note(where, "NUL characters removed")
                return json.dumps(cleaned, ensure_ascii=False)
        return s

    def blob(v):
        if v is None or isinstance(v, bytes):
            return v
        return as_text(v).encode("utf-8")

    def stamp(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            # Epoch seconds (or ms / ns, as some columns hold) to UTC.
            x = float(v)
            while abs(x) > 1e11:
                x /= 1000.0
            dt = datetime.datetime.fromtimestamp(x, tz=datetime.timezone.utc)
            return dt.replace(tzinfo=None) if kind == "timestamp" else dt
        return text(v)

    def day(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return stamp(v).date()
        return text(v)

    def keep(v):
        return v

    return {
        "bool": boolean,
        "int": integer,
        "float": real,
        "text": text,
        "json": js,
        "bytes": blob,
        "timestamp": stamp,
        "timestamptz": stamp,
        "date": day,
        "keep": keep,
    }.get(kind, keep)


def copy(plan):
    import psycopg

    scon = sqlite_open()
    if scon is None:
        fail("the SQLite database is gone")
    conn = pg_connect()
    repairs = Repairs()
    copied = {}
    started = time.monotonic()
    with conn.transaction():
        cur = conn.cursor()
        # Rows whose parent was deleted (SQLite does not enforce foreign keys) are
        # copied as they are; the table order makes every other row valid as it lands.
        try:
            with conn.transaction():
                cur.execute("SET LOCAL session_replication_role = replica")
        except psycopg.Error:
            pass
        if plan["truncate"]:
            cur.execute("TRUNCATE %s" % ", ".join(qident(t) for t in plan["truncate"]))
        for t in plan["tables"]:
            name = t["name"]
            cols = [c["name"] for c in t["columns"]]
            convs = [converter(c["kind"], "%s.%s" % (name, c["name"]), repairs) for c in t["columns"]]
            n = 0
            sql = "COPY %s (%s) FROM STDIN" % (qident(name), ", ".join(qident(c) for c in cols))
            select = "SELECT %s FROM %s" % (", ".join(qident(c) for c in cols), qident(name))
            with cur.copy(sql) as cp:
                for row in scon.execute(select):
                    cp.write_row([f(v) for f, v in zip(convs, row)])
                    n += 1
            cur.execute("SELECT count(*) FROM %s" % qident(name))
            landed = cur.fetchone()[0]
            if landed != t["rows"] or n != t["rows"]:
                raise RuntimeError(
                    "%s: %d rows in SQLite, %d read, %d in Postgres" % (name, t["rows"], n, landed)
                )
            copied[name] = landed
            print("copied %s: %d rows" % (name, landed), flush=True)
        cur.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() "
            "AND (column_default LIKE 'nextval(%%' OR is_identity = 'YES')"
        )
        sequences = 0
        for table, col in cur.fetchall():
            cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (qident(table), col))
            seq = cur.fetchone()[0]
            if seq:
                cur.execute(
                    "SELECT setval(%%s, COALESCE((SELECT max(%s) FROM %s), 0) + 1, false)"
                    % (qident(col), qident(table)),
                    (seq,),
                )
                sequences += 1
    conn.close()
    result(
        {
            "copied": copied,
            "sequences": sequences,
            "repairs": repairs.counts,
            "seconds": round(time.monotonic() - started, 2),
        }
    )


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    try:
        if mode == "inspect":
            scon = sqlite_open()
            out = {"sqlite": sqlite_side(scon), "postgres": {"tables": {}, "alembic": []}}
            if os.environ.get("WEBUI_MIGRATE_PG"):
                conn = pg_connect()
                out["postgres"] = pg_side(conn)
                conn.close()
            if out["sqlite"] is not None:
                src = os.environ["WEBUI_MIGRATE_SQLITE"]
                out["sqlite"]["mtime"] = max(
                    os.path.getmtime(f) for f in (src, src + "-wal") if os.path.isfile(f)
                )
            result(out)
        elif mode == "copy":
            copy(json.loads(os.environ["WEBUI_MIGRATE_PLAN"]))
        else:
            fail("usage: inspect|copy")
    except SystemExit:
        raise
    except Exception as e:  # reported to webui as one line; the transaction rolled back
        fail("%s: %s" % (type(e).__name__, e))


main()
