"""Loading run folders into polars frames, and plotly figures built from them."""
