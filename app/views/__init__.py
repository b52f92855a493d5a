"""Small view helpers: plotly figures, the word diff and the layer strip."""
