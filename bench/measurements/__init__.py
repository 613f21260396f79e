"""The bench's measurements, one module each; `bench.__main__` runs them in report order."""
