#!/bin/bash
# The app's database role (POSTGRES_APP_USER): logs in, owns POSTGRES_DB and everything in
# its public schema, and is not a superuser (no CREATEROLE/CREATEDB/REPLICATION/BYPASSRLS).
# Django and the worker connect as it; the superuser (POSTGRES_USER) stays inside this container.
# Idempotent. Runs on first start as /docker-entrypoint-initdb.d/10-app-role.sh (sourced or
# executed by the image's entrypoint, over the init socket) and on every start from start.sh
# (over TCP), so a data volume made by an older release, where the superuser owns the tables,
# is handed over too: its rows stay readable and migrations can alter its tables.
# The passwords come from the environment through \getenv: never on a command line. Both the
# app role's and the superuser's (POSTGRES_PASSWORD, which the image only sets at initdb) are set
# on every start, so rotating one is: change it in .env, deploy (PostgreSQL restarts with it).

ensure_app_role() {
    : "${POSTGRES_APP_USER:?set POSTGRES_APP_USER in .env (the app role, not the superuser)}"
    : "${POSTGRES_APP_PASSWORD:?set POSTGRES_APP_PASSWORD in .env (a long random string)}"
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env (a long random string)}"
    psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
        -v app_user="$POSTGRES_APP_USER" -v db="$POSTGRES_DB" -v super_user="$POSTGRES_USER" <<'SQL'
\getenv app_password POSTGRES_APP_PASSWORD
\getenv super_password POSTGRES_PASSWORD
ALTER ROLE :"super_user" PASSWORD :'super_password';
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'app_password';
ALTER DATABASE :"db" OWNER TO :"app_user";
-- Tables, views and free-standing sequences the superuser owns (an older release migrated
-- as the superuser); a table's own serial/identity sequences follow the table.
SELECT format('ALTER %s %I.%I OWNER TO %I',
              CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
              n.nspname, c.relname, :'app_user')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'app_user')
   AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                         AND d.objid = c.oid AND d.deptype IN ('a', 'i')))
 ORDER BY c.relkind = 'S' \gexec
-- Nobody else connects to the app's database.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}

ensure_app_role
