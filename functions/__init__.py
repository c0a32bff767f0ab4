"""Lambda function code, one folder per function (CodeUri in template.yaml)."""
