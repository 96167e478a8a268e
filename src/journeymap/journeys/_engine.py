"""Where journey SQL runs: the embedded DuckDB store by default, or Spark when a shop outgrows one machine.

Every analysis is written once, as SQL in DuckDB's dialect over ``journey_events``. On Spark the
same text is compiled by sqlglot (the SQL compiler Ibis itself builds on) into Spark SQL and run
against a view of the events, so both engines answer from one definition of each analysis; CI
runs the graph, funnel and attribution on both and compares the results.

Two details keep the answers identical rather than merely close:
* times are differences of ``epoch_us()`` (Spark: ``unix_micros``), exact integers; sqlglot's
  own translation of ``epoch()``, ``unix_timestamp``, drops fractions of a second and would move medians;
* the session time zone is UTC, as the store's timestamps are.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from journeymap.exceptions import JourneymapError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

ENGINES = ("duckdb", "spark")


def _spark_dialect():
    """sqlglot's Spark dialect with the few translations journey SQL needs that it lacks."""
    from sqlglot import exp
    from sqlglot.dialects.spark import Spark

    def unix_seconds(self, e: exp.Expression) -> str:
        return f"(UNIX_MICROS(CAST({self.sql(e, 'this')} AS TIMESTAMP)) / 1000000.0)"

    def anonymous(self, e: exp.Anonymous) -> str:
        if str(e.this).lower() == "epoch_us":  # DuckDB's microseconds since the epoch
            return f"UNIX_MICROS(CAST({self.sql(e.expressions[0])} AS TIMESTAMP))"
        return Spark.Generator.anonymous_sql(self, e)

    def percentile(self, e: exp.PercentileCont) -> str:
        # DuckDB's quantile_cont(x, q) interpolates like Spark's exact percentile(x, q).
        return f"PERCENTILE({self.sql(e, 'this')}, {self.sql(e, 'expression')})"

    def median(self, e: exp.Median) -> str:
        return f"PERCENTILE({self.sql(e, 'this')}, 0.5)"

    def ordered_list(self, e: exp.ArrayAgg) -> str:
        # list(x ORDER BY k1, k2): Spark's collect_list has no order, so collect (k1, k2, x)
        # structs, sort them (structs compare field by field) and keep x.
        inner = e.this
        if not isinstance(inner, exp.Order):
            return f"COLLECT_LIST({self.sql(inner)})"
        keys = []
        for i, o in enumerate(inner.expressions):
            if o.args.get("desc"):
                raise self.unsupported("list(... ORDER BY ... DESC)") or ValueError("DESC order in list()")
            keys.append(f"{self.sql(o.this)} AS _k{i}")
        value = self.sql(inner.this)
        return f"TRANSFORM(ARRAY_SORT(COLLECT_LIST(STRUCT({', '.join(keys)}, {value} AS _v))), _s -> _s._v)"

    def first(self, e: exp.First) -> str:
        # first(x ORDER BY k1, k2) is the x of the smallest (k1, k2): min_by over a struct.
        inner = e.this
        if not isinstance(inner, exp.Order):
            return f"FIRST({self.sql(inner)})"
        keys = ", ".join(f"{self.sql(o.this)} AS _k{i}" for i, o in enumerate(inner.expressions))
        return f"MIN_BY({self.sql(inner.this)}, STRUCT({keys}))"

    class JourneymapSpark(Spark):
        class Generator(Spark.Generator):
            TRANSFORMS = {**Spark.Generator.TRANSFORMS, exp.TimeToUnix: unix_seconds,
                          exp.Anonymous: anonymous, exp.PercentileCont: percentile,
                          exp.Median: median, exp.ArrayAgg: ordered_list,
                          exp.First: first}

    return JourneymapSpark


_DIALECT = None


def to_spark_sql(sql: str) -> str:
    """DuckDB SQL compiled to Spark SQL."""
    global _DIALECT
    import sqlglot

    if _DIALECT is None:
        _DIALECT = _spark_dialect()
    try:
        return sqlglot.transpile(sql, read="duckdb", write=_DIALECT, unsupported_level=sqlglot.ErrorLevel.RAISE)[0]
    except sqlglot.errors.SqlglotError as exc:
        raise JourneymapError(f"This analysis cannot run on Spark yet: its SQL does not compile ({exc}).") from None


class SparkResult:
    """The few relation methods analyses use (``fetchall``, ``df``), over a Spark query."""

    def __init__(self, frame: Any) -> None:
        self._frame = frame

    def fetchall(self) -> list[tuple]:
        return [tuple(_plain(v) for v in row) for row in self._frame.collect()]

    def to_arrow_table(self) -> pa.Table:
        import pyarrow as pa

        return pa.Table.from_pandas(self.df(), preserve_index=False)

    def df(self) -> pd.DataFrame:
        import pandas as pd

        rows = self.fetchall()
        return pd.DataFrame(rows, columns=self._frame.columns)


def _plain(value: Any) -> Any:
    """Spark values as DuckDB returns them: arrays as lists, decimals as floats."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class SparkEngine:
    """A SparkSession with the events as a view; ``events`` is a Spark DataFrame or Parquet path(s)."""

    def __init__(self, events: Any, spark: Any = None) -> None:
        try:
            from pyspark.sql import SparkSession
            from pyspark.sql import functions as F
        except ImportError:
            raise JourneymapError("The Spark engine needs pyspark: pip install 'journeymap[spark]' "
                                  "(and Java 17 or newer).") from None
        if spark is None:
            spark = (SparkSession.builder.master("local[*]").appName("journeymap")
                     .config("spark.sql.session.timeZone", "UTC")
                     .config("spark.ui.enabled", "false")
                     .config("spark.sql.shuffle.partitions", "8")
                     .getOrCreate())
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        self.spark = spark
        if isinstance(events, str | Path):
            path = Path(events)
            if not path.exists():
                raise JourneymapError(f"No events at {path}; write them with `journeymap export --store S --out {path}`.")
            events = spark.read.parquet(str(path))
        # UUIDs and JSON have no Spark type: both travel as strings, which order and compare alike.
        columns = [F.col(c).cast("string").alias(c) if c in ("event_id", "properties") else F.col(c)
                   for c in events.columns]
        events.select(*columns).createOrReplaceTempView("events")
        self.columns = list(events.columns)

    def query(self, sql: str) -> SparkResult:
        return SparkResult(self.spark.sql(to_spark_sql(sql)))

    def has_events(self) -> bool:
        return bool(self.spark.sql("SELECT 1 FROM events LIMIT 1").collect())
