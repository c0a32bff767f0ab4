"""Lambda function code (one folder per function) and the local in-process API that serves it."""
