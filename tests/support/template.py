"""Template-driven tables for tests: the code lives in ``local.template``, shared with the local stack."""

from local.template import (
    TABLE_TYPE,
    TEMPLATE_PATH,
    TableDefinition,
    Template,
    TemplateError,
    create_table,
    load_template,
    table_definition,
)

__all__ = [
    "TABLE_TYPE",
    "TEMPLATE_PATH",
    "TableDefinition",
    "Template",
    "TemplateError",
    "create_table",
    "load_template",
    "table_definition",
]
