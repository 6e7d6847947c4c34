"""streamproc benchmark: python -m bench --help."""
