"""DDL of the TaskRun table, its enums and indexes, generated from the reference TSVs.

The TSVs in ``rrlab/reference`` are the source of truth (upstream trigger.dev after all
migrations); the Organization / Project / RuntimeEnvironment tables are minimal stand-ins
holding only what the fixtures need.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

TABLE = "TaskRun"
# What the index TSV states only in its note (the migration adds it; schema.prisma does not).
_INDEX_EXTRAS = {
    ("runtimeEnvironmentId", "createdAt DESC"): ' INCLUDE ("id") WITH (fillfactor = 90)',
}


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    nullable: bool
    default: str


@dataclass(frozen=True)
class Index:
    columns: tuple[str, ...]  # each "name" or "name DESC"
    method: str
    unique: bool


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("rrlab.reference").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines(), delimiter="\t"))


def taskrun_columns() -> list[Column]:
    """TaskRun's columns in physical order."""
    return [
        Column(row["column"], row["pg_type"], row["nullable"] == "YES", row["default"])
        for row in _rows("taskrun_postgres.tsv")
    ]


def enums() -> dict[str, list[str]]:
    """Enum type → labels, in declaration order."""
    return {row["enum"]: row["values"].split(",") for row in _rows("postgres_enums.tsv")}


def taskrun_indexes() -> list[Index]:
    return [
        Index(
            tuple(part.strip() for part in row["columns"].split(",")),
            row["method"],
            row["unique"] == "yes",
        )
        for row in _rows("taskrun_postgres_indexes.tsv")
    ]


def quote_ident(name: str) -> str:
    """Double-quote an identifier from the reference files (they hold no quotes)."""
    if '"' in name or "\x00" in name:
        raise ValueError(f"unexpected identifier in reference schema: {name!r}")
    return f'"{name}"'


def _column_type(pg_type: str, enum_names: set[str]) -> str:
    return quote_ident(pg_type) if pg_type in enum_names else pg_type


def index_name(index: Index) -> str:
    """Prisma's naming: <Table>_<col>_..._key for unique indexes, _idx otherwise."""
    names = "_".join(column.split()[0] for column in index.columns)
    return f"{TABLE}_{names}_{'key' if index.unique else 'idx'}"


def _index_ddl(index: Index) -> str:
    columns = ", ".join(
        " ".join([quote_ident(parts[0]), *parts[1:]])
        for parts in (column.split() for column in index.columns)
    )
    unique = "UNIQUE " if index.unique else ""
    using = "" if index.method == "btree" else f" USING {index.method}"
    extra = _INDEX_EXTRAS.get(index.columns, "")
    return (
        f"CREATE {unique}INDEX {quote_ident(index_name(index))} ON {quote_ident(TABLE)}"
        f"{using} ({columns}){extra};"
    )


def taskrun_ddl() -> list[str]:
    """Statements creating the enums, TaskRun (primary key on id) and its indexes."""
    enum_types = enums()
    statements = [
        f"CREATE TYPE {quote_ident(name)} AS ENUM ("
        + ", ".join("'" + label.replace("'", "''") + "'" for label in labels)
        + ");"
        for name, labels in enum_types.items()
    ]
    column_lines = []
    for column in taskrun_columns():
        line = f"    {quote_ident(column.name)} {_column_type(column.pg_type, set(enum_types))}"
        if not column.nullable:
            line += " NOT NULL"
        if column.default:
            line += f" DEFAULT {column.default}"
        column_lines.append(line)
    column_lines.append(f'    CONSTRAINT {quote_ident(TABLE + "_pkey")} PRIMARY KEY ("id")')
    statements.append(f"CREATE TABLE {quote_ident(TABLE)} (\n" + ",\n".join(column_lines) + "\n);")
    statements += [_index_ddl(index) for index in taskrun_indexes() if index.columns != ("id",)]
    return statements


FIXTURE_TABLES_DDL = [
    """CREATE TABLE "Organization" (
    "id" text NOT NULL PRIMARY KEY,
    "slug" text NOT NULL UNIQUE,
    "title" text NOT NULL,
    "createdAt" timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp(3) without time zone NOT NULL
);""",
    """CREATE TABLE "Project" (
    "id" text NOT NULL PRIMARY KEY,
    "slug" text NOT NULL UNIQUE,
    "name" text NOT NULL,
    "externalRef" text NOT NULL UNIQUE,
    "organizationId" text NOT NULL REFERENCES "Organization" ("id"),
    "createdAt" timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp(3) without time zone NOT NULL
);""",
    """CREATE TABLE "RuntimeEnvironment" (
    "id" text NOT NULL PRIMARY KEY,
    "slug" text NOT NULL,
    "type" "RuntimeEnvironmentType" NOT NULL DEFAULT 'DEVELOPMENT',
    "projectId" text NOT NULL REFERENCES "Project" ("id"),
    "organizationId" text NOT NULL REFERENCES "Organization" ("id"),
    "createdAt" timestamp(3) without time zone NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" timestamp(3) without time zone NOT NULL,
    UNIQUE ("projectId", "slug")
);""",
]


def schema_ddl() -> list[str]:
    """Every statement of rrlab's profiling schema, in order (enums first)."""
    return taskrun_ddl() + FIXTURE_TABLES_DDL
