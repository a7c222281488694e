#!/usr/bin/python3
"""A BI tool's first look at a database, with psycopg2 (Debian's python3-psycopg2).

    bi_client.py DSN [--schema segments] [--forbidden TABLE ...]

Logs in with DSN (a login role granted segments_reader), then does what a BI
tool does when it is pointed at a schema:

  * discovers the views it may read: information_schema.views (which lists
    only relations the user holds a privilege on), cross-checked with
    information_schema.table_privileges and has_table_privilege();
  * reads each view's comment (obj_description) and its columns with their
    data types (information_schema.columns) and comments (col_description);
  * fetches every row of every view;
  * tries to read each --forbidden table and records the SQLSTATE it gets.

Prints one JSON object on stdout:

  {"user": ..., "server_version": ...,
   "views": [{"name", "comment", "select_privilege", "rows",
              "columns": [{"name", "data_type", "comment", "python_types"}]}],
   "values": [every distinct value of every view, as text],
   "forbidden": {"table": {"sqlstate", "error"} or {"rows"}}}

Exits non-zero only when it could not connect or a view it discovered could
not be read: the caller judges the rest.
"""

import argparse
import json
import sys

import psycopg2
import psycopg2.errorcodes
from psycopg2 import sql



def as_text(value):
    """A value as a BI tool would show it: strings as they are, the rest in JSON."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dsn")
    ap.add_argument("--schema", default="segments")
    ap.add_argument("--forbidden", nargs="*", default=[])
    args = ap.parse_args()

    conn = psycopg2.connect(args.dsn, application_name="segments-bi-client")
    conn.set_session(readonly=True, autocommit=True)
    cur = conn.cursor()
    cur.execute("SELECT current_user, current_setting('server_version')")
    user, server_version = cur.fetchone()

    # What a BI tool lists: the views it has privileges on.
    cur.execute(
        """
        SELECT v.table_name,
               EXISTS (SELECT FROM information_schema.table_privileges p
                        WHERE p.table_schema = v.table_schema AND p.table_name = v.table_name
                          AND p.privilege_type = 'SELECT') AS listed_select,
               has_table_privilege(format('%%I.%%I', v.table_schema, v.table_name), 'SELECT') AS has_select,
               obj_description(format('%%I.%%I', v.table_schema, v.table_name)::regclass, 'pg_class') AS comment
          FROM information_schema.views v
         WHERE v.table_schema = %s
         ORDER BY v.table_name
        """,
        (args.schema,),
    )
    discovered = cur.fetchall()

    views = []
    values = set()
    failed = False
    for name, listed_select, has_select, comment in discovered:
        cur.execute(
            """
            SELECT c.column_name, c.data_type, c.udt_name,
                   col_description(format('%%I.%%I', c.table_schema, c.table_name)::regclass, c.ordinal_position)
              FROM information_schema.columns c
             WHERE c.table_schema = %s AND c.table_name = %s
             ORDER BY c.ordinal_position
            """,
            (args.schema, name),
        )
        columns = [
            {"name": n, "data_type": t, "udt_name": u, "comment": d, "python_types": set()}
            for n, t, u, d in cur.fetchall()
        ]
        view = {
            "name": name,
            "comment": comment,
            "select_privilege": bool(listed_select and has_select),
            "columns": columns,
        }
        try:
            cur.execute(sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(args.schema), sql.Identifier(name)))
            rows = cur.fetchall()
        except psycopg2.Error as e:
            view["error"] = f"{e.pgcode}: {e.pgerror}"
            for col in columns:
                col["python_types"] = []
            views.append(view)
            failed = True
            continue
        # the result's columns are the catalog's columns, in order
        view["result_columns"] = [d.name for d in cur.description]
        view["rows"] = len(rows)
        for row in rows:
            for col, value in zip(columns, row):
                if value is None:
                    continue
                col["python_types"].add(type(value).__name__)
                values.add(as_text(value))
        for col in columns:
            col["python_types"] = sorted(col["python_types"])
        views.append(view)

    forbidden = {}
    for table in args.forbidden:
        try:
            cur.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(args.schema), sql.Identifier(table)))
            forbidden[table] = {"rows": cur.fetchone()[0]}
        except psycopg2.Error as e:
            forbidden[table] = {
                "sqlstate": e.pgcode,
                "condition": psycopg2.errorcodes.lookup(e.pgcode) if e.pgcode else None,
                "error": (e.pgerror or "").strip(),
            }

    json.dump(
        {
            "user": user,
            "server_version": server_version,
            "psycopg2": psycopg2.__version__,
            "views": views,
            "values": sorted(values),
            "forbidden": forbidden,
        },
        sys.stdout,
        indent=1,
        default=str,
    )
    sys.stdout.write("\n")
    conn.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
