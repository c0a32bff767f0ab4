"""The data scientist's side: load → clean → features → train → evaluate → publish, as plain functions.

No AWS in here: reading s3:// data and writing to the model store go through `sklambda`, which is shared with
the Lambda functions. Run it with `python -m training --help`.
"""
