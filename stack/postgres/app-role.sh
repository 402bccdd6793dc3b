#!/bin/bash
# The app's database role (POSTGRES_APP_USER): owns POSTGRES_DB and everything in its public
# schema, and is not a superuser (no CREATEROLE/CREATEDB/REPLICATION/BYPASSRLS). Django and the
# worker connect as it, or as its alternate login <app>_alt: a member of it whose sessions run as
# it (objects they create belong to the app role), which holds the new password while a rotated
# one takes over, so that no connection is refused at any moment (docs/secrets.md). Only the
# login the secrets name has a password; the other has none, so it cannot log in.
# The superuser (POSTGRES_USER) stays inside this container (local socket).
#
# Idempotent. Runs on first start as /docker-entrypoint-initdb.d/10-app-role.sh (over the init
# socket), on every start from start.sh, and from the deployer (docker exec) to apply a
# rotation live. The secrets come from the file the deployer writes beside the release's .env
# (.secrets/postgres/passwords, mounted at /run/stack-secrets; APP_ROLE_INPUT=- reads them from
# stdin instead): line 1 the superuser's password, line 2 the app's login, line 3 its password.
# They reach psql through \getenv: never on a command line. APP_ROLE_KEEP_OTHER=1 leaves the
# other login's password as it is (the deployer's first half of a rotation).
# A data volume made by an older release, where the superuser owns the tables, is handed over
# too: its rows stay readable and migrations can alter its tables.

ensure_app_role() {
    local input="${APP_ROLE_INPUT:-/run/stack-secrets/passwords}" super app_login app_password
    : "${POSTGRES_APP_USER:?set POSTGRES_APP_USER in .env (the app role, not the superuser)}"
    if [ "$input" != "-" ] && [ ! -s "$input" ]; then
        echo "app-role.sh: no passwords in $input: the deployer writes .secrets/postgres/passwords beside the release's .env (deploy with inv deploy)" >&2
        return 1
    fi
    { IFS= read -r super; IFS= read -r app_login; IFS= read -r app_password; } < <(if [ "$input" = "-" ]; then cat; else cat "$input"; fi)
    if [ -z "$super" ] || [ -z "$app_password" ]; then
        echo "app-role.sh: $input lacks a password (line 1: POSTGRES_PASSWORD, line 3: POSTGRES_APP_PASSWORD)" >&2
        return 1
    fi
    local alternate="${POSTGRES_APP_USER}_alt"
    app_login="${app_login:-$POSTGRES_APP_USER}"
    if [ "$app_login" != "$POSTGRES_APP_USER" ] && [ "$app_login" != "$alternate" ]; then
        echo "app-role.sh: the app login '$app_login' is neither $POSTGRES_APP_USER nor $alternate" >&2
        return 1
    fi
    local other="$alternate"
    [ "$app_login" = "$POSTGRES_APP_USER" ] || other="$POSTGRES_APP_USER"
    STACK_SUPER_PASSWORD="$super" STACK_APP_PASSWORD="$app_password" \
    psql -v ON_ERROR_STOP=1 --no-psqlrc -q -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
        -v app_user="$POSTGRES_APP_USER" -v db="$POSTGRES_DB" -v super_user="$POSTGRES_USER" \
        -v alternate="$alternate" -v login="$app_login" -v other="$other" \
        -v keep_other="${APP_ROLE_KEEP_OTHER:-0}" <<'SQL'
\getenv app_password STACK_APP_PASSWORD
\getenv super_password STACK_SUPER_PASSWORD
ALTER ROLE :"super_user" PASSWORD :'super_password';
SELECT format('CREATE ROLE %I LOGIN', :'app_user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
-- The alternate login: the app role's privileges, and its sessions run as the app role.
SELECT format('CREATE ROLE %I LOGIN', :'alternate')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'alternate') \gexec
ALTER ROLE :"alternate" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT;
GRANT :"app_user" TO :"alternate";
ALTER ROLE :"alternate" SET role = :'app_user';
ALTER ROLE :"login" PASSWORD :'app_password';
\if :keep_other
\else
ALTER ROLE :"other" PASSWORD NULL;
\endif
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
