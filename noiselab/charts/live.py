"""Live tables: chart data held in a Vega parameter, so a running view can be given new rows without re-rendering.

Altair's JupyterChart updates a declared parameter in the browser in place (`jchart.params.<name> = value`), but
has no public call to replace a chart's data, and assigning a new chart re-embeds the whole view (slow, and it
flickers while a slider moves). A live table therefore keeps its rows in a parameter, column-wise:

    {"n": 3, "x": [0.0, 0.5, 1.0], "y": [1.0, 2.0, 0.5]}

and the chart's data is the sequence 0 .. capacity-1, filtered to the first n rows, with each column looked up by
row index in a calculate transform. Setting the parameter to `table_value(new_frame)` replaces the rows; Vega
re-runs the transforms because they read the parameter. Pure functions: a DataFrame in, a spec piece out.

    >>> param, base = live_table("curves", frame, capacity=1000)
    >>> chart = base.mark_line().encode(x="x:Q", y="y:Q").add_params(param).properties(autosize=RESIZE)
    >>> jchart.params.curves = table_value(new_frame)          # in a widget, after recomputing

A live chart should resize with its data (RESIZE): Vega sizes a view once, from its first data, unless told to
redo the layout on every update; axis labels that grow with new data are clipped otherwise.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

ROW_INDEX = "row_index"  # the sequence's field; not to be used as a column name
RESIZE = alt.AutoSizeParams(type="pad", resize=True)  # a top-level chart's autosize: re-layout when data change


# Significant digits kept per column, relative to the column's largest magnitude: plenty for a chart, and short
# decimals ("0.30021", not "0.30021001192092896") halve what each slider update sends to the browser.
SIGNIFICANT_DIGITS = 6


def _column_values(values) -> list:
    values = np.asarray(values)
    if values.dtype.kind == "f":
        values = values.astype(np.float64)
        finite = np.isfinite(values)
        largest = float(np.abs(values[finite]).max()) if finite.any() else 0.0
        if largest > 0:
            decimals = SIGNIFICANT_DIGITS - 1 - int(np.floor(np.log10(largest)))
            values = np.round(values, decimals) if decimals >= 0 else values  # one vectorised call
        if finite.all():
            return values.tolist()
        # NaN and inf are not JSON: null, which Vega treats as missing
        return [value if ok else None for value, ok in zip(values.tolist(), finite.tolist())]
    if values.dtype.kind in "iub":
        return values.tolist()
    return [None if value is None else str(value) for value in values.tolist()]


def table_value(table, capacity: int | None = None) -> dict:
    """The parameter value holding a table's rows: {"n": rows, column: [values...], ...}.

    `table` is a DataFrame, or a dict of equal-length columns (lists or arrays), the faster form for updates.
    With `capacity`, a table with more rows than the chart was built for raises a ValueError (the chart would
    silently show only the first `capacity` rows).
    """
    if isinstance(table, pd.DataFrame):
        columns = {str(name): table[name].to_numpy() for name in table.columns}
    elif isinstance(table, dict):
        columns = {str(name): np.asarray(values) for name, values in table.items()}
    else:
        raise ValueError(f"a live table needs a pandas DataFrame or a dict of columns, got {type(table).__name__}")
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"a live table's columns must have equal lengths, got {sorted(lengths)}")
    rows = lengths.pop() if lengths else 0
    if capacity is not None and rows > capacity:
        raise ValueError(f"the table has {rows} rows but the chart was built for at most {capacity}")
    if ROW_INDEX in columns or "n" in columns:
        raise ValueError(f"column names {ROW_INDEX!r} and 'n' are reserved in a live table")
    value: dict = {"n": int(rows)}
    for name, values in columns.items():
        value[name] = _column_values(values)
    return value


def live_table(name: str, frame, capacity: int) -> tuple[alt.Parameter, alt.Chart]:
    """A parameter holding `frame` (a DataFrame or a dict of columns), and a base chart whose rows are its rows.

    Add the parameter to the top-level chart (`.add_params(param)`, once, even if several layers read it).
    `capacity` is the most rows the table may ever hold (the sequence's length): size it for the largest
    update. Column names must be plain identifiers (they are read as `name.column` in Vega expressions).
    """
    if not name.isidentifier():
        raise ValueError(f"a live table's name must be an identifier, got {name!r}")
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
    value = table_value(frame, capacity)
    for column in value:
        if not column.isidentifier():
            raise ValueError(f"live table column names must be identifiers, got {column!r}")
    param = alt.param(name=name, value=value)
    lookups = {column: f"{name}.{column}[datum.{ROW_INDEX}]" for column in value if column != "n"}
    base = (
        alt.Chart(alt.sequence(0, capacity, as_=ROW_INDEX))
        .transform_filter(f"datum.{ROW_INDEX} < {name}.n")
        .transform_calculate(**lookups)
    )
    return param, base
