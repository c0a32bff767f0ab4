"""One module per command of `python -m training`. Each has `register(subparsers)`, which adds its parser and
sets `handler` (a function taking the parsed arguments and returning the exit code)."""
