"""The output schema of a logical plan when it is known without running anything.

Sources that know their schema (in-memory blocks, ``Datasource.schema()``,
materialized bundles) and column-level operators (filter, limit, project) keep
it known; a Python UDF makes it unknown (None). ``Dataset`` uses it to reject
unknown columns at plan time.

>>> import pyarrow as pa
>>> from dataflow.plan.logical import InputData, Project
>>> node = Project(select=("b",), inputs=(InputData(blocks=(pa.table({"a": [1], "b": ["x"]}),)),))
>>> known_schema(node).names
['b']
"""

from __future__ import annotations

import pyarrow as pa

from dataflow.plan.logical import (
    Filter,
    InputData,
    Limit,
    LogicalOperator,
    MaterializedData,
    Project,
    Read,
    Union,
)


def known_schema(node: LogicalOperator) -> pa.Schema | None:
    """The output schema when it is known without running anything (sources with
    a schema, then column-level operators); None past a Python UDF."""
    if isinstance(node, InputData):
        return node.blocks[0].schema if node.blocks else None
    if isinstance(node, MaterializedData):
        return node.bundles[0].schema if node.bundles else None
    if isinstance(node, Read):
        schema = node.datasource.schema()
        if schema is not None and node.columns is not None:
            schema = pa.schema([schema.field(c) for c in node.columns if c in schema.names])
        return schema
    if isinstance(node, (Limit, Union, Filter)):
        return known_schema(node.inputs[0])
    if isinstance(node, Project):
        schema = known_schema(node.input)
        return None if schema is None else project_schema(node, schema)
    return None


def project_schema(node: Project, schema: pa.Schema) -> pa.Schema | None:
    """The output schema of ``node`` given its input's ``schema``."""
    if node.select is not None:
        return pa.schema([schema.field(c) for c in node.select])
    if node.drop is not None:
        return pa.schema([f for f in schema if f.name not in node.drop])
    if node.rename is not None:
        new = dict(node.rename)
        return pa.schema([f.with_name(new.get(f.name, f.name)) for f in schema])
    # The type of an expression: evaluate it over an empty table of the schema.
    if node.with_columns is not None:
        empty = schema.empty_table()
        for name, expr in node.with_columns:
            column = expr.eval(empty)
            field = pa.field(name, column.type)
            idx = schema.get_field_index(name)
            schema = schema.set(idx, field) if idx >= 0 else schema.append(field)
        return schema
    if node.exprs is not None:
        empty = schema.empty_table()
        return pa.schema([pa.field(name, expr.eval(empty).type) for name, expr in node.exprs])
    return None
