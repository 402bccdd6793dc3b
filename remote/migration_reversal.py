"""Whether Django can take migrations back without losing anything, asked of the release that
applied them (its image has their files) against the live database, read-only.

Django knows whether an operation is reversible; whether reversing it loses data it does not say.
The verdict here is conservative: an operation is lossless when reversing it only changes
metadata (indexes, constraints, options, names), or drops a table or column that holds nothing
but what the database filled in (no row; only NULL or the field's default). Anything else
(RunPython, RunSQL, AlterField, a removed field whose data would not come back) is not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

MARK = "stackdeploy-reversal:"

# Run with `manage.py shell -c`: names of the migrations in NAMES; prints MARK + JSON.
_CODE = r'''
import json
from django.db import connection
from django.db.migrations import operations as o
from django.db.migrations.loader import MigrationLoader

NAMES = __NAMES__
METADATA = tuple(getattr(o, n) for n in (
    "AddIndex", "RemoveIndex", "RenameIndex", "AddConstraint", "RemoveConstraint", "AlterModelOptions",
    "AlterModelManagers", "AlterModelTable", "AlterModelTableComment", "RenameField", "RenameModel",
    "AlterUniqueTogether", "AlterIndexTogether") if hasattr(o, n))
loader = MigrationLoader(connection)
q = connection.ops.quote_name


def count(sql, params=()):
    with connection.cursor() as c:
        c.execute(sql, params)
        return c.fetchone()[0]


def loses(app, op, after):
    if isinstance(op, METADATA):
        return None
    if isinstance(op, o.SeparateDatabaseAndState):
        found = [loses(app, inner, after) for inner in op.database_operations]
        return next((f for f in found if f), None)
    if isinstance(op, o.CreateModel):
        table = after.apps.get_model(app, op.name)._meta.db_table
        n = count(f"SELECT COUNT(*) FROM {q(table)}")
        return f"drops table {table}, which holds {n} row(s)" if n else None
    if isinstance(op, o.AddField):
        model = after.apps.get_model(app, op.model_name)
        field = model._meta.get_field(op.name)
        if field.many_to_many:
            table = field.remote_field.through._meta.db_table
            n = count(f"SELECT COUNT(*) FROM {q(table)}")
        else:
            table, default = model._meta.db_table, field.get_db_prep_save(field.get_default(), connection)
            n = count(f"SELECT COUNT(*) FROM {q(table)} WHERE {q(field.column)} IS DISTINCT FROM %s", [default])
        return f"drops {table}.{field.column}, which holds {n} value(s) written since" if n else None
    if isinstance(op, (o.RemoveField, o.DeleteModel)):
        return f"{op.describe()}: reversing brings it back empty, not its data"
    return f"{op.describe()}: what reversing it does to the data is not known"


out = {}
for name in NAMES:
    app, migration_name = name.split(".", 1)
    key = (app, migration_name)
    if key not in loader.graph.nodes:
        out[name] = {"reversible": False, "loses": ["not in this release's migrations"]}
        continue
    migration = loader.get_migration(app, migration_name)
    state = loader.project_state(key, at_end=False)
    irreversible = [op.describe() for op in migration.operations if not op.reversible]
    found = []
    for op in migration.operations:
        after = state.clone()
        op.state_forwards(app, after)
        if not irreversible:
            why = loses(app, op, after)
            if why:
                found.append(why)
        state = after
    out[name] = {"reversible": not irreversible, "loses": [f"irreversible: {d}" for d in irreversible] or found}
print("__MARK__" + json.dumps(out))
'''


@dataclass(frozen=True)
class Verdict:
    migration: str
    reversible: bool
    loses: tuple[str, ...]

    @property
    def lossless(self) -> bool:
        return self.reversible and not self.loses


def argv(migrate_argv: list[str], names: list[str]) -> list[str]:
    """The release's manage.py (the part of its migrate command before ``migrate``) running the
    check in ``shell -c``."""
    head = migrate_argv[:migrate_argv.index("migrate")] if "migrate" in migrate_argv else list(migrate_argv)
    code = _CODE.replace("__NAMES__", json.dumps(names)).replace("__MARK__", MARK)
    return [*head, "shell", "-c", code]


def parse(output: str, names: list[str]) -> list[Verdict]:
    """The verdicts in ``names``' order; ValueError when the output has none for one of them."""
    line = next((l for l in output.splitlines() if l.startswith(MARK)), None)
    if line is None:
        raise ValueError("the check printed no verdict")
    found = json.loads(line[len(MARK):])
    missing = [n for n in names if n not in found]
    if missing:
        raise ValueError(f"no verdict for {', '.join(missing)}")
    return [Verdict(n, bool(found[n]["reversible"]), tuple(found[n]["loses"])) for n in names]
