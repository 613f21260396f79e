"""`python -m monitoring`: the drift check from a terminal (the Lambda's core lives in functions/monitoring)."""
