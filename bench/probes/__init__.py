"""What runs in a fresh process (`python -m bench.probes.<name>`), so its time and memory are its own."""
