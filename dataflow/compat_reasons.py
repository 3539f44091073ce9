"""Why dataflow's API differs from Ray Data 2.60's where it does: the reasons
``dataflow.compat_report`` writes into ``docs/ray_compat.md``. A key is an API
(``"read_sql"``, ``"Dataset.to_spark"``: every difference of it) or one
parameter (``"Dataset.join(num_partitions)"``). Entries marked "Not yet" are
issue 20's open work; the others are decisions.

>>> REASONS["Dataset.map_batches(zero_copy_batch)"][:30]
'dataflow hands the UDF writable'
"""

from __future__ import annotations

_NOT_YET = "Not yet matched (issue 20 follow-up)"
_FORWARDS = (
    "This method forwards its keywords (``**kwargs``) to the ``DataIterator`` method of "
    "the same name, whose parameters are Ray Data's (see that entry); a Ray call works "
    "unchanged"
)

REASONS: dict[str, str] = {
    # -- Dataset transforms ----------------------------------------------------------------
    "Dataset.map_batches(zero_copy_batch)": (
        "dataflow hands the UDF writable batches by default (a copy where Arrow's buffers "
        "are read-only); True gives read-only zero-copy views as in Ray. Every Ray UDF "
        "works with the default (it may write to its batch or not)"
    ),
    "Dataset.join(join_type)": (
        "Optional here: the older ``join(ds, on, how=...)`` form still works (a second "
        "argument that is not a join type is ``on``); omitted, it is 'inner'. Every Ray "
        "call passes it and means the same"
    ),
    "Dataset.join(num_partitions)": (
        "Optional here: omitted, dataflow picks the exchange's width from the data. Every "
        "Ray call passes it and means the same (a join whose small right side is "
        "broadcast runs no exchange: the width does not apply)"
    ),
    "Dataset.iter_batches(_collate_fn)": (
        "A private Ray parameter (leading underscore); dataflow's ``iter_torch_batches`` "
        "takes ``collate_fn``"
    ),
    "Dataset.iter_torch_batches": _FORWARDS,
    "Dataset.iter_tf_batches": _FORWARDS,
    "Dataset.iter_jax_batches": _FORWARDS,
    "Dataset.to_tf": _FORWARDS,
    "DataIterator.iter_torch_batches(device)": (
        "None here means Ray's 'auto' (the GPU of a worker that holds one, else CPU); "
        "'auto' is accepted too"
    ),
    # -- readers ---------------------------------------------------------------------------
    "read_parquet(partitioning)": (
        "The default is the string 'hive' here, which means what Ray's "
        "``Partitioning('hive')`` means; that object is accepted too (style 'hive' only)"
    ),
    "read_csv(partitioning)": "As for read_parquet(partitioning)",
    "read_json(partitioning)": "As for read_parquet(partitioning)",
    # -- writers ---------------------------------------------------------------------------
    "Dataset.write_numpy(column)": (
        "Optional here: a dataset with one column writes that column without it; every "
        "Ray call passes it and means the same"
    ),
    "Dataset.write_delta(schema_mode)": (
        "Not supported: an append keeps the table's schema (blocks are conformed to it); "
        "Ray's schema_mode='merge', which adds new columns to the table, is not "
        "implemented, and passing schema_mode raises a PlanError"
    ),
    # -- missing everyday methods (issue 20's list) ----------------------------------------
    "Dataset.mix": (
        f"{_NOT_YET}: weighted interleaving needs an operator that always pulls from the "
        "input furthest behind its ratio; without scheduler support for feeding that "
        "input first, the other inputs would be buffered whole. Until then, "
        "``union`` then ``random_shuffle`` mixes datasets (unweighted)"
    ),
}
"""Differences from Ray Data that are known, each with why."""

_CONNECTOR_ISSUE = "A connector to an external service: connectors are issues of their own"
_REFS = (
    "Ray object references (``ObjectRef``) of blocks: dataflow's blocks live in its own "
    "store; use ``to_arrow``/``to_pandas``/``iter_batches``/``from_arrow`` instead"
)
_LINEAGE = "Ray-internal (lineage serialization, dataset ids, stats objects): out of scope"

OUT_OF_SCOPE: dict[str, str] = {
    "Dataset.get_internal_block_refs": _REFS,
    "Dataset.iter_internal_ref_bundles": _REFS,
    "Dataset.to_arrow_refs": _REFS,
    "Dataset.to_numpy_refs": _REFS,
    "Dataset.to_pandas_refs": _REFS,
    "from_arrow_refs": _REFS,
    "from_numpy_refs": _REFS,
    "from_pandas_refs": _REFS,
    "from_blocks": _REFS,
    "Dataset.serialize_lineage": _LINEAGE,
    "Dataset.deserialize_lineage": _LINEAGE,
    "Dataset.has_serializable_lineage": _LINEAGE,
    "Dataset.get_dataset_id": _LINEAGE,
    "Dataset.get_stats_summary": _LINEAGE,
    "Dataset.map_batches_internal": _LINEAGE,
    "list_stats_summaries": _LINEAGE,
    "Dataset.to_spark": "Spark (RayDP) interop: a connector of its own",
    "from_spark": "Spark (RayDP) interop: a connector of its own",
    "Dataset.to_mars": "Mars on Ray: needs a Ray cluster",
    "from_mars": "Mars on Ray: needs a Ray cluster",
    "Dataset.to_modin": "Modin on Ray: needs a Ray cluster",
    "from_modin": "Modin on Ray: needs a Ray cluster",
    "from_tf": "TensorFlow interop is an issue of its own (TF/JAX)",
    "read_audio": "A media reader: an issue of its own",
    "read_videos": "A media reader: an issue of its own",
    "read_mcap": "A robotics log reader: an issue of its own",
    "read_lerobot": "A robotics dataset reader: an issue of its own",
    "read_zarr": "An array-store reader: an issue of its own",
    "read_clickhouse": _CONNECTOR_ISSUE,
    "read_delta_sharing_tables": _CONNECTOR_ISSUE,
    "read_hudi": _CONNECTOR_ISSUE,
    "read_kafka": _CONNECTOR_ISSUE,
    "read_mongo": _CONNECTOR_ISSUE,
    "read_snowflake": _CONNECTOR_ISSUE,
    "read_unity_catalog": _CONNECTOR_ISSUE,
    "Dataset.write_bigquery": _CONNECTOR_ISSUE,
    "Dataset.write_clickhouse": _CONNECTOR_ISSUE,
    "Dataset.write_kafka": _CONNECTOR_ISSUE,
    "Dataset.write_mongo": _CONNECTOR_ISSUE,
    "Dataset.write_snowflake": _CONNECTOR_ISSUE,
    "Dataset.write_turbopuffer": _CONNECTOR_ISSUE,
}
"""Ray Data APIs outside issue 20's scope, with why."""
