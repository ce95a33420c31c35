"""Template-driven tables for tests: the code lives in ``local.template``, shared with the local stack."""

from local.template import (
    TABLE_TYPE,
    TEMPLATE_PATH,
    TableDefinition,
    TemplateError,
    create_table,
    load_template,
    table_definition,
    table_resources,
)

__all__ = [
    "TABLE_TYPE",
    "TEMPLATE_PATH",
    "TableDefinition",
    "TemplateError",
    "create_table",
    "load_template",
    "table_definition",
    "table_resources",
]
